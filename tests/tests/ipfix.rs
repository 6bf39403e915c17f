//! IPFIX judged by real decoders: over UDP, Debian's `nfcapd` collects in
//! the test node's namespace and `nfdump` reads the capture back; over
//! TCP, Debian's python3-ipfix (an RFC 7011 implementation) reads the
//! stream. Every record hubcap wrote is there, and per veth and direction
//! the packets and bytes equal the interface counters, for IPv4 and IPv6.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hubcap_tests::{
    output, require_root,
    topology::{Counters, Node},
    traffic::{ping, tcp_transfer, udp_echo},
};

/// nfcapd, stopped with SIGTERM (it writes its file then) even when the
/// test fails.
struct Nfcapd(Child);

impl Nfcapd {
    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Packets and bytes by (interface index, "in" or "out").
type Sums<'a> = BTreeMap<(u64, &'a str), (u64, u64)>;

/// Adds a flow's counts to its input and output interfaces (0: none).
fn add(sums: &mut Sums<'_>, input: u64, output: u64, counts: (u64, u64)) {
    for (index, side) in [(input, "in"), (output, "out")] {
        if index != 0 {
            let sum = sums.entry((index, side)).or_default();
            sum.0 += counts.0;
            sum.1 += counts.1;
        }
    }
}

/// Per veth: what its host side's ingress hook saw is what it received,
/// its egress hook what it sent.
fn assert_matches_counters(node: &Node, sums: &Sums<'_>, counters: &[(String, Counters)]) {
    for (ifname, c) in counters {
        let index = ifindex(node, ifname);
        let get = |side| sums.get(&(index, side)).copied().unwrap_or_default();
        assert_eq!(get("in"), (c.rx_packets, c.rx_bytes), "{ifname} rx");
        assert_eq!(get("out"), (c.tx_packets, c.tx_bytes), "{ifname} tx");
    }
}

fn ifindex(node: &Node, ifname: &str) -> u64 {
    let out = node
        .ns
        .command("cat")
        .arg(format!("/sys/class/net/{ifname}/ifindex"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("ifindex")
}

#[test]
fn nfdump_reads_every_flow_with_the_interface_counters() {
    require_root();
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-ipfix-{}", node.id));
    std::fs::create_dir_all(&dir).unwrap();
    let mut nfcapd = Nfcapd(
        node.ns
            .command("nfcapd")
            .args([
                "-w",
                dir.to_str().unwrap(),
                "-b",
                "127.0.0.1",
                "-p",
                "2055",
                "-t",
                "3600",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nfcapd (cargo xtask setup installs nfdump)"),
    );
    // The templates go in hubcap's first message: nfcapd must listen by then.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = node.ns.command("ss").args(["-uln"]).output().unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:2055") {
            break;
        }
        assert!(Instant::now() < deadline, "nfcapd does not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let agent = node.capture(&["--ipfix-collector", "udp://127.0.0.1:2055"]);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    tcp_transfer(&p1.ns, &p2.ns, (p2.ipv4, 5001).into(), 300_000, 30_000);
    udp_echo(&p2.ns, &p1.ns, (p1.ipv4, 5353).into(), 20, 400);
    tcp_transfer(&p1.ns, &p2.ns, (p2.ipv6, 6001).into(), 100_000, 10_000);
    udp_echo(&p1.ns, &p2.ns, (p2.ipv6, 6053).into(), 10, 200);
    ping(&p1.ns, &p2.ipv4.to_string(), 2);
    let counters = node.settled_pod_counters();
    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exit: {:?}", finished.status);
    let records = output::parse(&finished.stdout).records;
    nfcapd.stop();

    // -N: plain numbers, never "1.2 M".
    let out = Command::new("nfdump")
        .args([
            "-R",
            dir.to_str().unwrap(),
            "-q",
            "-N",
            "-o",
            "fmt:%in %out %pkt %byt %pr %sa",
        ])
        .output()
        .expect("nfdump");
    assert!(out.status.success(), "nfdump: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let flows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 6)
        .collect();
    assert_eq!(flows.len(), records.len(), "every record hubcap wrote, once:\n{text}");
    assert!(
        flows.iter().any(|f| f[5].contains(':')) && flows.iter().any(|f| f[5].contains('.')),
        "IPv4 and IPv6"
    );
    let mut sums = Sums::new();
    for f in &flows {
        let number = |i: usize| f[i].parse::<u64>().unwrap();
        add(&mut sums, number(0), number(1), (number(2), number(3)));
    }
    assert_matches_counters(&node, &sums, &counters);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A collector over TCP: python3-ipfix reads the stream hubcap sends and
/// prints each record's elements as JSON.
const TCP_COLLECTOR: &str = r#"
import json, socket, sys
import ipfix.ie, ipfix.reader
ipfix.ie.use_iana_default()
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(1)
print("listening", flush=True)
connection, _ = server.accept()
for record in ipfix.reader.from_stream(connection.makefile("rb")).namedict_iterator():
    print(json.dumps({k: v if isinstance(v, int) else str(v) for k, v in record.items()}), flush=True)
"#;

#[test]
fn a_tcp_collector_reads_every_flow_with_the_interface_counters() {
    use std::io::{BufRead, BufReader};
    require_root();
    let node = Node::new(2);
    let mut collector = node
        .ns
        .command("/usr/bin/python3")
        .args(["-c", TCP_COLLECTOR, "4739"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with python3-ipfix (cargo xtask setup installs it)");
    let mut lines = BufReader::new(collector.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "listening");
    let agent = node.capture(&["--ipfix-collector", "tcp://127.0.0.1:4739"]);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    tcp_transfer(&p1.ns, &p2.ns, (p2.ipv4, 5001).into(), 200_000, 20_000);
    udp_echo(&p2.ns, &p1.ns, (p1.ipv6, 6053).into(), 10, 200);
    let counters = node.settled_pod_counters();
    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exit: {:?}", finished.status);
    let records = output::parse(&finished.stdout).records;
    // hubcap closed the connection: the collector has read everything.
    let flows: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    let _ = collector.wait();
    assert_eq!(flows.len(), records.len(), "every record hubcap wrote, once");
    assert!(
        flows.iter().any(|f| f.get("sourceIPv6Address").is_some())
            && flows.iter().any(|f| f.get("sourceIPv4Address").is_some())
    );
    let mut sums = Sums::new();
    for f in &flows {
        let number = |element: &str| f[element].as_u64().unwrap();
        add(
            &mut sums,
            number("ingressInterface"),
            number("egressInterface"),
            (number("packetDeltaCount"), number("octetDeltaCount")),
        );
    }
    assert_matches_counters(&node, &sums, &counters);
}
