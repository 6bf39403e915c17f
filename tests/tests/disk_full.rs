//! A full disk under the flow log: hubcap goes on capturing (metrics keep
//! counting), counts the records it could not write, and once there is
//! room again writes a `lost_events` line with their number and resumes;
//! the file never holds half a line. It exits 0 at the end.

use std::process::Command;

use hubcap_tests::{agent::scrape_metrics, output, require_root, topology::Node, traffic::udp_echo};
use serde_json::Value;

/// A small tmpfs of the test's own, unmounted even when the test fails.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lost_metric(node: &Node) -> u64 {
    let text = scrape_metrics(&node.ns, "127.0.0.1:9965");
    text.lines()
        .find(|l| l.starts_with("hubcap_output_records_lost_total{sink=\"file\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .expect("hubcap_output_records_lost_total")
}

#[test]
fn a_full_disk_loses_counted_records_and_writing_resumes() {
    require_root();
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-diskfull-{}", node.id));
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=128k", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    let _tmpfs = Tmpfs(dir.clone());
    let log = dir.join("events.log");
    // Ballast that leaves the log about 32 KB, removed later to make room.
    let ballast = dir.join("ballast");
    std::fs::write(&ballast, vec![0u8; 96 * 1024]).unwrap();
    let mut args = vec!["--output", log.to_str().unwrap()];
    args.extend(Node::METRICS_AND_QUICK_ENDS);
    let agent = node.capture(&args);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    // About 8 records of 900 bytes an exchange: far more than 32 KB.
    for i in 0..40 {
        udp_echo(&p1.ns, &p2.ns, (p2.ipv4, 20000 + i).into(), 1, 100);
    }
    node.wait_for_flows_to_end();
    let lost = lost_metric(&node);
    assert!(lost > 0, "records lost on the full disk are counted");
    // Room again.
    std::fs::remove_file(&ballast).unwrap();
    for i in 0..3 {
        udp_echo(&p1.ns, &p2.ns, (p2.ipv4, 30000 + i).into(), 1, 100);
    }
    node.wait_for_flows_to_end();
    let lost_at_end = lost_metric(&node);
    let finished = agent.stop();
    assert!(
        finished.status.success(),
        "hubcap survives a full disk: {:?}",
        finished.status
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a whole line: {e}: {l}")))
        .collect();
    let reported: u64 = lines
        .iter()
        .filter_map(|l| l["lost_events"]["num_events_lost"].as_str()?.parse::<u64>().ok())
        .sum();
    assert_eq!(reported, lost_at_end, "every lost record reported in lost_events");
    let records = output::parse(&text).records;
    assert!(
        records.iter().any(|r| (30000..30003).contains(&r.dst_port)),
        "writing resumed"
    );
}
