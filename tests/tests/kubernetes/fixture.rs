//! One captured run with a real control plane: a Deployment (2 pods) in
//! namespace `shop`, a StatefulSet (1 pod) in `data`, a bare pod, this node
//! and another one. The real controller manager makes the ReplicaSet and
//! the pods; the test binds them to the node and writes their status as a
//! kubelet would, each with the address of one of the node's pod
//! namespaces. Traffic between them, to the node, to the other node and to
//! the world is captured with `--kubernetes on`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use hubcap_tests::{
    kube::{ControlPlane, create, deployed_service_account_token, run_pod, wait_for_service_account},
    output::{self, Output},
    topology::Node,
    traffic::{ping, tcp_transfer, udp_echo},
};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{Namespace, Node as KubeNode, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

pub const THIS_NODE: &str = "node-a";

/// Filters asked of the running agent with the real `hubble observe`.
pub const LIVE_QUERIES: &[&[&str]] = &[
    &["--namespace", "shop"],
    &["--from-namespace", "data"],
    &["--label", "app=db"],
    &["--from-label", "k8s:app=web"],
    &["--to-service", "shop/web"],
];
pub const OTHER_NODE: &str = "node-b";

/// A pod of the cluster and the test pod namespace that plays it.
pub struct Member {
    pub namespace: &'static str,
    pub name: String,
    pub ip: IpAddr,
    pub ip6: IpAddr,
}

/// Fields drop in order: the control plane before the namespace it runs in.
pub struct Fixture {
    _plane: ControlPlane,
    pub node: Node,
    out_dir: PathBuf,
    pub out_file: PathBuf,
    pub output: Output,
    /// `hubble list namespaces` against the running agent.
    pub namespaces_listed: String,
    /// `/metrics` at the end of the run.
    pub metrics: String,
    /// `hubble observe --all` against the running agent: unfiltered before
    /// and after the filtered ones, and with each of [`LIVE_QUERIES`].
    pub live_all: String,
    pub live: Vec<String>,
    pub live_all_after: String,
    /// By role: web-1, web-2 (Deployment `web`), db-0 (StatefulSet `db`),
    /// lone (a bare pod).
    pub members: BTreeMap<&'static str, Member>,
    pub node_ip: IpAddr,
    /// Service `shop/web`'s cluster IP (UDP 8080).
    pub web_service_ip: IpAddr,
    pub other_node_ip: IpAddr,
    pub world_ip: IpAddr,
}

/// Waits for `count` pods matching `selector` in `namespace` (the
/// controllers make them).
async fn wait_for_pods(client: &Client, namespace: &str, selector: &str, count: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = pods
            .list(&kube::api::ListParams::default().labels(selector))
            .await
            .expect("list pods");
        if list.items.len() == count {
            let mut items = list.items;
            items.sort_by_key(|p| p.metadata.name.clone());
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "no {count} pods for {selector} in {namespace}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the EndpointSlice controller lists `count` ready backends
/// of `service`.
async fn wait_for_backends(client: &Client, namespace: &str, service: &str, count: usize) {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = slices
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .expect("list EndpointSlices");
        let ready = list
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count();
        if ready == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service}: {ready} of {count} backends ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn node_object(name: &str, ip: IpAddr, zone: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}]},
    })
}

impl Fixture {
    pub fn capture() -> Fixture {
        let node = Node::new(4);
        let plane = ControlPlane::start(&node.ns);
        let node_ip: IpAddr = node.bridge_v4().into();
        // Off the pods' subnet, so their packets go to the node's bridge
        // (and die there: only the pod's veth records matter).
        let other_node_ip: IpAddr = "10.201.0.2".parse().unwrap();
        let world_ip: IpAddr = "10.200.0.1".parse().unwrap();
        let pod_ips: Vec<[IpAddr; 2]> = node.pods.iter().map(|p| [p.ipv4.into(), p.ipv6.into()]).collect();

        let names = plane.run(&node.ns, move |client| async move {
            let nodes: Api<KubeNode> = Api::all(client.clone());
            for (name, ip, zone) in [(THIS_NODE, node_ip, "a"), (OTHER_NODE, other_node_ip, "b")] {
                create(&nodes, node_object(name, ip, zone)).await;
                // Node status is a subresource: write the addresses there.
                nodes
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(&node_object(name, ip, zone)))
                    .await
                    .expect("node status");
            }
            let namespaces: Api<Namespace> = Api::all(client.clone());
            for ns in ["shop", "data"] {
                create(&namespaces, json!({"metadata": {"name": ns}})).await;
                wait_for_service_account(&client, ns).await;
            }
            let container = json!([{"name": "app", "image": "registry.invalid/app:1"}]);
            create(
                &Api::<Deployment>::namespaced(client.clone(), "shop"),
                json!({
                    "metadata": {"name": "web"},
                    "spec": {
                        "replicas": 2,
                        "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web", "tier": "front"}}, "spec": {"containers": container}},
                    },
                }),
            )
            .await;
            create(
                &Api::<StatefulSet>::namespaced(client.clone(), "data"),
                json!({
                    "metadata": {"name": "db"},
                    "spec": {
                        "replicas": 1,
                        "serviceName": "db",
                        "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": container}},
                    },
                }),
            )
            .await;
            create(
                &Api::<Pod>::namespaced(client.clone(), "shop"),
                json!({
                    "metadata": {"name": "lone", "labels": {"app": "lone"}},
                    "spec": {"containers": container},
                }),
            )
            .await;
            let web = wait_for_pods(&client, "shop", "app=web", 2).await;
            let db = wait_for_pods(&client, "data", "app=db", 1).await;
            let mut names = Vec::new();
            for (i, (namespace, pod)) in web
                .iter()
                .map(|p| ("shop", p))
                .chain(db.iter().map(|p| ("data", p)))
                .enumerate()
            {
                let name = pod.metadata.name.clone().unwrap();
                run_pod(&client, namespace, &name, pod_ips[i], THIS_NODE, node_ip).await;
                names.push(name);
            }
            run_pod(&client, "shop", "lone", pod_ips[3], THIS_NODE, node_ip).await;
            names.push("lone".into());
            // Services: the real EndpointSlice controller lists their backends.
            let services = |ns| Api::<Service>::namespaced(client.clone(), ns);
            for (ns, name, protocol, port) in [("shop", "web", "UDP", 8080), ("data", "db", "TCP", 5432)] {
                create(
                    &services(ns),
                    json!({"metadata": {"name": name}, "spec": {
                        "selector": {"app": name},
                        "ports": [{"protocol": protocol, "port": port, "targetPort": port}],
                    }}),
                )
                .await;
            }
            wait_for_backends(&client, "shop", "web", 2).await;
            wait_for_backends(&client, "data", "db", 1).await;
            let web_service_ip: IpAddr = services("shop")
                .get("web")
                .await
                .expect("service")
                .spec
                .and_then(|s| s.cluster_ip)
                .expect("cluster IP")
                .parse()
                .unwrap();
            (names, web_service_ip, deployed_service_account_token(&client).await)
        });
        let (names, web_service_ip, token) = names;

        let out_dir = std::env::temp_dir().join(format!("hubcap-k8s-{}", node.id));
        std::fs::create_dir_all(&out_dir).unwrap();
        let out_file = out_dir.join("flows.json");
        let kubeconfig = plane.kubeconfig_with_token("hubcap-kubeconfig", &token);
        let kubeconfig = kubeconfig.to_str().unwrap().to_owned();
        let agent = node.capture(&[
            "--kubernetes",
            "on",
            "--kubeconfig",
            &kubeconfig,
            "--node-name",
            THIS_NODE,
            "--cluster-name",
            "test-cluster",
            "--output",
            out_file.to_str().unwrap(),
            "--report-interval",
            "1",
            "--idle-timeout",
            "1",
            "--metrics-listen",
            "127.0.0.1:9965",
            "--metrics-source-context",
            "namespace",
            "--metrics-destination-context",
            "workload",
        ]);
        agent.wait_for_log("Kubernetes metadata listed", Duration::from_secs(30));
        node.up();
        // Pods reach the node, the other node and the world through the bridge.
        for pod in &node.pods {
            pod.ns
                .ip(&["route", "add", "default", "via", &node.bridge_v4().to_string()]);
        }
        let p = &node.pods;
        tcp_transfer(
            &p[0].ns,
            &p[2].ns,
            SocketAddr::new(p[2].ipv4.into(), 5432),
            20_000,
            5_000,
        );
        udp_echo(&p[1].ns, &p[0].ns, SocketAddr::new(p[0].ipv4.into(), 8080), 5, 100);
        udp_echo(&p[3].ns, &p[1].ns, SocketAddr::new(p[1].ipv6.into(), 8081), 3, 100);
        ping(&p[0].ns, &node_ip.to_string(), 1);
        for (from, target, port) in [(0, other_node_ip, 9999), (0, world_ip, 9999), (3, web_service_ip, 8080)] {
            p[from].ns.enter(move || {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                s.send_to(b"hello", SocketAddr::new(target, port)).unwrap();
            });
        }
        // DNS: db-0 answers, web-1 asks.
        let dns_server: IpAddr = p[2].ipv4.into();
        let dnsmasq = hubcap_tests::dns::dnsmasq(&p[2].ns, &[dns_server], &out_dir, "192.0.2.10 web.test\n", &[]);
        std::thread::sleep(Duration::from_millis(300));
        let dig = hubcap_tests::dns::dig(&p[0].ns, "web.test.", "A", &[], dns_server);
        assert_eq!(dig.status, "NOERROR", "{}", dig.output);
        drop(dnsmasq);
        std::thread::sleep(Duration::from_millis(300));
        let socket = format!("unix://{}", agent.grpc_socket.as_ref().expect("socket").display());
        let namespaces_listed =
            hubcap_tests::upstream::hubble(&node.ns, &["list", "namespaces", "--server", &socket, "-o", "json"]);
        let metrics = hubcap_tests::agent::scrape_metrics(&node.ns, "127.0.0.1:9965");
        // Everything the agent holds, each filter, and everything again:
        // records still being written (flows ending) fall between the two.
        let observe = |flags: &[&str]| {
            let mut args = vec!["observe", "--server", &socket, "--all", "-o", "json"];
            args.extend(flags);
            hubcap_tests::upstream::hubble(&node.ns, &args)
        };
        let live_all = observe(&[]);
        let live: Vec<String> = LIVE_QUERIES.iter().map(|q| observe(q)).collect();
        let live_all_after = observe(&[]);
        let finished = agent.stop();
        assert!(finished.status.success());
        let output = output::parse(&std::fs::read_to_string(&out_file).unwrap());

        let roles = ["web-1", "web-2", "db-0", "lone"];
        let namespaces = ["shop", "shop", "data", "shop"];
        let members = roles
            .iter()
            .zip(names)
            .zip(namespaces)
            .zip(&node.pods)
            .map(|(((role, name), namespace), pod)| {
                (
                    *role,
                    Member {
                        namespace,
                        name,
                        ip: pod.ipv4.into(),
                        ip6: pod.ipv6.into(),
                    },
                )
            })
            .collect();
        Fixture {
            node,
            _plane: plane,
            out_dir,
            out_file,
            output,
            namespaces_listed,
            metrics,
            live_all,
            live,
            live_all_after,
            members,
            node_ip,
            web_service_ip,
            other_node_ip,
            world_ip,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.out_dir);
    }
}
