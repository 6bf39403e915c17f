//! Every record names both of its sides as the cluster knows them.

use hubcap_tests::output::Record;
use serde_json::Value;

use hubcap_tests::{
    agent::hubcap_bin,
    output::{self, uuids},
    upstream::hubble,
};

use crate::fixture::{Fixture, LIVE_QUERIES, Member};

pub type Case = (&'static str, fn(&Fixture));

pub const CASES: &[Case] = &[
    ("deployment_pods_are_named_with_their_workload", deployment_pods),
    ("statefulset_pod_is_named_with_its_workload", statefulset_pod),
    ("bare_pod_is_its_own_workload", bare_pod),
    ("same_labels_same_identity", same_labels_same_identity),
    ("node_other_node_and_world_get_reserved_identities", reserved_identities),
    ("records_carry_this_nodes_labels", node_labels),
    ("every_pod_record_names_both_sides", every_pod_record_names_both_sides),
    ("hubble_reads_pods_in_compact_output", hubble_compact_names_pods),
    ("namespace_and_pod_filters_select_exactly", namespace_and_pod_filters),
    ("backends_and_cluster_ips_name_their_service", services),
    ("label_and_service_filters_select_exactly", label_and_service_filters),
    ("hubble_lists_the_namespaces_with_flows", namespaces_listed),
    ("metrics_carry_source_and_destination_contexts", metric_contexts),
    (
        "dns_records_name_the_asking_and_the_answering_pod",
        dns_records_name_both_pods,
    ),
];

/// web-1 asked db-0: the query from web-1 to db-0, the answer back, each
/// naming both pods with their workloads.
fn dns_records_name_both_pods(f: &Fixture) {
    let (web1, db) = (&f.members["web-1"], &f.members["db-0"]);
    let of_type = |t: &str| -> Vec<&Value> { f.output.l7.iter().filter(|r| r["l7"]["type"] == t).collect() };
    let (requests, responses) = (of_type("REQUEST"), of_type("RESPONSE"));
    assert_eq!((requests.len(), responses.len()), (1, 1), "{:#?}", f.output.l7);
    assert_pod(&requests[0]["source"], web1, "web", ("web", "Deployment"));
    assert_pod(&requests[0]["destination"], db, "db", ("db", "StatefulSet"));
    assert_pod(&responses[0]["source"], db, "db", ("db", "StatefulSet"));
    assert_pod(&responses[0]["destination"], web1, "web", ("web", "Deployment"));
    assert_eq!(responses[0]["l7"]["dns"]["ips"], serde_json::json!(["192.0.2.10"]));
}

/// `--metrics-source-context namespace --metrics-destination-context
/// workload`: Hubble's flow metric by namespace and workload.
fn metric_contexts(f: &Fixture) {
    let series: Vec<&str> = f
        .metrics
        .lines()
        .filter(|l| l.starts_with("hubble_flows_processed_total{"))
        .collect();
    let has = |source: &str, destination: &str| {
        series.iter().any(|l| {
            l.contains(&format!("source=\"{source}\"")) && l.contains(&format!("destination=\"{destination}\""))
        })
    };
    assert!(has("shop", "data/db"), "web -> db: {series:#?}");
    assert!(has("shop", "shop/web"), "web -> web: {series:#?}");
    assert!(has("data", "shop/web"), "db's replies: {series:#?}");
}

/// GetNamespaces, as `hubble list namespaces` shows it.
fn namespaces_listed(f: &Fixture) {
    let listed: Value = serde_json::from_str(&f.namespaces_listed).expect("JSON");
    assert_eq!(
        listed,
        serde_json::json!([{"namespace": "data"}, {"namespace": "shop"}]),
        "{}",
        f.namespaces_listed
    );
}

/// The endpoint of `side` (`source` or `destination`) of the records
/// between these addresses.
fn endpoints<'a>(f: &'a Fixture, src: &str, dst: &str, side: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = f
        .output
        .records
        .iter()
        .filter(|r| r.src == src && r.dst == dst)
        .map(|r| &r.json[side])
        .collect();
    assert!(!found.is_empty(), "no records {src} -> {dst}");
    found
}

fn assert_pod(endpoint: &Value, member: &Member, app: &str, workload: (&str, &str)) {
    assert_eq!(endpoint["namespace"], member.namespace, "{endpoint}");
    assert_eq!(endpoint["pod_name"], member.name.as_str(), "{endpoint}");
    assert_eq!(endpoint["cluster_name"], "test-cluster");
    let labels: Vec<&str> = endpoint["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(labels.contains(&format!("k8s:app={app}").as_str()), "{labels:?}");
    assert!(
        labels.contains(&format!("k8s:io.kubernetes.pod.namespace={}", member.namespace).as_str()),
        "{labels:?}"
    );
    assert_eq!(
        endpoint["workloads"],
        serde_json::json!([{"name": workload.0, "kind": workload.1}]),
        "{endpoint}"
    );
    assert!(endpoint["identity"].as_u64().unwrap() >= 256, "{endpoint}");
}

fn deployment_pods(f: &Fixture) {
    let (web1, web2, db) = (&f.members["web-1"], &f.members["web-2"], &f.members["db-0"]);
    for e in endpoints(f, &web1.ip.to_string(), &db.ip.to_string(), "source") {
        assert_pod(e, web1, "web", ("web", "Deployment"));
    }
    for e in endpoints(f, &web2.ip.to_string(), &web1.ip.to_string(), "source") {
        assert_pod(e, web2, "web", ("web", "Deployment"));
    }
}

fn statefulset_pod(f: &Fixture) {
    let (web1, db) = (&f.members["web-1"], &f.members["db-0"]);
    for e in endpoints(f, &web1.ip.to_string(), &db.ip.to_string(), "destination") {
        assert_pod(e, db, "db", ("db", "StatefulSet"));
    }
}

fn bare_pod(f: &Fixture) {
    let lone = &f.members["lone"];
    let web2 = &f.members["web-2"];
    let (lone_v6, web2_v6) = (lone.ip6.to_string(), web2.ip6.to_string());
    for e in endpoints(f, &lone_v6, &web2_v6, "source") {
        assert_pod(e, lone, "lone", ("lone", "Pod"));
    }
    // Its IPv6 address names the same pod as its IPv4 one.
    for e in endpoints(f, &lone_v6, &web2_v6, "destination") {
        assert_pod(e, web2, "web", ("web", "Deployment"));
    }
}

fn same_labels_same_identity(f: &Fixture) {
    let (web1, web2, db) = (&f.members["web-1"], &f.members["web-2"], &f.members["db-0"]);
    let id = |src: &Member, dst: &Member| {
        endpoints(f, &src.ip.to_string(), &dst.ip.to_string(), "source")[0]["identity"].clone()
    };
    assert_eq!(id(web1, db), id(web2, web1), "one ReplicaSet's pods share labels");
    let db_id = endpoints(f, &web1.ip.to_string(), &db.ip.to_string(), "destination")[0]["identity"].clone();
    assert_ne!(id(web1, db), db_id);
}

fn reserved(endpoint: &Value, identity: u64, label: &str) {
    assert_eq!(endpoint["identity"], identity, "{endpoint}");
    assert_eq!(endpoint["labels"], serde_json::json!([label]), "{endpoint}");
}

fn reserved_identities(f: &Fixture) {
    let web1 = f.members["web-1"].ip.to_string();
    for e in endpoints(f, &web1, &f.node_ip.to_string(), "destination") {
        reserved(e, 1, "reserved:host");
    }
    for e in endpoints(f, &f.node_ip.to_string(), &web1, "source") {
        reserved(e, 1, "reserved:host");
    }
    for e in endpoints(f, &web1, &f.other_node_ip.to_string(), "destination") {
        reserved(e, 6, "reserved:remote-node");
    }
    for e in endpoints(f, &web1, &f.world_ip.to_string(), "destination") {
        reserved(e, 2, "reserved:world");
    }
}

fn node_labels(f: &Fixture) {
    let with_pods: Vec<&Record> = f.output.records.iter().filter(|r| r.verdict == "FORWARDED").collect();
    assert!(!with_pods.is_empty());
    for r in with_pods {
        assert_eq!(
            r.json["node_labels"],
            serde_json::json!(["topology.kubernetes.io/zone=a"]),
            "{}",
            r.json
        );
    }
}

/// No record between two pods leaves a side unnamed or wrongly named.
fn every_pod_record_names_both_sides(f: &Fixture) {
    let by_ip = |ip: &str| {
        f.members
            .values()
            .find(|m| m.ip.to_string() == ip || m.ip6.to_string() == ip)
    };
    let mut checked = 0;
    for r in &f.output.records {
        let (Some(src), Some(dst)) = (by_ip(&r.src), by_ip(&r.dst)) else {
            continue;
        };
        assert_eq!(r.json["source"]["pod_name"], src.name.as_str(), "{}", r.json);
        assert_eq!(r.json["destination"]["pod_name"], dst.name.as_str(), "{}", r.json);
        checked += 1;
    }
    assert!(checked > 10, "{checked} pod-to-pod records");
}

/// The real `hubble` CLI reads the log and prints `namespace/pod` names.
fn hubble_compact_names_pods(f: &Fixture) {
    let (web1, db) = (&f.members["web-1"], &f.members["db-0"]);
    let out = hubble(
        &f.node.ns,
        &[
            "observe",
            "--input-file",
            f.out_file.to_str().unwrap(),
            "--all",
            "--to-port",
            "5432",
            "-o",
            "compact",
        ],
    );
    let expected = format!("shop/{}:", web1.name);
    let to = format!("data/{}:5432", db.name);
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.contains(&expected) && l.contains(&to)),
        "{out}"
    );
}

fn services(f: &Fixture) {
    let (web1, web2, lone) = (&f.members["web-1"], &f.members["web-2"], &f.members["lone"]);
    let web = serde_json::json!({"name": "web", "namespace": "shop"});
    // web-2 -> web-1:8080 (a backend on the service's port), and its replies.
    let to_backend: Vec<&Record> = f
        .output
        .records
        .iter()
        .filter(|r| r.src == web2.ip.to_string() && r.dst == web1.ip.to_string() && r.dst_port == 8080)
        .collect();
    assert!(!to_backend.is_empty());
    for r in to_backend {
        assert_eq!(r.json["destination_service"], web, "{}", r.json);
        assert!(r.json.get("source_service").is_none(), "{}", r.json);
    }
    for e in f
        .output
        .records
        .iter()
        .filter(|r| r.src == web1.ip.to_string() && r.src_port == 8080)
    {
        assert_eq!(e.json["source_service"], web, "{}", e.json);
    }
    // lone -> the service's cluster IP.
    for e in endpoints(f, &lone.ip.to_string(), &f.web_service_ip.to_string(), "destination") {
        assert_eq!(e["identity"], 2, "no pod holds a cluster IP");
    }
    let to_cluster_ip: Vec<&Record> = f
        .output
        .records
        .iter()
        .filter(|r| r.dst == f.web_service_ip.to_string())
        .collect();
    assert!(to_cluster_ip.iter().all(|r| r.json["destination_service"] == web));
    // TCP to db-0:5432 names the db service.
    let db = &f.members["db-0"];
    let db_service = serde_json::json!({"name": "db", "namespace": "data"});
    for r in f
        .output
        .records
        .iter()
        .filter(|r| r.dst == db.ip.to_string() && r.dst_port == 5432)
    {
        assert_eq!(r.json["destination_service"], db_service, "{}", r.json);
    }
}

fn label_and_service_filters(f: &Fixture) {
    let has_label = |side: &str, label: &str, r: &Record| {
        r.json[side]["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x == label))
    };
    check_filters(
        f,
        vec![
            (
                vec!["--to-service", "shop/web"],
                f.output
                    .records
                    .iter()
                    .filter(|r| r.json["destination_service"]["name"] == "web")
                    .collect(),
            ),
            (
                vec!["--label", "app=db"],
                f.output
                    .records
                    .iter()
                    .filter(|r| has_label("source", "k8s:app=db", r) || has_label("destination", "k8s:app=db", r))
                    .collect(),
            ),
            (
                vec!["--from-label", "k8s:app=web"],
                f.output
                    .records
                    .iter()
                    .filter(|r| has_label("source", "k8s:app=web", r))
                    .collect(),
            ),
        ],
    );
}

/// `hubble observe --input-file` (Hubble's own filters) and `hubcap
/// observe` (hubcap's server-side filters) select the same flows, and
/// exactly those of the named pods.
fn namespace_and_pod_filters(f: &Fixture) {
    let web1 = &f.members["web-1"];
    let web_pod = format!("shop/{}", web1.name);
    check_filters(
        f,
        vec![
            (
                vec!["--from-namespace", "data"],
                f.output
                    .records
                    .iter()
                    .filter(|r| r.json["source"]["namespace"] == "data")
                    .collect::<Vec<_>>(),
            ),
            (
                vec!["--namespace", "shop"],
                f.output
                    .records
                    .iter()
                    .filter(|r| r.json["source"]["namespace"] == "shop" || r.json["destination"]["namespace"] == "shop")
                    .collect(),
            ),
            (
                vec!["--from-pod", web_pod.as_str()],
                f.output
                    .records
                    .iter()
                    .filter(|r| r.json["source"]["pod_name"] == web1.name.as_str())
                    .collect(),
            ),
        ],
    );
}

/// For each set of flags: Hubble and hubcap select exactly `expected`.
///
/// Where the flags are among [`LIVE_QUERIES`], the real `hubble observe`
/// against the running agent (hubcap's server-side filters) selected
/// exactly the expected flows: all that the agent held before the query,
/// and none that it did not hold after it.
fn check_filters(f: &Fixture, cases: Vec<(Vec<&str>, Vec<&Record>)>) {
    use std::collections::BTreeSet;
    let file = f.out_file.to_str().unwrap();
    let held = |text: &str| -> BTreeSet<String> { uuids(&output::parse(text).records).into_iter().collect() };
    let (before, after) = (held(&f.live_all), held(&f.live_all_after));
    for (flags, expected) in cases {
        assert!(!expected.is_empty(), "{flags:?}");
        if let Some(i) = LIVE_QUERIES.iter().position(|q| *q == flags.as_slice()) {
            let live: BTreeSet<String> = uuids(&output::parse(&f.live[i]).records).into_iter().collect();
            let expected: BTreeSet<String> = uuids(expected.iter().copied()).into_iter().collect();
            assert!(!live.is_empty(), "live {flags:?}");
            let must: BTreeSet<String> = expected.intersection(&before).cloned().collect();
            let may: BTreeSet<String> = expected.intersection(&after).cloned().collect();
            assert!(
                must.is_subset(&live),
                "live {flags:?} missed {:?}",
                must.difference(&live)
            );
            assert!(
                live.is_subset(&may),
                "live {flags:?} selected {:?}",
                live.difference(&may)
            );
        }
        let mut args = vec!["observe", "--input-file", file, "--all", "-o", "json"];
        args.extend(&flags);
        let theirs = uuids(&output::parse(&hubble(&f.node.ns, &args)).records);
        let out = std::process::Command::new(hubcap_bin()).args(&args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ours = uuids(&output::parse(&String::from_utf8(out.stdout).unwrap()).records);
        assert_eq!(theirs, uuids(expected.iter().copied()), "hubble {flags:?}");
        assert_eq!(ours, theirs, "hubcap {flags:?}");
    }
}
