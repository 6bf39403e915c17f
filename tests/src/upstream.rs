//! The real upstream tools the tests judge against: Hubble's CLI and Hubble
//! Relay, unpacked by `cargo xtask setup` from `../shared/tools`.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use crate::netns::Netns;

/// `$HUBCAP_TOOLS/NAME` (set by `cargo xtask test`), else the workspace's
/// `target/tools/NAME`.
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("HUBCAP_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} missing: run `cargo xtask setup` (it unpacks ../shared/tools)",
        path.display()
    );
    path
}

/// Runs the real `hubble` CLI in `ns` and returns its standard output;
/// panics with its error output if it fails.
pub fn hubble(ns: &Netns, args: &[&str]) -> String {
    let out = ns
        .command(tool("hubble").to_str().expect("UTF-8 path"))
        .args(args)
        .output()
        .expect("running hubble");
    assert!(
        out.status.success(),
        "hubble {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// A process of the test's, killed (SIGKILL) and reaped when dropped:
/// Hubble Relay ignores SIGTERM in this version.
pub struct Background(Child);

impl Background {
    pub fn start(command: &mut Command) -> Background {
        Self::start_logging(command, None)
    }

    /// Starts `command` with its output in `log` (for a test that fails).
    pub fn start_logging(command: &mut Command, log: Option<&std::path::Path>) -> Background {
        let (out, err) = match log {
            Some(path) => {
                let file = std::fs::File::create(path).expect("log file");
                (Stdio::from(file.try_clone().expect("log file")), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = command
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting a background process");
        Background(child)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Hubble Relay in `ns`, finding its agents through the Peer service at
/// `peer_service` and serving on `listen`, both without TLS.
pub fn relay(ns: &Netns, peer_service: &str, listen: &str) -> Background {
    Background::start(ns.command(tool("hubble-relay").to_str().expect("UTF-8 path")).args([
        "serve",
        "--peer-service",
        peer_service,
        "--listen-address",
        listen,
        "--health-listen-address",
        "127.0.0.1:0",
        "--disable-server-tls",
        "--disable-client-tls",
    ]))
}
