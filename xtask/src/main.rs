//! Orchestration for hubcap: `cargo xtask setup|run|test|image|cluster|manifests|bench|fuzz|soak`.
//!
//! Every command does its own set-up first, so that on a fresh machine of the
//! project's kind `cargo xtask run ...` and `cargo xtask test` just work.

mod fuzz;
mod image;
mod setup;

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "hubcap build, set-up and test orchestration")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Set up, build in release mode and run `hubcap` with the given arguments
    /// (default: `run`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test: formatting, clippy, unit tests and the
    /// root end-to-end tests.
    Test,
    /// Set up, build hubcap and its OCI image (`localhost/hubcap:dev`) with
    /// podman.
    Image,
    /// Set up, build hubcap's image, and run a real Kubernetes cluster on
    /// this machine (etcd, API server, controller-manager, scheduler,
    /// containerd, kubelet, CNI bridge, kube-proxy, in namespaces of their
    /// own; more nodes join with their own containerd, kubelet and
    /// kube-proxy) with the image loaded and the chart installed; Ctrl-C
    /// removes it.
    Cluster {
        /// Where the nodes keep their state and logs.
        #[arg(long, default_value = "target/kube-node")]
        dir: String,
        /// Load the image only; do not install the chart.
        #[arg(long)]
        no_install: bool,
        /// Nodes in the cluster (the first runs the control plane).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
        nodes: u8,
    },
    /// Write deploy/kubernetes/ from the Helm chart (deploy/helm/hubcap)
    /// with its default values.
    Manifests,
    /// Set up, then run the side-by-side benchmark; writes
    /// target/bench/report.json.
    Bench {
        /// Short runs (under 5 minutes on 2 cores).
        #[arg(long)]
        quick: bool,
    },
    /// Set up, then fuzz: hubcap's loaded tc programs against the host
    /// parser through BPF_PROG_TEST_RUN (writes target/fuzz/kernel.json),
    /// then the user-space decoders with cargo fuzz.
    Fuzz {
        /// Packets through the kernel programs.
        #[arg(long, default_value_t = 10_000_000)]
        packets: u64,
        /// The packet generator's seed (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Seconds of libFuzzer for each user-space decoder target (cargo
        /// fuzz, fuzz/); 0 skips them.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Set up, then run hubcap under churn and steady traffic for N minutes
    /// (writes target/soak/report.md).
    Soak {
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::ensure_all(),
        Cmd::Run { args } => {
            setup::ensure_all()?;
            build_hubcap()?;
            let args = if args.is_empty() { vec!["run".to_owned()] } else { args };
            let bin = workspace_root().join("target/release/hubcap");
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("starting {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Image => {
            setup::ensure_all()?;
            build_hubcap()?;
            image::build(&workspace_root())
        }
        Cmd::Cluster { dir, no_install, nodes } => {
            setup::ensure_all()?;
            build_hubcap()?;
            let root = workspace_root();
            image::build(&root)?;
            cargo_env(
                &[
                    "build",
                    "--release",
                    "--package",
                    "hubcap-tests",
                    "--bin",
                    "hubcap-kube-node",
                ],
                &REAL_EBPF,
            )?;
            let status = Command::new(root.join("target/release/hubcap-kube-node"))
                .arg(&dir)
                .args(no_install.then_some("--no-install"))
                .args(["--nodes", &nodes.to_string()])
                .env("HUBCAP_TOOLS", setup::tools_dir())
                .current_dir(&root)
                .status()
                .context("running the node")?;
            if !status.success() {
                bail!("the node failed ({status})");
            }
            Ok(())
        }
        Cmd::Manifests => {
            setup::ensure_all()?;
            let root = workspace_root();
            let status = Command::new("python3")
                .arg(root.join("xtask/helm.py"))
                .args(["manifests", "deploy/helm/hubcap", "deploy/kubernetes"])
                .current_dir(&root)
                .status()
                .context("running xtask/helm.py")?;
            if !status.success() {
                bail!("rendering the chart failed ({status})");
            }
            Ok(())
        }
        Cmd::Bench { quick } => {
            setup::ensure_all()?;
            build_hubcap()?;
            cargo_env(&["build", "--release", "--package", "hubcap-bench"], &REAL_EBPF)?;
            let root = workspace_root();
            let status = Command::new(root.join("target/release/hubcap-bench"))
                .args(quick.then_some("--quick"))
                .env("HUBCAP_BIN", root.join("target/release/hubcap"))
                .env("HUBCAP_BENCH_OUT", root.join("target/bench/report.json"))
                .current_dir(&root)
                .status()
                .context("running the benchmark")?;
            if !status.success() {
                bail!("benchmark failed ({status})");
            }
            Ok(())
        }
        Cmd::Fuzz { packets, seed, seconds } => {
            setup::ensure_all()?;
            build_hubcap()?;
            let root = workspace_root();
            std::fs::create_dir_all(root.join("target/fuzz"))?;
            let mut fuzz = Command::new(root.join("target/release/hubcap-fuzz-kernel"));
            fuzz.arg("--packets")
                .arg(packets.to_string())
                .args(["--report", "target/fuzz/kernel.json", "--failures", "target/fuzz"])
                .current_dir(&root);
            if let Some(seed) = seed {
                fuzz.arg("--seed").arg(seed.to_string());
            }
            let status = fuzz.status().context("running hubcap-fuzz-kernel")?;
            if !status.success() {
                bail!("the kernel fuzzer found a difference ({status})");
            }
            if seconds > 0 {
                fuzz::decoders(&root, seconds)?;
            }
            Ok(())
        }
        Cmd::Soak { minutes } => {
            setup::ensure_all()?;
            let real_ebpf = [("HUBCAP_REQUIRE_EBPF", "1")];
            build_release_bins(&["agent", "hubcap-tests"], &real_ebpf)?;
            let root = workspace_root();
            std::fs::create_dir_all(root.join("target/soak"))?;
            let status = Command::new(root.join("target/release/hubcap-soak"))
                .args(["--minutes", &minutes.to_string(), "--report", "target/soak/report.md"])
                .current_dir(&root)
                .status()
                .context("running hubcap-soak")?;
            if !status.success() {
                bail!("the soak failed ({status})");
            }
            Ok(())
        }
        Cmd::Test => {
            setup::ensure_all()?;
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            // Unit tests (the eBPF crate's parser included: --workspace takes
            // non-default members too) and the end-to-end tests. They run the real
            // binary with the real eBPF object: demand it instead of a stub.
            let tools = setup::tools_dir();
            let real_ebpf = [
                ("HUBCAP_REQUIRE_EBPF", "1"),
                ("HUBCAP_TOOLS", tools.to_str().expect("UTF-8 path")),
            ];
            build_hubcap()?;
            // The image test runs what was just built.
            image::build(&workspace_root())?;
            run_tests(
                &[
                    "test",
                    "--release",
                    "--workspace",
                    "--no-fail-fast",
                    "--",
                    "--test-threads=1",
                ],
                &real_ebpf,
            )
        }
    }
}

/// Runs `cargo test`, echoing its output, and ends with one plain line that
/// totals every test binary's result (cargo's own last line is often a
/// binary with no tests, such as the doc tests).
fn run_tests(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut child = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .env("PATH", setup::path_with_cargo_bin())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)
                            .map(|n| n.trim().trim_start_matches("ok. "))
                    })
                    .and_then(|n| n.trim_start_matches("FAILED. ").parse::<u64>().ok())
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
        }
    }
    let status = child.wait()?;
    println!("{passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("tests failed ({status})");
    }
    Ok(())
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The eBPF object must be real (never the stub a plain `cargo check`
/// embeds without the toolchain).
const REAL_EBPF: [(&str, &str); 1] = [("HUBCAP_REQUIRE_EBPF", "1")];

/// hubcap and the kernel fuzzer, built by one and the same cargo command
/// for `run`, `test`, `image`, `bench` and `fuzz`: the same packages give
/// the same features, so whichever ran first built it for all the others
/// (a different package set would rebuild every shared dependency).
fn build_hubcap() -> Result<()> {
    build_release_bins(&["agent", "hubcap-fuzz-kernel"], &REAL_EBPF)
}

/// `cargo build --release` of every binary of `packages`.
fn build_release_bins(packages: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let mut args = vec!["build", "--release", "--bins"];
    for package in packages {
        args.extend(["--package", package]);
    }
    cargo_env(&args, env)
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_env(args, &[])
}

fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .env("PATH", setup::path_with_cargo_bin())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
