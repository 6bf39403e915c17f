//! The scenarios. Each runs every contender on the same traffic, one after
//! the other on one topology, and adds a row per contender.

pub mod churn;
pub mod dns;
pub mod hook;
pub mod memory;
pub mod output;
pub mod throughput;

use std::time::Duration;

use hubcap_tests::topology::{Counters, Node};

use serde_json::Value;

use crate::{
    contender::{self, Kind, Outcome},
    report::{Report, num},
};

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How long each contender's traffic runs.
    pub run: Duration,
    /// Runs per contender (figures are averaged).
    pub rounds: u32,
}

/// What the traffic generator reports.
pub struct Traffic {
    pub sent: u64,
    pub elapsed: Duration,
    /// Goodput as the receiving end measured it, where there is one.
    pub throughput_bps: Option<f64>,
}

/// One contender's run: the traffic, what the interfaces counted, what the
/// contender accounted for, and its CPU time during the traffic.
pub struct Run {
    pub traffic: Traffic,
    /// Delta on the captured interface (both directions).
    pub wire: Counters,
    /// Packets delivered to the receiving pod (its veth's tx delta).
    pub delivered: u64,
    pub outcome: Outcome,
    pub cpu_seconds: Option<f64>,
}

fn delta(after: Counters, before: Counters) -> Counters {
    Counters {
        rx_packets: after.rx_packets - before.rx_packets,
        rx_bytes: after.rx_bytes - before.rx_bytes,
        tx_packets: after.tx_packets - before.tx_packets,
        tx_bytes: after.tx_bytes - before.tx_bytes,
    }
}

/// Runs `kind` on the first pod's host-side veth while `traffic` runs.
pub fn run_one(kind: Kind, node: &Node, hubcap_args: &[&str], traffic: impl FnOnce() -> Traffic) -> Run {
    let captured = &node.pods[0].host_if;
    let receiver = &node.pods[1].host_if;
    let before = node.settled_counters(captured);
    let receiver_before = node.counters(receiver);
    let running = contender::start(kind, node, captured, hubcap_args);
    if let Some(ms) = std::env::var("HUBCAP_BENCH_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let cpu_before = running.cpu_seconds();
    let traffic = traffic();
    let cpu_after = running.cpu_seconds();
    let after = node.settled_counters(captured);
    let receiver_after = node.counters(receiver);
    let outcome = contender::stop(running, node);
    if std::env::var_os("HUBCAP_BENCH_DEBUG").is_some() {
        eprintln!(
            "bench: {kind:?}: wire {:?}, accounted {:?} packets",
            delta(after, before),
            outcome.packets
        );
    }
    Run {
        traffic,
        wire: delta(after, before),
        delivered: receiver_after.tx_packets - receiver_before.tx_packets,
        outcome,
        cpu_seconds: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
    }
}

impl Run {
    pub fn wire_packets(&self) -> u64 {
        self.wire.rx_packets + self.wire.tx_packets
    }
    pub fn wire_bytes(&self) -> u64 {
        self.wire.rx_bytes + self.wire.tx_bytes
    }
    /// Packets (and bytes) the contender accounted for, in percent of the
    /// interface counters.
    pub fn packets_percent(&self) -> Option<f64> {
        self.outcome
            .packets
            .map(|p| 100.0 * p as f64 / self.wire_packets().max(1) as f64)
    }
    pub fn bytes_percent(&self) -> Option<f64> {
        self.outcome
            .bytes
            .map(|b| 100.0 * b as f64 / self.wire_bytes().max(1) as f64)
    }
    pub fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.traffic.elapsed.as_secs_f64()
    }
}

/// Runs every contender `rounds` times, interleaved and in a rotated order
/// each round, so that drift in the machine's speed and the position in a
/// round spread over all of them.
/// `kinds[0]` is the baseline the ratios are taken against.
/// `HUBCAP_BENCH_KINDS=hubcap,trivial` (names as in the report, matched by
/// prefix) keeps only those after the baseline, for profiling one of them.
pub fn rounds(settings: Settings, kinds: &[Kind], mut one: impl FnMut(Kind) -> Run) -> Vec<(Kind, Vec<Run>)> {
    let only = std::env::var("HUBCAP_BENCH_KINDS").unwrap_or_default();
    let wanted = |k: &Kind| {
        only.is_empty() || *k == kinds[0] || only.split(',').any(|w| !w.is_empty() && k.name().starts_with(w))
    };
    let mut runs: Vec<(Kind, Vec<Run>)> = kinds.iter().filter(|k| wanted(k)).map(|k| (*k, Vec::new())).collect();
    let n = runs.len();
    for round in 0..settings.rounds as usize {
        for i in 0..n {
            let (kind, list) = &mut runs[(i + round) % n];
            list.push(one(*kind));
        }
    }
    runs
}

/// The median of `f` over runs (robust to one disturbed run), skipping
/// runs where it is unknown.
pub fn median(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = runs.iter().filter_map(f).collect();
    (!values.is_empty()).then(|| spread(&values).0)
}

/// The median, minimum and maximum of `values` (the spread of a
/// scenario's rounds, printed next to its median).
pub fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

/// The median of `values` as `label`, the slowest and fastest round beside
/// it, rounded to `decimals`; and the median itself.
pub fn median_figures(label: &'static str, values: &[f64], decimals: i32) -> (f64, Vec<(&'static str, Value)>) {
    let (median, low, high) = spread(values);
    (
        median,
        vec![
            (label, num(median, decimals)),
            ("min", num(low, decimals)),
            ("max", num(high, decimals)),
        ],
    )
}

/// Notes under `scenario` whether each contender's rounds of `value` were
/// steady enough to compare.
pub fn judge_noise(report: &mut Report, scenario: &str, all: &[(Kind, Vec<Run>)], value: impl Fn(&Run) -> Option<f64>) {
    let spreads: Vec<(&str, f64)> = all
        .iter()
        .map(|(kind, runs)| {
            let values: Vec<f64> = runs.iter().filter_map(&value).collect();
            (kind.name(), relative_spread(&values))
        })
        .collect();
    report.judge_noise(scenario, &spreads);
}

/// (max - min) / median of `values`: how far apart a contender's rounds were.
pub fn relative_spread(values: &[f64]) -> f64 {
    let (median, low, high) = spread(values);
    if median > 0.0 { (high - low) / median } else { 0.0 }
}

/// The mean of `f` over runs, skipping runs where it is unknown.
pub fn mean(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = runs.iter().filter_map(f).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}
