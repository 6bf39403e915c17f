//! tcx and clsact attachment side by side: two hubcap instances on the
//! same interfaces, one per mode. Each sees every packet (so each lets
//! packets continue to the next program), each matches the interface
//! counters exactly, and nothing is left attached after they exit.

use std::{net::SocketAddr, time::Duration};

use hubcap_tests::{
    agent::Agent,
    output, require_root,
    topology::Node,
    traffic::{ping, tcp_transfer, udp_echo},
};

#[test]
fn tcx_and_tc_instances_coexist_and_both_count_exactly() {
    require_root();
    let node = Node::new(2);
    let pattern = node.pattern();
    let tcx = Agent::start(&node.ns, &["--interface", &pattern, "--attach-mode", "tcx"]);
    tcx.wait_for_logs("mode=Tcx", 2, Duration::from_secs(5));
    let tc = Agent::start(&node.ns, &["--interface", &pattern, "--attach-mode", "tc"]);
    tc.wait_for_logs("mode=Tc", 2, Duration::from_secs(5));
    node.up();

    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    tcp_transfer(&p1.ns, &p2.ns, SocketAddr::new(p2.ipv4.into(), 5001), 200_000, 50_000);
    udp_echo(&p2.ns, &p1.ns, SocketAddr::new(p1.ipv6.into(), 5002), 10, 100);
    ping(&p1.ns, &p2.ipv4.to_string(), 2);

    let counters: Vec<_> = node
        .pods
        .iter()
        .map(|p| (p.host_if.clone(), node.settled_counters(&p.host_if)))
        .collect();
    for agent in [tc, tcx] {
        let finished = agent.stop();
        assert!(finished.status.success());
        let sums = output::sums(&output::parse(&finished.stdout).records);
        for (ifname, c) in &counters {
            assert_eq!(
                sums[&(ifname.clone(), "FROM_ENDPOINT".to_owned())],
                (c.rx_packets, c.rx_bytes),
                "{ifname} rx"
            );
            assert_eq!(
                sums[&(ifname.clone(), "TO_ENDPOINT".to_owned())],
                (c.tx_packets, c.tx_bytes),
                "{ifname} tx"
            );
        }
    }
    // Detached on exit: no tc filter of ours is left behind.
    for pod in &node.pods {
        for hook in ["ingress", "egress"] {
            let out = node
                .ns
                .command("tc")
                .args(["filter", "show", "dev", &pod.host_if, hook])
                .output()
                .unwrap();
            assert!(
                out.stdout.is_empty(),
                "{hook} filters left on {}: {}",
                pod.host_if,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
