//! Idempotent machine set-up: Debian packages the tests use, nightly
//! `rust-src`, a bpf-linker built against the nightly rustc's own LLVM, and
//! the real upstream tools the tests judge against (Hubble's CLI and Relay)
//! unpacked from `../shared/tools` into `target/tools`.
//!
//! Each step first checks whether it is already done, so a second run takes
//! well under a second. Anything that cannot be installed is named.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Debian packages the end-to-end tests and benchmarks call.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("iputils-ping", "ping"),
    ("iperf3", "iperf3"),
    ("nftables", "nft"),
    ("tcpdump", "tcpdump"),
    ("prometheus", "promtool"),
    ("softflowd", "softflowd"),
    // The Kubernetes tests' etcd, under the real kube-apiserver.
    ("etcd-server", "etcd"),
    // `cargo xtask image` and the image test; runc because crun refuses
    // this kind of machine's hybrid cgroup hierarchy.
    ("podman", "podman"),
    ("runc", "runc"),
    // The IPFIX test's collector (nfcapd) and reader (nfdump).
    ("nfdump", "nfcapd"),
    // The IPFIX-over-TCP test's collector: an RFC 7011 reader for Debian's
    // own Python (a module, not a command: its file is what is checked).
    ("python3-ipfix", "/usr/lib/python3/dist-packages/ipfix/reader.py"),
    // The DNS test's server and client.
    ("dnsmasq-base", "dnsmasq"),
    ("bind9-dnsutils", "dig"),
    // The DNS test's failing upstream: a resolver whose own upstream is
    // dead answers SERVFAIL.
    ("unbound", "/usr/sbin/unbound"),
    // The benchmark's DNS load generator.
    ("dnsperf", "dnsperf"),
    // The Kubernetes node test's runtime (with runc above): containerd, the
    // CNI plugins, kube-proxy's conntrack, and the pods' busybox.
    ("containerd", "containerd"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("conntrack", "conntrack"),
    ("busybox-static", "/bin/busybox"),
    // What is attached to the kernel, for the tests that check nothing is
    // left behind.
    ("bpftool", "bpftool"),
    // The Hubble UI test: its frontend served by nginx as in Cilium's
    // chart, opened in headless Chromium driven by selenium.
    ("nginx-light", "nginx"),
    ("chromium", "chromium"),
    ("chromium-driver", "chromedriver"),
    (
        "python3-selenium",
        "/usr/lib/python3/dist-packages/selenium/__init__.py",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// libFuzzer's cargo front end, for `cargo xtask fuzz` only (not part of
/// `ensure_all`: the tests do not need it).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const EBPF_TOOLCHAIN: &str = "nightly";

pub fn ensure_all() -> Result<()> {
    ensure_debian_packages()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_upstream_tools()?;
    ensure_helm_engine()?;
    Ok(())
}

/// Helm itself, as a library for Python (PyPI `helm-python-sdk`): the chart
/// is linted, rendered and installed with the real Helm engine.
const HELM_SDK: &str = "helm-python-sdk==0.2.2";

fn ensure_helm_engine() -> Result<()> {
    let present = Command::new("python3")
        .args(["-c", "import helm_python"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("setup: installing {HELM_SDK} from PyPI");
    run(Command::new("python3").args(["-m", "pip", "install", "--quiet", HELM_SDK]))
        .with_context(|| format!("pip install {HELM_SDK} failed (is PyPI reachable?)"))
}

/// Where the tests find the upstream tools (`hubble`, `hubble-relay`).
pub fn tools_dir() -> PathBuf {
    workspace_root().join("target/tools")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Unpacks the upstream binaries no registry here has, kept beside the
/// repository in `../shared/tools` (its `install` is idempotent).
fn ensure_upstream_tools() -> Result<()> {
    let install = workspace_root().join("../shared/tools/install");
    if !install.is_file() {
        if tools_dir().join("hubble").is_file() {
            return Ok(());
        }
        bail!(
            "the upstream tools (hubble, hubble-relay) are missing: expected {} (the shared folder beside this repository)",
            install.display()
        );
    }
    run(Command::new("bash")
        .arg(&install)
        .arg(tools_dir())
        .stdout(Stdio::null()))
    .context("unpacking the upstream tools")?;
    ensure_hubble_ui_frontend(&install)
}

/// The Hubble UI's built frontend (what its image serves), unpacked into
/// `target/tools/hubble-ui-frontend` once per archive.
fn ensure_hubble_ui_frontend(install: &Path) -> Result<()> {
    let Some(archive) = fs::read_dir(install.with_file_name("hubble-ui"))
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("frontend-"))
        })
    else {
        return Ok(());
    };
    let dir = tools_dir().join("hubble-ui-frontend");
    let stamp = dir.join(".archive");
    let name = archive.file_name().expect("a file").to_string_lossy().into_owned();
    if fs::read_to_string(&stamp).is_ok_and(|s| s == name) {
        return Ok(());
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    run(Command::new("tar").arg("-xJf").arg(&archive).arg("-C").arg(&dir))
        .with_context(|| format!("unpacking {}", archive.display()))?;
    fs::write(stamp, name)?;
    Ok(())
}

/// `PATH` with `$CARGO_HOME/bin` in front, where `cargo install` puts bpf-linker.
pub fn path_with_cargo_bin() -> OsString {
    let mut paths = vec![cargo_home().join("bin")];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    env::join_paths(paths).expect("PATH entries contain no separator")
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"))
}

fn home() -> PathBuf {
    env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn is_root() -> bool {
    // SAFETY-free check: effective uid 0 shows in /proc/self/status.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// A command on the PATH (or in sbin), or, for an absolute path, that file.
fn command_exists(name: &str) -> bool {
    if Path::new(name).is_absolute() {
        return Path::new(name).is_file();
    }
    env::split_paths(&path_with_cargo_bin()).any(|dir| dir.join(name).is_file())
        || ["/usr/sbin", "/sbin"].iter().any(|d| Path::new(d).join(name).is_file())
}

fn ensure_debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, binary)| !command_exists(binary))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}: run `sudo apt-get install {}` or run this as root",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed (are Debian's package mirrors reachable?)")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("apt-get install {} failed", missing.join(" ")))?;
    Ok(())
}

fn ensure_rust_src() -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", EBPF_TOOLCHAIN]))
            .with_context(|| {
                format!(
                    "the `{EBPF_TOOLCHAIN}` Rust toolchain is needed to build the eBPF programs; install it with rustup"
                )
            })?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the {EBPF_TOOLCHAIN} toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", EBPF_TOOLCHAIN]))
        .context("`rustup component add rust-src --toolchain nightly` failed")
}

/// The nightly rustc's LLVM: its major version (for bpf-linker's feature)
/// and the shared library in its sysroot that bpf-linker links against.
struct RustcLlvm {
    major: String,
    library: PathBuf,
}

fn nightly_llvm() -> Result<RustcLlvm> {
    let version = output(Command::new("rustc").args([&format!("+{EBPF_TOOLCHAIN}"), "-vV"]))?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` names no LLVM version")?;
    let major = llvm.split('.').next().unwrap_or_default().to_owned();
    let sysroot = output(Command::new("rustc").args([&format!("+{EBPF_TOOLCHAIN}"), "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let library = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("libLLVM.so.{major}")))
        })
        .with_context(|| format!("no libLLVM.so.{major}* in {}", lib_dir.display()))?;
    Ok(RustcLlvm { major, library })
}

fn ensure_bpf_linker() -> Result<()> {
    let llvm = nightly_llvm()?;
    let library_name = llvm.library.file_name().expect("a file").to_owned();
    // A stable place: the installed bpf-linker finds libLLVM through an rpath
    // into this folder, so it must outlive the build.
    let prefix = home().join(".local/share/hubcap/llvm").join(&library_name);
    let stamp = prefix.join("bpf-linker.stamp");
    let wanted = format!("{BPF_LINKER_VERSION} llvm-{}", llvm.major);
    let linker_runs = Command::new(cargo_home().join("bin/bpf-linker"))
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if linker_runs && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted) {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {}",
        llvm.library.display()
    );
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for name in [OsString::from("libLLVM.so"), library_name] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm.library, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features", &format!("llvm-{}", llvm.major)])
        .env("LLVM_PREFIX", &prefix))
    .context("building bpf-linker failed")?;
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

/// Installs cargo-fuzz unless this version is there.
pub(crate) fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new(cargo_home().join("bin/cargo-fuzz"))
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if installed {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))
        .context("installing cargo-fuzz failed")
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} exited with {status}");
    }
    Ok(())
}

pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
