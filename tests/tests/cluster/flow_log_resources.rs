//! Container Network Logs' custom resources against a real API server:
//! hubcap (`--flow-log-crds`, with the token of the shipped RBAC) stores
//! nothing until a resource selects something; creating, changing and
//! deleting resources changes what the stored log gets, within seconds;
//! a resource with a bad filter gets a status that says why. The stored
//! log is judged against the full log of the same run.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use hubcap_tests::{
    kube::{ControlPlane, deployed_service_account_token, install_crds},
    output::{self, Record},
    require_root,
    topology::Node,
    traffic::{tcp_transfer, udp_echo},
};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "acn.azure.com".into(),
        version: "v1alpha1".into(),
        api_version: "acn.azure.com/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn retina() -> ApiResource {
    resource("RetinaNetworkFlowLog", "retinanetworkflowlogs")
}

fn container_network_log() -> ApiResource {
    resource("ContainerNetworkLog", "containernetworklogs")
}

/// A resource logging flows from `from` of the given protocols.
fn from_ip(kind: &ApiResource, name: &str, from: Ipv4Addr, protocol: &str) -> Value {
    json!({
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": name},
        "spec": {"includefilters": [{
            "name": format!("{protocol}-from-pod"),
            "from": {"ip": [format!("{from}/32")]},
            "protocol": [protocol],
        }]},
    })
}

/// Waits until the resource's status speaks of its current generation, and
/// returns the status.
async fn settled_status(client: &Client, kind: &ApiResource, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), kind);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let object = api.get(name).await.expect("resource");
        let status = object.data["status"].clone();
        if status["observedGeneration"].as_i64() == object.metadata.generation {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no status for its generation: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn uuids<'a>(records: impl IntoIterator<Item = &'a Record>) -> BTreeSet<String> {
    records
        .into_iter()
        .map(|r| r.json["uuid"].as_str().expect("uuid").to_owned())
        .collect()
}

/// The stored log's L3/L4 records' uuids, and its L7 (DNS) records'.
fn stored_uuids(path: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let stored = output::parse(&text);
    (uuids(&stored.records), l7_uuids(stored.l7.iter()))
}

fn l7_uuids<'a>(records: impl IntoIterator<Item = &'a Value>) -> BTreeSet<String> {
    records
        .into_iter()
        .map(|r| r["uuid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn resources_decide_what_the_stored_log_gets() {
    require_root();
    let node = Node::new(2);
    let plane = ControlPlane::start(&node.ns);
    let dir = std::env::temp_dir().join(format!("hubcap-crds-{}", node.id));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let stored = dir.join("events.log");
    let token = plane.run(&node.ns, |client| async move {
        install_crds(&client).await;
        deployed_service_account_token(&client).await
    });
    let kubeconfig = plane.kubeconfig_with_token("hubcap-kubeconfig", &token);
    let mut args = vec![
        "--kubernetes",
        "off",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--flow-log-crds",
        "--flow-log-crds-path",
        stored.to_str().unwrap(),
    ];
    args.extend(Node::METRICS_AND_QUICK_ENDS);
    let agent = node.capture(&args);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    // Each phase's flows have ended (and so are written) before the next
    // change: every record is judged by the resources of its own phase.
    let phase = |port: u16| {
        udp_echo(&p1.ns, &p2.ns, (p2.ipv4, port).into(), 5, 100);
        udp_echo(&p2.ns, &p1.ns, (p1.ipv4, port).into(), 5, 100);
        tcp_transfer(&p1.ns, &p2.ns, (p2.ipv4, port + 1).into(), 20_000, 2_000);
        node.wait_for_flows_to_end();
    };

    phase(5000);
    assert!(!stored.exists(), "no resource, nothing stored");

    let p1_ip = p1.ipv4;
    let status = plane.run(&node.ns, move |client| async move {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &retina());
        let object = serde_json::from_value(from_ip(&retina(), "udp-from-p1", p1_ip, "udp")).unwrap();
        api.create(&PostParams::default(), &object).await.expect("create");
        settled_status(&client, &retina(), "udp-from-p1").await
    });
    assert_eq!(status["state"], "CONFIGURED", "{status}");
    phase(6000);

    // The resource changed to log `protocol` from p1; its status once settled.
    let change_protocol = |protocol: &'static str| {
        plane.run(&node.ns, move |client| async move {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &retina());
            let patch = json!({"spec": {"includefilters": [
                {"from": {"ip": [format!("{p1_ip}/32")]}, "protocol": [protocol]}
            ]}});
            api.patch("udp-from-p1", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("patch");
            settled_status(&client, &retina(), "udp-from-p1").await
        })
    };

    // Changed: TCP instead of UDP.
    let status = change_protocol("tcp");
    assert_eq!(
        (status["state"].as_str(), status["observedGeneration"].as_i64()),
        (Some("CONFIGURED"), Some(2))
    );
    phase(7000);

    // Changed again: DNS only. p1 asks p2's dnsmasq (and sends other UDP
    // and TCP, which the log must not get).
    let status = change_protocol("dns");
    assert_eq!(status["observedGeneration"].as_i64(), Some(3), "{status}");
    let server = std::net::IpAddr::from(p2.ipv4);
    let dnsmasq = hubcap_tests::dns::dnsmasq(&p2.ns, &[server], &dir, "192.0.2.10 web.test\n", &[]);
    std::thread::sleep(Duration::from_millis(300));
    for name in ["web.test.", "missing.test."] {
        let dig = hubcap_tests::dns::dig(&p1.ns, name, "A", &[], server);
        assert!(!dig.status.is_empty(), "{}", dig.output);
    }
    drop(dnsmasq);
    phase(9000);

    // A resource of the newer kind with an address that is none: refused,
    // with the reason in its status; the stored log goes on as it was.
    let status = plane.run(&node.ns, move |client| async move {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &container_network_log());
        let mut object = from_ip(&container_network_log(), "bad-address", p1_ip, "udp");
        object["spec"]["includefilters"][0]["to"] = json!({"ip": ["10.0.0.300"]});
        let object = serde_json::from_value(object).unwrap();
        api.create(&PostParams::default(), &object).await.expect("create");
        settled_status(&client, &container_network_log(), "bad-address").await
    });
    assert_eq!(status["state"], "FAILED", "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("10.0.0.300"), "the status says why: {message}");

    // Deleted: nothing accepted is left, nothing more is stored.
    plane.run(&node.ns, |client| async move {
        let api: Api<DynamicObject> = Api::all_with(client, &retina());
        api.delete("udp-from-p1", &DeleteParams::default())
            .await
            .expect("delete");
    });
    agent.wait_for_log("configured=0 failed=1", Duration::from_secs(10));
    phase(8000);

    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exit: {:?}", finished.status);
    let everything = output::parse(&finished.stdout);
    let full = everything.records;
    let p1_text = p1.ipv4.to_string();
    let in_phase = |r: &Record, port: u64| [r.src_port, r.dst_port].iter().any(|p| (port..port + 2).contains(p));
    let expected = uuids(full.iter().filter(|r| {
        r.src == p1_text && ((r.protocol == "UDP" && in_phase(r, 6000)) || (r.protocol == "TCP" && in_phase(r, 7000)))
    }));
    assert!(expected.len() >= 6, "the run had flows to store: {expected:?}");
    // The DNS phase: p1's queries (the answers come from p2).
    let expected_dns = l7_uuids(everything.l7.iter().filter(|r| r["IP"]["source"] == p1_text.as_str()));
    assert_eq!(expected_dns.len(), 2, "{:#?}", everything.l7);
    assert_eq!(stored_uuids(&stored), (expected, expected_dns));
}

/// Removes the test's files even when it fails.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
