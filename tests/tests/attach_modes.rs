//! tcx and clsact attachment side by side: two hubcap instances on the
//! same interfaces, one per mode. Each sees every packet (so each lets
//! packets continue to the next program), each matches the interface
//! counters exactly, and nothing is left attached after they exit.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use hubcap_tests::{
    agent::Agent,
    output, require_root,
    topology::{Counters, Node},
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

/// Our clsact filters on `dev` as bpftool sees them in `node`: (kind,
/// name, program id), e.g. ("clsact/ingress", "hubcap_ingress", 812).
/// (This bpftool predates tcx and lists no tcx links.)
fn our_filters(node: &Node, dev: &str) -> Vec<(String, String, u64)> {
    let out = node
        .ns
        .command("bpftool")
        .args(["net", "show", "dev", dev, "--json"])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    shown
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|section| section["tc"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("hubcap_")))
        .map(|p| {
            (
                p["kind"].as_str().unwrap_or_default().to_owned(),
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["id"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Ids of the loaded capture programs (tc ingress and egress) of every
/// hubcap on the machine.
fn capture_program_ids() -> BTreeSet<u64> {
    let out = std::process::Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool");
    let programs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    programs
        .iter()
        .filter(|p| matches!(p["name"].as_str(), Some("hubcap_ingress" | "hubcap_egress")))
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// Stops `agent` and checks that its records of `dev` hold exactly what
/// the veth's counters counted.
fn stop_and_check_counts(agent: Agent, dev: &str, counters: Counters) {
    let finished = agent.stop();
    assert!(finished.status.success());
    let sums = output::sums(&output::parse(&finished.stdout).records);
    let point = |name: &str| sums[&(dev.to_owned(), name.to_owned())];
    assert_eq!(
        point("FROM_ENDPOINT"),
        (counters.rx_packets, counters.rx_bytes),
        "{dev} rx"
    );
    assert_eq!(
        point("TO_ENDPOINT"),
        (counters.tx_packets, counters.tx_bytes),
        "{dev} tx"
    );
}

/// `kill -9` leaves whatever the kernel does not clean up by itself: in tc
/// mode the clsact filters (and so the programs), in every mode the
/// Observer API's socket file. The next hubcap must remove them, not run
/// beside them or fail to bind, count exactly, and leave nothing when it
/// stops.
fn restart_after_kill_9(mode: &str) {
    require_root();
    let node = Node::new(1);
    let pattern = node.pattern();
    let dev = node.pods[0].host_if.clone();
    // One socket path for both runs: the killed run leaves its socket file.
    let socket = std::env::temp_dir().join(format!("hubcap-kill9-{}.sock", node.id));
    let socket = socket.to_str().unwrap();
    let args = [
        "--interface",
        pattern.as_str(),
        "--attach-mode",
        mode,
        "--grpc-socket",
        socket,
    ];

    let loaded_before = capture_program_ids();
    let killed = Agent::start(&node.ns, &args);
    let killed_programs: BTreeSet<u64> = capture_program_ids().difference(&loaded_before).copied().collect();
    assert_eq!(killed_programs.len(), 2, "ingress and egress loaded");
    drop(killed); // SIGKILL, then reaped

    let left = capture_program_ids().intersection(&killed_programs).count();
    assert!(std::path::Path::new(socket).exists(), "a killed run leaves its socket");
    let restarted = Agent::start(&node.ns, &args);
    // The stale socket was replaced: the new run serves on it.
    let status = hubcap_tests::upstream::hubble(&node.ns, &["status", "--server", &format!("unix://{socket}")]);
    assert!(status.contains("Healthcheck (via"), "{status}");
    if mode == "tc" {
        assert_eq!(left, 2, "clsact filters (and their programs) outlive a killed process");
        restarted.wait_for_logs("removed a filter left attached", 2, Duration::from_secs(1));
        let running = our_filters(&node, &dev);
        assert_eq!(running.len(), 2, "exactly one filter per hook: {running:?}");
    } else {
        assert_eq!(left, 0, "tcx links (and their programs) die with their process");
    }
    assert!(
        capture_program_ids().is_disjoint(&killed_programs),
        "nothing of the killed run is left once the next one runs"
    );

    node.up();
    let pod = &node.pods[0];
    ping(&pod.ns, &node.bridge_v4().to_string(), 3);
    let counters = node.settled_counters(&dev);
    stop_and_check_counts(restarted, &dev, counters);
    assert!(our_filters(&node, &dev).is_empty(), "no filter left after a clean stop");
    assert!(
        !std::path::Path::new(socket).exists(),
        "a clean stop removes its socket"
    );
}

#[test]
fn tc_mode_removes_the_filters_of_a_killed_run() {
    restart_after_kill_9("tc");
}

#[test]
fn tcx_mode_leaves_nothing_after_a_killed_run() {
    restart_after_kill_9("tcx");
}

/// Another hubcap in tc mode runs on the same interface (and so a process
/// named hubcap exists) while one is killed: the next run removes exactly
/// the killed run's filters, keeps the running one's, and both running
/// ones still count every packet.
#[test]
fn tc_mode_removes_a_killed_runs_filters_and_keeps_a_running_ones() {
    require_root();
    let node = Node::new(1);
    let pattern = node.pattern();
    let dev = node.pods[0].host_if.clone();
    let args = ["--interface", pattern.as_str(), "--attach-mode", "tc"];

    let before = capture_program_ids();
    let bystander = Agent::start(&node.ns, &args);
    let bystander_programs: BTreeSet<u64> = capture_program_ids().difference(&before).copied().collect();
    let killed = Agent::start(&node.ns, &args);
    let killed_programs: BTreeSet<u64> = capture_program_ids()
        .difference(&before)
        .filter(|id| !bystander_programs.contains(id))
        .copied()
        .collect();
    assert_eq!((bystander_programs.len(), killed_programs.len()), (2, 2));
    drop(killed); // SIGKILL: its filters stay
    assert_eq!(our_filters(&node, &dev).len(), 4, "the killed run's filters outlive it");

    let restarted = Agent::start(&node.ns, &args);
    restarted.wait_for_logs("removed a filter left attached", 2, Duration::from_secs(1));
    // The kernel frees a program once its last filter is gone (after an
    // RCU grace period).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let loaded = loop {
        let loaded = capture_program_ids();
        if loaded.is_disjoint(&killed_programs) || std::time::Instant::now() > deadline {
            break loaded;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        loaded.is_disjoint(&killed_programs),
        "the killed run's programs are gone"
    );
    assert!(loaded.is_superset(&bystander_programs), "the running one's are not");
    let filters: BTreeSet<u64> = our_filters(&node, &dev).into_iter().map(|(_, _, id)| id).collect();
    assert_eq!(filters.len(), 4, "two runs, two filters each");
    assert!(filters.is_superset(&bystander_programs));

    node.up();
    ping(&node.pods[0].ns, &node.bridge_v4().to_string(), 3);
    let counters = node.settled_counters(&dev);
    for agent in [restarted, bystander] {
        stop_and_check_counts(agent, &dev, counters);
    }
    assert!(our_filters(&node, &dev).is_empty(), "no filter left after clean stops");
}
