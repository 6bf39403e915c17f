//! The Grafana dashboards in `deploy/grafana/`: every PromQL expression is
//! valid for `promtool` (as a recording rule), and every metric one uses is
//! one hubcap serves, with every label the expression selects or groups
//! by, as a running hubcap (with the context labels the dashboards need)
//! writes them after real traffic.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
};

use hubcap_tests::{
    agent::scrape_metrics,
    dns, require_root,
    topology::Node,
    traffic::{tcp_transfer, udp_echo},
};
use serde_json::Value;

fn dashboards() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    let mut all: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(all.len(), 2, "the two dashboards");
    all
}

/// Every query of every panel, with Grafana's interval variable filled in.
fn expressions() -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for (file, dashboard) in dashboards() {
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m");
                exprs.push((format!("{file}: {}", panel["title"]), expr));
            }
        }
    }
    exprs
}

#[test]
fn every_expression_is_valid_promql() {
    let dir = std::env::temp_dir().join(format!("hubcap-dashboards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules: Vec<Value> = expressions()
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr}))
        .collect();
    let file = dir.join("rules.yaml");
    let text =
        serde_norway::to_string(&serde_json::json!({"groups": [{"name": "dashboards", "rules": rules}]})).unwrap();
    std::fs::write(&file, text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric name -> the label names hubcap writes on it.
fn served(exposition: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut metrics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap());
        let labels = metrics.entry(name.to_owned()).or_default();
        if let Some(inner) = rest.strip_prefix('{').and_then(|r| r.split_once('}')).map(|(l, _)| l) {
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                labels.insert(pair.split('=').next().unwrap().to_owned());
            }
        }
    }
    metrics
}

/// The metric names, and the label names an expression selects or groups by.
fn used(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let metrics = words(expr)
        .into_iter()
        .filter(|w| w.starts_with("hubble_") || w.starts_with("hubcap_"))
        .collect();
    let mut labels = BTreeSet::new();
    // `by (a, b)`
    for part in expr.split("by (").skip(1) {
        labels.extend(words(part.split(')').next().unwrap()));
    }
    // `{a="x", b!=""}`
    for part in expr.split('{').skip(1) {
        let inner = part.split('}').next().unwrap();
        for matcher in inner.split(',') {
            let name = matcher.split(['=', '!', '~']).next().unwrap().trim();
            labels.insert(name.to_owned());
        }
    }
    (metrics, labels)
}

#[test]
fn every_metric_and_label_the_dashboards_use_is_served() {
    require_root();
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-dashboards-{}", node.id));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("flowlogs.yaml");
    std::fs::write(
        &config,
        format!(
            "flowLogs:\n  - name: all\n    filePath: {}\n",
            dir.join("all.log").display()
        ),
    )
    .unwrap();
    let mut args = vec![
        "--metrics-source-context",
        "namespace",
        "--metrics-destination-context",
        "workload",
        "--metrics-dns-query",
        "--flow-logs-config",
        config.to_str().unwrap(),
    ];
    args.extend(Node::METRICS_AND_QUICK_ENDS);
    let agent = node.capture(&args);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    udp_echo(&p1.ns, &p2.ns, (p2.ipv4, 5353).into(), 5, 100);
    tcp_transfer(&p1.ns, &p2.ns, (p2.ipv4, 5001).into(), 10_000, 1_000);
    // DNS: an answer and an error, for the DNS panels.
    let server = std::net::IpAddr::from(p2.ipv4);
    let dnsmasq = dns::dnsmasq(&p2.ns, &[server], &dir, "192.0.2.10 web.test\n", &[]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    for name in ["web.test.", "missing.test."] {
        let asked = dns::dig(&p1.ns, name, "A", &[], server);
        assert!(!asked.status.is_empty(), "{}", asked.output);
    }
    drop(dnsmasq);
    node.wait_for_flows_to_end();
    let metrics = served(&scrape_metrics(&node.ns, "127.0.0.1:9965"));
    let finished = agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(finished.status.success());
    let expressions = expressions();
    assert!(expressions.len() >= 20, "{} queries", expressions.len());
    for (panel, expr) in expressions {
        let (names, labels) = used(&expr);
        assert!(!names.is_empty(), "{panel}: no metric in {expr}");
        let mut available = BTreeSet::new();
        for name in &names {
            let served = metrics
                .get(name)
                .unwrap_or_else(|| panic!("{panel}: hubcap serves no {name}"));
            available.extend(served.iter().cloned());
        }
        for label in &labels {
            assert!(
                available.contains(label),
                "{panel}: {names:?} have no label {label:?} ({expr})"
            );
        }
    }
}
