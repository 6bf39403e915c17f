//! The capture tools compared, each started on one interface of a test
//! node and stopped with what it accounted for.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use hubcap_tests::{agent::Agent, topology::Node};
use serde::Deserialize;

use crate::procfs;

pub mod netobserv;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No capture at all.
    Baseline,
    /// A tc classifier that only returns "continue", attached like hubcap.
    Trivial,
    Hubcap,
    /// libpcap flow exporter.
    Softflowd,
    /// `tcpdump -w /dev/null`.
    Tcpdump,
    /// NetObserv's eBPF agent (tc/tcx programs, in-kernel aggregation, Go),
    /// through `../shared/tools/netobserv-run.sh`.
    NetObserv,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Baseline,
        Kind::Trivial,
        Kind::Hubcap,
        Kind::NetObserv,
        Kind::Softflowd,
        Kind::Tcpdump,
    ];
    /// Where flow records are not the point (DNS): the packet peers only.
    pub const WITHOUT_NETOBSERV: [Kind; 5] = [
        Kind::Baseline,
        Kind::Trivial,
        Kind::Hubcap,
        Kind::Softflowd,
        Kind::Tcpdump,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "no capture",
            Kind::Trivial => "trivial tc classifier",
            Kind::Hubcap => "hubcap",
            Kind::Softflowd => "softflowd",
            Kind::Tcpdump => "tcpdump -w /dev/null",
            Kind::NetObserv => "NetObserv eBPF agent",
        }
    }
}

/// What a contender accounted for; `None` where the tool cannot say.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    /// Records it emitted (flow records, captured packets).
    pub records: Option<u64>,
    /// Distinct flows it saw, for the churn scenario.
    pub flows: Option<u64>,
    /// Events or packets it says it lost.
    pub lost: Option<u64>,
    /// DNS records (L7: each a query or an answer) it wrote.
    pub dns_records: Option<u64>,
}

enum Proc {
    None,
    Agent(Agent),
    Softflowd(Child),
    /// The child, and the rest of its stderr (its statistics at exit).
    Tcpdump(Child, std::thread::JoinHandle<String>),
    /// The wrapper script, the agent's pid, its flow output.
    NetObserv(Child, u32, PathBuf),
}

pub struct Running {
    pub kind: Kind,
    proc: Proc,
    workdir: PathBuf,
    interface: String,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        match &self.proc {
            Proc::None => None,
            Proc::Agent(a) => Some(a.pid()),
            Proc::Softflowd(c) | Proc::Tcpdump(c, _) => Some(c.id()),
            Proc::NetObserv(_, agent, _) => Some(*agent),
        }
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        self.pid().map(procfs::cpu_seconds)
    }
}

/// Starts `kind` on `interface` of `node`. `hubcap_args` are added to
/// hubcap's command line.
pub fn start(kind: Kind, node: &Node, interface: &str, hubcap_args: &[&str]) -> Running {
    let workdir = PathBuf::from(format!("/dev/shm/hubcap-bench-{}", node.id));
    let _ = fs::remove_dir_all(&workdir);
    fs::create_dir_all(&workdir).expect("bench work dir");
    let proc = match kind {
        Kind::Baseline => Proc::None,
        Kind::Trivial => Proc::Agent(Agent::start_subcommand(
            &node.ns,
            "attach-noop",
            &["--interface", interface],
        )),
        Kind::Hubcap => {
            let output = workdir.join("events.log");
            let output = output.to_str().expect("UTF-8");
            let mut args = vec![
                "--interface",
                interface,
                "--output",
                output,
                "--output-max-size-mb",
                "1000000",
            ];
            args.extend_from_slice(hubcap_args);
            Proc::Agent(Agent::start(&node.ns, &args))
        }
        Kind::Softflowd => {
            let ctl = workdir.join("ctl");
            let child = node
                .ns
                .command("softflowd")
                .args(["-d", "-i", interface, "-c", ctl.to_str().unwrap()])
                .args([
                    "-p",
                    workdir.join("pid").to_str().unwrap(),
                    "-n",
                    "127.0.0.1:9995",
                    "-v",
                    "9",
                    "-6",
                ])
                // Room for every flow of the churn scenario, and timeouts
                // long enough that none expires during a run.
                .args(["-m", "4000000", "-t", "udp=3600", "-t", "tcp=3600", "-t", "icmp=3600"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("softflowd (Debian package softflowd)");
            wait_for(|| ctl.exists(), "softflowd's control socket");
            // libpcap needs a moment after the socket exists.
            std::thread::sleep(Duration::from_millis(300));
            Proc::Softflowd(child)
        }
        Kind::Tcpdump => {
            let mut child = node
                .ns
                .command("tcpdump")
                .args(["-i", interface, "-w", "/dev/null", "-n"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("tcpdump");
            // It says "listening on ..." once the capture runs.
            let mut err = BufReader::new(child.stderr.take().expect("stderr"));
            let mut line = String::new();
            err.read_line(&mut line).expect("tcpdump stderr");
            assert!(line.contains("listening"), "tcpdump: {line}");
            let rest = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut err, &mut s);
                s
            });
            Proc::Tcpdump(child, rest)
        }
        Kind::NetObserv => {
            let (script, agent, output) = netobserv::start(node, interface, &workdir, hubcap_args);
            Proc::NetObserv(script, agent, output)
        }
    };
    Running {
        kind,
        proc,
        workdir,
        interface: interface.to_owned(),
    }
}

fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "no {what} within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the contender and reads what it accounted for.
pub fn stop(running: Running, node: &Node) -> Outcome {
    let Running {
        kind,
        proc,
        workdir,
        interface,
    } = running;
    let outcome = match proc {
        Proc::None => Outcome::default(),
        Proc::Agent(agent) => {
            if std::env::var_os("HUBCAP_BENCH_DEBUG").is_some() {
                let runs = crate::procfs::bpf_prog_stats(agent.pid(), crate::procfs::PROG_TYPE_SCHED_CLS);
                eprintln!("bench: {kind:?} tc program (run time ns, runs) from bpf_stats: {runs:?}");
            }
            let finished = agent.stop();
            if std::env::var_os("HUBCAP_BENCH_DEBUG").is_some() {
                let tail: Vec<String> = finished.stderr.iter().rev().take(3).cloned().collect();
                eprintln!("bench: {kind:?} said: {}", tail.join(" | "));
            }
            assert!(
                finished.status.success(),
                "{} failed: {:?}",
                kind.name(),
                finished.stderr
            );
            if kind == Kind::Hubcap {
                hubcap_outcome(&workdir.join("events.log"), &interface)
            } else {
                Outcome::default()
            }
        }
        Proc::Softflowd(child) => softflowd_outcome(child, node, &workdir),
        Proc::Tcpdump(child, stderr) => tcpdump_outcome(child, stderr),
        Proc::NetObserv(script, _, output) => netobserv::stop(script, &output),
    };
    // HUBCAP_BENCH_KEEP=PATH keeps each hubcap run's output as PATH.N.
    if let Some(keep) = std::env::var_os("HUBCAP_BENCH_KEEP") {
        use std::sync::atomic::{AtomicU32, Ordering};
        static RUN: AtomicU32 = AtomicU32::new(0);
        let n = RUN.fetch_add(1, Ordering::Relaxed);
        let _ = fs::copy(workdir.join("events.log"), format!("{}.{n}", keep.to_string_lossy()));
    }
    let _ = fs::remove_dir_all(&workdir);
    outcome
}

/// The fields of a hubcap output line the benchmark needs.
#[derive(Deserialize)]
struct Line {
    flow: Option<LineFlow>,
    lost_events: Option<LineLost>,
}

#[derive(Deserialize)]
struct LineFlow {
    interface: Option<LineInterface>,
    /// Absent on L7 (DNS) records: they carry no counts.
    extensions: Option<LineExtensions>,
    #[serde(rename = "Summary", default)]
    summary: String,
    #[serde(default)]
    trace_observation_point: String,
}

#[derive(Deserialize)]
struct LineInterface {
    name: String,
}

#[derive(Deserialize)]
struct LineExtensions {
    value: LineCounts,
}

#[derive(Deserialize)]
struct LineCounts {
    packets: u64,
    bytes: u64,
    flow_state: String,
}

#[derive(Deserialize)]
struct LineLost {
    num_events_lost: String,
}

fn hubcap_outcome(path: &std::path::Path, interface: &str) -> Outcome {
    let file = fs::File::open(path).expect("hubcap output");
    let mut o = Outcome {
        packets: Some(0),
        bytes: Some(0),
        records: Some(0),
        flows: Some(0),
        lost: Some(0),
        dns_records: Some(0),
    };
    for line in BufReader::with_capacity(1 << 20, file).lines() {
        let line: Line = serde_json::from_str(&line.expect("read")).expect("hubcap line");
        if let Some(lost) = line.lost_events {
            *o.lost.as_mut().unwrap() += lost.num_events_lost.parse::<u64>().expect("count");
        }
        let Some(flow) = line.flow else { continue };
        if flow.interface.is_some_and(|i| i.name == interface) {
            let Some(extensions) = flow.extensions else {
                *o.dns_records.as_mut().unwrap() += 1;
                continue;
            };
            let c = extensions.value;
            *o.packets.as_mut().unwrap() += c.packets;
            *o.bytes.as_mut().unwrap() += c.bytes;
            *o.records.as_mut().unwrap() += 1;
            // Flows the churn generator opened: UDP from the pod.
            if c.flow_state == "B" && flow.summary == "UDP" && flow.trace_observation_point == "FROM_ENDPOINT" {
                *o.flows.as_mut().unwrap() += 1;
            }
        }
    }
    o
}

fn softflowctl(node: &Node, workdir: &std::path::Path, command: &str) -> String {
    let out = node
        .ns
        .command("softflowctl")
        .args(["-c", workdir.join("ctl").to_str().unwrap(), command])
        .output()
        .expect("softflowctl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn number_after(text: &str, label: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn softflowd_outcome(mut child: Child, node: &Node, workdir: &std::path::Path) -> Outcome {
    let stats = softflowctl(node, workdir, "statistics");
    let flows_dump = softflowctl(node, workdir, "dump-flows");
    let _ = softflowctl(node, workdir, "shutdown");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    // dump-flows lists each flow with `octets>:N packets>:N octets<:N packets<:N`.
    let mut bytes = 0u64;
    for word in flows_dump.split_whitespace() {
        for prefix in ["octets>:", "octets<:"] {
            if let Some(n) = word.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok()) {
                bytes += n;
            }
        }
    }
    let active = number_after(&stats, "Number of active flows:").unwrap_or(0);
    let expired = number_after(&stats, "Flows expired:").unwrap_or(0);
    Outcome {
        packets: number_after(&stats, "Packets processed:"),
        bytes: Some(bytes),
        records: Some(active + expired),
        flows: Some(active + expired),
        lost: number_after(&stats, "Packets dropped by libpcap:"),
        dns_records: None,
    }
}

fn tcpdump_outcome(mut child: Child, stderr: std::thread::JoinHandle<String>) -> Outcome {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let _ = child.wait();
    let stderr = stderr.join().unwrap_or_default();
    let count = |label: &str| {
        stderr
            .lines()
            .find(|l| l.contains(label))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let captured = count("packets captured");
    Outcome {
        packets: captured,
        bytes: None,
        records: captured,
        flows: None,
        lost: count("dropped by kernel"),
        dns_records: None,
    }
}
