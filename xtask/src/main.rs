//! Orchestration for hubcap: `cargo xtask setup|run|test`.
//!
//! Every command does its own set-up first, so that on a fresh machine of the
//! project's kind `cargo xtask run ...` and `cargo xtask test` just work.

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
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::ensure_all(),
        Cmd::Run { args } => {
            setup::ensure_all()?;
            cargo_env(
                &["build", "--release", "--package", "agent", "--bin", "hubcap"],
                &[("HUBCAP_REQUIRE_EBPF", "1")],
            )?;
            let args = if args.is_empty() { vec!["run".to_owned()] } else { args };
            let bin = workspace_root().join("target/release/hubcap");
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("starting {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test => {
            setup::ensure_all()?;
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            // Unit tests (the eBPF crate's parser included: --workspace takes
            // non-default members too) and the end-to-end tests. They run the real
            // binary with the real eBPF object: demand it instead of a stub.
            let real_ebpf = [("HUBCAP_REQUIRE_EBPF", "1")];
            cargo_env(
                &["build", "--release", "--package", "agent", "--bin", "hubcap"],
                &real_ebpf,
            )?;
            cargo_env(
                &["test", "--release", "--workspace", "--", "--test-threads=1"],
                &real_ebpf,
            )
        }
    }
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
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
