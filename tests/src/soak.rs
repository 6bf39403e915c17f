//! A soak: hubcap on a test node under steady traffic and flow churn for a
//! while, sampled every so often (memory, CPU, map entries, records, losses
//! and how much of the veths' traffic its records account for), then held
//! to exact accounting once the traffic stops.
//!
//! `cargo xtask soak --minutes N` runs it through the `hubcap-soak` binary;
//! a one-minute run is among the tests.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::{
    agent::{Agent, scrape_metrics},
    topology::{Counters, Node},
    traffic::{tcp_transfer, udp_echo},
};

const METRICS: &str = "127.0.0.1:9965";

#[derive(Clone, Copy, Debug)]
pub struct SoakConfig {
    pub duration: Duration,
    pub sample_every: Duration,
}

/// One sample, taken while traffic runs.
#[derive(Clone, Debug)]
pub struct Sample {
    pub elapsed: Duration,
    pub rss_kib: u64,
    /// CPU seconds hubcap used since the previous sample, per second.
    pub cpu_share: f64,
    pub kernel_flow_entries: u64,
    pub flow_table_directions: u64,
    pub records_written: u64,
    pub losses: u64,
    /// Packets and bytes in hubcap's records so far over the veths'
    /// counters (below 100% only by what open flows have not reported yet).
    pub packets_accounted: f64,
    pub bytes_accounted: f64,
}

#[derive(Clone, Debug)]
pub struct SoakReport {
    pub samples: Vec<Sample>,
    pub flows_started: u64,
    /// Exchanges of the traffic generator that failed (a timeout, a port
    /// still in use): their packets are in the counters like any other, so
    /// accounting stays exact; a soak is not stopped by one.
    pub traffic_failures: u64,
    /// After the traffic stopped and every flow ended.
    pub kernel_packets: u64,
    pub kernel_bytes: u64,
    pub recorded_packets: u64,
    pub recorded_bytes: u64,
    /// Every loss counter hubcap has, by series, with its final value.
    pub losses: Vec<(String, u64)>,
    pub exit_ok: bool,
}

impl SoakReport {
    pub fn exact(&self) -> bool {
        self.kernel_packets == self.recorded_packets && self.kernel_bytes == self.recorded_bytes
    }

    pub fn total_losses(&self) -> u64 {
        self.losses.iter().map(|(_, n)| n).sum()
    }

    /// RSS of the last sample over the first sample at or after `at`.
    pub fn rss_growth_since(&self, at: Duration) -> Option<f64> {
        let base = self.samples.iter().find(|s| s.elapsed >= at)?;
        let last = self.samples.last()?;
        Some(last.rss_kib as f64 / base.rss_kib as f64 - 1.0)
    }

    /// A Markdown table of the samples and the final accounting.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| minute | RSS (MiB) | CPU | kernel map entries | open directions | records | losses | packets accounted | bytes accounted |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &self.samples {
            out.push_str(&format!(
                "| {:.1} | {:.1} | {:.1}% | {} | {} | {} | {} | {:.2}% | {:.2}% |\n",
                s.elapsed.as_secs_f64() / 60.0,
                s.rss_kib as f64 / 1024.0,
                s.cpu_share * 100.0,
                s.kernel_flow_entries,
                s.flow_table_directions,
                s.records_written,
                s.losses,
                s.packets_accounted * 100.0,
                s.bytes_accounted * 100.0
            ));
        }
        out.push_str(&format!(
            "\nAfter the traffic stopped: {} of {} packets and {} of {} bytes in records ({:.2}% / {:.2}%); \
             {} flows started ({} exchanges failed in the traffic generator); losses: {}.\n",
            self.recorded_packets,
            self.kernel_packets,
            self.recorded_bytes,
            self.kernel_bytes,
            percent(self.recorded_packets, self.kernel_packets),
            percent(self.recorded_bytes, self.kernel_bytes),
            self.flows_started,
            self.traffic_failures,
            self.total_losses()
        ));
        out
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The series of hubcap's metrics that count something lost.
const LOSS_SERIES: [&str; 6] = [
    "hubble_lost_events_total",
    "hubcap_ringbuf_records_lost_total",
    "hubcap_kernel_packets_total{counter=\"map_full\"}",
    "hubcap_output_records_lost_total",
    "hubcap_write_errors_total",
    "hubcap_observer_events_missed_total",
];

pub fn run(config: SoakConfig) -> SoakReport {
    let node = Node::new(4);
    let dir = std::env::temp_dir().join(format!("hubcap-soak-{}", node.id));
    let log = dir.join("events.log");
    let mut args = vec![
        "--output",
        log.to_str().expect("UTF-8 path"),
        "--output-max-size-mb",
        "20",
        "--output-max-backups",
        "2",
        "--output-compress",
    ];
    args.extend(Node::METRICS_AND_QUICK_ENDS);
    let agent = node.capture(&args);
    node.up();

    let stop = AtomicBool::new(false);
    let flows_started = AtomicU64::new(0);
    let traffic_failures = AtomicU64::new(0);
    let mut samples = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| churn(&node, &stop, &flows_started, &traffic_failures));
        scope.spawn(|| transfers(&node, &stop, &flows_started, &traffic_failures));
        scope.spawn(|| steady_stream(&node, &stop));
        let started = Instant::now();
        let mut cpu_before = (cpu_seconds(agent.pid()), Instant::now());
        while started.elapsed() < config.duration {
            std::thread::sleep(
                config
                    .sample_every
                    .min(config.duration.saturating_sub(started.elapsed())),
            );
            let cpu_now = (cpu_seconds(agent.pid()), Instant::now());
            let cpu_share = (cpu_now.0 - cpu_before.0) / (cpu_now.1 - cpu_before.1).as_secs_f64();
            cpu_before = cpu_now;
            samples.push(sample(&node, &agent, started.elapsed(), cpu_share));
            let s = samples.last().expect("just pushed");
            println!(
                "soak {:>5.1} min: RSS {:.1} MiB, CPU {:.1}%, {} kernel entries, {} records, {} losses, {:.2}% of packets accounted",
                s.elapsed.as_secs_f64() / 60.0,
                s.rss_kib as f64 / 1024.0,
                s.cpu_share * 100.0,
                s.kernel_flow_entries,
                s.records_written,
                s.losses,
                s.packets_accounted * 100.0
            );
        }
        stop.store(true, Ordering::Relaxed);
    });

    node.wait_for_flows_to_end();
    let counters = node.settled_pod_counters();
    let text = scrape_metrics(&node.ns, METRICS);
    let (recorded_packets, recorded_bytes) = recorded(&text, &counters);
    let (kernel_packets, kernel_bytes) = kernel_totals(&counters);
    let losses = LOSS_SERIES
        .iter()
        .map(|series| (series.to_string(), sum_series(&text, series)))
        .collect();
    let finished = agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
    SoakReport {
        samples,
        flows_started: flows_started.load(Ordering::Relaxed),
        traffic_failures: traffic_failures.load(Ordering::Relaxed),
        kernel_packets,
        kernel_bytes,
        recorded_packets,
        recorded_bytes,
        losses,
        exit_ok: finished.status.success(),
    }
}

/// Short UDP exchanges from new sockets: each a new flow (both
/// directions, on two veths) that ends after the idle timeout.
fn churn(node: &Node, stop: &AtomicBool, flows: &AtomicU64, failures: &AtomicU64) {
    let (a, b) = (&node.pods[0], &node.pods[1]);
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        // A server port per exchange, reused only after 10,000 others.
        let port = 30_000 + (n % 10_000) as u16;
        let (client, server) = if n.is_multiple_of(2) { (a, b) } else { (b, a) };
        let addr: SocketAddr = if n.is_multiple_of(3) {
            (server.ipv6, port).into()
        } else {
            (server.ipv4, port).into()
        };
        attempt(failures, || {
            udp_echo(&client.ns, &server.ns, addr, 2, 200);
        });
        flows.fetch_add(1, Ordering::Relaxed);
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// TCP connections moving a megabyte each: handshakes, flag changes and
/// closes, all the time.
fn transfers(node: &Node, stop: &AtomicBool, flows: &AtomicU64, failures: &AtomicU64) {
    let (a, b) = (&node.pods[2], &node.pods[3]);
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let port = 5_000 + (n % 1_000) as u16;
        attempt(failures, || {
            tcp_transfer(&a.ns, &b.ns, (b.ipv4, port).into(), 1 << 20, 16 << 10);
        });
        flows.fetch_add(1, Ordering::Relaxed);
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs one exchange; a panic in it (the traffic helpers assert) is
/// counted instead of ending the soak.
fn attempt(failures: &AtomicU64, exchange: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(exchange)).is_err() {
        failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// One long-lived flow at 200 datagrams a second, read by its server:
/// periodic reports of the same flow for the whole soak.
fn steady_stream(node: &Node, stop: &AtomicBool) {
    let (a, b) = (&node.pods[0], &node.pods[3]);
    let server_addr: SocketAddr = (b.ipv4, 4_000).into();
    let server = b.ns.enter(move || UdpSocket::bind(server_addr).expect("bind"));
    server.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let client = a.ns.enter(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        client.send_to(&[0x33; 500], server_addr).expect("send");
        let _ = server.recv(&mut buf);
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sample(node: &Node, agent: &Agent, elapsed: Duration, cpu_share: f64) -> Sample {
    let counters: Vec<(String, Counters)> = node
        .pods
        .iter()
        .map(|p| (p.host_if.clone(), node.counters(&p.host_if)))
        .collect();
    let text = scrape_metrics(&node.ns, METRICS);
    let (packets, bytes) = recorded(&text, &counters);
    let (kernel_packets, kernel_bytes) = kernel_totals(&counters);
    Sample {
        elapsed,
        rss_kib: rss_kib(agent.pid()),
        cpu_share,
        kernel_flow_entries: sum_series(&text, "hubcap_kernel_flow_entries"),
        flow_table_directions: sum_series(&text, "hubcap_flow_table_directions"),
        records_written: sum_series(&text, "hubcap_records_written_total"),
        losses: LOSS_SERIES.iter().map(|s| sum_series(&text, s)).sum(),
        packets_accounted: packets as f64 / kernel_packets.max(1) as f64,
        bytes_accounted: bytes as f64 / kernel_bytes.max(1) as f64,
    }
}

/// Packets and bytes of the veths' both directions.
fn kernel_totals(counters: &[(String, Counters)]) -> (u64, u64) {
    counters.iter().fold((0, 0), |(p, b), (_, c)| {
        (p + c.rx_packets + c.tx_packets, b + c.rx_bytes + c.tx_bytes)
    })
}

/// Packets and bytes in hubcap's written records on these veths
/// (`hubcap_flow_packets_total` / `_bytes_total`, by interface and hook).
fn recorded(text: &str, counters: &[(String, Counters)]) -> (u64, u64) {
    let on_veths = |name: &str| -> u64 {
        counters
            .iter()
            .map(|(ifname, _)| {
                let label = format!("interface=\"{ifname}\"");
                text.lines()
                    .filter(|l| l.starts_with(name) && l.contains(&label))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .map(|v| v as u64)
                    .sum::<u64>()
            })
            .sum()
    };
    (
        on_veths("hubcap_flow_packets_total{"),
        on_veths("hubcap_flow_bytes_total{"),
    )
}

/// The sum of every series that starts with `prefix` (a name, or a name
/// with its labels), 0 when there is none.
fn sum_series(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(prefix)?;
            (rest.is_empty() || rest.starts_with('{') || prefix.ends_with('}')).then_some(value)
        })
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User and system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; here 11 and 12 (state is 0).
    let clock_ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (ticks(11) + ticks(12)) as f64 / clock_ticks
}
