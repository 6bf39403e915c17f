//! `--metrics-listen`: Hubble's and hubcap's metrics against the traffic
//! sent, and `promtool check metrics` on the exposition.

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use hubcap_tests::{
    agent::scrape_metrics,
    netns::Netns,
    output, require_root,
    topology::Node,
    traffic::{tcp_transfer, udp_echo},
};

fn scrape(ns: &Netns) -> String {
    scrape_metrics(ns, "127.0.0.1:9965")
}

/// `name{labels}` -> value, for every sample.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            (series.to_owned(), value.parse().expect("number"))
        })
        .collect()
}

fn value(s: &HashMap<String, f64>, series: &str) -> u64 {
    *s.get(series).unwrap_or_else(|| panic!("no {series}")) as u64
}

#[test]
fn metrics_match_the_traffic_and_pass_promtool() {
    require_root();
    let node = Node::new(2);
    let agent = node.capture(&Node::METRICS_AND_QUICK_ENDS);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    tcp_transfer(&p1.ns, &p2.ns, SocketAddr::new(p2.ipv4.into(), 5001), 100_000, 20_000);
    udp_echo(&p1.ns, &p2.ns, SocketAddr::new(p2.ipv4.into(), 5002), 20, 100);

    let a = node.settled_counters(&p1.host_if);
    let b = node.settled_counters(&p2.host_if);
    // Every flow ends after the 1 s idle timeout; then the metrics are final.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = scrape(&node.ns);
        let s = samples(&text);
        if value(&s, "hubcap_flow_table_directions") == 0 {
            break text;
        }
        assert!(Instant::now() < deadline, "flows never ended");
        std::thread::sleep(Duration::from_millis(200));
    };
    let s = samples(&text);

    // Packets and bytes per interface and hook, exactly as the kernel counted.
    for (ifname, c) in [(&p1.host_if, a), (&p2.host_if, b)] {
        let series = |name: &str, hook: &str| format!("{name}{{hook=\"{hook}\",interface=\"{ifname}\"}}");
        assert_eq!(
            value(&s, &series("hubcap_flow_packets_total", "ingress")),
            c.rx_packets,
            "{ifname} rx packets"
        );
        assert_eq!(
            value(&s, &series("hubcap_flow_bytes_total", "ingress")),
            c.rx_bytes,
            "{ifname} rx bytes"
        );
        assert_eq!(
            value(&s, &series("hubcap_flow_packets_total", "egress")),
            c.tx_packets,
            "{ifname} tx packets"
        );
        assert_eq!(
            value(&s, &series("hubcap_flow_bytes_total", "egress")),
            c.tx_bytes,
            "{ifname} tx bytes"
        );
    }
    // One TCP connection, seen on two veths: one SYN and one SYN-ACK record
    // on each, and a FIN in each direction on each.
    assert_eq!(value(&s, r#"hubble_tcp_flags_total{family="IPv4",flag="SYN"}"#), 2);
    assert_eq!(value(&s, r#"hubble_tcp_flags_total{family="IPv4",flag="SYN-ACK"}"#), 2);
    assert_eq!(value(&s, r#"hubble_tcp_flags_total{family="IPv4",flag="FIN"}"#), 4);
    // Every written line is a counted flow record (nothing was lost).
    let processed: u64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("hubble_flows_processed_total"))
        .map(|(_, v)| *v as u64)
        .sum();
    assert_eq!(value(&s, r#"hubcap_records_written_total{sink="stdout"}"#), processed);
    // Cilium's flow metric's labels exactly: protocol, type, subtype, verdict.
    for protocol in ["TCP", "UDP"] {
        for point in ["from-endpoint", "to-endpoint"] {
            let series = format!(
                r#"hubble_flows_processed_total{{protocol="{protocol}",subtype="{point}",type="Trace",verdict="FORWARDED"}}"#
            );
            assert!(value(&s, &series) > 0, "{series}");
        }
    }
    for (series, _) in s.iter().filter(|(k, _)| k.starts_with("hubble_flows_processed_total")) {
        let names: Vec<&str> = series
            .trim_start_matches("hubble_flows_processed_total{")
            .trim_end_matches('}')
            .split(',')
            .map(|pair| pair.split_once('=').expect("label pair").0)
            .collect();
        assert_eq!(names, ["protocol", "subtype", "type", "verdict"], "{series}");
    }
    assert_eq!(value(&s, "hubcap_attached_interfaces"), 2);
    assert_eq!(value(&s, "hubcap_kernel_flow_capacity"), 262_144);
    assert_eq!(value(&s, "hubcap_ringbuf_records_lost_total"), 0);
    assert!(value(&s, "hubcap_ringbuf_records_read_total") > 0);
    assert_eq!(value(&s, r#"hubcap_kernel_packets_total{counter="map_full"}"#), 0);
    assert_eq!(
        value(
            &s,
            &format!(r#"hubcap_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))
        ),
        1
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let finished = agent.stop();
    assert!(finished.status.success());
    // The output holds at least what the metrics counted.
    let written = output::parse(&finished.stdout).records.len() as u64;
    assert!(written >= processed);
}

/// `--metrics-listen :PORT`, Cilium's usual form, serves on every address;
/// each attached hook is listed with its interface and mode.
#[test]
fn a_bare_port_serves_metrics_on_every_address() {
    require_root();
    let node = Node::new(1);
    let _agent = node.capture(&["--metrics-listen", ":9967"]);
    let text = scrape_metrics(&node.ns, "127.0.0.1:9967");
    let s = samples(&text);
    assert_eq!(value(&s, "hubcap_attached_interfaces"), 1);
    let veth = &node.pods[0].host_if;
    // The mode is the kernel's choice under `--attach-mode auto`: tcx where
    // the kernel has it, else tc. Both hooks must say the same.
    let mut modes = Vec::new();
    for hook in ["egress", "ingress"] {
        let prefix = format!(r#"hubcap_attachments{{hook="{hook}",interface="{veth}",mode=""#);
        let (series, v) = s
            .iter()
            .find(|(series, _)| series.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}..."));
        assert_eq!(*v as u64, 1, "{series}");
        modes.push(series[prefix.len()..].trim_end_matches("\"}").to_owned());
    }
    assert!(modes[0] == "tcx" || modes[0] == "tc", "{modes:?}");
    assert_eq!(modes[0], modes[1]);
    // The kubelet's probes, beside the metrics: ready once capturing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while get(&node.ns, "127.0.0.1:9967", "/readyz").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(get(&node.ns, "127.0.0.1:9967", "/readyz"), (200, "ok\n".to_owned()));
    assert_eq!(get(&node.ns, "127.0.0.1:9967", "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(&node.ns, "127.0.0.1:9967", "/nothing").0, 404);
}

/// `GET path` on `addr` in `ns`: the status code and the body.
fn get(ns: &Netns, addr: &'static str, path: &'static str) -> (u16, String) {
    ns.enter(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
        let mut response = String::new();
        s.read_to_string(&mut response).expect("response");
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        (status, body.to_owned())
    })
}
