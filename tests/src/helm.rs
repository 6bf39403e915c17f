//! hubcap's chart through the real Helm engine: Helm's Go SDK as a
//! library (PyPI `helm-python-sdk`), driven by `xtask/helm.py`.

use std::process::Command;

use crate::{netns::Netns, workspace_root as root};

/// `deploy/helm/hubcap`.
pub fn chart() -> String {
    root().join("deploy/helm/hubcap").display().to_string()
}

/// `python3 xtask/helm.py ARGS` (in `ns` when given); its output, or a
/// panic with its errors.
pub fn helm(ns: Option<&Netns>, args: &[&str]) -> String {
    let script = root().join("xtask/helm.py");
    let mut command = match ns {
        Some(ns) => ns.command("python3"),
        None => Command::new("python3"),
    };
    let out = command.arg(script).args(args).output().expect("python3");
    assert!(
        out.status.success(),
        "helm.py {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}
