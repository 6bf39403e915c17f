//! A second node joins the cluster: a kubelet of its own in namespaces of
//! its own, routed to the first over a veth between the two. First without
//! the label the agents' node selector asks for (Relay must not list it),
//! then with it (Relay shows both); a pod on each node talk, and both
//! nodes' hubcap name both pods.

use std::time::Duration;

use hubcap_tests::{kube_node::KubeNode, upstream::Background};
use serde_json::Value;

use crate::{
    cases::hubble_at,
    fixture::{IMAGE, NodeRun, RELEASE, client_get, get_from, port_forward_to, stored_on},
};

/// The worker, joined on first use.
fn worker(run: &NodeRun) -> &KubeNode {
    run.worker.get_or_init(|| {
        let id = hubcap_tests::unique_id();
        let dir = std::env::temp_dir().join(format!("hubcap-kn-{id}"));
        let worker = KubeNode::join(&id, &dir, &run.node);
        worker.load_podman_image(IMAGE);
        worker
    })
}

/// A port-forward to Relay's Service, one per case: `hubble --server
/// localhost:PORT` reaches Relay while the forwarder lives.
fn relay(run: &NodeRun) -> (Background, u16) {
    port_forward_to(run, "service/hubble-relay", 80)
}

/// The node names `hubble list nodes` (through Relay at `port`) shows
/// Connected.
fn connected_nodes(port: u16) -> Vec<String> {
    let (ok, nodes) = hubble_at(port, &["list", "nodes"]);
    assert!(ok, "{nodes}");
    nodes
        .lines()
        .filter(|l| l.contains("Connected"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

pub fn relay_lists_only_the_nodes_where_hubcap_runs(run: &NodeRun) {
    let worker = worker(run);
    let nodes = run
        .node
        .kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(nodes.split_whitespace().count(), 2, "{nodes}");
    // The worker is Ready, but its label is missing: no agent there.
    let scheduled = run.node.kubectl_ok(&[
        "-n",
        RELEASE,
        "get",
        "daemonset",
        "hubcap",
        "-o",
        "jsonpath={.status.desiredNumberScheduled}",
    ]);
    assert_eq!(scheduled, "1");
    let (_forwarder, port) = relay(run);
    let (ok, listed) = hubble_at(port, &["list", "nodes"]);
    assert!(ok, "{listed}");
    assert!(listed.contains(&run.node.name), "{listed}");
    assert!(
        !listed.contains(&worker.name),
        "Relay lists a node without hubcap:\n{listed}"
    );
}

pub fn relay_shows_both_nodes_once_hubcap_runs_on_the_second(run: &NodeRun) {
    let worker = worker(run);
    run.node
        .kubectl_ok(&["label", "node", &worker.name, "hubcap-test/agent=on"]);
    run.node
        .wait("hubcap Ready on the second node", Duration::from_secs(120), |_| {
            run.agent_pod_on(&worker.name)["status"]["containerStatuses"][0]["ready"] == true
        });
    let mut expected = vec![run.node.name.clone(), worker.name.clone()];
    expected.sort();
    let (_forwarder, port) = relay(run);
    run.node
        .wait("Relay connected to both nodes", Duration::from_secs(90), |_| {
            connected_nodes(port) == expected
        });
    let (ok, status) = hubble_at(port, &["status"]);
    assert!(ok, "{status}");
    assert!(status.contains("Connected Nodes: 2/2"), "{status}");
}

const FAR: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: default, labels: {app: far}}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: far
    image: localhost/busybox:hubcap-test
    imagePullPolicy: Never
    command: ["httpd", "-f", "-p", "8080", "-h", "/var/www"]
"#;

pub fn cross_node_traffic_is_named_on_both_nodes(run: &NodeRun) {
    let worker = worker(run);
    run.node.apply(&FAR.replace("NODE", &worker.name));
    run.node
        .kubectl_ok(&["wait", "--for=condition=Ready", "pod/far", "--timeout=120s"]);
    let far_ip = run
        .node
        .kubectl_ok(&["get", "pod", "far", "-o", "jsonpath={.status.podIP}"]);
    let far_cidr = run
        .node
        .kubectl_ok(&["get", "node", &worker.name, "-o", "jsonpath={.spec.podCIDR}"]);
    assert!(
        far_cidr.starts_with("10.244.") && !far_cidr.starts_with("10.244.0."),
        "{far_cidr}"
    );
    for _ in 0..3 {
        // busybox httpd answers 404 for a missing index: any answer is one.
        let _ = get_from(&run.node, "client", &format!("http://{far_ip}:8080/"));
    }
    client_get(&run.node, &format!("http://{}/", run.service_ip));
    let named = |records: &[Value]| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["flow"]["IP"]["source"] == run.client_ip.as_str())
            .filter(|r| r["flow"]["IP"]["destination"] == far_ip.as_str())
            .cloned()
            .collect()
    };
    // Written at the next report (5 s by default).
    run.node
        .wait("both nodes' records of client -> far", Duration::from_secs(30), |_| {
            !named(&stored_on(&run.node)).is_empty() && !named(&stored_on(worker)).is_empty()
        });
    for (node, records) in [
        (&run.node, named(&stored_on(&run.node))),
        (worker, named(&stored_on(worker))),
    ] {
        for record in records {
            let flow = &record["flow"];
            assert_eq!(flow["node_name"], node.name.as_str(), "{flow:#}");
            assert_eq!(flow["source"]["pod_name"], "client", "{flow:#}");
            assert_eq!(flow["source"]["namespace"], "default", "{flow:#}");
            assert_eq!(flow["destination"]["pod_name"], "far", "{flow:#}");
            let labels = flow["destination"]["labels"].as_array().cloned().unwrap_or_default();
            assert!(labels.contains(&Value::from("k8s:app=far")), "{flow:#}");
            assert_eq!(flow["l4"]["TCP"]["destination_port"], 8080, "{flow:#}");
        }
    }
    // Through Relay, one query returns both nodes' view of it.
    let (_forwarder, port) = relay(run);
    let (ok, flows) = hubble_at(
        port,
        &[
            "observe",
            "--last",
            "1000",
            "--from-pod",
            "default/client",
            "--to-pod",
            "default/far",
            "-o",
            "jsonpb",
        ],
    );
    assert!(ok, "{flows}");
    let mut nodes: Vec<String> = flows
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|f| f["flow"]["node_name"].as_str().map(str::to_owned))
        .collect();
    nodes.sort();
    nodes.dedup();
    let mut expected = vec![run.node.name.clone(), worker.name.clone()];
    expected.sort();
    assert_eq!(nodes, expected, "{flows}");
}
