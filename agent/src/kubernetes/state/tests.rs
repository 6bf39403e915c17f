use super::*;

const SEC: u64 = 1_000_000_000;

fn pod(uid: &str, name: &str, ip: &str, owner: Option<(&str, &str)>) -> PodInfo {
    PodInfo {
        uid: uid.into(),
        namespace: "shop".into(),
        name: name.into(),
        labels: [("app".to_owned(), name.split('-').next().unwrap().to_owned())].into(),
        owner: owner.map(|(k, n)| (k.to_owned(), n.to_owned())),
        host_network: false,
        ips: vec![ip.parse().unwrap()],
        node: "node-1".into(),
        ready: true,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_reused_ip_names_the_pod_that_held_it_when_the_packets_were_seen() {
    let mut state = ClusterState::new("default", "node-1");
    state.apply_pod(pod("a", "cart-1", "10.0.0.5", None), 10 * SEC);
    state.delete_pod("a", 20 * SEC);
    state.apply_pod(pod("b", "web-1", "10.0.0.5", None), 25 * SEC);
    let name = |state: &ClusterState, t| state.endpoint_at(ip("10.0.0.5"), t).pod_name.clone();
    assert_eq!(name(&state, 15 * SEC), "cart-1");
    // Between the two: nobody held it; the next holder is the one whose
    // packets they were.
    assert_eq!(name(&state, 22 * SEC), "web-1");
    assert_eq!(name(&state, 30 * SEC), "web-1");
    // Before anyone was known: the first holder.
    assert_eq!(name(&state, SEC), "cart-1");
    // Much later, the old holding is forgotten.
    state.expire(20 * SEC + HOLDING_KEPT_NS);
    assert_eq!(name(&state, 15 * SEC), "web-1");
}

#[test]
fn workloads_follow_the_owner_chain() {
    let mut state = ClusterState::new("default", "node-1");
    state.apply_pod(
        pod("a", "cart-7d9f-x", "10.0.0.5", Some(("ReplicaSet", "cart-7d9f"))),
        SEC,
    );
    state.apply_pod(pod("b", "db-0", "10.0.0.6", Some(("StatefulSet", "db"))), SEC);
    state.apply_pod(pod("c", "lone", "10.0.0.7", None), SEC);
    // The ReplicaSet's Deployment arrives after the pod: the pod is renamed.
    let workload = |state: &ClusterState, addr| state.endpoint_at(ip(addr), 2 * SEC).workloads[0].clone();
    assert_eq!(workload(&state, "10.0.0.5").kind, "ReplicaSet");
    state.apply_owner(
        "ReplicaSet",
        "shop",
        "cart-7d9f",
        Some(("Deployment".into(), "cart".into())),
    );
    let w = workload(&state, "10.0.0.5");
    assert_eq!((w.kind.as_str(), w.name.as_str()), ("Deployment", "cart"));
    let w = workload(&state, "10.0.0.6");
    assert_eq!((w.kind.as_str(), w.name.as_str()), ("StatefulSet", "db"));
    let w = workload(&state, "10.0.0.7");
    assert_eq!((w.kind.as_str(), w.name.as_str()), ("Pod", "lone"));
}

#[test]
fn nodes_and_the_rest_get_reserved_identities() {
    let mut state = ClusterState::new("prod", "node-1");
    let node = |addr: &str| NodeInfo {
        ips: vec![ip(addr)],
        labels: [("zone".to_owned(), "a".to_owned())].into(),
    };
    state.apply_node("node-1", node("192.168.0.1"));
    state.apply_node("node-2", node("192.168.0.2"));
    // A hostNetwork pod shares its node's address: it never claims it.
    let mut host_pod = pod("h", "agent-x", "192.168.0.1", None);
    host_pod.host_network = true;
    state.apply_pod(host_pod, SEC);
    let at = |addr| state.endpoint_at(ip(addr), 2 * SEC);
    assert_eq!(
        (at("192.168.0.1").identity, at("192.168.0.1").labels[0].as_str()),
        (1, "reserved:host")
    );
    assert_eq!(at("192.168.0.2").identity, 6);
    assert_eq!(
        (at("8.8.8.8").identity, at("8.8.8.8").labels[0].as_str()),
        (2, "reserved:world")
    );
    assert_eq!(at("8.8.8.8").cluster_name, "prod");
    assert_eq!(*state.own_node_labels(), ["zone=a"]);
    // The node's bridge address is its own, not the world's; a pod's
    // address stays the pod's.
    state.apply_pod(pod("p", "web-1", "10.244.0.7", None), SEC);
    state.set_local_addresses([ip("10.244.0.1"), ip("10.244.0.7")].into());
    let at = |addr| state.endpoint_at(ip(addr), 2 * SEC);
    assert_eq!(at("10.244.0.1").labels[0], "reserved:host");
    assert_eq!(at("10.244.0.7").pod_name, "web-1");
}

#[test]
fn a_pod_endpoint_has_hubble_fields() {
    let mut state = ClusterState::new("default", "node-1");
    state.apply_pod(pod("a", "cart-1", "10.0.0.5", None), SEC);
    let e = state.endpoint_at(ip("10.0.0.5"), 2 * SEC);
    assert_eq!(e.namespace, "shop");
    assert_eq!(e.pod_name, "cart-1");
    assert_eq!(e.labels, ["k8s:app=cart", "k8s:io.kubernetes.pod.namespace=shop"]);
    assert!(e.identity >= 256);
    assert_eq!(e.cluster_name, "default");
}

#[test]
fn the_peer_nodes_are_those_where_the_agents_daemonset_has_a_ready_pod() {
    let node = |addr: &str| NodeInfo {
        ips: vec![ip(addr)],
        labels: BTreeMap::new(),
    };
    let agent = |uid: &str, on: &str, ready: bool| PodInfo {
        namespace: "hubcap".into(),
        node: on.into(),
        ready,
        host_network: true,
        ..pod(
            uid,
            &format!("hubcap-{uid}"),
            "192.168.0.1",
            Some(("DaemonSet", "hubcap")),
        )
    };
    let with_nodes = |own_pod: Option<(String, String)>| {
        let mut state = ClusterState::new("prod", "node-1").with_own_pod(own_pod);
        for (name, addr) in [
            ("node-1", "192.168.0.1"),
            ("node-2", "192.168.0.2"),
            ("node-3", "192.168.0.3"),
        ] {
            state.apply_node(name, node(addr));
        }
        state
    };
    let names = |state: &ClusterState| state.agent_nodes().into_iter().map(|(n, _)| n).collect::<Vec<_>>();

    // Outside a pod: every node.
    assert_eq!(names(&with_nodes(None)), ["node-1", "node-2", "node-3"]);

    let mut state = with_nodes(Some(("hubcap".into(), "hubcap-a".into())));
    // Its own pod not listed yet: nobody else.
    assert!(names(&state).is_empty());
    state.apply_pod(agent("a", "node-1", true), SEC);
    state.apply_pod(agent("b", "node-2", false), SEC);
    // Another controller's pod on node-3 does not make it a peer.
    state.apply_pod(pod("c", "web-1", "10.0.0.9", Some(("ReplicaSet", "web-1"))), SEC);
    assert_eq!(state.agent_nodes(), [("node-1".to_owned(), ip("192.168.0.1"))]);
    // node-2's agent becomes Ready.
    state.apply_pod(agent("b", "node-2", true), 2 * SEC);
    assert_eq!(names(&state), ["node-1", "node-2"]);
    state.delete_pod("b", 3 * SEC);
    assert_eq!(names(&state), ["node-1"]);
}
