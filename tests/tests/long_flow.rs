//! A 10-second iperf3 TCP stream between two pods: a handful of records
//! per direction (B, periodic C, E), never one per packet, and byte sums
//! equal to the interface counters.

use std::{process::Stdio, time::Duration};

use hubcap_tests::{
    output::{self, check_lifecycle},
    require_root,
    topology::Node,
};

#[test]
fn ten_second_iperf3_stream_is_a_handful_of_records() {
    require_root();
    let node = Node::new(2);
    // The default report interval (5 s), as a user would run it.
    let agent = node.capture(&[]);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let server_ip = p2.ipv4.to_string();
    let mut server = p2
        .ns
        .command("iperf3")
        .args(["-s", "-1", "-B", &server_ip, "-p", "5201"])
        .stdout(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    let mut ok = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let out = p1
            .ns
            .command("iperf3")
            .args(["-c", &server_ip, "-p", "5201", "-t", "10", "-J"])
            .output()
            .expect("iperf3");
        if out.status.success() {
            ok = true;
            break;
        }
    }
    assert!(ok, "iperf3 client never ran");
    let _ = server.wait();

    let counters = node.settled_counters(&p1.host_if);
    let finished = agent.stop();
    assert!(finished.status.success());
    let out = output::parse(&finished.stdout);
    let records = &out.records;
    assert!(out.lost_events.is_empty());

    let sums = output::sums(records);
    let from = sums[&(p1.host_if.clone(), "FROM_ENDPOINT".to_owned())];
    let to = sums[&(p1.host_if.clone(), "TO_ENDPOINT".to_owned())];
    assert_eq!(from, (counters.rx_packets, counters.rx_bytes));
    assert_eq!(to, (counters.tx_packets, counters.tx_bytes));

    // The data connection is the one that moved the most bytes.
    let data = records
        .iter()
        .filter(|r| r.interface == p1.host_if && r.protocol == "TCP" && r.dst_port == 5201)
        .max_by_key(|r| r.bytes)
        .expect("iperf3 data flow");
    let client_port = data.src_port;
    let fwd: Vec<_> = records
        .iter()
        .filter(|r| r.interface == p1.host_if && r.src_port == client_port && r.dst_port == 5201)
        .collect();
    let rev: Vec<_> = records
        .iter()
        .filter(|r| r.interface == p1.host_if && r.src_port == 5201 && r.dst_port == client_port)
        .collect();
    let (packets, bytes, _) = check_lifecycle(&fwd, Some(false));
    check_lifecycle(&rev, Some(true));
    eprintln!(
        "iperf3 data flow: {} records forward, {} reverse, {packets} packets, {bytes} bytes",
        fwd.len(),
        rev.len()
    );
    // B, a C about every 5 s, E.
    for dir in [&fwd, &rev] {
        assert!(
            (3..=5).contains(&dir.len()),
            "{:?}",
            dir.iter().map(|r| &r.state).collect::<Vec<_>>()
        );
    }
    assert!(
        packets / fwd.len() as u64 > 1000,
        "aggregated: far more packets than records"
    );
}
