//! Helpers for hubcap's end-to-end tests: throw-away network namespaces,
//! veth pairs and bridges with unique names, traffic between them, and the
//! real `hubcap` binary run against them.
//!
//! Everything a test creates is removed when its guard drops, including
//! when the test panics. Traffic only ever goes between the test's own
//! namespaces.

pub mod agent;
pub mod dns;
pub mod grpc;
pub mod harness;
pub mod helm;
pub mod kube;
pub mod kube_node;
pub mod netns;
pub mod output;
pub mod scratch;
pub mod soak;
pub mod topology;
pub mod traffic;
pub mod upstream;

/// The workspace's root directory (the chart, xtask's scripts).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Root is needed for namespaces and eBPF; say so plainly instead of
/// failing somewhere deep inside.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "end-to-end tests need root (run `cargo xtask test` as root)"
    );
}

/// A short id unique to this process and call, for interface names (15
/// characters at most) and namespace names.
pub fn unique_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:04x}{n:x}", std::process::id() & 0xffff)
}
