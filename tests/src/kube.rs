//! A real Kubernetes control plane for a test: Debian's etcd, and the
//! unmodified kube-apiserver and kube-controller-manager (1.28) from
//! `../shared/tools`, all inside the test's node namespace on its loopback
//! (so their fixed ports are the test's own). There is no kubelet: tests
//! bind pods to nodes and write their status as a kubelet would.
//!
//! The directory layout follows envtest's convention: `KUBEBUILDER_ASSETS`,
//! when set, names a directory holding `kube-apiserver` (and `etcd`).

use std::{
    future::Future,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        authentication::v1::TokenRequest,
        core::v1::{Binding, Namespace, Pod, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::{
    netns::Netns,
    upstream::{Background, tool},
};

const TOKEN: &str = "hubcap-test-admin-token";
pub const API_PORT: u16 = 6443;

pub struct ControlPlane {
    // Stopped in reverse order of start: dropped fields go first to last.
    _controller_manager: Background,
    apiserver: Option<Background>,
    _etcd: Background,
    dir: PathBuf,
    pub kubeconfig: PathBuf,
    netns: String,
}

fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let path = Path::new(&dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    if name == "etcd" {
        return PathBuf::from("/usr/bin/etcd");
    }
    tool(name)
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager in `ns` and
    /// waits until the API server answers and the `default` namespace has
    /// its ServiceAccount (pods are refused before).
    pub fn start(ns: &Netns) -> ControlPlane {
        let dir = std::env::temp_dir().join(format!("hubcap-kube-{}", ns.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let key = rcgen::KeyPair::generate().expect("service account key");
        std::fs::write(dir.join("sa.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("sa.pub"), key.public_key_pem()).unwrap();
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{TOKEN},admin,admin-uid,system:masters\n"),
        )
        .unwrap();
        let path = |p: &str| dir.join(p).to_str().unwrap().to_owned();
        let quiet = |program: PathBuf| ns.command(program.to_str().unwrap());

        let etcd = Background::start_logging(
            quiet(binary("etcd")).args(etcd_args("t", &path("etcd"))),
            Some(&dir.join("etcd.log")),
        );
        let apiserver = start_apiserver(ns, &dir);
        let kubeconfig = dir.join("kubeconfig");
        let plane_dir = dir.clone();
        // The API server writes its certificate on start.
        let cert = dir.join("certs/apiserver.crt");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cert.exists() {
            assert!(Instant::now() < deadline, "kube-apiserver wrote no certificate");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::write(&kubeconfig, kubeconfig_text(&cert, API_PORT)).unwrap();
        let controller_manager = Background::start_logging(
            quiet(binary("kube-controller-manager")).args([
                &format!("--kubeconfig={}", kubeconfig.display()),
                &format!("--service-account-private-key-file={}", path("sa.key")),
                &format!("--root-ca-file={}", cert.display()),
                "--leader-elect=false",
                "--controllers=*",
                "--bind-address=127.0.0.1",
                "--secure-port=10257",
                // No kubelet renews the nodes' leases: never mark them lost.
                "--node-monitor-grace-period=1h",
            ]),
            Some(&dir.join("controller-manager.log")),
        );
        let plane = ControlPlane {
            _controller_manager: controller_manager,
            apiserver: Some(apiserver),
            _etcd: etcd,
            dir: plane_dir,
            kubeconfig,
            netns: ns.name.clone(),
        };
        plane.wait_ready(ns);
        plane
    }

    /// Waits until the API server answers and the `default` namespace has
    /// its ServiceAccount (pods are refused before).
    fn wait_ready(&self, ns: &Netns) {
        let log_dir = self.dir.clone();
        self.run(ns, move |client| async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let ready = client.apiserver_version().await.is_ok() && {
                    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
                        kube::Api::namespaced(client.clone(), "default");
                    accounts.get_opt("default").await.ok().flatten().is_some()
                };
                if ready {
                    return;
                }
                if Instant::now() >= deadline {
                    let log = std::fs::read_to_string(log_dir.join("apiserver.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    panic!("the control plane did not come up; kube-apiserver said: {tail:#?}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Stops the API server (SIGKILL), as an outage.
    pub fn stop_apiserver(&mut self) {
        self.apiserver = None;
    }

    /// Moves etcd's history on and compacts it away, as a long outage or a
    /// busy cluster does: a watch that resumes from a resourceVersion of
    /// before this gets 410 Gone and must list again. Through etcd's own
    /// JSON gateway (etcd 3.4), with the API server stopped or running.
    pub fn compact_history(&self, ns: &Netns) {
        let mut revision = 0;
        for i in 0..10 {
            let put = etcd_post(
                ns,
                "/v3/kv/put",
                &format!(
                    r#"{{"key":"{}","value":"{}"}}"#,
                    base64(b"/hubcap-test/compaction"),
                    base64(i.to_string().as_bytes())
                ),
            );
            revision = put["header"]["revision"]
                .as_str()
                .and_then(|r| r.parse::<u64>().ok())
                .expect("a revision");
        }
        let compacted = etcd_post(
            ns,
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        );
        assert!(compacted.get("header").is_some(), "compaction: {compacted}");
    }

    /// Starts it again, on the same storage, and waits until it answers.
    pub fn start_apiserver(&mut self, ns: &Netns) {
        self.apiserver = Some(start_apiserver(ns, &self.dir));
        self.wait_ready(ns);
    }

    /// Runs `body` with a client of this API server, inside the namespace
    /// it listens in.
    pub fn run<T, F>(&self, ns: &Netns, body: impl FnOnce(Client) -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: Future<Output = T>,
    {
        assert_eq!(ns.name, self.netns, "the API server listens in its own namespace");
        let kubeconfig = self.kubeconfig.clone();
        ns.enter(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let file = Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
                let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .expect("config");
                body(Client::try_from(config).expect("client")).await
            })
        })
    }
}

impl ControlPlane {
    /// A kubeconfig for this API server that authenticates with `token`.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.join(name);
        let text = kubeconfig_text(&self.dir.join("certs/apiserver.crt"), API_PORT).replace(TOKEN, token);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl ControlPlane {
    /// A kubeconfig (admin token) that reaches this API server through
    /// `proxy_port` on loopback instead of its own port.
    pub fn kubeconfig_via(&self, name: &str, proxy_port: u16) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(
            &path,
            kubeconfig_text(&self.dir.join("certs/apiserver.crt"), proxy_port),
        )
        .unwrap();
        path
    }
}

/// A TCP proxy on 127.0.0.1:`port` in a namespace that forwards to the API
/// server and holds every chunk for `delay` in each direction: a slow or
/// far-away API server. Runs until the test process ends.
pub fn start_slow_proxy(ns: &Netns, port: u16, delay: Duration) {
    let netns = format!("/run/netns/{}", ns.name);
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // This thread lives in the namespace: its listener and its
        // connections to the API server are there.
        let file = std::fs::File::open(&netns).expect("the namespace");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the proxy");
        ready_tx.send(()).unwrap();
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", API_PORT)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        std::thread::sleep(delay);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    ready.recv().expect("the proxy started");
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates `object` (JSON) through `api`.
pub async fn create<K>(api: &Api<K>, object: serde_json::Value)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let object: K = serde_json::from_value(object).expect("a valid object");
    api.create(&PostParams::default(), &object).await.expect("create");
}

/// Applies `deploy/kubernetes/rbac.yaml` as shipped and returns a token of
/// its ServiceAccount: hubcap runs with exactly the access it grants.
pub async fn deployed_service_account_token(client: &Client) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/rbac.yaml");
    let text = std::fs::read_to_string(path).expect("rbac.yaml");
    create(
        &Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": "hubcap"}}),
    )
    .await;
    wait_for_service_account(client, "hubcap").await;
    for document in serde_norway::Deserializer::from_str(&text) {
        let object: serde_json::Value = serde::Deserialize::deserialize(document).expect("YAML");
        match object["kind"].as_str() {
            Some("ServiceAccount") => {
                create(&Api::<ServiceAccount>::namespaced(client.clone(), "hubcap"), object).await
            }
            Some("ClusterRole") => create(&Api::<ClusterRole>::all(client.clone()), object).await,
            Some("ClusterRoleBinding") => create(&Api::<ClusterRoleBinding>::all(client.clone()), object).await,
            other => panic!("unexpected kind {other:?} in rbac.yaml"),
        }
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "hubcap");
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    let token = accounts
        .create_token_request("hubcap", &PostParams::default(), &request)
        .await
        .expect("token for hubcap's ServiceAccount");
    token.status.expect("token").token
}

/// Installs `deploy/kubernetes/crds.yaml` as shipped and waits until the
/// API server serves every resource it defines.
pub async fn install_crds(client: &Client) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/crds.yaml");
    let text = std::fs::read_to_string(path).expect("crds.yaml");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let object: serde_json::Value = serde::Deserialize::deserialize(document).expect("YAML");
        names.push(object["metadata"]["name"].as_str().expect("name").to_owned());
        create(&crds, object).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let crd = crds.get(&name).await.expect("CRD");
            let established = crd.status.and_then(|s| s.conditions).is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "{name} never established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What the scheduler and a kubelet would do: bind the pod to `node` and
/// report it running and ready at `ips`.
pub async fn run_pod(client: &Client, namespace: &str, name: &str, ips: [IpAddr; 2], node: &str, host_ip: IpAddr) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let binding: Binding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "target": {"kind": "Node", "name": node},
    }))
    .unwrap();
    pods.create_subresource::<serde_json::Value>(
        "binding",
        name,
        &PostParams::default(),
        serde_json::to_vec(&binding).unwrap(),
    )
    .await
    .expect("bind pod");
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ips[0].to_string(),
        "podIPs": [{"ip": ips[0].to_string()}, {"ip": ips[1].to_string()}],
        "hostIP": host_ip.to_string(),
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

/// Waits for the `default` ServiceAccount the controller manager makes in
/// a new namespace (pods are refused before).
pub async fn wait_for_service_account(client: &Client, namespace: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(30);
    while accounts.get_opt("default").await.ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "no default ServiceAccount in {namespace}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn start_apiserver(ns: &Netns, dir: &Path) -> Background {
    let path = |p: &str| dir.join(p).to_str().unwrap().to_owned();
    Background::start_logging(
        ns.command(binary("kube-apiserver").to_str().unwrap()).args([
            "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=127.0.0.1",
            &format!("--secure-port={API_PORT}"),
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            &format!("--cert-dir={}", path("certs")),
            "--service-cluster-ip-range=10.96.0.0/16",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            &format!("--service-account-key-file={}", path("sa.pub")),
            &format!("--service-account-signing-key-file={}", path("sa.key")),
            &format!("--token-auth-file={}", path("tokens.csv")),
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
        ]),
        Some(&dir.join("apiserver.log")),
    )
}

fn kubeconfig_text(ca: &Path, port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {TOKEN}
contexts:
- name: local
  context: {{cluster: local, user: admin}}
current-context: local
",
        ca = ca.display()
    )
}

/// Standard base64, as etcd's gateway takes keys and values.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One POST to etcd's JSON gateway on 127.0.0.1:2379 in `ns`; the reply.
fn etcd_post(ns: &Netns, path: &str, body: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = ns.enter(move || {
        let mut stream = std::net::TcpStream::connect("127.0.0.1:2379").expect("etcd");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    });
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "etcd {path}: {response}");
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("etcd {path}: {e}: {body}"))
}

/// A one-member etcd on the namespace's loopback (client 2379, peer 2380),
/// its data in `data_dir`.
pub fn etcd_args(name: &str, data_dir: &str) -> Vec<String> {
    [
        "--name",
        name,
        "--data-dir",
        data_dir,
        "--listen-client-urls",
        "http://127.0.0.1:2379",
        "--advertise-client-urls",
        "http://127.0.0.1:2379",
        "--listen-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-cluster",
        &format!("{name}=http://127.0.0.1:2380"),
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}
