//! `cargo xtask cluster`: a real one-node Kubernetes cluster on this
//! machine (see `hubcap_tests::kube_node`), with hubcap's image loaded and
//! its chart installed, kept up until Ctrl-C, then removed whole.
//!
//!     hubcap-kube-node [DIR] [--no-install]

use std::process::Command;

use hubcap_tests::kube_node::KubeNode;
use nix::sys::signal::{SigSet, Signal};

fn main() {
    hubcap_tests::require_root();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let install = !args.iter().any(|a| a == "--no-install");
    let dir = args.iter().find(|a| !a.starts_with("--")).map_or_else(
        || std::path::PathBuf::from("target/kube-node"),
        std::path::PathBuf::from,
    );
    let dir = std::path::absolute(&dir).expect("the node's directory");
    let node = KubeNode::up(&hubcap_tests::unique_id(), &dir);
    node.load_podman_image("localhost/hubcap:dev");
    let kubeconfig = node.kubeconfig().display().to_string();
    if install {
        let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/helm/hubcap");
        let status = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../xtask/helm.py"))
            .args(["install", chart, "hubcap", "hubcap", &kubeconfig])
            .arg(r#"{"image": {"pullPolicy": "Never"}}"#)
            .status()
            .expect("python3");
        assert!(status.success(), "helm install failed");
        node.kubectl_ok(&[
            "-n",
            "hubcap",
            "rollout",
            "status",
            "daemonset/hubcap",
            "--timeout=120s",
        ]);
    }
    println!(
        "node {} is up (API server https://{}:6443).\n\
         \n    export KUBECONFIG={kubeconfig}\n    {} get pods -A\n\
         \nImages: localhost/hubcap:dev, localhost/busybox:hubcap-test (imagePullPolicy: Never).\n\
         Ctrl-C removes the node.",
        node.name,
        node.node_ip,
        hubcap_tests::upstream::tool("kubectl").display(),
    );
    // The daemons are started: block the signals here only, and wait.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().expect("blocking signals");
    let signal = signals.wait().expect("waiting for a signal");
    eprintln!("{signal:?}: removing the node");
    drop(node);
}
