//! The unmodified Hubble UI (v0.13.5: its Go backend and built frontend,
//! served by nginx as Cilium's chart serves it) on top of the real Hubble
//! Relay, on top of hubcap, opened in headless Chromium. A namespace with
//! two pods talking must show both pods' cards with the server's port on
//! the service map and their flows in the table.
//!
//! The UI always sends blacklists on `source_fqdn`/`destination_fqdn`,
//! labels and DNS ports, and a whitelist on the namespace's pods with
//! `reply: false`: a server that refuses any of them shows nothing.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hubcap_tests::{
    kube::{ControlPlane, create, run_pod, wait_for_service_account},
    require_root,
    topology::Node,
    traffic::tcp_transfer,
    upstream::{Background, relay, tool},
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use serde_json::{Value, json};

const NAMESPACE: &str = "ui-demo";
const NODE_NAME: &str = "ui-node";
const SERVER_PORT: u16 = 8080;
const RELAY: &str = "127.0.0.1:4245";
const UI_BACKEND_PORT: &str = "8090";
const UI: &str = "127.0.0.1:8081";

/// nginx as in Cilium's chart (`hubble-ui/_nginx.tpl`, base URL `/`): the
/// frontend's files, `/api` to the backend.
fn nginx_config(dir: &Path, frontend: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# One process, so that the test's SIGKILL stops all of nginx.
master_process off;
user root;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {d}/nginx-access.log;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    server {{
        listen {UI};
        root {frontend};
        index index.html;
        location /api {{
            proxy_http_version 1.1;
            proxy_pass_request_headers on;
            proxy_pass http://127.0.0.1:{UI_BACKEND_PORT};
        }}
        location / {{
            try_files $uri $uri/ /index.html /index.html;
        }}
    }}
}}
"#,
        frontend = frontend.display()
    )
}

/// The pods as the API server knows them: client and server, labelled by
/// app, running on this node at the test pods' addresses.
fn create_pods(plane: &ControlPlane, node: &Node) {
    let pods: Vec<(&'static str, [IpAddr; 2])> = ["client", "server"]
        .into_iter()
        .zip(&node.pods)
        .map(|(name, pod)| (name, [pod.ipv4.into(), pod.ipv6.into()]))
        .collect();
    let host_ip: IpAddr = node.bridge_v4().into();
    plane.run(&node.ns, move |client| async move {
        create(
            &Api::<Namespace>::all(client.clone()),
            json!({"metadata": {"name": NAMESPACE}}),
        )
        .await;
        wait_for_service_account(&client, NAMESPACE).await;
        let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        for (name, ips) in pods {
            create(
                &api,
                json!({
                    "metadata": {"name": name, "labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": "example.invalid/app:1"}]},
                }),
            )
            .await;
            run_pod(&client, NAMESPACE, name, ips, NODE_NAME, host_ip).await;
        }
    });
}

/// Waits until Relay (which finds hubcap through its Peer service) returns
/// at least `count` flows to `port` of the namespace.
fn wait_for_relay_flows(node: &Node, port: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = node
            .ns
            .command(tool("hubble").to_str().unwrap())
            .args([
                "observe",
                "--server",
                RELAY,
                "--namespace",
                NAMESPACE,
                "--to-port",
                port,
                "-o",
                "json",
            ])
            .output()
            .expect("hubble");
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.lines().count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Relay returns no flows: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the page showed (see `tests/ui/hubble_ui_page.py`).
fn open_ui(node: &Node, screenshot: &Path, expected: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui/hubble_ui_page.py");
    let url = format!("http://{UI}/?namespace={NAMESPACE}");
    let out = node
        .ns
        .command("/usr/bin/python3") // Debian's, with its python3-selenium
        .arg(&script)
        .arg(&url)
        .arg(screenshot)
        .arg("90")
        .args(expected)
        .output()
        .expect("running the browser");
    assert!(
        out.status.success(),
        "the browser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the page's report")
}

fn texts(page: &Value, key: &str) -> Vec<String> {
    page[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {page}"))
        .iter()
        .map(|t| t.as_str().unwrap_or_default().to_lowercase())
        .collect()
}

#[test]
fn the_hubble_ui_shows_the_pods_cards_and_flows_through_relay() {
    require_root();
    let node = Node::new(2);
    let plane = ControlPlane::start(&node.ns);
    create_pods(&plane, &node);
    let kubeconfig = plane.kubeconfig.to_str().unwrap().to_owned();
    let agent = node.capture(&[
        "--node-name",
        NODE_NAME,
        "--kubernetes",
        "on",
        "--kubeconfig",
        &kubeconfig,
        "--grpc-listen",
        "127.0.0.1:4244",
        "--report-interval",
        "1",
    ]);
    agent.wait_for_log("Kubernetes metadata listed", Duration::from_secs(30));
    node.up();
    let _relay = relay(&node.ns, "127.0.0.1:4244", RELAY);

    // The backend reads only $HOME/.kube/config, and watches Namespaces.
    let dir = std::env::temp_dir().join(format!("hubcap-ui-{}", node.id));
    std::fs::create_dir_all(dir.join(".kube")).unwrap();
    std::fs::copy(&plane.kubeconfig, dir.join(".kube/config")).unwrap();
    let _backend = Background::start_logging(
        node.ns
            .command(tool("hubble-ui-backend").to_str().unwrap())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &dir)
            .env("FLOWS_API_ADDR", RELAY)
            .env("EVENTS_SERVER_PORT", UI_BACKEND_PORT),
        Some(&dir.join("backend.log")),
    );
    let frontend = tool("hubble-ui-frontend/index.html").parent().unwrap().to_path_buf();
    std::fs::write(dir.join("nginx.conf"), nginx_config(&dir, &frontend)).unwrap();
    let _nginx = Background::start_logging(
        node.ns
            .command("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .args(["-g", "daemon off;"]),
        Some(&dir.join("nginx.log")),
    );

    // client -> server:8080, a few connections; Relay must see them first.
    let (client, server) = (&node.pods[0], &node.pods[1]);
    let target = SocketAddr::new(server.ipv4.into(), SERVER_PORT);
    for _ in 0..5 {
        tcp_transfer(&client.ns, &server.ns, target, 2_000, 20_000);
    }
    let port = SERVER_PORT.to_string();
    wait_for_relay_flows(&node, &port, 5);

    let screenshot = dir.join("hubble-ui.png");
    let page = open_ui(&node, &screenshot, &["client", "server", &port]);
    let report = || {
        let backend = std::fs::read_to_string(dir.join("backend.log")).unwrap_or_default();
        let tail: Vec<&str> = backend.lines().rev().take(20).collect();
        format!("page: {page:#}\nbackend log (last lines first): {tail:#?}")
    };
    let cards = texts(&page, "cards");
    let card_of = |app: &str| cards.iter().find(|c| c.contains(app)).cloned();
    assert!(card_of("client").is_some(), "no client card\n{}", report());
    let server_card = card_of("server").unwrap_or_else(|| panic!("no server card\n{}", report()));
    assert!(
        server_card.contains(&port),
        "the server card shows port {port}: {server_card:?}"
    );
    let rows = texts(&page, "rows");
    let flow_rows: Vec<&String> = rows
        .iter()
        .filter(|r| r.contains("client") && r.contains("server") && r.contains(&port))
        .collect();
    assert!(!flow_rows.is_empty(), "no client -> server row\n{}", report());
    assert!(
        flow_rows.iter().all(|r| r.contains("forwarded")),
        "verdicts: {flow_rows:#?}"
    );
    // No request of the page's failed.
    let api = page["api"].as_array().expect("api calls");
    assert!(
        api.iter()
            .all(|call| call[0].as_u64().is_some_and(|status| status < 400)),
        "{api:#?}"
    );
    drop(agent);
    if std::env::var_os("HUBCAP_KEEP_UI").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
