//! The cases, in the order they run: the last ones upgrade and uninstall.

use serde_json::Value;

use std::time::Duration;

use hubcap_tests::upstream::tool;

use crate::{
    counts::packet_and_byte_counts_equal_the_pods_veths,
    fixture::{
        Attached, NodeRun, RELEASE, attached, chart, client_get, helm, port_forward, port_forward_to, try_attached,
        values,
    },
    two_nodes,
};

type Case = (&'static str, fn(&NodeRun));

pub const CASES: &[Case] = &[
    (
        "the_chart_installs_and_the_pod_becomes_ready_without_restarts",
        the_chart_installs_and_the_pod_becomes_ready_without_restarts,
    ),
    (
        "the_client_reaches_web_through_the_service",
        the_client_reaches_web_through_the_service,
    ),
    (
        "the_flow_log_resource_is_configured",
        the_flow_log_resource_is_configured,
    ),
    (
        "the_stored_log_names_client_web_and_the_service",
        the_stored_log_names_client_web_and_the_service,
    ),
    (
        "a_pod_on_the_host_network_is_the_host",
        a_pod_on_the_host_network_is_the_host,
    ),
    (
        "hubble_status_and_observe_through_port_forward",
        hubble_status_and_observe_through_port_forward,
    ),
    (
        "metrics_through_the_metrics_service",
        metrics_through_the_metrics_service,
    ),
    (
        "packet_and_byte_counts_equal_the_pods_veths",
        packet_and_byte_counts_equal_the_pods_veths,
    ),
    ("one_set_of_programs_is_attached", one_set_of_programs_is_attached),
    (
        "the_agents_memory_and_cpu_on_the_node",
        the_agents_memory_and_cpu_on_the_node,
    ),
    (
        "a_killed_container_is_restarted_with_one_set_attached",
        a_killed_container_is_restarted_with_one_set_attached,
    ),
    (
        "helm_upgrade_rolls_the_pod_with_one_set_attached",
        helm_upgrade_rolls_the_pod_with_one_set_attached,
    ),
    (
        "relay_serves_the_nodes_flows_over_mutual_tls",
        relay_serves_the_nodes_flows_over_mutual_tls,
    ),
    (
        "relay_lists_only_the_nodes_where_hubcap_runs",
        two_nodes::relay_lists_only_the_nodes_where_hubcap_runs,
    ),
    (
        "relay_shows_both_nodes_once_hubcap_runs_on_the_second",
        two_nodes::relay_shows_both_nodes_once_hubcap_runs_on_the_second,
    ),
    (
        "cross_node_traffic_is_named_on_both_nodes",
        two_nodes::cross_node_traffic_is_named_on_both_nodes,
    ),
    (
        "helm_uninstall_leaves_nothing_attached",
        helm_uninstall_leaves_nothing_attached,
    ),
];

fn the_chart_installs_and_the_pod_becomes_ready_without_restarts(run: &NodeRun) {
    let pod = run.agent_pod();
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["ready"], true, "{pod:#}");
    assert_eq!(status["restartCount"], 0, "{pod:#}");
    assert_eq!(pod["spec"]["nodeName"], run.node.name.as_str());
    let log = run.agent_log();
    assert!(log.contains("capturing"), "{log}");
    assert!(!log.contains(" ERROR "), "{log}");
    eprintln!("hubcap Ready {:.1} s after helm install", run.ready_after.as_secs_f64());
}

fn the_client_reaches_web_through_the_service(run: &NodeRun) {
    assert_eq!(run.web_ips.len(), 2, "{:?}", run.web_ips);
    for response in &run.responses {
        assert_eq!(response, "hello from the web pod\n");
    }
}

fn the_flow_log_resource_is_configured(run: &NodeRun) {
    let state = run.node.kubectl_ok(&[
        "get",
        "retinanetworkflowlog",
        "default-pods",
        "-o",
        "jsonpath={.status.state}",
    ]);
    assert_eq!(state, "CONFIGURED");
}

fn the_stored_log_names_client_web_and_the_service(run: &NodeRun) {
    let records = run.stored();
    assert!(!records.is_empty(), "nothing stored");
    // Exactly what the resource selects: from or to a pod in `default`
    // (not the agent's, Relay's or the API server's own traffic).
    for record in &records {
        let flow = &record["flow"];
        assert!(
            flow["source"]["namespace"] == "default" || flow["destination"]["namespace"] == "default",
            "stored but not selected: {flow:#}"
        );
    }
    let from_client: Vec<&Value> = records
        .iter()
        .filter(|r| r["flow"]["IP"]["source"] == run.client_ip.as_str())
        .filter(|r| r["flow"]["l4"]["TCP"]["destination_port"] == 8080)
        .collect();
    assert!(
        !from_client.is_empty(),
        "no record from the client to web: {records:#?}"
    );
    for record in from_client {
        let flow = &record["flow"];
        assert_eq!(flow["source"]["namespace"], "default", "{flow:#}");
        assert_eq!(flow["source"]["pod_name"], "client", "{flow:#}");
        assert_eq!(flow["destination"]["namespace"], "default", "{flow:#}");
        let web = flow["destination"]["pod_name"].as_str().unwrap_or_default();
        assert!(web.starts_with("web-"), "{flow:#}");
        assert!(
            run.web_ips.iter().any(|ip| flow["IP"]["destination"] == ip.as_str()),
            "{flow:#}"
        );
        let workloads = &flow["destination"]["workloads"];
        assert_eq!(workloads[0]["kind"], "Deployment", "{flow:#}");
        assert_eq!(workloads[0]["name"], "web", "{flow:#}");
        let service = flow["destination_service"]["name"].as_str().unwrap_or_default();
        assert_eq!(service, "web", "{flow:#} (ClusterIP {})", run.service_ip);
        assert_eq!(flow["node_name"], run.node.name.as_str(), "{flow:#}");
    }
}

/// Its call to the Service reaches a web pod from the node's own address
/// (kube-proxy masquerades it to the bridge's): the host, as Cilium names
/// it, with the web pod and the Service on the other side.
fn a_pod_on_the_host_network_is_the_host(run: &NodeRun) {
    let records = run.stored();
    let from_host: Vec<&Value> = records
        .iter()
        .filter(|r| r["flow"]["source"]["labels"] == serde_json::json!(["reserved:host"]))
        .filter(|r| r["flow"]["l4"]["TCP"]["destination_port"] == 8080)
        .collect();
    assert!(!from_host.is_empty(), "no record from the host to web: {records:#?}");
    for record in from_host {
        let flow = &record["flow"];
        assert_eq!(flow["source"]["identity"], 1, "{flow:#}");
        let source = flow["IP"]["source"].as_str().unwrap_or_default();
        assert!(
            source == "10.244.0.1" || source == run.node.node_ip.to_string(),
            "not the node's bridge or own address: {flow:#}"
        );
        assert!(
            flow["destination"]["pod_name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("web-"),
            "{flow:#}"
        );
        assert_eq!(flow["destination_service"]["name"], "web", "{flow:#}");
    }
}

/// Captured interfaces as hubcap's metric says.
fn captured_interfaces(run: &NodeRun) -> usize {
    let metrics = run.metrics_through_the_service();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("hubcap_attached_interfaces "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no hubcap_attached_interfaces:\n{metrics}")) as usize
}

/// One agent's programs: one program pair, both hooks on every captured
/// interface once, one drop link.
fn assert_one_set(run: &NodeRun) {
    let interfaces = captured_interfaces(run);
    // The chart's default `veth*` and `eth0`: three pods' veths and eth0.
    assert!(interfaces >= 4, "{interfaces} interfaces captured");
    run.node.wait("one set of programs", Duration::from_secs(20), |_| {
        attached()
            == Attached {
                ingress_programs: 1,
                tcx_links: 2 * interfaces,
                drop_links: 1,
            }
    });
}

/// The real hubble CLI against `localhost:port`: whether it succeeded,
/// and what it printed (standard output, then errors).
pub fn hubble_at(port: u16, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(tool("hubble"))
        .args(args)
        .args(["--server", &format!("localhost:{port}")])
        .output()
        .expect("hubble");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn hubble_status_and_observe_through_port_forward(run: &NodeRun) {
    let (_forwarder, port) = port_forward(run, 4244);
    let hubble = |args: &[&str]| {
        let (ok, text) = hubble_at(port, args);
        assert!(ok, "hubble {args:?}: {text}");
        text
    };
    let status = hubble(&["status"]);
    assert!(status.contains("Healthcheck (via"), "{status}");
    assert!(status.contains("Flows/s"), "{status}");
    let flows = hubble(&["observe", "--last", "1000", "--pod", "default/client", "-o", "jsonpb"]);
    let named: Vec<Value> = flows
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|f| {
            f["flow"]["destination"]["pod_name"]
                .as_str()
                .is_some_and(|p| p.starts_with("web-"))
        })
        .collect();
    assert!(
        !named.is_empty(),
        "no client -> web flow through hubble observe:\n{flows}"
    );
}

fn metrics_through_the_metrics_service(run: &NodeRun) {
    let metrics = run.metrics_through_the_service();
    assert!(metrics.contains("hubble_flows_processed_total{"), "{metrics}");
    assert!(captured_interfaces(run) >= 4);
}

fn one_set_of_programs_is_attached(run: &NodeRun) {
    assert_one_set(run);
}

fn the_agents_memory_and_cpu_on_the_node(run: &NodeRun) {
    let pid = run.agent_pid();
    let idle = Duration::from_secs(5);
    let before = cpu_seconds(pid);
    std::thread::sleep(idle);
    let idle_cpu = 100.0 * (cpu_seconds(pid) - before) / idle.as_secs_f64();
    let (started, before) = (std::time::Instant::now(), cpu_seconds(pid));
    let requests = (0..50)
        .map(|_| client_get(&run.node, &format!("http://{}/", run.service_ip)))
        .count();
    // Until the next report has written them.
    std::thread::sleep(Duration::from_secs(5));
    let busy_cpu = 100.0 * (cpu_seconds(pid) - before) / started.elapsed().as_secs_f64();
    let rss_kib = rss_kib(pid);
    eprintln!(
        "hubcap on the node: RSS {:.1} MiB; CPU {idle_cpu:.1}% of a core idle, {busy_cpu:.1}% with {requests} requests through the Service",
        rss_kib as f64 / 1024.0
    );
    // The chart's default limit is 256 Mi.
    assert!(rss_kib < 256 * 1024, "RSS {rss_kib} KiB");
    assert!(idle_cpu < 5.0, "{idle_cpu}% of a core while idle");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// User and system CPU time of `pid` (clock ticks of 10 ms).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) as f64 / 100.0
}

fn a_killed_container_is_restarted_with_one_set_attached(run: &NodeRun) {
    let pid = run.agent_pid();
    let restarted = std::sync::atomic::AtomicBool::new(false);
    let gap = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| longest_time_detached(&restarted));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        run.wait_ready(1);
        restarted.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().expect("the watcher")
    });
    eprintln!(
        "SIGKILL: the kubelet restarted hubcap; no program attached for {:.1} s",
        gap.as_secs_f64()
    );
    assert_ne!(run.agent_pid(), pid);
    assert_one_set(run);
}

/// The upgrade most users make next: Hubble Relay, with the agents on
/// every address behind mutual TLS from certificates the chart makes; the
/// agents only on nodes labelled for them (a node without one shows that
/// Relay lists only nodes where hubcap runs).
pub const WITH_RELAY: &str = r#"{
  "image": {"pullPolicy": "Never"},
  "nodeSelector": {"hubcap-test/agent": "on"},
  "grpc": {"listen": ":4244", "tls": {"secretName": "hubble-server-certs", "generate": true}, "peerService": {"enabled": true}},
  "relay": {"enabled": true, "image": {"pullPolicy": "Never"}}
}"#;

fn helm_upgrade_rolls_the_pod_with_one_set_attached(run: &NodeRun) {
    let before = run.agent_pod()["metadata"]["name"].as_str().unwrap().to_owned();
    let kubeconfig = run.node.kubeconfig().display().to_string();
    hubcap_tests::kube_node::images::load_relay(&run.node);
    run.node
        .kubectl_ok(&["label", "node", &run.node.name, "hubcap-test/agent=on"]);
    // Whether hubcap's programs are attached, every 100 ms through the roll.
    let rolled = std::sync::atomic::AtomicBool::new(false);
    let (gap, roll) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| longest_time_detached(&rolled));
        let started = std::time::Instant::now();
        helm(&["upgrade", &chart(), RELEASE, RELEASE, &kubeconfig, WITH_RELAY]);
        run.node.wait("the rolled pod", Duration::from_secs(120), |_| {
            let pod = run.agent_pod();
            pod["metadata"]["name"] != before.as_str() && pod["status"]["containerStatuses"][0]["ready"] == true
        });
        let roll = started.elapsed();
        rolled.store(true, std::sync::atomic::Ordering::Relaxed);
        (watcher.join().expect("the watcher"), roll)
    });
    eprintln!(
        "helm upgrade: the pod rolled in {:.1} s (upgrade to the new pod Ready); no program attached for {:.1} s",
        roll.as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(gap > Duration::ZERO, "the roll never detached the old programs");
    assert!(gap < roll, "a gap of {gap:?} is longer than the roll ({roll:?})");
    run.wait_ready(0);
    assert_one_set(run);
}

/// The longest stretch without any of hubcap's tcx links, until `done`.
fn longest_time_detached(done: &std::sync::atomic::AtomicBool) -> Duration {
    let (mut longest, mut since) = (Duration::ZERO, None);
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let now = std::time::Instant::now();
        // A listing cut short by the roll itself is no sample.
        let Ok(now_attached) = try_attached() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        match (now_attached.tcx_links, since) {
            (0, None) => since = Some(now),
            (0, Some(_)) => {}
            (_, Some(at)) => {
                longest = longest.max(now - at);
                since = None;
            }
            (_, None) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    longest
}

fn relay_serves_the_nodes_flows_over_mutual_tls(run: &NodeRun) {
    run.node.kubectl_ok(&[
        "-n",
        RELEASE,
        "rollout",
        "status",
        "deployment/hubble-relay",
        "--timeout=120s",
    ]);
    let (_forwarder, port) = port_forward_to(run, "service/hubble-relay", 80);
    let hubble = |args: &[&str]| hubble_at(port, args);
    // Relay connects to the peers it is told of, then lists them.
    run.node
        .wait("Relay connected to the node", Duration::from_secs(60), |_| {
            let (ok, nodes) = hubble(&["list", "nodes"]);
            ok && nodes.contains(&run.node.name) && nodes.contains("Connected")
        });
    let (_, nodes) = hubble(&["list", "nodes"]);
    assert_eq!(nodes.lines().filter(|l| l.contains("Connected")).count(), 1, "{nodes}");
    client_get(&run.node, &format!("http://{}/", run.service_ip));
    // The client's flows reach the Observer at the next report (5 s).
    let from_node = || {
        let (ok, flows) = hubble(&["observe", "--last", "200", "--pod", "default/client", "-o", "jsonpb"]);
        assert!(ok, "{flows}");
        flows
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|f| f["flow"]["node_name"] == run.node.name.as_str())
    };
    run.node
        .wait("the node's flows through Relay", Duration::from_secs(20), |_| {
            from_node()
        });
    // Another upgrade keeps the generated certificates.
    let certificate = || {
        run.node.kubectl_ok(&[
            "-n",
            RELEASE,
            "get",
            "secret",
            "hubble-server-certs",
            "-o",
            "jsonpath={.data.tls\\.crt}",
        ])
    };
    let before = certificate();
    assert!(!before.is_empty());
    let kubeconfig = run.node.kubeconfig().display().to_string();
    helm(&["upgrade", &chart(), RELEASE, RELEASE, &kubeconfig, WITH_RELAY]);
    assert_eq!(certificate(), before, "the upgrade made new certificates");
}

fn helm_uninstall_leaves_nothing_attached(run: &NodeRun) {
    let kubeconfig = run.node.kubeconfig().display().to_string();
    let _ = values();
    helm(&["uninstall", RELEASE, RELEASE, &kubeconfig]);
    run.node.wait("the hubcap pod gone", Duration::from_secs(60), |n| {
        n.kubectl(&["-n", RELEASE, "get", "pods", "--no-headers"])
            .stdout
            .is_empty()
    });
    run.node.wait("no program left", Duration::from_secs(20), |_| {
        attached()
            == Attached {
                ingress_programs: 0,
                tcx_links: 0,
                drop_links: 0,
            }
    });
    // On every node: no process, no pin, no socket.
    for node in std::iter::once(&run.node).chain(run.worker.get()) {
        assert!(
            node.pids_named("hubcap").is_empty(),
            "hubcap still runs on {}",
            node.name
        );
        let pins = node.command("ls").args(["-A", "/sys/fs/bpf"]).output().expect("ls");
        let pins = String::from_utf8_lossy(&pins.stdout).into_owned();
        // maps.debug and progs.debug are the kernel's own (bpf_preload).
        let left: Vec<&str> = pins
            .lines()
            .filter(|p| !["maps.debug", "progs.debug"].contains(p))
            .collect();
        assert!(left.is_empty(), "pins left in {}'s bpffs: {left:?}", node.name);
        let sockets = node
            .command("ss")
            .args(["-Hlnp", "-A", "inet,unix"])
            .output()
            .expect("ss");
        let sockets = String::from_utf8_lossy(&sockets.stdout).into_owned();
        let ours: Vec<&str> = sockets
            .lines()
            .filter(|l| {
                l.contains("((\"hubcap\"") || l.contains("hubble.sock") || l.contains(":4244 ") || l.contains(":9965 ")
            })
            .collect();
        assert!(ours.is_empty(), "sockets left on {}: {ours:?}", node.name);
        let socket_file = node.command("ls").arg(HUBBLE_SOCKET).output().expect("ls");
        assert!(!socket_file.status.success(), "{HUBBLE_SOCKET} left on {}", node.name);
    }
}

/// The chart's default `grpc.socket` on the node.
const HUBBLE_SOCKET: &str = "/var/run/hubcap/hubble.sock";
