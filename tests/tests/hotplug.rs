//! Interfaces that appear after start and match are attached within a
//! second; removed ones are forgotten, and their flows still end properly.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hubcap_tests::{output, require_root, topology::Node, traffic::udp_echo};

#[test]
fn interfaces_come_and_go() {
    require_root();
    let mut node = Node::new(1);
    let agent = node.capture(&[]);

    // A second pod appears while hubcap runs.
    let added = Instant::now();
    node.add_pod_now(2);
    let line = agent.wait_for_log(
        &format!("interface=\"{}\"", node.pods[1].host_if),
        Duration::from_secs(3),
    );
    let took = added.elapsed();
    assert!(line.contains("attached"), "{line}");
    assert!(took < Duration::from_millis(1500), "attached after {took:?}");
    node.up();
    let port = udp_echo(
        &node.pods[0].ns,
        &node.pods[1].ns,
        SocketAddr::new(node.pods[1].ipv4.into(), 9000),
        5,
        100,
    );

    // It goes away again: hubcap forgets it and keeps running.
    let gone = node.pods.pop().unwrap();
    let gone_if = gone.host_if.clone();
    drop(gone);
    agent.wait_for_log(&format!("detached interface=\"{gone_if}\""), Duration::from_secs(3));

    let finished = agent.stop();
    assert!(finished.status.success());
    let records = output::parse(&finished.stdout).records;
    let on_gone: Vec<_> = records
        .iter()
        .filter(|r| r.interface == gone_if && r.protocol == "UDP" && r.dst_port == u64::from(port))
        .collect();
    assert!(!on_gone.is_empty(), "flows of the removed interface are reported");
    assert_eq!(on_gone.iter().map(|r| r.packets).sum::<u64>(), 5);
}
