//! Kubernetes identities while the cluster changes under running traffic:
//! an address reused by a new pod, the API server going away and coming
//! back with the history hubcap's watches knew compacted away (410 Gone),
//! hubcap's access forbidden by RBAC and then granted. Counts stay
//! exact against the veths' counters throughout.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use hubcap_tests::{
    agent::{Agent, scrape_metrics},
    kube::{ControlPlane, create, deployed_service_account_token, run_pod, start_slow_proxy, wait_for_service_account},
    output::{self, Record},
    require_root,
    topology::Node,
    traffic::udp_echo,
    upstream::hubble,
};
use k8s_openapi::api::{
    core::v1::{Namespace, Node as KubeNode, Pod},
    rbac::v1::ClusterRoleBinding,
};
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
    let agent = start_agent_with(node, &plane.kubeconfig);
    agent.wait_for_log("Kubernetes metadata listed", Duration::from_secs(30));
    agent
}

/// hubcap on this node's veths with Kubernetes through `kubeconfig`.
fn start_agent_with(node: &Node, kubeconfig: &std::path::Path) -> Agent {
    let kubeconfig = kubeconfig.to_str().unwrap().to_owned();
    let mut args = Node::METRICS_AND_QUICK_ENDS.to_vec();
    args.extend(["--kubernetes", "on", "--kubeconfig", &kubeconfig, "--node-name", NODE]);
    node.capture(&args)
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

/// Sends a datagram from pod `from` (index) to pod `to`, a new port each
/// time from `first_port` on, until the Observer API's records of that
/// exchange all name the sender `name` (the watch caught up). Returns the
/// port.
fn wait_until_named(node: &Node, agent: &Agent, (from, name): (usize, &str), to: usize, first_port: u16) -> u16 {
    let socket = format!("unix://{}", agent.grpc_socket.as_ref().unwrap().display());
    let (sender, receiver) = (&node.pods[from], &node.pods[to]);
    let from_ip = sender.ipv4.to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut port = first_port;
    loop {
        port += 1;
        udp_echo(
            &sender.ns,
            &receiver.ns,
            SocketAddr::new(receiver.ipv4.into(), port),
            1,
            100,
        );
        let to_port = port.to_string();
        let seen = hubble(
            &node.ns,
            &[
                "observe",
                "--server",
                &socket,
                "--from-ip",
                &from_ip,
                "--to-port",
                &to_port,
                "--last",
                "10",
                "-o",
                "json",
            ],
        );
        let records = output::parse(&seen).records;
        if !records.is_empty() && records.iter().all(|r| r.json["source"]["pod_name"] == name) {
            return port;
        }
        assert!(Instant::now() < deadline, "{name} was never named: {seen}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn watch_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("hubcap_kubernetes_watch_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
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
    // And the history hubcap's watches would resume from is compacted
    // away: they get 410 Gone and list again.
    plane.compact_history(&node.ns);
    std::thread::sleep(Duration::from_secs(2));
    plane.start_apiserver(&node.ns);
    // A pod made after it returns is named once the watch recovers by
    // itself: its traffic, seen through the Observer API, says when.
    make_pods(&node, &plane, &[("second", 2)]);
    let port = wait_until_named(&node, &agent, (2, "second"), 1, 7100);
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
    assert!(watch_errors(&metrics) > 0, "the outage is counted: {metrics}");
    assert!(
        finished.stderr.iter().any(|l| l.contains("Kubernetes watch failed")),
        "and logged"
    );
    assert!(
        finished
            .stderr
            .iter()
            .any(|l| l.contains("Kubernetes watch failed") && (l.contains("410") || l.contains("too old"))),
        "the compacted history was met (410 Gone) and listed again"
    );
    assert_exact(&node, &records, counters);
}

#[test]
fn access_forbidden_by_rbac_degrades_visibly_and_recovers_when_granted() {
    require_root();
    let node = Node::new(2);
    let plane = ControlPlane::start(&node.ns);
    make_pods(&node, &plane, &[("client", 0), ("server", 1)]);
    // The shipped RBAC, then its binding taken away: the ServiceAccount's
    // token is valid, every list and watch is forbidden.
    let token = plane.run(&node.ns, |client| async move {
        let token = deployed_service_account_token(&client).await;
        Api::<ClusterRoleBinding>::all(client)
            .delete("hubcap", &DeleteParams::default())
            .await
            .expect("delete the binding");
        token
    });
    let agent = start_agent_with(
        &node,
        &plane.kubeconfig_with_token("hubcap-forbidden.kubeconfig", &token),
    );
    // Capture runs; identities cannot be listed, and hubcap says why.
    let forbidden = agent.wait_for_log("Kubernetes watch failed", Duration::from_secs(30));
    assert!(forbidden.contains("forbidden"), "{forbidden}");
    agent.wait_for_log("Kubernetes metadata not listed in time", Duration::from_secs(40));
    node.up();
    let (p0, p1) = (&node.pods[0], &node.pods[1]);
    udp_echo(&p0.ns, &p1.ns, SocketAddr::new(p1.ipv4.into(), 7001), 3, 100);
    // Every record of it written (its flows ended) before access returns.
    node.wait_for_flows_to_end();
    let metrics_while_forbidden = scrape_metrics(&node.ns, "127.0.0.1:9965");

    // Granted again: the watches recover by themselves.
    plane.run(&node.ns, |client| async move {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/rbac.yaml");
        let text = std::fs::read_to_string(path).expect("rbac.yaml");
        let binding = serde_norway::Deserializer::from_str(&text)
            .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).expect("YAML"))
            .find(|o| o["kind"] == "ClusterRoleBinding")
            .expect("a binding in rbac.yaml");
        create(&Api::<ClusterRoleBinding>::all(client), binding).await;
    });
    let port = wait_until_named(&node, &agent, (0, "client"), 1, 7100);
    let counters: Vec<_> = node.pods.iter().map(|p| node.settled_counters(&p.host_if)).collect();
    let finished = agent.stop();
    assert!(finished.status.success());
    let records = output::parse(&finished.stdout).records;
    let client: IpAddr = p0.ipv4.into();
    assert!(
        names(&records, client, 7001, "source").iter().all(|n| n.is_empty()),
        "no identities while forbidden"
    );
    assert!(
        names(&records, client, u64::from(port), "source")
            .iter()
            .all(|n| n == "client")
    );
    assert!(
        watch_errors(&metrics_while_forbidden) > 0,
        "counted: {metrics_while_forbidden}"
    );
    assert_exact(&node, &records, counters);
}

#[test]
fn a_slow_api_server_delays_identities_but_never_counts() {
    require_root();
    let node = Node::new(3);
    let plane = ControlPlane::start(&node.ns);
    make_pods(&node, &plane, &[("first", 0), ("peer", 1)]);
    // 300 ms added to every chunk, both ways: a TLS handshake and a list
    // take seconds, a watch event arrives late.
    start_slow_proxy(&node.ns, 16443, Duration::from_millis(300));
    let started = Instant::now();
    let agent = start_agent_with(&node, &plane.kubeconfig_via("slow.kubeconfig", 16443));
    agent.wait_for_log("Kubernetes metadata listed", Duration::from_secs(40));
    let listed_after = started.elapsed();
    node.up();
    let (p0, p1) = (&node.pods[0], &node.pods[1]);
    udp_echo(&p0.ns, &p1.ns, SocketAddr::new(p1.ipv4.into(), 7001), 3, 100);
    // A pod made now reaches hubcap through the slow watch.
    make_pods(&node, &plane, &[("late", 2)]);
    let port = wait_until_named(&node, &agent, (2, "late"), 1, 7100);
    let counters: Vec<_> = node.pods.iter().map(|p| node.settled_counters(&p.host_if)).collect();
    let finished = agent.stop();
    assert!(finished.status.success());
    let records = output::parse(&finished.stdout).records;
    assert!(
        names(&records, p0.ipv4.into(), 7001, "source")
            .iter()
            .all(|n| n == "first")
    );
    assert!(
        names(&records, node.pods[2].ipv4.into(), u64::from(port), "source")
            .iter()
            .all(|n| n == "late")
    );
    assert_exact(&node, &records, counters);
    println!("listed through the slow proxy after {listed_after:?}");
}
