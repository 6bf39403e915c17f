//! `cargo xtask cluster`: a real Kubernetes cluster on this machine (see
//! `hubcap_tests::kube_node`), one node or more, with hubcap's image loaded
//! and its chart installed, kept up until Ctrl-C, then removed whole.
//!
//!     hubcap-kube-node [DIR] [--no-install] [--nodes N]

use std::process::Command;

use hubcap_tests::kube_node::KubeNode;
use nix::sys::signal::{SigSet, Signal};

fn main() {
    hubcap_tests::require_root();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let install = !args.iter().any(|a| a == "--no-install");
    let nodes: usize = match args.iter().position(|a| a == "--nodes") {
        Some(at) => match args.get(at + 1).and_then(|n| n.parse().ok()) {
            Some(n) if n >= 1 => n,
            _ => {
                eprintln!("--nodes needs a number of nodes, 1 or more");
                std::process::exit(2);
            }
        },
        None => 1,
    };
    let value_of_nodes = args.iter().position(|a| a == "--nodes").map(|at| at + 1);
    let dir = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with("--") && Some(*i) != value_of_nodes)
        .map(|(_, a)| a)
        .map_or_else(
            || std::path::PathBuf::from("target/kube-node"),
            std::path::PathBuf::from,
        );
    let dir = std::path::absolute(&dir).expect("the node's directory");
    let node = KubeNode::up(&hubcap_tests::unique_id(), &dir);
    node.load_podman_image("localhost/hubcap:dev");
    // Workers first in the list: dropped (leaving the cluster) first.
    let workers: Vec<KubeNode> = (1..nodes)
        .map(|k| {
            let worker = KubeNode::join(&hubcap_tests::unique_id(), &dir.join(format!("node-{k}")), &node);
            worker.load_podman_image("localhost/hubcap:dev");
            worker
        })
        .collect();
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
        "nodes {} are up (API server https://{}:6443).\n\
         \n    export KUBECONFIG={kubeconfig}\n    {} get pods -A\n\
         \nImages: localhost/hubcap:dev, localhost/busybox:hubcap-test (imagePullPolicy: Never).\n\
         Ctrl-C removes the nodes.",
        std::iter::once(&node.name)
            .chain(workers.iter().map(|w| &w.name))
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        node.node_ip,
        hubcap_tests::upstream::tool("kubectl").display(),
    );
    // The daemons are started: block the signals here only, and wait.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().expect("blocking signals");
    let signal = signals.wait().expect("waiting for a signal");
    eprintln!("{signal:?}: removing the nodes");
    drop(workers);
    drop(node);
}
