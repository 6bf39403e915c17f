//! Two flow logs from one `--flow-logs-config` file, next to the full log
//! of the same run: each file holds exactly the records its filters select,
//! and a masked log only the masked fields.

use std::collections::BTreeSet;

use hubcap_tests::{
    output::{self, Record},
    require_root,
    topology::Node,
    traffic::{ping, tcp_transfer, udp_echo},
    upstream,
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

/// The real `hubble` CLI reads `path` back and writes every line as it
/// was: the log is Hubble JSON, field for field.
fn hubble_reads_back(node: &Node, path: &std::path::Path) {
    let out = upstream::hubble(
        &node.ns,
        &[
            "observe",
            "--input-file",
            path.to_str().unwrap(),
            "--all",
            "-o",
            "jsonpb",
        ],
    );
    let theirs: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let text = std::fs::read_to_string(path).unwrap();
    let ours: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(theirs.len(), ours.len(), "hubble read every line of {}", path.display());
    for (t, o) in theirs.iter().zip(&ours) {
        assert_eq!(t, o, "hubble wrote the line back differently");
    }
}

#[test]
fn an_aggregated_log_has_fewer_lines_and_the_same_sums_per_interface() {
    require_root();
    let (node, dir, _cleanup) = node_and_dir();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let aggregated = dir.join("aggregated.log");
    let config = dir.join("flowlogs.yaml");
    // Source ports and 5-tuples left out: one line per address pair,
    // interface, observation point, direction and verdict per window.
    std::fs::write(
        &config,
        format!(
            "flowLogs:
  - name: by-pair
    filePath: {}
    aggregationOptions:
      windowInterval: 1s
      aggregationFields: [IP, interface, trace_observation_point, traffic_direction, verdict]
",
            aggregated.display()
        ),
    )
    .unwrap();
    let agent = node.capture(&["--flow-logs-config", config.to_str().unwrap()]);
    node.up();
    // Many short connections: each its own source port.
    // A server port of its own for each exchange: a socket just closed may
    // live on a moment in a process another test forks.
    for i in 0..30 {
        tcp_transfer(&p2.ns, &p1.ns, (p1.ipv4, 7000).into(), 100, 10);
        udp_echo(&p1.ns, &p2.ns, (p2.ipv4, 20000 + i).into(), 2, 100);
    }
    let counters: Vec<_> = node
        .pods
        .iter()
        .map(|p| (p.host_if.as_str(), node.settled_counters(&p.host_if)))
        .collect();
    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exit: {:?}", finished.status);
    let full = output::parse(&finished.stdout).records;
    output::assert_records_match_counters(&full, &counters);

    let lines = flows(&aggregated);
    assert!(
        lines.len() * 10 < full.len(),
        "{} aggregated lines for {} records",
        lines.len(),
        full.len()
    );
    // Packets and bytes per interface and observation point: the same sums
    // as the full log's, which match the interface counters.
    let mut sums = std::collections::BTreeMap::<(String, String), (u64, u64)>::new();
    let mut merged = 0;
    for f in &lines {
        let key = (
            f["interface"]["name"].as_str().unwrap_or_default().to_owned(),
            f["trace_observation_point"].as_str().unwrap_or_default().to_owned(),
        );
        let counts = &f["extensions"]["value"];
        let sum = sums.entry(key).or_default();
        sum.0 += counts["packets"].as_u64().unwrap();
        sum.1 += counts["bytes"].as_u64().unwrap();
        assert!(f["l4"].is_null() && f["uuid"].is_null(), "only the chosen fields: {f}");
        let a = &f["aggregate"];
        merged += [
            "ingress_flow_count",
            "egress_flow_count",
            "unknown_direction_flow_count",
        ]
        .iter()
        .map(|k| a[k].as_u64().unwrap_or(0))
        .sum::<u64>();
    }
    assert_eq!(sums, output::sums(&full));
    assert_eq!(merged as usize, full.len(), "every record merged once");
    hubble_reads_back(&node, &aggregated);
}

#[test]
fn rotated_files_are_gzipped_hubble_json() {
    require_root();
    let (node, dir, _cleanup) = node_and_dir();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let log = dir.join("events.log");
    let config = dir.join("flowlogs.yaml");
    std::fs::write(
        &config,
        format!(
            "flowLogs:\n  - name: all\n    filePath: {}\n    fileMaxSizeMb: 1\n    fileMaxBackups: 5\n    fileCompress: true\n",
            log.display()
        ),
    )
    .unwrap();
    let agent = node.capture(&["--flow-logs-config", config.to_str().unwrap()]);
    node.up();
    // About 900 bytes a record, 4 records a UDP exchange (a B for each
    // direction on each veth; the empty ends are no records): 2.9 MB.
    for i in 0..800 {
        udp_echo(&p1.ns, &p2.ns, (p2.ipv4, 20000 + i).into(), 1, 100);
    }
    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exit: {:?}", finished.status);
    let full = output::parse(&finished.stdout).records;

    // gzip itself judges the backups; each holds Hubble JSON lines.
    let mut uuids = uuid_set(flows(&log).iter().map(|f| f["uuid"].as_str().unwrap()));
    let mut backups = 0;
    for n in 1..=5 {
        let gz = dir.join(format!("events.log.{n}.gz"));
        if !gz.exists() {
            continue;
        }
        backups += 1;
        assert!(
            !dir.join(format!("events.log.{n}")).exists(),
            "compressed, not kept twice"
        );
        let out = std::process::Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
        assert!(out.status.success(), "gzip -dc {}", gz.display());
        let plain = dir.join(format!("backup{n}.log"));
        std::fs::write(&plain, &out.stdout).unwrap();
        assert!(out.stdout.len() <= 1024 * 1024, "a backup holds at most 1 MB");
        hubble_reads_back(&node, &plain);
        uuids.extend(flows(&plain).iter().map(|f| f["uuid"].as_str().unwrap().to_owned()));
    }
    assert!(backups >= 2, "{backups} rotated files");
    assert_eq!(uuids, uuid_set(full.iter().map(uuid_of)), "the files hold every record");
}
