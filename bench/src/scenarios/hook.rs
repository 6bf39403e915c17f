//! Scenario 0: what the tc programs cost per packet, by the kernel's own
//! measure (`kernel.bpf_stats_enabled`): the trivial classifier against
//! hubcap, with one flow and with 1,000 flows (consecutive packets in
//! different flows, the worst case for caches). Host noise blurs pps; it
//! barely moves this figure.
//!
//! hubcap runs twice: with its default flow map (262,144 entries a family)
//! and with one of 4,096. The kernel's hash map has a bucket per entry, in
//! one vmalloc'ed array (4 MB by default, in 4 KB pages): 1,000 flows
//! spread over it cost a TLB and cache miss each that a small map does not.

use std::time::Duration;

use hubcap_tests::topology::Node;
use serde_json::Value;

use super::{Settings, median_figures, relative_spread};
use crate::{
    contender::{self, Kind},
    load::{Drain, SMALL_PAYLOAD, blast, ports, sinks},
    procfs,
    report::Report,
};

/// hubcap with a small flow map (see the module's comment).
pub const SMALL_MAP: &str = "hubcap, flow map of 4,096";

pub fn scenario_name(flows: u16) -> String {
    let flows = if flows == 1 {
        "1 flow".to_owned()
    } else {
        format!("{flows} flows")
    };
    format!("0. tc program ns/packet, {flows}")
}

/// One measured run: the programs' ns per run, and how often the drop
/// program ran (`None` for a contender without one).
struct Sample {
    ns_per_packet: f64,
    drop_runs: Option<u64>,
}

pub fn run(node: &Node, settings: Settings, flows: u16, report: &mut Report) {
    let receiver = &node.pods[1];
    let targets = ports(receiver.ipv4, 30_000, flows);
    // Read everything: nothing is dropped, so the drop program should not
    // run at all ("drop program runs" shows it).
    let drain = Drain::start(sinks(&receiver.ns, &targets));
    let kinds: [(&str, Kind, &[&str]); 3] = [
        (Kind::Trivial.name(), Kind::Trivial, &[]),
        (Kind::Hubcap.name(), Kind::Hubcap, &[]),
        (SMALL_MAP, Kind::Hubcap, &["--flow-map-size", "4096"]),
    ];
    let mut samples: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
    procfs::with_bpf_stats(|| {
        for round in 0..settings.rounds as usize {
            for i in 0..kinds.len() {
                let k = (i + round) % kinds.len();
                let (_, kind, args) = kinds[k];
                samples[k].push(one(node, kind, args, &targets));
            }
        }
    });
    drain.stop();
    let name = scenario_name(flows);
    let spreads: Vec<(&str, f64)> = kinds
        .iter()
        .zip(&samples)
        .map(|((label, _, _), runs)| (*label, relative_spread(&ns_of(runs))))
        .collect();
    report.judge_noise(&name, &spreads);
    for ((label, _, _), runs) in kinds.iter().zip(&samples) {
        let (_, mut figures) = median_figures("ns/packet (median)", &ns_of(runs), 0);
        let drop_runs: Option<u64> = runs.iter().map(|s| s.drop_runs).sum();
        figures.push(("rounds", Value::from(runs.len())));
        figures.push(("drop program runs", drop_runs.map_or(Value::Null, Value::from)));
        report.add(&name, label, figures);
    }
}

fn ns_of(runs: &[Sample]) -> Vec<f64> {
    runs.iter().map(|s| s.ns_per_packet).collect()
}

fn one(node: &Node, kind: Kind, args: &[&str], targets: &[std::net::SocketAddrV4]) -> Sample {
    let running = contender::start(kind, node, &node.pods[0].host_if, args);
    let pid = running.pid().expect("a process");
    let send = |duration| {
        blast(
            &node.pods[0].ns,
            targets.to_vec(),
            &[0],
            SMALL_PAYLOAD,
            duration,
            u64::MAX,
        )
    };
    // Flows are created in the first lap: measure the steady state after it.
    send(Duration::from_millis(200));
    let before = procfs::bpf_prog_stats(pid, procfs::PROG_TYPE_SCHED_CLS).unwrap_or_default();
    let drop_before = procfs::bpf_prog_stats(pid, procfs::PROG_TYPE_TRACING).map(|(_, runs)| runs);
    send(Duration::from_secs(1));
    let after = procfs::bpf_prog_stats(pid, procfs::PROG_TYPE_SCHED_CLS).unwrap_or_default();
    // The drop program (kfree_skb): nothing is dropped here, so it should
    // be there and not run at all.
    let drop_after = procfs::bpf_prog_stats(pid, procfs::PROG_TYPE_TRACING).map(|(_, runs)| runs);
    contender::stop(running, node);
    let (time, count) = (after.0 - before.0, after.1 - before.1);
    Sample {
        ns_per_packet: time as f64 / count.max(1) as f64,
        drop_runs: drop_before.zip(drop_after).map(|(b, a)| a - b),
    }
}
