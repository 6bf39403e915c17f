//! Bad days under the flow log file. A full disk: hubcap goes on capturing
//! (metrics keep counting), counts the records it could not write, and
//! once there is room again writes a `lost_events` line with their number
//! and resumes; the file never holds half a line. The file moved away
//! (logrotate) or its directory removed: the next records go to a new file
//! at the same path, none lost. A path that cannot be opened: records
//! counted as lost until it can. hubcap exits 0 at the end of each.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use hubcap_tests::{
    agent::{Finished, metric},
    output, require_root,
    scratch::Tmpfs,
    topology::{Counters, Node},
    traffic::udp_echo,
};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9965";

fn lost_metric(node: &Node) -> u64 {
    metric(&node.ns, METRICS, "hubcap_output_records_lost_total{sink=\"file\"}")
}

#[test]
fn a_full_disk_loses_counted_records_and_writing_resumes() {
    require_root();
    let node = Node::new(2);
    let tmpfs = Tmpfs::mount(&node.id, "128k");
    let dir = tmpfs.path();
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

/// Runs traffic (two UDP exchanges per phase, on ports of the phase's own)
/// with hubcap writing to `log`, calling `fault` between the phases; returns
/// the stopped agent's output and the veths' counters.
fn two_phases(node: &Node, log: &Path, fault: impl FnOnce()) -> (Finished, Vec<(String, Counters)>) {
    let mut args = vec!["--output", log.to_str().unwrap()];
    args.extend(Node::METRICS_AND_QUICK_ENDS);
    let agent = node.capture(&args);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    for port in [21000, 21001] {
        udp_echo(&p1.ns, &p2.ns, (p2.ipv4, port).into(), 3, 100);
    }
    node.wait_for_flows_to_end();
    fault();
    for port in [22000, 22001] {
        udp_echo(&p1.ns, &p2.ns, (p2.ipv4, port).into(), 3, 100);
    }
    node.wait_for_flows_to_end();
    let counters = node.settled_pod_counters();
    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exits cleanly: {:?}", finished.status);
    (finished, counters)
}

fn records_in(paths: &[&Path]) -> Vec<output::Record> {
    paths
        .iter()
        .flat_map(|p| output::parse(&std::fs::read_to_string(p).unwrap_or_default()).records)
        .collect()
}

fn assert_exact(records: &[output::Record], counters: &[(String, Counters)]) {
    let veths: Vec<(&str, Counters)> = counters.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    output::assert_records_match_counters(records, &veths);
}

#[test]
fn a_log_moved_away_by_logrotate_is_followed_by_a_new_one_losing_nothing() {
    require_root();
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-logrotate-{}", node.id));
    let _cleanup = RemoveDir(dir.clone());
    let (log, rotated) = (dir.join("events.log"), dir.join("events.log.1"));
    let (finished, counters) = two_phases(&node, &log, || std::fs::rename(&log, &rotated).unwrap());
    let records = records_in(&[&rotated, &log]);
    // The first phase's flows ended before the move: the second phase's
    // records all went to the new file, none to the moved one.
    let second_phase = |r: &output::Record| [r.src_port, r.dst_port].iter().any(|p| (22000..22002).contains(p));
    let (moved, new) = (records_in(&[&rotated]), records_in(&[&log]));
    assert!(
        !moved.is_empty() && !moved.iter().any(second_phase),
        "the first phase, whole, in the moved file"
    );
    assert!(
        !new.is_empty() && new.iter().all(second_phase),
        "the second phase, whole, in the new file"
    );
    assert_exact(&records, &counters);
    assert!(finished.stderr.iter().any(|l| l.contains("moved or removed")));
}

#[test]
fn a_removed_directory_is_made_again_losing_nothing() {
    require_root();
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-rmdir-{}", node.id));
    let moved = std::env::temp_dir().join(format!("hubcap-rmdir-{}.old", node.id));
    let (_cleanup, _cleanup_moved) = (RemoveDir(dir.clone()), RemoveDir(moved.clone()));
    let log = dir.join("flows/events.log");
    // Moving the directory (not deleting it) keeps what was written before,
    // so the test can count every record; hubcap sees the same thing: no
    // file at its path.
    let (_, counters) = two_phases(&node, &log, || std::fs::rename(&dir, &moved).unwrap());
    assert!(log.exists(), "the directory and file were made again");
    assert_exact(&records_in(&[&moved.join("flows/events.log"), &log]), &counters);
}

#[test]
fn a_path_that_cannot_be_opened_loses_counted_records_until_it_can() {
    require_root();
    let node = Node::new(2);
    let tmpfs = Tmpfs::mount(&node.id, "1m");
    let (log, rotated) = (tmpfs.path().join("events.log"), tmpfs.path().join("events.log.1"));
    let chattr = |flag: &str| {
        let status = Command::new("chattr").arg(flag).arg(&log).status().unwrap();
        assert!(status.success(), "chattr {flag}");
    };
    let mut lost_while_blocked = 0;
    let mut blocked_phase = (Vec::new(), Vec::new());
    let (finished, counters) = two_phases(&node, &log, || {
        // Moved away, and an immutable file in its place: root cannot open
        // it for writing either.
        std::fs::rename(&log, &rotated).unwrap();
        std::fs::write(&log, b"").unwrap();
        chattr("+i");
        blocked_phase.0 = node.settled_pod_counters();
        for port in [23000, 23001] {
            udp_echo(
                &node.pods[0].ns,
                &node.pods[1].ns,
                (node.pods[1].ipv4, port).into(),
                3,
                100,
            );
        }
        node.wait_for_flows_to_end();
        blocked_phase.1 = node.settled_pod_counters();
        lost_while_blocked = lost_metric(&node);
        chattr("-i");
    });
    assert!(lost_while_blocked > 0, "records that could not be written are counted");
    let text = std::fs::read_to_string(&log).unwrap();
    let reported: u64 = output::parse(&text)
        .lost_events
        .iter()
        .filter_map(|l| l["num_events_lost"].as_str()?.parse::<u64>().ok())
        .sum();
    assert_eq!(reported, lost_while_blocked, "the loss is reported in the new file");
    let records = records_in(&[&rotated, &log]);
    assert!(
        records
            .iter()
            .all(|r| !(23000..23002).contains(&r.dst_port) && !(23000..23002).contains(&r.src_port))
    );
    assert!(records.iter().any(|r| r.dst_port == 22000), "writing resumed");
    assert!(finished.stderr.iter().any(|l| l.contains("cannot write the flow log")));
    // The blocked phase's packets are in no record; every other packet is.
    let unblocked: Vec<(String, Counters)> = counters
        .iter()
        .zip(blocked_phase.0.iter().zip(&blocked_phase.1))
        .map(|((name, total), ((_, before), (_, after)))| {
            let c = Counters {
                rx_packets: total.rx_packets - (after.rx_packets - before.rx_packets),
                rx_bytes: total.rx_bytes - (after.rx_bytes - before.rx_bytes),
                tx_packets: total.tx_packets - (after.tx_packets - before.tx_packets),
                tx_bytes: total.tx_bytes - (after.tx_bytes - before.tx_bytes),
            };
            (name.clone(), c)
        })
        .collect();
    assert_exact(&records, &unblocked);
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
