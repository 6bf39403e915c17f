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
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-flowlogs-{}", node.id));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
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

/// Removes the test's files even when it fails.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
