//! Scenario 4: memory with 10,000, 100,000 and 1,000,000 concurrent flows.

use std::time::{Duration, Instant};

use hubcap_tests::{agent::scrape_metrics, topology::Node};
use serde_json::Value;

use crate::{
    contender::{self, Kind},
    load::{SMALL_PAYLOAD, blast, ports, sinks},
    procfs,
    report::{Report, num},
};

pub fn scenario_name(flows: u64) -> String {
    format!("4. memory, {}k concurrent flows", flows / 1000)
}

const METRICS: &str = "127.0.0.1:9966";

/// Opens `flows` UDP flows in chunks of 5,000 destination ports, each chunk
/// from a source port of its own. Explicit source ports: a port the kernel
/// picks may be one an earlier chunk used, and that chunk's flows would be
/// sent again instead of new ones.
fn open_flows(node: &Node, flows: u64) {
    const CHUNK: u64 = 5_000;
    const FIRST_SOURCE_PORT: u64 = 20_000;
    let targets = ports(node.pods[1].ipv4, 1, CHUNK as u16);
    // Bound receivers: no NO_SOCKET drops, so every flow is a forwarded one.
    let _sinks = sinks(&node.pods[1].ns, &targets);
    let mut sent = 0;
    for chunk in 0..flows.div_ceil(CHUNK) {
        let source_port = u16::try_from(FIRST_SOURCE_PORT + chunk).expect("source ports run out past 45,535 chunks");
        let n = CHUNK.min(flows - sent);
        sent += blast(
            &node.pods[0].ns,
            targets.clone(),
            &[source_port],
            SMALL_PAYLOAD,
            Duration::from_secs(10),
            n,
        )
        .0;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sent, flows, "every flow's packet was sent");
}

fn flow_table_size(node: &Node) -> u64 {
    scrape_metrics(&node.ns, METRICS)
        .lines()
        .find_map(|l| l.strip_prefix("hubcap_flow_table_directions "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

pub fn run(node: &Node, flows: u64, report: &mut Report) {
    let scenario = scenario_name(flows);
    let interface = &node.pods[0].host_if;
    // hubcap: flows stay open (long idle timeout) until all are in its table.
    // The default flow map size (262,144, what a user runs) where it holds
    // them all; a quarter more room than the flows where it does not.
    let map_size = (flows + flows / 4).max(262_144).to_string();
    let args = [
        "--idle-timeout",
        "600",
        "--report-interval",
        "1",
        "--metrics-listen",
        METRICS,
        "--flow-map-size",
        &map_size,
    ];
    let running = contender::start(Kind::Hubcap, node, interface, &args);
    open_flows(node, flows);
    let deadline = Instant::now() + Duration::from_secs(120);
    while flow_table_size(node) < flows && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = running.pid().expect("hubcap runs");
    let (rss, maps) = (procfs::rss_bytes(pid), procfs::bpf_map_bytes(pid));
    let (private, mapped) = (procfs::private_rss_bytes(pid), procfs::bpf_mapping_rss_bytes(pid));
    let held = flow_table_size(node);
    contender::stop(running, node);
    if held < flows {
        // Reported, not hidden: the RSS below is for the flows it held.
        report.note(
            &scenario,
            format!("hubcap held {held} of the {flows} flows sent within 120 s."),
        );
    }
    let mb = |b: u64| num(b as f64 / (1024.0 * 1024.0), 1);
    report.add(
        &scenario,
        Kind::Hubcap.name(),
        vec![
            ("flows held", Value::from(held)),
            ("RSS MB", mb(rss)),
            ("private MB", mb(private)),
            ("BPF maps mapped MB", mb(mapped)),
            ("BPF map MB", mb(maps)),
            ("map size", Value::from(map_size.parse::<u64>().unwrap_or(0))),
        ],
    );

    // softflowd keeps a flow cache too: its RSS with the same flows.
    let running = contender::start(Kind::Softflowd, node, interface, &[]);
    open_flows(node, flows);
    std::thread::sleep(Duration::from_secs(2));
    let pid = running.pid().expect("softflowd runs");
    let (rss, private) = (procfs::rss_bytes(pid), procfs::private_rss_bytes(pid));
    let outcome = contender::stop(running, node);
    report.add(
        &scenario,
        Kind::Softflowd.name(),
        vec![
            ("flows held", outcome.flows.map_or(Value::Null, Value::from)),
            ("RSS MB", mb(rss)),
            ("private MB", mb(private)),
            ("BPF maps mapped MB", Value::Null),
            ("BPF map MB", Value::Null),
        ],
    );

    // NetObserv's agent with a kernel map as large as hubcap's.
    let nobs_args = ["--flow-map-size", map_size.as_str()];
    let running = contender::start(Kind::NetObserv, node, interface, &nobs_args);
    open_flows(node, flows);
    // It evicts (and exports) its map every second: RSS once it has.
    std::thread::sleep(Duration::from_secs(3));
    let pid = running.pid().expect("NetObserv's agent runs");
    let (rss, maps) = (procfs::rss_bytes(pid), procfs::bpf_map_bytes(pid));
    let (private, mapped) = (procfs::private_rss_bytes(pid), procfs::bpf_mapping_rss_bytes(pid));
    let outcome = contender::stop(running, node);
    report.add(
        &scenario,
        Kind::NetObserv.name(),
        vec![
            ("flows held", outcome.flows.map_or(Value::Null, Value::from)),
            ("RSS MB", mb(rss)),
            ("private MB", mb(private)),
            ("BPF maps mapped MB", mb(mapped)),
            ("BPF map MB", mb(maps)),
            ("map size", Value::from(map_size.parse::<u64>().unwrap_or(0))),
            ("lost", outcome.lost.map_or(Value::Null, Value::from)),
        ],
    );
    report.note(&scenario, crate::contender::netobserv::CONFIGURATION.to_owned());
    report.note(
        &scenario,
        "RSS counts mapped BPF maps (the ring buffers, whose data area is mapped twice) page for page; \
         that memory is the kernel's, in BPF map MB too. Private MB is the process's own (RssAnon)."
            .to_owned(),
    );
}
