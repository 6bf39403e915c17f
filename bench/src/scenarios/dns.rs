//! Scenario 7: DNS through a real server and a real load generator:
//! dnsmasq answers 1,000 names in the second pod, dnsperf asks them as
//! fast as it can from the first, each contender captures the first pod's
//! veth. What the DNS hand-over costs the queries, and whether hubcap
//! writes every query and every answer: its DNS records against the veth's
//! own packet counters (nothing but DNS crosses it).

use std::{cell::RefCell, net::IpAddr, time::Duration};

use hubcap_tests::topology::Node;
use serde_json::Value;

use super::{Run, Settings, Traffic, judge_noise, mean, median, median_figures, rounds, run_one};
use crate::{
    contender::Kind,
    report::{Report, num},
};

pub const DNS: &str = "7. DNS";

const NAMES: usize = 1_000;

/// What dnsperf said of one run.
#[derive(Clone, Copy, Debug, Default)]
struct Dnsperf {
    sent: u64,
    completed: u64,
    qps: f64,
}

pub fn run(node: &Node, settings: Settings, report: &mut Report) {
    let (client, server) = (&node.pods[0], &node.pods[1]);
    let dir = std::path::PathBuf::from(format!("/dev/shm/hubcap-bench-dns-{}", node.id));
    std::fs::create_dir_all(&dir).expect("bench DNS dir");
    let hosts: String = (0..NAMES)
        .map(|i| format!("10.{}.{}.{} name{i}.test\n", 100 + i / 65_536, (i / 256) % 256, i % 256))
        .collect();
    let queries: String = (0..NAMES).map(|i| format!("name{i}.test A\n")).collect();
    let queries_file = dir.join("queries");
    std::fs::write(&queries_file, queries).expect("dnsperf input");
    let address = IpAddr::from(server.ipv4);
    let dnsmasq = hubcap_tests::dns::dnsmasq(&server.ns, &[address], &dir, &hosts, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let said = RefCell::new(Vec::new());
    let all = rounds(settings, &Kind::WITHOUT_NETOBSERV, |kind| {
        run_one(kind, node, &[], || {
            let result = dnsperf(client, address, &queries_file, settings.run);
            said.borrow_mut().push((kind, result));
            Traffic {
                sent: result.completed,
                elapsed: settings.run,
                throughput_bps: None,
            }
        })
    });
    drop(dnsmasq);
    let _ = std::fs::remove_dir_all(&dir);
    let said = said.into_inner();
    let qps = |kind: Kind| -> Vec<f64> { said.iter().filter(|(k, _)| *k == kind).map(|(_, d)| d.qps).collect() };
    let rate = |r: &Run| r.traffic.sent as f64 / r.traffic.elapsed.as_secs_f64();
    let baseline = median(&all[0].1, |r| Some(rate(r))).unwrap_or(1.0);
    judge_noise(report, DNS, &all, |r| Some(rate(r)));
    for (kind, runs) in &all {
        let (median_qps, mut figures) = median_figures("queries/s (median)", &qps(*kind), 0);
        // Every query and answer on the veth is a packet; hubcap's DNS
        // records must be exactly as many, in the worst run too.
        let recorded = |r: &Run| {
            r.outcome
                .dns_records
                .map(|n| 100.0 * n as f64 / r.wire_packets().max(1) as f64)
        };
        let worst = runs
            .iter()
            .map(recorded)
            .collect::<Option<Vec<f64>>>()
            .map_or(Value::Null, |v| num(v.into_iter().fold(f64::INFINITY, f64::min), 2));
        let cpu_share = mean(runs, |r| {
            r.cpu_seconds.map(|c| 100.0 * c / r.traffic.elapsed.as_secs_f64())
        });
        let sent: u64 = said.iter().filter(|(k, _)| k == kind).map(|(_, d)| d.sent).sum();
        let answered: u64 = said.iter().filter(|(k, _)| k == kind).map(|(_, d)| d.completed).sum();
        figures.extend([
            ("ratio to baseline", num(median_qps / baseline.max(1.0), 3)),
            ("answered %", num(100.0 * answered as f64 / sent.max(1) as f64, 2)),
            ("DNS records % of packets (worst run)", worst),
            ("CPU % of a core", cpu_share.map_or(Value::Null, |v| num(v, 1))),
        ]);
        report.add(DNS, kind.name(), figures);
    }
}

/// dnsperf from `client` at `server` for `run`, at most 100 queries in
/// flight: its sent and completed counts and queries per second.
fn dnsperf(client: &hubcap_tests::topology::Pod, server: IpAddr, queries: &std::path::Path, run: Duration) -> Dnsperf {
    let out = client
        .ns
        .command("dnsperf")
        .args(["-s", &server.to_string(), "-d", queries.to_str().unwrap()])
        .args(["-l", &run.as_secs().to_string(), "-c", "4", "-q", "100", "-t", "1"])
        .output()
        .expect("dnsperf (Debian package dnsperf)");
    let text = String::from_utf8_lossy(&out.stdout);
    let number = |label: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("dnsperf printed no {label:?}:\n{text}"))
    };
    Dnsperf {
        sent: number("Queries sent:") as u64,
        completed: number("Queries completed:") as u64,
        qps: number("Queries per second:"),
    }
}
