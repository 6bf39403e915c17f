//! Scenario 3: as many new short UDP flows per second as the sender can
//! make (one packet each, every one a new 5-tuple).

use hubcap_tests::topology::Node;
use serde_json::Value;

use super::{Run, Settings, Traffic, judge_noise, mean, median, median_figures, rounds, run_one};
use crate::{
    contender::Kind,
    load::{SMALL_PAYLOAD, blast, ports, sinks},
    report::{Report, num},
};

pub const CHURN: &str = "3. flow churn";

/// 512 source sockets x 8,192 destination ports: over 4 million distinct
/// flows before any repeats, in under 9,000 file descriptors (containers
/// often cap them at 20,000).
const SOURCES: usize = 512;
const PORTS: u16 = 8192;

pub fn run(node: &Node, settings: Settings, report: &mut Report) {
    let (sender, receiver) = (&node.pods[0], &node.pods[1]);
    let targets = ports(receiver.ipv4, 1, PORTS);
    // A socket on every port, so no datagram is dropped as NO_SOCKET. Each
    // gets at most about 100 datagrams in a run, below its buffer: nothing
    // to read, nothing dropped.
    let _sinks = sinks(&receiver.ns, &targets);
    let max_flows = (SOURCES * targets.len()) as u64;
    // Room for every flow, and ended quickly so the map drains as it goes.
    let hubcap_args = [
        "--flow-map-size",
        "1048576",
        "--idle-timeout",
        "2",
        "--report-interval",
        "1",
    ];
    let all = rounds(settings, &Kind::ALL, |kind| {
        run_one(kind, node, &hubcap_args, || {
            let (sent, elapsed) = blast(
                &sender.ns,
                targets.clone(),
                &[0; SOURCES],
                SMALL_PAYLOAD,
                settings.run,
                max_flows,
            );
            Traffic {
                sent,
                elapsed,
                throughput_bps: None,
            }
        })
    });
    let rate = |r: &Run| r.traffic.sent as f64 / r.traffic.elapsed.as_secs_f64();
    let baseline = median(&all[0].1, |r| Some(rate(r))).unwrap_or(1.0);
    report.note(CHURN, crate::contender::netobserv::CONFIGURATION.to_owned());
    judge_noise(report, CHURN, &all, |r| Some(rate(r)));
    for (kind, runs) in &all {
        let rates: Vec<f64> = runs.iter().map(rate).collect();
        let (median_rate, mut figures) = median_figures("new flows/s sent (median)", &rates, 0);
        // Every run must account for every flow and packet: the worst run
        // is the figure.
        let worst = |f: fn(&Run) -> Option<f64>| {
            runs.iter()
                .map(f)
                .collect::<Option<Vec<f64>>>()
                .map_or(Value::Null, |v| num(v.into_iter().fold(f64::INFINITY, f64::min), 2))
        };
        let flows_percent = |r: &Run| r.outcome.flows.map(|f| 100.0 * f as f64 / r.traffic.sent.max(1) as f64);
        let records = mean(runs, |r| {
            r.outcome.records.map(|n| n as f64 / r.traffic.elapsed.as_secs_f64())
        });
        let cpu_share = mean(runs, |r| {
            r.cpu_seconds.map(|c| 100.0 * c / r.traffic.elapsed.as_secs_f64())
        });
        let lost: Option<u64> = runs.iter().map(|r| r.outcome.lost).sum();
        figures.extend([
            ("ratio to baseline", num(median_rate / baseline, 3)),
            ("flows accounted % (worst run)", worst(flows_percent)),
            ("packets accounted % (worst run)", worst(Run::packets_percent)),
            ("records/s", records.map_or(Value::Null, |v| num(v, 0))),
            ("CPU % of a core", cpu_share.map_or(Value::Null, |v| num(v, 1))),
            ("lost", lost.map_or(Value::Null, Value::from)),
        ]);
        report.add(CHURN, kind.name(), figures);
    }
}
