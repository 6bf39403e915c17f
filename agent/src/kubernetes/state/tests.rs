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
