//! Two flow logs from one `--flow-logs-config` file, next to the full log
//! of the same run: each file holds exactly the records its filters select,
//! and a masked log only the masked fields.

use std::collections::BTreeSet;

use hubcap_tests::{
    output::{self, Record},
    require_root,
    topology::Node,
    traffic::{ping, tcp_transfer, udp_echo},
};
use serde_json::Value;

/// The flows of one log file, as raw JSON (masked lines lack the fields
/// `output::parse` reads).
fn flows(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter_map(|v| v.get("flow").cloned())
        .collect()
}

fn uuid_set<'a>(uuids: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    uuids.into_iter().map(str::to_owned).collect()
}

#[test]
fn each_log_holds_exactly_what_its_filters_select() {
    require_root();
    let (node, dir, _cleanup) = node_and_dir();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let (udp_log, to_p2_log) = (dir.join("udp.log"), dir.join("to-pod2.log"));
    let config = dir.join("flowlogs.yaml");
    std::fs::write(
        &config,
        format!(
            "flowLogs:
  - name: udp
    filePath: {udp}
    includeFilters:
      - protocol: [udp]
    fieldMask: [uuid, IP, l4, extensions]
  - name: to-pod2
    filePath: {to_p2}
    includeFilters:
      - destination_ip: [\"{p2}\"]
    excludeFilters:
      - protocol: [icmpv4]
",
            udp = udp_log.display(),
            to_p2 = to_p2_log.display(),
            p2 = p2.ipv4,
        ),
    )
    .unwrap();
    let agent = node.capture(&["--flow-logs-config", config.to_str().unwrap()]);
    node.up();
    tcp_transfer(&p1.ns, &p2.ns, (p2.ipv4, 5001).into(), 100_000, 20_000);
    udp_echo(&p1.ns, &p2.ns, (p2.ipv4, 5353).into(), 20, 200);
    udp_echo(&p2.ns, &p1.ns, (p1.ipv4, 5354).into(), 10, 100);
    ping(&p1.ns, &p2.ipv4.to_string(), 2);
    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exit: {:?}", finished.status);
    let full = output::parse(&finished.stdout).records;
    let select = |keep: &dyn Fn(&Record) -> bool| uuid_set(full.iter().filter(|r| keep(r)).map(uuid_of));

    // The UDP log: UDP records only, with the masked fields and no others.
    let udp = flows(&udp_log);
    let expected = select(&|r| r.protocol == "UDP");
    assert!(!expected.is_empty(), "the run had UDP flows");
    assert_eq!(uuid_set(udp.iter().map(|f| f["uuid"].as_str().unwrap())), expected);
    for f in &udp {
        let fields: BTreeSet<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(
            fields.is_subset(&BTreeSet::from(["uuid", "IP", "l4", "extensions"])),
            "masked fields only: {f}"
        );
        assert!(!f["extensions"]["value"]["packets"].is_null(), "counts kept: {f}");
    }

    // The log of flows to pod 2 without ICMP: whole records.
    let to_p2 = flows(&to_p2_log);
    let p2_ip = p2.ipv4.to_string();
    let expected = select(&|r| r.dst == p2_ip && !r.protocol.starts_with("ICMP"));
    assert!(!expected.is_empty(), "the run had flows to pod 2");
    assert_eq!(uuid_set(to_p2.iter().map(|f| f["uuid"].as_str().unwrap())), expected);
    assert!(
        to_p2
            .iter()
            .all(|f| f["verdict"] == "FORWARDED" && f["node_name"].is_string())
    );
}

fn uuid_of(r: &Record) -> &str {
    r.json["uuid"].as_str().expect("uuid")
}

/// A test node, and a directory of the test's own for its config and
/// logs, removed when the guard drops.
fn node_and_dir() -> (Node, std::path::PathBuf, Cleanup) {
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-flowlogs-{}", node.id));
    std::fs::create_dir_all(&dir).unwrap();
    (node, dir.clone(), Cleanup(dir))
}

/// Removes the test's files even when it fails.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn editing_the_config_applies_it_and_unchanged_logs_lose_nothing() {
    require_root();
    let (node, dir, _cleanup) = node_and_dir();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let file = |name: &str| dir.join(format!("{name}.log"));
    let log = |name: &str, protocol: &str| {
        format!(
            "  - name: {name}\n    filePath: {}\n    includeFilters:\n      - protocol: [{protocol}]\n",
            file(name).display()
        )
    };
    let config = dir.join("flowlogs.yaml");
    let before = format!(
        "flowLogs:\n{}{}{}",
        log("kept", "udp"),
        log("changed", "tcp"),
        log("removed", "icmpv4")
    );
    std::fs::write(&config, before).unwrap();
    let agent = node.capture(&["--flow-logs-config", config.to_str().unwrap()]);
    node.up();
    let phase = |port: u16| {
        udp_echo(&p1.ns, &p2.ns, (p2.ipv4, port).into(), 20, 200);
        tcp_transfer(&p1.ns, &p2.ns, (p2.ipv4, port + 1).into(), 50_000, 5_000);
        ping(&p1.ns, &p2.ipv4.to_string(), 2);
    };
    phase(5000);
    // The same file paths; "changed" now takes UDP, "added" is new.
    let after = format!(
        "flowLogs:\n{}{}{}",
        log("kept", "udp"),
        log("changed", "udp"),
        log("added", "tcp")
    );
    std::fs::write(&config, after).unwrap();
    agent.wait_for_log("flow logs reloaded", std::time::Duration::from_secs(5));
    phase(6000);
    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exit: {:?}", finished.status);
    let full = output::parse(&finished.stdout).records;
    let set = |keep: &dyn Fn(&Record) -> bool| uuid_set(full.iter().filter(|r| keep(r)).map(uuid_of));
    let in_file = |name: &str| uuid_set(flows(&file(name)).iter().map(|f| f["uuid"].as_str().unwrap()));
    let phase2 = |r: &Record| [r.src_port, r.dst_port].iter().any(|p| (6000..6002).contains(p));

    // Unchanged across the reload: every UDP record of the run.
    assert_eq!(in_file("kept"), set(&|r| r.protocol == "UDP"));
    // Added: TCP from the reload on, so every record of the second phase's
    // TCP flow and nothing but TCP.
    let added = in_file("added");
    assert!(added.is_subset(&set(&|r| r.protocol == "TCP")));
    assert!(set(&|r| r.protocol == "TCP" && phase2(r)).is_subset(&added));
    // Changed: TCP before, UDP after; none of the second phase's TCP.
    let changed = in_file("changed");
    assert!(changed.is_subset(&set(&|r| r.protocol == "TCP" || r.protocol == "UDP")));
    assert!(set(&|r| r.protocol == "UDP" && phase2(r)).is_subset(&changed));
    assert!(changed.is_disjoint(&set(&|r| r.protocol == "TCP" && phase2(r))));
    // Removed: the first phase's ICMP only.
    let removed = in_file("removed");
    let icmp = set(&|r| r.protocol == "ICMPv4");
    assert!(!removed.is_empty() && removed.is_subset(&icmp) && removed.len() < icmp.len());
}

#[test]
fn a_log_past_its_end_time_stops_and_the_others_go_on() {
    require_root();
    let (node, dir, _cleanup) = node_and_dir();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let (ending, open) = (dir.join("ending.log"), dir.join("open.log"));
    let end = std::time::SystemTime::now() + std::time::Duration::from_secs(3);
    let end_text = humantime::format_rfc3339_nanos(end).to_string();
    let config = dir.join("flowlogs.yaml");
    std::fs::write(
        &config,
        format!(
            "flowLogs:\n  - name: ending\n    filePath: {}\n    end: \"{end_text}\"\n  - name: open\n    filePath: {}\n",
            ending.display(),
            open.display()
        ),
    )
    .unwrap();
    let agent = node.capture(&["--flow-logs-config", config.to_str().unwrap()]);
    node.up();
    udp_echo(&p1.ns, &p2.ns, (p2.ipv4, 5353).into(), 10, 100);
    while std::time::SystemTime::now() < end + std::time::Duration::from_millis(500) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    udp_echo(&p1.ns, &p2.ns, (p2.ipv4, 6353).into(), 10, 100);
    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exit: {:?}", finished.status);
    let full = output::parse(&finished.stdout).records;
    let end_ns = end.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
    let uuids_of = |path: &std::path::Path| uuid_set(flows(path).iter().map(|f| f["uuid"].as_str().unwrap()));
    // Written before the end: records of earlier times only, and every
    // start of a flow well before it (written at once).
    let ending_uuids = uuids_of(&ending);
    let before_end = uuid_set(full.iter().filter(|r| output::time_ns(r) <= end_ns).map(uuid_of));
    let early_starts = uuid_set(
        full.iter()
            .filter(|r| r.state == "B" && output::time_ns(r) <= end_ns - 1_000_000_000)
            .map(uuid_of),
    );
    assert!(before_end.len() < full.len(), "records after the end too");
    assert!(!early_starts.is_empty());
    assert!(ending_uuids.is_subset(&before_end), "nothing after the end");
    assert!(
        early_starts.is_subset(&ending_uuids),
        "everything written before the end"
    );
    assert_eq!(
        uuids_of(&open),
        uuid_set(full.iter().map(uuid_of)),
        "the other log goes on"
    );
}
