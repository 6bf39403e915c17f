//! Scenario 1 (small-packet UDP at the sender's highest rate, 1,000 flows)
//! and scenario 2 (TCP bulk transfer).

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use hubcap_tests::topology::Node;
use serde_json::Value;

use super::{Run, Settings, Traffic, judge_noise, mean, median, median_figures, rounds, run_one};
use crate::{
    contender::Kind,
    load::{Drain, SMALL_PAYLOAD, blast, ports, sinks},
    report::{Report, num},
};

pub const UDP: &str = "1. small-packet UDP, 1,000 flows";
pub const TCP: &str = "2. TCP bulk";

/// What the contender says it lost over all runs (`None` if it cannot say).
fn lost(runs: &[Run]) -> Value {
    runs.iter()
        .map(|r| r.outcome.lost)
        .sum::<Option<u64>>()
        .map_or(Value::Null, Value::from)
}

fn accounting(runs: &[Run]) -> Vec<(&'static str, Value)> {
    let percent = |v: Option<f64>| v.map_or(Value::Null, |p| num(p, 2));
    vec![
        ("packets accounted %", percent(mean(runs, Run::packets_percent))),
        ("bytes accounted %", percent(mean(runs, Run::bytes_percent))),
    ]
}

pub fn warm_up(node: &Node) {
    let receiver = &node.pods[1];
    let targets = ports(receiver.ipv4, 30_000, 1_000);
    let _drain = Drain::start(sinks(&receiver.ns, &targets));
    blast(
        &node.pods[0].ns,
        targets,
        &[0],
        SMALL_PAYLOAD,
        Duration::from_secs(2),
        u64::MAX,
    );
}

pub fn small_udp(node: &Node, settings: Settings, report: &mut Report) {
    let (sender, receiver) = (&node.pods[0], &node.pods[1]);
    let targets = ports(receiver.ipv4, 30_000, 1_000);
    // Read everything: no packet is dropped, so the drop program has nothing
    // to do (the figure "drop program runs" shows it).
    let drain = Drain::start(sinks(&receiver.ns, &targets));
    let all = rounds(settings, &Kind::ALL, |kind| {
        run_one(kind, node, &[], || {
            let (sent, elapsed) = blast(&sender.ns, targets.clone(), &[0], SMALL_PAYLOAD, settings.run, u64::MAX);
            Traffic {
                sent,
                elapsed,
                throughput_bps: None,
            }
        })
    });
    drain.stop();
    let baseline = median(&all[0].1, |r| Some(r.delivered_pps())).unwrap_or(1.0);
    report.note(UDP, crate::contender::netobserv::CONFIGURATION.to_owned());
    judge_noise(report, UDP, &all, |r| Some(r.delivered_pps()));
    for (kind, runs) in &all {
        let pps: Vec<f64> = runs.iter().map(Run::delivered_pps).collect();
        let (pps, mut figures) = median_figures("pps (median)", &pps, 0);
        figures.push(("ratio to baseline", num(pps / baseline, 3)));
        figures.extend(accounting(runs));
        let cpu_per_mpkt = mean(runs, |r| {
            r.cpu_seconds.map(|c| c / (r.wire_packets().max(1) as f64 / 1e6))
        });
        let cpu_share = mean(runs, |r| {
            r.cpu_seconds.map(|c| 100.0 * c / r.traffic.elapsed.as_secs_f64())
        });
        figures.push(("CPU s per M packets", cpu_per_mpkt.map_or(Value::Null, |v| num(v, 3))));
        figures.push(("CPU % of a core", cpu_share.map_or(Value::Null, |v| num(v, 1))));
        let per_packet = mean(runs, |r| {
            r.outcome.records.map(|n| n as f64 / r.wire_packets().max(1) as f64)
        });
        figures.push(("records per packet", per_packet.map_or(Value::Null, |v| num(v, 6))));
        figures.push(("lost", lost(runs)));
        report.add(UDP, kind.name(), figures);
    }
}

fn iperf3_server(node: &Node) -> Child {
    let receiver = &node.pods[1];
    receiver
        .ns
        .command("iperf3")
        .args(["-s", "-B", &receiver.ipv4.to_string(), "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3")
}

fn iperf3_client(node: &Node, duration: Duration) -> Traffic {
    let target = node.pods[1].ipv4.to_string();
    let secs = duration.as_secs().max(1).to_string();
    for _ in 0..50 {
        let out = node.pods[0]
            .ns
            .command("iperf3")
            .args(["-c", &target, "-p", "5201", "-t", &secs, "-J"])
            .output()
            .expect("iperf3");
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
            let end = &v["end"];
            return Traffic {
                sent: end["sum_sent"]["bytes"].as_u64().unwrap_or(0),
                elapsed: Duration::from_secs_f64(end["sum_received"]["seconds"].as_f64().unwrap_or(1.0)),
                throughput_bps: end["sum_received"]["bits_per_second"].as_f64(),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("iperf3 client never ran");
}

pub fn tcp_bulk(node: &Node, settings: Settings, report: &mut Report) {
    let mut server = iperf3_server(node);
    let all = rounds(settings, &Kind::ALL, |kind| {
        run_one(kind, node, &[], || iperf3_client(node, settings.run))
    });
    let _ = server.kill();
    let _ = server.wait();
    let gbps = |r: &Run| r.traffic.throughput_bps.map(|b| b / 1e9);
    let baseline = median(&all[0].1, gbps).unwrap_or(1.0);
    judge_noise(report, TCP, &all, gbps);
    for (kind, runs) in &all {
        let g: Vec<f64> = runs.iter().filter_map(gbps).collect();
        let (g, mut figures) = median_figures("Gbit/s (median)", &g, 2);
        figures.push(("ratio to baseline", num(g / baseline, 3)));
        figures.extend(accounting(runs));
        let cpu_share = mean(runs, |r| {
            r.cpu_seconds.map(|c| 100.0 * c / r.traffic.elapsed.as_secs_f64())
        });
        figures.push(("CPU % of a core", cpu_share.map_or(Value::Null, |v| num(v, 1))));
        figures.push(("lost", lost(runs)));
        report.add(TCP, kind.name(), figures);
    }
}
