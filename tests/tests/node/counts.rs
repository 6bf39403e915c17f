//! Packet and byte counts on a real node: hubcap's records at each pod's
//! veth against the veth's own counters, over a window in which nothing
//! but IP crossed a captured interface.

use std::time::Duration;

use hubcap_tests::upstream::tool;
use serde_json::Value;

use crate::fixture::{NodeRun, client_get, port_forward};

/// The kernel's own counters of a pod's host-side veth on the node.
fn veth_counters(run: &NodeRun, veth: &str) -> (u64, u64, u64, u64) {
    let out = run
        .node
        .command("ip")
        .args(["-s", "-j", "link", "show", "dev", veth])
        .output()
        .expect("ip");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    let s = &v[0]["stats64"];
    let n = |x: &Value| x.as_u64().expect("counter");
    (
        n(&s["rx"]["packets"]),
        n(&s["rx"]["bytes"]),
        n(&s["tx"]["packets"]),
        n(&s["tx"]["bytes"]),
    )
}

/// The host-side veth of `pod` (its eth0's peer) in the node.
fn host_veth(run: &NodeRun, pod: &str) -> String {
    let index = run
        .node
        .kubectl_ok(&["exec", pod, "--", "cat", "/sys/class/net/eth0/iflink"]);
    let out = run
        .node
        .command("ip")
        .args(["-j", "link", "show"])
        .output()
        .expect("ip");
    let links: Vec<Value> = serde_json::from_slice(&out.stdout).expect("ip -j");
    links
        .iter()
        .find(|l| l["ifindex"].as_u64() == index.trim().parse().ok())
        .and_then(|l| l["ifname"].as_str())
        .unwrap_or_else(|| panic!("no veth with index {index}"))
        .to_owned()
}

/// Packets in no flow (ARP, ...) hubcap counted on every captured
/// interface, scraped through a port-forward (which crosses no pod veth).
fn non_ip_packets(metrics_port: u16) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"hubcap_kernel_packets_total{counter="non_ip"} "#))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no non_ip counter:\n{text}")) as u64
}

/// Sums of the Observer API's records at `veth` between `since` and
/// `until`, by observation point: (FROM_ENDPOINT, TO_ENDPOINT) packets
/// and bytes.
fn recorded(grpc_port: u16, veth: &str, since: &str, until: &str) -> ((u64, u64), (u64, u64)) {
    let out = std::process::Command::new(tool("hubble"))
        .args(["observe", "--server", &format!("localhost:{grpc_port}")])
        .args(["--since", since, "--until", until, "--interface", veth, "-o", "jsonpb"])
        .output()
        .expect("hubble");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (mut from, mut to) = ((0, 0), (0, 0));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let record: Value = serde_json::from_str(line).expect("jsonpb");
        let flow = &record["flow"];
        if flow["verdict"] != "FORWARDED" {
            continue;
        }
        let counts = &flow["extensions"]["value"];
        let (packets, bytes) = (
            counts["packets"].as_u64().unwrap_or(0),
            counts["bytes"].as_u64().unwrap_or(0),
        );
        let sum = match flow["trace_observation_point"].as_str() {
            Some("FROM_ENDPOINT") => &mut from,
            Some("TO_ENDPOINT") => &mut to,
            other => panic!("{other:?} on a pod veth: {line}"),
        };
        sum.0 += packets;
        sum.1 += bytes;
    }
    (from, to)
}

pub fn packet_and_byte_counts_equal_the_pods_veths(run: &NodeRun) {
    let (_grpc, grpc_port) = port_forward(run, 4244);
    let (_metrics, metrics_port) = port_forward(run, 9965);
    let pods: Vec<String> = std::iter::once("client".to_owned()).chain(run.web_pods()).collect();
    let veths: Vec<String> = pods.iter().map(|p| host_veth(run, p)).collect();
    let wget = || {
        client_get(&run.node, &format!("http://{}/", run.service_ip));
    };
    // A window is judged only when no packet outside any flow (ARP, ...)
    // crossed a captured interface during it: the neighbours are learnt
    // first, and a window that saw one is measured again.
    wget();
    for attempt in 1..=3 {
        // Quiet, and everything before reported.
        std::thread::sleep(Duration::from_secs(6));
        let non_ip_before = non_ip_packets(metrics_port);
        let before: Vec<_> = veths.iter().map(|v| veth_counters(run, v)).collect();
        let since = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        for _ in 0..5 {
            wget();
        }
        std::thread::sleep(Duration::from_secs(6));
        let after: Vec<_> = veths.iter().map(|v| veth_counters(run, v)).collect();
        let until = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        if non_ip_packets(metrics_port) != non_ip_before {
            eprintln!("window {attempt}: non-IP packets crossed a captured interface; measuring again");
            continue;
        }
        for ((veth, b), a) in veths.iter().zip(&before).zip(&after) {
            let (from, to) = recorded(grpc_port, veth, &since, &until);
            assert_eq!(from, (a.0 - b.0, a.1 - b.1), "{veth}: received from the pod");
            assert_eq!(to, (a.2 - b.2, a.3 - b.3), "{veth}: sent to the pod");
            eprintln!("{veth}: from the pod {from:?}, to the pod {to:?} (packets, bytes), equal to its counters");
        }
        let (client_from, _) = recorded(grpc_port, &veths[0], &since, &until);
        assert!(
            client_from.0 >= 5 * 3,
            "five requests, each at least SYN, ACK and FIN: {client_from:?}"
        );
        return;
    }
    panic!("every window saw packets outside any flow");
}
