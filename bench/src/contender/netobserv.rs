//! NetObserv's eBPF agent as a contender, run the way its wrapper
//! (`../shared/tools/netobserv-run.sh`) documents a fair standalone run:
//! full-rate sampling, JSON flows on standard output, tcx, its kernel map
//! as large as hubcap's (`--flow-map-size`, else the agent's default 5,000),
//! 1 s active timeout, and drained before it stops (it exports only on
//! eviction). Under `setarch --uname-2.6`: this kernel refuses its fentry
//! RTT program, so it runs its tc/tcx flow programs without drop or RTT
//! tracking.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use hubcap_tests::topology::Node;
use serde::Deserialize;

use super::Outcome;

/// How the agent is configured, for the report.
pub const CONFIGURATION: &str = "NetObserv eBPF agent v1.12.0 through netobserv-run.sh: SAMPLING=1, tcx, \
     CACHE_ACTIVE_TIMEOUT=1s, CACHE_MAX_FLOWS = hubcap's --flow-map-size where a scenario sets one \
     (else its default 5,000), JSON to a file, drained before stopping; under setarch --uname-2.6 \
     (no fentry on this kernel: no RTT, no drop tracking)";

fn wrapper() -> PathBuf {
    let path = hubcap_tests::workspace_root().join("../shared/tools/netobserv-run.sh");
    assert!(path.is_file(), "{} missing", path.display());
    path
}

/// Starts the wrapper on `interface`; returns it, the agent's pid (for
/// CPU and RSS) and where its flows go, once the agent is attached.
pub fn start(node: &Node, interface: &str, workdir: &Path, hubcap_args: &[&str]) -> (Child, u32, PathBuf) {
    let output = workdir.join("netobserv.jsonl");
    let map_size = hubcap_args
        .iter()
        .position(|a| *a == "--flow-map-size")
        .and_then(|at| hubcap_args.get(at + 1))
        .copied()
        .unwrap_or("5000");
    let mut child = node
        .ns
        .command("bash")
        .arg(wrapper())
        .arg(interface)
        .arg(&output)
        .env("NOBS_AGENT", hubcap_tests::upstream::tool("netobserv-ebpf-agent"))
        .env("NOBS_MAX_FLOWS", map_size)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netobserv-run.sh");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    let agent = loop {
        line.clear();
        let read = stderr.read_line(&mut line).expect("netobserv-run.sh's stderr");
        let log = || std::fs::read_to_string(output.with_extension("jsonl.log")).unwrap_or_default();
        assert!(
            read > 0 && Instant::now() < deadline,
            "NetObserv's agent never attached: {}",
            log()
        );
        if let Some(rest) = line.split("ready (agent pid ").nth(1) {
            break rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|pid| pid.parse().ok())
                .expect("the agent's pid");
        }
        assert!(!line.contains("not attached"), "{line}{}", log());
    };
    // Its stderr, drained so the script never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, agent, output)
}

/// `OUT.summary.json`, which the wrapper writes after the drain.
#[derive(Deserialize)]
struct Summary {
    packets: u64,
    bytes: u64,
    records: u64,
    flows: u64,
    lost_flows: u64,
}

/// SIGTERM to the wrapper (it drains, stops the agent, sums the flows).
pub fn stop(mut script: Child, output: &Path) -> Outcome {
    let pid = nix::unistd::Pid::from_raw(script.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = script.wait().expect("netobserv-run.sh");
    let summary = output.with_extension("jsonl.summary.json");
    let text = std::fs::read_to_string(&summary)
        .unwrap_or_else(|e| panic!("{}: {e} (the wrapper ended with {status})", summary.display()));
    let s: Summary = serde_json::from_str(&text).expect("the wrapper's summary");
    Outcome {
        packets: Some(s.packets),
        bytes: Some(s.bytes),
        records: Some(s.records),
        flows: Some(s.flows),
        lost: Some(s.lost_flows),
        dns_records: None,
    }
}
