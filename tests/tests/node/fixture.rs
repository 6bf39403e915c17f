//! The node, hubcap installed on it by its chart, and the workload the
//! cases judge: a web Deployment behind a Service, a client calling it
//! through the ClusterIP, and a flow-log resource storing their traffic.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use hubcap_tests::{helm::helm as helm_in, kube_node::KubeNode};
use serde_json::Value;

/// The image `cargo xtask test` builds before the tests (`cargo xtask
/// image`).
pub const IMAGE: &str = "localhost/hubcap:dev";
pub const RELEASE: &str = "hubcap";
/// Where the chart's flow-log resources store (a hostPath on the node;
/// the node's `/var` is its state directory's `var`).
pub const STORED_LOG: &str = "log/acns/hubble/events.log";

pub struct NodeRun {
    /// The second node, once a case has joined it (first field: dropped,
    /// leaving the cluster, before the control-plane node goes).
    pub worker: std::sync::OnceLock<KubeNode>,
    pub node: KubeNode,
    /// How long from `helm install` to the pod's readiness.
    pub ready_after: Duration,
    pub client_ip: String,
    pub web_ips: Vec<String>,
    pub service_ip: String,
    /// What the client's requests through the Service printed.
    pub responses: Vec<String>,
}

/// The real Helm engine, from the host.
pub fn helm(args: &[&str]) -> String {
    helm_in(None, args)
}

pub use hubcap_tests::helm::chart;

/// What GET `url` returns to the client pod (busybox wget, 5 s at most).
pub fn client_get(node: &KubeNode, url: &str) -> String {
    let out = get_from(node, "client", url);
    assert!(
        out.status.success(),
        "GET {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET `url` from `pod` (busybox wget, 5 s at most), as kubectl exec ends.
pub fn get_from(node: &KubeNode, pod: &str, url: &str) -> std::process::Output {
    node.kubectl(&["exec", pod, "--", "timeout", "5", "wget", "-q", "-O", "-", url])
}

/// The chart's defaults but for the pull policy: the image is only in
/// the node's containerd.
pub fn values() -> String {
    r#"{"image": {"pullPolicy": "Never"}}"#.to_owned()
}

const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: localhost/busybox:hubcap-test
        imagePullPolicy: Never
        command: ["httpd", "-f", "-p", "8080", "-h", "/var/www"]
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: localhost/busybox:hubcap-test
    imagePullPolicy: Never
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: on-host, namespace: default, labels: {app: on-host}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: on-host
    image: localhost/busybox:hubcap-test
    imagePullPolicy: Never
    command: ["sleep", "3600"]
---
apiVersion: acn.azure.com/v1alpha1
kind: RetinaNetworkFlowLog
metadata: {name: default-pods}
spec:
  includefilters:
  - name: from-default
    from:
      namespacedPod: [default/]
  - name: to-default
    to:
      namespacedPod: [default/]
"#;

impl NodeRun {
    pub fn start() -> NodeRun {
        let id = hubcap_tests::unique_id();
        let dir = std::env::temp_dir().join(format!("hubcap-kn-{id}"));
        let node = KubeNode::up(&id, &dir);
        node.load_podman_image(IMAGE);
        let kubeconfig = node.kubeconfig().display().to_string();
        let installing = Instant::now();
        helm(&["install", &chart(), RELEASE, RELEASE, &kubeconfig, &values()]);
        node.kubectl_ok(&["-n", RELEASE, "rollout", "status", "daemonset/hubcap", "--timeout=120s"]);
        let ready_after = installing.elapsed();
        node.apply(WORKLOAD);
        node.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
        node.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            "pod/client",
            "pod/on-host",
            "--timeout=120s",
        ]);
        let pod_ips = |selector: &str| -> Vec<String> {
            let out = node.kubectl_ok(&["get", "pods", "-l", selector, "-o", "jsonpath={.items[*].status.podIP}"]);
            out.split_whitespace().map(str::to_owned).collect()
        };
        let client_ip = pod_ips("app=client").remove(0);
        let web_ips = pod_ips("app=web");
        let service_ip = node.kubectl_ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
        // The resource is CONFIGURED within a second of being seen.
        std::thread::sleep(Duration::from_secs(2));
        let responses = (0..4)
            .map(|_| client_get(&node, &format!("http://{service_ip}/")))
            .collect();
        // The pod on the host network calls the Service too.
        let on_host = get_from(&node, "on-host", &format!("http://{service_ip}/"));
        assert!(on_host.status.success(), "{}", String::from_utf8_lossy(&on_host.stderr));
        // Written at the next report (5 s by default) or when the flows end.
        std::thread::sleep(Duration::from_secs(7));
        NodeRun {
            worker: std::sync::OnceLock::new(),
            node,
            ready_after,
            client_ip,
            web_ips,
            service_ip,
            responses,
        }
    }

    /// The hubcap pod on the first node, as the API server has it.
    pub fn agent_pod(&self) -> Value {
        self.agent_pod_on(&self.node.name)
    }

    /// The hubcap pod on node `name`.
    pub fn agent_pod_on(&self, name: &str) -> Value {
        let out = self.node.kubectl_ok(&[
            "-n",
            RELEASE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=hubcap",
            "--field-selector",
            &format!("spec.nodeName={name}"),
            "-o",
            "json",
        ]);
        let list: Value = serde_json::from_str(&out).expect("pod list");
        list["items"][0].clone()
    }

    pub fn agent_log(&self) -> String {
        self.node.kubectl_ok(&["-n", RELEASE, "logs", "daemonset/hubcap"])
    }

    /// The first node's stored log's records (the hostPath on the node).
    pub fn stored(&self) -> Vec<Value> {
        stored_on(&self.node)
    }
}

/// `node`'s stored log's records.
pub fn stored_on(node: &KubeNode) -> Vec<Value> {
    let path = node.state().join("var").join(STORED_LOG);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// hubcap's programs and links in the kernel (bpftool; this bpftool
/// names tcx links by type number 11 and without their interface).
#[derive(Debug, PartialEq, Eq)]
pub struct Attached {
    /// Loaded `hubcap_ingress` programs: one per running agent.
    pub ingress_programs: usize,
    /// tcx links to hubcap's programs: two per captured interface.
    pub tcx_links: usize,
    /// kfree_skb links to hubcap's drop program.
    pub drop_links: usize,
}

pub fn attached() -> Attached {
    // A bpftool that fails must not read as "nothing attached".
    try_attached().unwrap_or_else(|e| panic!("{e}"))
}

/// What is attached, or why bpftool could not say: it fails when a program
/// or link goes while it lists them (a pod rolling).
pub fn try_attached() -> Result<Attached, String> {
    let json = |args: &[&str]| -> Result<Vec<Value>, String> {
        let out = Command::new("bpftool").args(args).output().expect("bpftool");
        if !out.status.success() {
            return Err(format!("bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bpftool {args:?}: {e}"))
    };
    let programs = json(&["-j", "prog", "show"])?;
    let ours = |name: &str| -> Vec<u64> {
        programs
            .iter()
            .filter(|p| p["name"] == name)
            .filter_map(|p| p["id"].as_u64())
            .collect()
    };
    let (ingress, egress, drop) = (ours("hubcap_ingress"), ours("hubcap_egress"), ours("hubcap_kfree_skb"));
    let links = json(&["-j", "link", "show"])?;
    let linked = |ids: &[u64]| {
        links
            .iter()
            .filter(|l| l["prog_id"].as_u64().is_some_and(|id| ids.contains(&id)))
            .count()
    };
    Ok(Attached {
        ingress_programs: ingress.len(),
        tcx_links: linked(&ingress) + linked(&egress),
        drop_links: linked(&drop),
    })
}

/// A free TCP port on the host's loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `kubectl port-forward` to the hubcap pod's `remote` port, from a free
/// local port: the forwarder (stopped when dropped) and the local port.
pub fn port_forward(run: &NodeRun, remote: u16) -> (hubcap_tests::upstream::Background, u16) {
    let pod = run.agent_pod()["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_owned();
    port_forward_to(run, &format!("pod/{pod}"), remote)
}

/// `kubectl port-forward TARGET` (`pod/NAME`, `service/NAME`) in the
/// release's namespace, from a free local port.
pub fn port_forward_to(run: &NodeRun, target: &str, remote: u16) -> (hubcap_tests::upstream::Background, u16) {
    let local = free_port();
    let forwarder = hubcap_tests::upstream::Background::start(
        Command::new(hubcap_tests::upstream::tool("kubectl"))
            .env("KUBECONFIG", run.node.kubeconfig())
            .args(["-n", RELEASE, "port-forward", "--address", "127.0.0.1"])
            .arg(target)
            .arg(format!("{local}:{remote}")),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", local)).is_err() {
        assert!(
            Instant::now() < deadline,
            "port-forward to {target}:{remote} never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (forwarder, local)
}

impl NodeRun {
    /// Waits for the hubcap pod to be Ready again, with `restarts`.
    pub fn wait_ready(&self, restarts: u64) {
        self.node.wait("hubcap Ready", Duration::from_secs(120), |_| {
            let pod = self.agent_pod();
            let status = &pod["status"]["containerStatuses"][0];
            status["ready"] == true
                && status["restartCount"].as_u64() == Some(restarts)
                && pod["metadata"]["deletionTimestamp"].is_null()
        });
    }

    /// The agent's pid on the node (exactly one hubcap process).
    pub fn agent_pid(&self) -> u32 {
        let pids = self.node.pids_named("hubcap");
        assert_eq!(pids.len(), 1, "hubcap processes on the node: {pids:?}");
        pids[0]
    }

    /// The metrics as Prometheus finds them: the headless metrics
    /// Service's endpoint, scraped from the client pod.
    pub fn metrics_through_the_service(&self) -> String {
        let endpoint = self.node.kubectl_ok(&[
            "-n",
            RELEASE,
            "get",
            "endpoints",
            "hubcap-metrics",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
        ]);
        assert_eq!(endpoint, format!("{}:9965", self.node.node_ip));
        client_get(&self.node, &format!("http://{endpoint}/metrics"))
    }

    /// The web pods' names.
    pub fn web_pods(&self) -> Vec<String> {
        let out = self.node.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]);
        out.split_whitespace().map(str::to_owned).collect()
    }
}
