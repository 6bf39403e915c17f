//! Scenario 3: as many new short UDP flows per second as the sender can
//! make (one packet each, every one a new 5-tuple).

use hubcap_tests::topology::Node;
use serde_json::Value;

use super::{Settings, Traffic, run_one};
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
    let mut baseline_rate = 1.0;
    for kind in Kind::ALL {
        let run = run_one(kind, node, &hubcap_args, || {
            let (sent, elapsed) = blast(
                &sender.ns,
                targets.clone(),
                SOURCES,
                SMALL_PAYLOAD,
                settings.run,
                max_flows,
            );
            Traffic {
                sent,
                elapsed,
                throughput_bps: None,
            }
        });
        let secs = run.traffic.elapsed.as_secs_f64();
        let rate = run.traffic.sent as f64 / secs;
        if kind == Kind::Baseline {
            baseline_rate = rate;
        }
        let flows_percent = run
            .outcome
            .flows
            .map(|f| 100.0 * f as f64 / run.traffic.sent.max(1) as f64);
        report.add(
            CHURN,
            kind.name(),
            vec![
                ("new flows/s sent", num(rate, 0)),
                ("ratio to baseline", num(rate / baseline_rate, 3)),
                ("flows accounted %", flows_percent.map_or(Value::Null, |p| num(p, 2))),
                (
                    "packets accounted %",
                    run.packets_percent().map_or(Value::Null, |p| num(p, 2)),
                ),
                (
                    "records/s",
                    run.outcome.records.map_or(Value::Null, |n| num(n as f64 / secs, 0)),
                ),
                ("lost", run.outcome.lost.map_or(Value::Null, Value::from)),
            ],
        );
    }
}
