//! The Helm chart (`deploy/helm/hubcap`) judged by the real Helm engine
//! (Helm's Go SDK, from the PyPI package helm-python-sdk, through
//! `xtask/helm.py`) and a real API server: it lints clean, every flag it
//! writes is one `hubcap run` takes, the plain manifests in
//! `deploy/kubernetes/` are the chart rendered, and it installs and
//! upgrades on kube-apiserver with every object admitted.

use std::process::Command;

use hubcap_tests::{
    agent::hubcap_bin,
    helm::{chart, helm},
    kube::ControlPlane,
    require_root,
    topology::Node,
    workspace_root,
};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Service, ServiceAccount},
        rbac::v1::ClusterRole,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::Api;
use serde_json::{Value, json};

/// Values that turn every option of the chart on.
fn every_option() -> Value {
    json!({
        "interfaces": ["eth*"],
        "output": {"path": "/var/log/acns/hubble/all.log", "compress": true},
        "metrics": {"sourceContext": "namespace", "destinationContext": "workload", "dnsQuery": true, "serviceMonitor": {"enabled": true}},
        "dns": {"enabled": false, "ringBufferMb": 8},
        "grpc": {"listen": ":4244", "tls": {"secretName": "hubble-server-certs", "generate": true}, "peerService": {"enabled": true}},
        "relay": {"enabled": true},
        "flowLogs": {"config": [{"name": "dropped", "filePath": "/var/log/acns/hubble/dropped.log", "includeFilters": [{"verdict": ["DROPPED"]}]}]},
        "priorityClassName": "system-node-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "extraArgs": ["--event-buffer-capacity=8191"],
    })
}

/// The rendered documents of kind `kind`.
fn rendered(values: &Value, kind: &str) -> Vec<Value> {
    let text = helm(None, &["render", &chart(), "hubcap", "hubcap", &values.to_string()]);
    serde_norway::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("YAML"))
        .filter(|d| d["kind"] == kind)
        .collect()
}

fn daemonset_args(daemonset: &Value) -> Vec<String> {
    daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_chart_lints_clean_with_defaults_and_with_every_option() {
    for values in [json!({}), every_option()] {
        let report: Value = serde_json::from_str(&helm(None, &["lint", &chart(), &values.to_string()])).unwrap();
        assert_eq!(report["errors"], json!([]), "{report}");
    }
}

#[test]
fn every_flag_the_chart_writes_is_one_hubcap_takes() {
    let help = Command::new(hubcap_bin()).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for values in [json!({}), every_option()] {
        let daemonsets = rendered(&values, "DaemonSet");
        let args = daemonset_args(&daemonsets[0]);
        assert_eq!(args[0], "run");
        for arg in &args[1..] {
            let flag = arg.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "hubcap run has no {flag}"
            );
        }
    }
    // DNS is on unless turned off.
    let defaults = daemonset_args(&rendered(&json!({}), "DaemonSet")[0]);
    assert!(defaults.iter().any(|a| a == "--dns=on"), "{defaults:?}");
    // And the options land where they should.
    let args = daemonset_args(&rendered(&every_option(), "DaemonSet")[0]);
    for expected in [
        "--interface=eth*",
        "--output-compress",
        "--metrics-source-context=namespace",
        "--grpc-listen=:4244",
        "--grpc-tls-cert=/etc/hubcap/tls/tls.crt",
        "--flow-logs-config=/etc/hubcap/flow-logs/flowlogs.yaml",
        "--event-buffer-capacity=8191",
        "--dns=off",
        "--dns-ring-buffer-mb=8",
        "--metrics-dns-query",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
    }
    let config = &rendered(&every_option(), "ConfigMap")[0]["data"]["flowlogs.yaml"];
    let config: Value = serde_norway::from_str(config.as_str().unwrap()).unwrap();
    assert_eq!(config["flowLogs"], every_option()["flowLogs"]["config"]);
    let services: Vec<String> = rendered(&every_option(), "Service")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(services, ["hubble-relay", "hubcap-metrics", "hubble-peer"]);
}

#[test]
fn a_peer_service_on_loopback_is_refused() {
    let values = json!({"grpc": {"peerService": {"enabled": true}}});
    let out = Command::new("python3")
        .arg(workspace_root().join("xtask/helm.py"))
        .args(["render", &chart(), "hubcap", "hubcap", &values.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("every address"));
}

#[test]
fn the_plain_manifests_are_the_chart_with_default_values() {
    let dir = std::env::temp_dir().join(format!("hubcap-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    helm(None, &["manifests", &chart(), dir.to_str().unwrap()]);
    for file in ["rbac.yaml", "daemonset.yaml", "crds.yaml"] {
        let generated = std::fs::read_to_string(dir.join(file)).unwrap();
        let shipped = std::fs::read_to_string(workspace_root().join("deploy/kubernetes").join(file)).unwrap();
        assert!(
            generated == shipped,
            "deploy/kubernetes/{file} is stale: run `cargo xtask manifests`"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn installs_and_upgrades_on_a_real_api_server() {
    require_root();
    let node = Node::new(0);
    let plane = ControlPlane::start(&node.ns);
    let kubeconfig = plane.kubeconfig.to_str().unwrap().to_owned();
    let installed: Value = serde_json::from_str(&helm(
        Some(&node.ns),
        &["install", &chart(), "hubcap", "hubcap", &kubeconfig],
    ))
    .unwrap();
    assert_eq!(
        (installed["revision"].as_u64(), installed["status"].as_str()),
        (Some(1), Some("deployed")),
        "{installed}"
    );
    let before = plane.run(&node.ns, |client| async move {
        // Every object is there, as the API server admitted it.
        let ns = |c: &kube::Client| (c.clone(), "hubcap");
        let (c, n) = ns(&client);
        Api::<ServiceAccount>::namespaced(c.clone(), n)
            .get("hubcap")
            .await
            .expect("ServiceAccount");
        Api::<ClusterRole>::all(c.clone())
            .get("hubcap")
            .await
            .expect("ClusterRole");
        Api::<Service>::namespaced(c.clone(), n)
            .get("hubcap-metrics")
            .await
            .expect("Service");
        for crd in [
            "retinanetworkflowlogs.acn.azure.com",
            "containernetworklogs.acn.azure.com",
        ] {
            Api::<CustomResourceDefinition>::all(c.clone())
                .get(crd)
                .await
                .expect("CRD");
        }
        Api::<DaemonSet>::namespaced(c, n)
            .get("hubcap")
            .await
            .expect("DaemonSet")
    });
    let upgrade = json!({
        "interfaces": ["hcv*"],
        "flowLogs": {"config": [{"name": "dropped", "filePath": "/var/log/acns/hubble/dropped.log", "includeFilters": [{"verdict": ["DROPPED"]}]}]},
    });
    let upgraded: Value = serde_json::from_str(&helm(
        Some(&node.ns),
        &[
            "upgrade",
            &chart(),
            "hubcap",
            "hubcap",
            &kubeconfig,
            &upgrade.to_string(),
        ],
    ))
    .unwrap();
    assert_eq!(
        (upgraded["revision"].as_u64(), upgraded["status"].as_str()),
        (Some(2), Some("deployed")),
        "{upgraded}"
    );
    let (after, config) = plane.run(&node.ns, |client| async move {
        let daemonset = Api::<DaemonSet>::namespaced(client.clone(), "hubcap")
            .get("hubcap")
            .await
            .expect("DaemonSet");
        let config = Api::<ConfigMap>::namespaced(client, "hubcap")
            .get("hubcap-flow-logs")
            .await
            .expect("the flow-logs ConfigMap");
        (daemonset, config)
    });
    let args = |d: &DaemonSet| {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap()
    };
    assert!(args(&before).contains(&"--interface=veth*".to_owned()));
    let after_args = args(&after);
    assert!(after_args.contains(&"--interface=hcv*".to_owned()), "{after_args:?}");
    assert!(after_args.contains(&"--flow-logs-config=/etc/hubcap/flow-logs/flowlogs.yaml".to_owned()));
    assert!(config.data.unwrap()["flowlogs.yaml"].contains("DROPPED"));
}
