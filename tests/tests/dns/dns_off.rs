//! `--dns off`: the same DNS traffic, nothing handed over, every packet
//! still in its flow.

use std::{net::IpAddr, time::Duration};

use hubcap_tests::{dns, output, topology::Node};

pub fn dns_off_hands_nothing_over_and_counts_every_packet() {
    hubcap_tests::require_root();
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-dns-off-{}", node.id));
    std::fs::create_dir_all(&dir).unwrap();
    let (client, server) = (&node.pods[0], &node.pods[1]);
    let v4 = IpAddr::from(server.ipv4);
    let _dnsmasq = dns::dnsmasq(&server.ns, &[v4], &dir, "192.0.2.10 web.test\n", &[]);
    let log = dir.join("flows.json");
    let agent = node.capture(&["--dns", "off", "--output", log.to_str().unwrap()]);
    node.up();
    std::thread::sleep(Duration::from_millis(500));
    for qtype in ["A", "AAAA", "A"] {
        let dig = dns::dig(&client.ns, "web.test.", qtype, &[], v4);
        assert_eq!(dig.status, "NOERROR", "{}", dig.output);
    }
    let counters = node.settled_pod_counters();
    let finished = agent.stop();
    assert!(finished.status.success(), "{:?}", finished.stderr);
    let file = output::parse(&std::fs::read_to_string(&log).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(file.l7.is_empty(), "{:#?}", file.l7);
    let summary = finished
        .stderr
        .iter()
        .find(|l| l.contains("stopped "))
        .expect("stop summary");
    assert!(summary.contains(" dns_messages=0 "), "{summary}");
    let port_53 = file
        .records
        .iter()
        .filter(|r| r.dst_port == 53 || r.src_port == 53)
        .count();
    assert!(port_53 > 0, "the DNS packets' flows: {:#?}", file.records);
    let veths: Vec<_> = counters.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    output::assert_records_match_counters(&file.records, &veths);
}
