//! The cases, in the order they run: the last ones upgrade and uninstall.

use serde_json::Value;

use crate::fixture::{NodeRun, RELEASE, chart, helm, values};

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

fn helm_uninstall_leaves_nothing_attached(run: &NodeRun) {
    let kubeconfig = run.node.kubeconfig().display().to_string();
    let _ = (chart(), values());
    helm(&["uninstall", RELEASE, RELEASE, &kubeconfig]);
    run.node
        .wait("the hubcap pod gone", std::time::Duration::from_secs(60), |n| {
            n.kubectl(&["-n", RELEASE, "get", "pods", "--no-headers"])
                .stdout
                .is_empty()
        });
    let bpftool = |args: &[&str]| {
        let out = run.node.command("bpftool").args(args).output().expect("bpftool");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let links = bpftool(&["-j", "link", "show"]);
    assert!(!links.contains("hubcap"), "{links}");
    let net = bpftool(&["net", "show"]);
    assert!(!net.contains("hubcap"), "{net}");
    let programs = bpftool(&["-j", "prog", "show"]);
    let ours: Vec<Value> = serde_json::from_str::<Vec<Value>>(&programs)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            let name = p["name"].as_str().unwrap_or_default();
            name.starts_with("hubcap") || name.contains("flow_")
        })
        .collect();
    assert!(ours.is_empty(), "{ours:#?}");
}
