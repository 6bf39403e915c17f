//! The libFuzzer half of `cargo xtask fuzz`: every cargo-fuzz target in
//! fuzz/ for a fixed time, starting from the seeds in fuzz/seeds/ and
//! keeping what it learns in target/fuzz/corpus/ (the repository's seeds
//! stay as they are).

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::setup;

/// The targets in fuzz/Cargo.toml.
const TARGETS: [&str; 5] = [
    "ringbuf_records",
    "hubble_json_lines",
    "flow_logs_config",
    "flow_filters",
    "dns_packets",
];

pub fn decoders(root: &Path, seconds: u64) -> Result<()> {
    setup::ensure_cargo_fuzz()?;
    for target in TARGETS {
        let corpus = root.join("target/fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let seeds = root.join("fuzz/seeds").join(target);
        let mut cmd = Command::new("cargo");
        cmd.args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", target])
            .arg(&corpus)
            .args(seeds.is_dir().then_some(&seeds))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", root.join("target/fuzz").display()))
            // The decoders never load programs: no BPF object in this build.
            .env("HUBCAP_EBPF_STUB", "1")
            .env("PATH", setup::path_with_cargo_bin())
            .current_dir(root);
        println!("libFuzzer: {target} for {seconds} s");
        let status = cmd
            .status()
            .with_context(|| format!("running cargo fuzz for {target}"))?;
        if !status.success() {
            bail!("libFuzzer found a failing input for {target} ({status}); it is in target/fuzz/");
        }
    }
    Ok(())
}
