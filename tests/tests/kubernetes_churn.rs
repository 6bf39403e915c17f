//! Kubernetes identities while the cluster changes under running traffic:
//! an address reused by a new pod, and the API server going away and
//! coming back. Counts stay exact against the veths' counters throughout.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use hubcap_tests::{
    agent::{Agent, scrape_metrics},
    kube::{ControlPlane, create, run_pod, wait_for_service_account},
    output::{self, Record},
    require_root,
    topology::Node,
    traffic::udp_echo,
    upstream::hubble,
};
use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod};
use kube::{Api, api::DeleteParams};
use serde_json::json;

const NODE: &str = "node-a";

/// A node object for this node, a namespace `churn`, and the pods named
/// here at the addresses of the node's pod namespaces (by index).
fn make_pods(node: &Node, plane: &ControlPlane, pods: &[(&'static str, usize)]) {
    let ips: Vec<[IpAddr; 2]> = pods
        .iter()
        .map(|(_, i)| [node.pods[*i].ipv4.into(), node.pods[*i].ipv6.into()])
        .collect();
    let names: Vec<&'static str> = pods.iter().map(|(n, _)| *n).collect();
    let host: IpAddr = node.bridge_v4().into();
    plane.run(&node.ns, move |client| async move {
        if Api::<KubeNode>::all(client.clone())
            .get_opt(NODE)
            .await
            .unwrap()
            .is_none()
        {
            create(
                &Api::<KubeNode>::all(client.clone()),
                json!({"metadata": {"name": NODE}}),
            )
            .await;
            create(
                &Api::<Namespace>::all(client.clone()),
                json!({"metadata": {"name": "churn"}}),
            )
            .await;
            wait_for_service_account(&client, "churn").await;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), "churn");
        for (name, ips) in names.iter().zip(ips) {
            create(
                &api,
                json!({"metadata": {"name": name, "labels": {"app": name}},
                       "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}}),
            )
            .await;
            run_pod(&client, "churn", name, ips, NODE, host).await;
        }
    });
}

fn delete_pod(node: &Node, plane: &ControlPlane, name: &'static str) {
    plane.run(&node.ns, move |client| async move {
        let api: Api<Pod> = Api::namespaced(client, "churn");
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        api.delete(name, &now).await.expect("delete pod");
        // Gone for good (no kubelet finalizes it: the grace period is 0).
        while api.get_opt(name).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

fn start_agent(node: &Node, plane: &ControlPlane) -> Agent {
    let kubeconfig = plane.kubeconfig.to_str().unwrap().to_owned();
    let mut args = Node::METRICS_AND_QUICK_ENDS.to_vec();
    args.extend(["--kubernetes", "on", "--kubeconfig", &kubeconfig, "--node-name", NODE]);
    let agent = node.capture(&args);
    agent.wait_for_log("Kubernetes metadata listed", Duration::from_secs(30));
    agent
}

/// The pod name on `side` of the records from `src` to port `port`.
fn names(records: &[Record], src: IpAddr, port: u64, side: &str) -> Vec<String> {
    let found: Vec<String> = records
        .iter()
        .filter(|r| r.src == src.to_string() && r.dst_port == port)
        .map(|r| r.json[side]["pod_name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(!found.is_empty(), "no records from {src} to port {port}");
    found
}

fn assert_exact(node: &Node, records: &[Record], counters: Vec<hubcap_tests::topology::Counters>) {
    let veths: Vec<(&str, _)> = node.pods.iter().map(|p| p.host_if.as_str()).zip(counters).collect();
    let ours: Vec<Record> = records
        .iter()
        .filter(|r| node.pods.iter().any(|p| p.host_if == r.interface))
        .cloned()
        .collect();
    output::assert_records_match_counters(&ours, &veths);
}

#[test]
fn an_address_reused_by_a_new_pod_names_each_pod_for_its_own_flows() {
    require_root();
    let node = Node::new(2);
    let plane = ControlPlane::start(&node.ns);
    make_pods(&node, &plane, &[("old", 0), ("peer", 1)]);
    let agent = start_agent(&node, &plane);
    node.up();
    let (p0, p1) = (&node.pods[0], &node.pods[1]);
    let reused: IpAddr = p0.ipv4.into();
    udp_echo(&p0.ns, &p1.ns, SocketAddr::new(p1.ipv4.into(), 7001), 5, 100);
    delete_pod(&node, &plane, "old");
    make_pods(&node, &plane, &[("new", 0)]);
    // The watch delivers within moments; the new pod's traffic follows.
    std::thread::sleep(Duration::from_millis(500));
    udp_echo(&p0.ns, &p1.ns, SocketAddr::new(p1.ipv4.into(), 7002), 5, 100);
    let counters: Vec<_> = node.pods.iter().map(|p| node.settled_counters(&p.host_if)).collect();
    let finished = agent.stop();
    assert!(finished.status.success());
    let records = output::parse(&finished.stdout).records;
    assert!(names(&records, reused, 7001, "source").iter().all(|n| n == "old"));
    assert!(names(&records, reused, 7002, "source").iter().all(|n| n == "new"));
    // The replies name them too.
    let peer: IpAddr = p1.ipv4.into();
    let replies = |port: u64| -> Vec<String> {
        records
            .iter()
            .filter(|r| r.src == peer.to_string() && r.src_port == port)
            .map(|r| r.json["destination"]["pod_name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert!(!replies(7001).is_empty() && replies(7001).iter().all(|n| n == "old"));
    assert!(!replies(7002).is_empty() && replies(7002).iter().all(|n| n == "new"));
    assert_exact(&node, &records, counters);
}

#[test]
fn an_api_server_outage_keeps_counts_exact_and_identities_recover() {
    require_root();
    let node = Node::new(3);
    let mut plane = ControlPlane::start(&node.ns);
    make_pods(&node, &plane, &[("first", 0), ("peer", 1)]);
    let agent = start_agent(&node, &plane);
    node.up();
    let (p0, p1, p2) = (&node.pods[0], &node.pods[1], &node.pods[2]);
    let peer = SocketAddr::new(p1.ipv4.into(), 7001);
    udp_echo(&p0.ns, &p1.ns, peer, 3, 100);

    plane.stop_apiserver();
    // While it is gone: capture goes on, with the last known identities.
    udp_echo(&p0.ns, &p1.ns, SocketAddr::new(p1.ipv4.into(), 7002), 3, 100);
    std::thread::sleep(Duration::from_secs(2));
    plane.start_apiserver(&node.ns);
    // A pod made after it returns is named once the watch recovers by
    // itself: its traffic, seen through the Observer API, says when.
    make_pods(&node, &plane, &[("second", 2)]);
    let socket = format!("unix://{}", agent.grpc_socket.as_ref().unwrap().display());
    let from_second = p2.ipv4.to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut port = 7100;
    loop {
        port += 1;
        udp_echo(&p2.ns, &p1.ns, SocketAddr::new(p1.ipv4.into(), port), 1, 100);
        let last = hubble(
            &node.ns,
            &[
                "observe",
                "--server",
                &socket,
                "--from-ip",
                &from_second,
                "--last",
                "1",
                "-o",
                "json",
            ],
        );
        let named = output::parse(&last)
            .records
            .first()
            .is_some_and(|r| r.json["source"]["pod_name"] == "second");
        if named {
            break;
        }
        assert!(Instant::now() < deadline, "the new pod was never named: {last}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let metrics = scrape_metrics(&node.ns, "127.0.0.1:9965");
    let counters: Vec<_> = node.pods.iter().map(|p| node.settled_counters(&p.host_if)).collect();
    let finished = agent.stop();
    assert!(finished.status.success());
    let records = output::parse(&finished.stdout).records;
    let first: IpAddr = p0.ipv4.into();
    assert!(names(&records, first, 7001, "source").iter().all(|n| n == "first"));
    assert!(names(&records, first, 7002, "source").iter().all(|n| n == "first"));
    assert!(
        names(&records, p2.ipv4.into(), u64::from(port), "source")
            .iter()
            .all(|n| n == "second")
    );
    let errors: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("hubcap_kubernetes_watch_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(errors > 0, "the outage is counted: {metrics}");
    assert!(
        finished.stderr.iter().any(|l| l.contains("Kubernetes watch failed")),
        "and logged"
    );
    assert_exact(&node, &records, counters);
}
