//! Runs the real `hubcap` binary inside a test's node namespace.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// `HUBCAP_BIN`, else `hubcap` next to the test binary's `deps` folder
/// (`target/<profile>/hubcap`, which `cargo xtask test` builds first).
pub fn hubcap_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HUBCAP_BIN") {
        return p.into();
    }
    built_bin("hubcap")
}

/// A workspace binary `cargo xtask test` builds before the tests:
/// `target/<profile>/NAME`, next to the test binary's `deps` folder (or
/// next to the running binary, for the workspace's own tools).
pub fn built_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().expect("the binary's folder");
    let beside = dir.join(name);
    if beside.exists() {
        return beside;
    }
    let bin = dir.parent().expect("target/<profile>").join(name);
    assert!(bin.exists(), "{} not built: run `cargo xtask test`", bin.display());
    bin
}

pub struct Agent {
    /// The Observer API's unix socket (`hubcap run` only).
    pub grpc_socket: Option<PathBuf>,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    stdout_thread: Option<JoinHandle<String>>,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: Vec<String>,
}

impl Agent {
    /// Starts `hubcap run ARGS` in `ns` and waits until it reports capturing.
    pub fn start(ns: &Netns, args: &[&str]) -> Agent {
        Agent::start_subcommand(ns, "run", args)
    }

    /// Starts `hubcap SUBCOMMAND ARGS` in `ns` and waits until it reports
    /// capturing.
    pub fn start_subcommand(ns: &Netns, subcommand: &str, args: &[&str]) -> Agent {
        let mut cmd = ns.command(hubcap_bin().to_str().expect("UTF-8 path"));
        cmd.arg(subcommand).args(args);
        // Each agent serves the Observer API on a socket of its own, never
        // the default path a real agent on this machine may be using.
        let mut grpc_socket = None;
        if subcommand == "run" {
            match args.iter().position(|a| *a == "--grpc-socket") {
                Some(i) => grpc_socket = Some(PathBuf::from(args[i + 1])).filter(|p| p.as_os_str() != "none"),
                None => {
                    let path = std::env::temp_dir().join(format!("hubcap-test-{}.sock", crate::unique_id()));
                    cmd.arg("--grpc-socket").arg(&path);
                    grpc_socket = Some(path);
                }
            }
        }
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start hubcap");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        let err = child.stderr.take().expect("stderr");
        let stderr_thread = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[hubcap] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let stdout_thread = std::thread::spawn(move || {
            let mut s = String::new();
            out.read_to_string(&mut s).expect("read stdout");
            s
        });
        let agent = Agent {
            grpc_socket,
            child: Some(child),
            stderr,
            stderr_thread: Some(stderr_thread),
            stdout_thread: Some(stdout_thread),
        };
        // "capturing" is hubcap's last start-up line, logged once every
        // program is attached (no earlier line may contain the word).
        agent.wait_for_log("capturing", Duration::from_secs(20));
        agent
    }

    /// The agent's process id (`ip netns exec` execs it, so it is hubcap's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for a log line containing `needle`; panics after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_logs(needle, 1, timeout).pop().unwrap()
    }

    /// Waits for `count` log lines containing `needle`.
    pub fn wait_for_logs(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<String> = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {count} log lines with {needle:?} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then everything hubcap wrote.
    pub fn stop(mut self) -> Finished {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("hubcap did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout_thread.take().unwrap().join().expect("stdout thread");
        self.stderr_thread.take().unwrap().join().expect("stderr thread");
        let stderr = self.stderr.lock().unwrap().clone();
        Finished { status, stdout, stderr }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of one series (`name` with its labels, as exposed) in a
/// scrape of the hubcap listening on `addr` inside `ns`.
pub fn metric(ns: &Netns, addr: &'static str, series: &str) -> u64 {
    scrape_metrics(ns, addr)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series}"))
}

/// `GET /metrics` from a hubcap listening on `addr` inside `ns`; the body.
pub fn scrape_metrics(ns: &Netns, addr: &'static str) -> String {
    ns.enter(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut response = String::new();
        s.read_to_string(&mut response).expect("response");
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.contains(" 200 "), "{head}");
        assert!(
            head.to_lowercase().contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        body.to_owned()
    })
}

/// Starts `follower` (a command printing one line per flow as it comes),
/// lets it settle, runs `trigger`, and returns the first `count` lines it
/// prints; panics if they do not come within 10 s.
pub fn first_lines(follower: &mut std::process::Command, count: usize, trigger: impl FnOnce()) -> Vec<String> {
    let mut child = follower.stdout(Stdio::piped()).spawn().expect("starting the follower");
    let out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .take(count)
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(500));
    trigger();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let finished = reader.is_finished();
    let _ = child.kill();
    let _ = child.wait();
    assert!(finished, "the follower printed fewer than {count} lines within 10 s");
    reader.join().expect("reader")
}
