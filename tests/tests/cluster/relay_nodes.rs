//! Hubble Relay across nodes: two hubcap "nodes" on one machine (each on
//! its own pod veth, serving on its own loopback address, with its own node
//! name), a real API server that lists both nodes, and the real
//! `hubble-relay` pointed at one node's Peer service only. Through the
//! Kubernetes node list that Peer service announces the other node too, so
//! `hubble list nodes` shows both connected and one `hubble observe`
//! through Relay returns both nodes' flows.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use hubcap_tests::{
    agent::Agent,
    kube::{ControlPlane, create},
    output, require_root,
    topology::Node,
    traffic::udp_echo,
    upstream::{hubble, relay, tool},
};
use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

const RELAY: &str = "127.0.0.1:4245";

#[test]
fn relay_serves_every_node_the_peer_service_announces() {
    require_root();
    let node = Node::new(2);
    let plane = ControlPlane::start(&node.ns);
    // The two nodes' addresses: loopback addresses of the test's namespace.
    let nodes: [(&str, IpAddr); 2] = [
        ("node-a", "127.0.0.2".parse().unwrap()),
        ("node-b", "127.0.0.3".parse().unwrap()),
    ];
    plane.run(&node.ns, move |client| async move {
        let api: Api<KubeNode> = Api::all(client);
        for (name, ip) in nodes {
            create(&api, json!({"metadata": {"name": name}})).await;
            let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}]}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("node status");
        }
    });
    let kubeconfig = plane.kubeconfig.to_str().unwrap().to_owned();
    let agents: Vec<Agent> = nodes
        .iter()
        .zip(&node.pods)
        .map(|((name, ip), pod)| {
            let listen = format!("{ip}:4244");
            let agent = Agent::start(
                &node.ns,
                &[
                    "--interface",
                    &pod.host_if,
                    "--node-name",
                    name,
                    "--grpc-listen",
                    &listen,
                    "--grpc-socket",
                    "none",
                    "--kubernetes",
                    "on",
                    "--kubeconfig",
                    &kubeconfig,
                    "--report-interval",
                    "1",
                ],
            );
            agent.wait_for_log("attached", Duration::from_secs(10));
            agent
        })
        .collect();
    // Relay knows node-a's Peer service only.
    let _relay = relay(&node.ns, "127.0.0.2:4244", RELAY);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    udp_echo(&p1.ns, &p2.ns, (p2.ipv4, 5353).into(), 10, 100);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Relay may not listen yet: not an error until the deadline.
        let out = node
            .ns
            .command(tool("hubble").to_str().unwrap())
            .args(["list", "nodes", "--server", RELAY])
            .output()
            .expect("hubble");
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let connected = ["node-a", "node-b"].iter().all(|name| {
            out.lines()
                .any(|l| l.split_whitespace().next() == Some(*name) && l.contains("Connected"))
        });
        if connected {
            break;
        }
        assert!(Instant::now() < deadline, "both nodes never connected: {out}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = hubble(&node.ns, &["observe", "--server", RELAY, "--all", "-o", "json"]);
    let flows = output::parse(&out).records;
    for ((name, _), pod) in nodes.iter().zip(&node.pods) {
        let own: Vec<_> = flows.iter().filter(|r| r.json["node_name"] == *name).collect();
        assert!(!own.is_empty(), "no flows of {name} through Relay");
        assert!(
            own.iter().all(|r| r.interface == pod.host_if),
            "{name}'s flows are those of its own veth"
        );
    }
    for agent in agents {
        assert!(agent.stop().status.success());
    }
}
