//! Generates the Hubble protobuf types and builds the eBPF object.
//!
//! The eBPF object needs nightly with `rust-src` and bpf-linker. When they
//! are missing (a plain `cargo check` or `clippy` on a fresh machine) an
//! empty object is embedded instead and `hubcap run` says how to get the real
//! one; `cargo xtask` installs them and sets `HUBCAP_REQUIRE_EBPF=1` so a
//! missing toolchain is an error there, never a silent stub.

use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

fn main() -> Result<()> {
    compile_protos()?;
    build_ebpf()
}

fn compile_protos() -> Result<()> {
    let files = [
        "proto/flow/flow.proto",
        "proto/relay/relay.proto",
        "proto/observer/observer.proto",
        "proto/peer/peer.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"]).context("compiling .proto files")?;
    // Kept for tests that check the JSON writer against a reflection-based
    // protojson serializer.
    // Struct is added: it is what `extensions` carries.
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    let with_struct = protox::compile(files.iter().copied().chain(["google/protobuf/struct.proto"]), ["proto"])?;
    fs::write(
        out_dir.join("hubble_descriptors.bin"),
        prost::Message::encode_to_vec(&with_struct),
    )?;
    // Messages, plus the Observer service's server and client.
    tonic_prost_build::configure()
        .compile_fds(descriptors)
        .context("generating Rust types")?;
    Ok(())
}

fn build_ebpf() -> Result<()> {
    println!("cargo:rerun-if-env-changed=HUBCAP_REQUIRE_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    let object = out_dir.join("hubcap-ebpf");
    let required = env::var("HUBCAP_REQUIRE_EBPF").is_ok_and(|v| v == "1");
    // Builds that never load programs (the libFuzzer targets, built with
    // sanitizer flags a BPF build must not see) ask for no object.
    println!("cargo:rerun-if-env-changed=HUBCAP_EBPF_STUB");
    if env::var("HUBCAP_EBPF_STUB").is_ok_and(|v| v == "1") && !required {
        fs::write(&object, []).context("writing the stub object")?;
        return Ok(());
    }
    if let Some(missing) = missing_ebpf_toolchain() {
        if required {
            bail!("cannot build the eBPF object: {missing}; run `cargo xtask setup`");
        }
        println!(
            "cargo:warning=embedding an empty eBPF object ({missing}); `cargo xtask setup` installs the toolchain"
        );
        // Check again on every build until the toolchain is there, so a stub
        // never outlives the reason for it.
        println!("cargo:rerun-if-env-changed=PATH");
        println!("cargo:rerun-if-changed={}", cargo_bin("bpf-linker").display());
        fs::write(&object, []).context("writing the stub object")?;
        return Ok(());
    }
    // aya-build hands every line the inner cargo prints to stderr on as a
    // cargo warning, which cargo then repeats on every later build ("warning:
    // agent@0.1.0: Finished ..."). Quiet, the inner cargo prints only what
    // is wrong: errors still show, and compiler warnings come as messages.
    // SAFETY: build scripts are single-threaded; the variable is for the
    // child cargo only.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    let ebpf_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../agent-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize().context("locating agent-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: ebpf_dir.to_str().context("non-UTF-8 path")?,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

fn cargo_bin(name: &str) -> PathBuf {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cargo"));
    cargo_home.join("bin").join(name)
}

/// What is missing to build the eBPF object, if anything.
fn missing_ebpf_toolchain() -> Option<String> {
    let on_path = |name: &str| {
        env::var_os("PATH").is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
    };
    if !on_path("bpf-linker") {
        return Some("bpf-linker is not on PATH".into());
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output();
    let Ok(sysroot) = sysroot else {
        return Some("rustup is not on PATH".into());
    };
    if !sysroot.status.success() {
        return Some("no nightly Rust toolchain".into());
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Some("the nightly toolchain has no rust-src".into());
    }
    None
}
