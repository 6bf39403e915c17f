//! What Hubble's own tools make of hubcap: `hubble status`, `hubble list
//! nodes` and `hubble observe` (socket, TCP, file, and through Hubble
//! Relay), plus the drops and metrics the issue names.

use std::time::{Duration, Instant};

use hubcap_tests::output::{self, Record, uuids};

use crate::fixture::{AGENT_TCP, Fixture, RELAY};

pub type Case = (&'static str, fn(&Fixture));

pub const CASES: &[Case] = &[
    ("alert_metrics_exist_at_zero", alert_metrics_exist_at_zero),
    ("no_false_drops_with_tcpdump_and_clients", no_false_drops),
    (
        "records_add_up_to_veth_counters_under_tcpdump",
        records_add_up_to_veth_counters,
    ),
    ("status_over_the_socket", |f| status(f, &f.socket_server())),
    ("status_over_tcp", |f| status(f, AGENT_TCP)),
    ("list_nodes", |f| list_nodes(f, &f.socket_server())),
    ("observe_over_tcp_json", observe_over_tcp_json),
    ("observe_compact", observe_compact),
    ("protocol_icmp_is_both_families", protocol_icmp_is_both_families),
    ("protocol_dns_selects_no_l3_l4_flow", protocol_dns_selects_nothing),
    ("top_level_field_mask_is_honoured", top_level_field_mask),
    ("input_file_round_trips", input_file_round_trips),
    ("relay_list_nodes", |f| list_nodes(f, RELAY)),
    ("relay_status_connected_nodes", relay_status),
    ("relay_observe_same_flows", relay_observe_same_flows),
];

fn alert_metrics_exist_at_zero(f: &Fixture) {
    for series in [
        r#"hubble_lost_events_total{source="perf_event_ring_buffer"} 0"#,
        r#"hubble_lost_events_total{source="hubble_ring_buffer"} 0"#,
        r#"hubble_lost_events_total{source="unknown_lost_event_source"} 0"#,
        r#"hubble_drop_total{protocol="TCP",reason="POLICY_DENIED"} 0"#,
        r#"hubble_drop_total{protocol="UDP",reason="DROP_REASON_UNKNOWN"} 0"#,
        r#"hubcap_kernel_packets_total{counter="map_full"} 0"#,
        r#"hubcap_kernel_packets_total{counter="drops_map_full"} 0"#,
        r#"hubcap_ringbuf_records_lost_total 0"#,
        r#"hubcap_write_errors_total{sink="file"} 0"#,
        r#"hubcap_observer_events_missed_total 0"#,
    ] {
        assert!(
            f.metrics_at_start.lines().any(|l| l == series),
            "{series} missing at start"
        );
    }
    assert!(
        f.metrics_at_start
            .lines()
            .any(|l| l.starts_with(r#"hubcap_kernel_packets_total{counter="drops_unwatched"} "#)),
        "the unwatched-drops counter exists"
    );
}

/// The only drops written are the real ones (UDP into the closed port),
/// although tcpdump ran on the veths and API clients came and went.
fn no_false_drops(f: &Fixture) {
    let drops: Vec<&Record> = f.file.records.iter().filter(|r| r.verdict == "DROPPED").collect();
    assert!(
        drops.iter().all(|r| r.protocol == "UDP" && r.dst_port == 5999),
        "drops other than the closed port: {:#?}",
        drops.iter().map(|r| &r.json).collect::<Vec<_>>()
    );
    assert_eq!(drops.iter().map(|r| r.packets).sum::<u64>(), 3);
}

fn records_add_up_to_veth_counters(f: &Fixture) {
    let records: Vec<Record> = f.on_veths().into_iter().cloned().collect();
    let veths: Vec<(&str, _)> = f
        .veths
        .iter()
        .map(String::as_str)
        .zip(f.counters.iter().copied())
        .collect();
    output::assert_records_match_counters(&records, &veths);
}

fn status(f: &Fixture, server: &str) {
    let out = f.hubble(&["status", "--server", server]);
    assert!(out.contains(&format!("Healthcheck (via {server}): Ok")), "{out}");
    assert!(out.contains("/4,095"), "{out}");
}

fn list_nodes(f: &Fixture, server: &str) {
    let out = f.hubble(&["list", "nodes", "--server", server]);
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(f.node_name.as_str()))
        .unwrap_or_else(|| panic!("{} not listed: {out}", f.node_name));
    assert!(line.contains("Connected"), "{line}");
}

/// Relay connects to the agent it found through the Peer service; until
/// it has, it reports no connected nodes.
fn relay_status(f: &Fixture) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = f.hubble(&["status", "--server", RELAY]);
        if out.contains("Connected Nodes: 1/1") && out.contains(&format!("Healthcheck (via {RELAY}): Ok")) {
            return;
        }
        assert!(Instant::now() < deadline, "Relay never connected: {out}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The uuids of `hubble observe -o json` output (every line decoded
/// strictly, as the exporter's lines are).
fn observed(json: &str) -> Vec<String> {
    uuids(&output::parse(json).records)
}

fn observe_over_tcp_json(f: &Fixture) {
    let out = f.hubble(&["observe", "--server", AGENT_TCP, "--last", "5", "-o", "json"]);
    assert_eq!(observed(&out).len(), 5, "{out}");
}

fn observe_compact(f: &Fixture) {
    let out = f.hubble(&[
        "observe",
        "--server",
        &f.socket_server(),
        "--last",
        "6",
        "--protocol",
        "tcp",
        "--to-port",
        "5001",
        "-o",
        "compact",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(!lines.is_empty() && lines.len() <= 6, "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(":5001") && l.contains("FORWARDED (TCP Flags:")),
        "{out}"
    );
}

/// `hubble observe --input-file` on hubcap's log: every line decodes and
/// every flow reads back with the same fields and values.
fn input_file_round_trips(f: &Fixture) {
    let out = f.hubble(&[
        "observe",
        "--input-file",
        f.out_file.to_str().unwrap(),
        "--all",
        "-o",
        "json",
    ]);
    let printed = output::parse(&out).records;
    assert_eq!(uuids(&printed), uuids(&f.file.records));
    for (theirs, ours) in printed.iter().zip(&f.file.records) {
        assert_eq!(theirs.json, ours.json, "field values differ");
    }
}

/// Relay's answer for this node is the agent's own.
fn relay_observe_same_flows(f: &Fixture) {
    let mut scope = Vec::new();
    for v in &f.veths {
        scope.extend(["--interface", v.as_str()]);
    }
    let query = |server: &str| {
        let mut args = vec!["observe", "--server", server, "--all", "-o", "json"];
        args.extend(&scope);
        observed(&f.hubble(&args))
    };
    let mut direct = query(&f.socket_server());
    assert!(direct.len() > 20, "{} flows", direct.len());
    // Relay merges its nodes' flows in time order; the agent's ring is in
    // the order records were written.
    let mut relayed = query(RELAY);
    direct.sort();
    relayed.sort();
    assert_eq!(relayed, direct);
}

/// `hubble observe` with the filters users type, against the agent's
/// socket: the same flows as hubcap's own selection over its file. Each
/// keeps to this test's veths or subnets.
/// A named set of `hubble observe` flags.
pub type Flags = (&'static str, fn(&Fixture) -> Vec<String>);

pub const OBSERVE: &[Flags] = &[
    ("last_udp", |_| args(&["--last", "5", "--protocol", "udp"])),
    ("first_tcp", |_| args(&["--first", "4", "--protocol", "tcp"])),
    ("ip_exact", |f| {
        args(&["--all", "--ip", &f.node.pods[2].ipv4.to_string()])
    }),
    ("from_ip_cidr", |f| args(&["--all", "--from-ip", &f.ours_v6])),
    ("port", |_| args(&["--all", "--port", "5002"])),
    ("to_port_syn", |_| {
        args(&["--all", "--to-port", "5001", "--tcp-flags", "SYN"])
    }),
    ("protocol_icmpv4", |_| args(&["--all", "--protocol", "icmpv4"])),
    ("verdict_dropped", |_| args(&["--all", "--verdict", "DROPPED"])),
    ("traffic_direction_egress", |_| {
        args(&["--all", "--traffic-direction", "egress"])
    }),
    ("since_relative", |_| args(&["--since", "10m", "--protocol", "udp"])),
    ("node_name", |f| args(&["--all", "--node-name", &f.node_name])),
    ("ip_version_v6", |_| args(&["--all", "--ip-version", "v6"])),
];

/// Filters that select nothing here: no pod metadata yet.
pub const OBSERVE_NONE: &[Flags] = &[("from_pod_without_metadata", |_| {
    args(&["--all", "--from-pod", "default/web"])
})];

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// This test's records only: those on its veths, and (where the case's
/// own flags allow adding an address filter) drops from its subnets.
fn scopes(f: &Fixture, flags: &[String]) -> Vec<Vec<String>> {
    let mut veths = Vec::new();
    for v in &f.veths {
        veths.extend(args(&["--interface", v]));
    }
    let has = |flag: &str| flags.iter().any(|a| a == flag);
    // hubble refuses --from-ip beside --ip or --from-pod; a second
    // --verdict would be OR'd with the case's own.
    if ["--ip", "--from-ip", "--to-ip", "--from-pod"].iter().any(|f| has(f)) {
        return vec![veths];
    }
    let mut drops = args(&["--from-ip", &f.ours_v4, "--from-ip", &f.ours_v6]);
    if !has("--verdict") {
        drops.extend(args(&["--verdict", "DROPPED"]));
    }
    vec![veths, drops]
}

pub fn observe_matches_file(f: &Fixture, flags: fn(&Fixture) -> Vec<String>, expect_some: bool) {
    let flags = flags(f);
    let mut total = 0;
    for scope in scopes(f, &flags) {
        let mut query: Vec<&str> = flags.iter().map(String::as_str).collect();
        query.extend(scope.iter().map(String::as_str));
        query.extend(["-o", "json"]);
        let server = f.socket_server();
        let mut live = vec!["observe", "--server", &server];
        live.extend(&query);
        let theirs = observed(&f.hubble(&live));
        let ours = observed(&f.hubcap_on_file(&query));
        assert_eq!(theirs, ours, "{query:?}");
        total += theirs.len();
    }
    assert_eq!(total > 0, expect_some, "{total} flows");
}

/// `hubble observe -f` prints new flows as they come. Sends new traffic:
/// runs last.
pub fn follow_prints_new_flows(f: &Fixture) {
    let (p1, p2) = (&f.node.pods[0], &f.node.pods[1]);
    let mut following = f
        .node
        .ns
        .command(hubcap_tests::upstream::tool("hubble").to_str().unwrap());
    following.args([
        "observe",
        "--server",
        &f.socket_server(),
        "-f",
        "--protocol",
        "icmpv4",
        "--interface",
        &p1.host_if,
        "-o",
        "json",
    ]);
    // The echo requests' and replies' directions on p1's veth: 4 records.
    let lines = hubcap_tests::agent::first_lines(&mut following, 4, || {
        hubcap_tests::traffic::ping(&p2.ns, &p1.ipv4.to_string(), 2)
    });
    let records = output::parse(&(lines.join("\n") + "\n")).records;
    // The request and reply directions begin (B) and, idle, end (E).
    assert!(
        records
            .iter()
            .all(|r| r.protocol == "ICMPv4" && r.interface == p1.host_if),
        "{lines:?}"
    );
    assert_eq!(records.iter().filter(|r| r.state == "B").count(), 2, "{lines:?}");
}

/// `hubble observe --all ARGS -o json` over the agent's socket.
fn all_over_the_socket(f: &Fixture, args: &[&str]) -> String {
    let server = f.socket_server();
    let mut all = vec!["observe", "--server", server.as_str(), "--all", "-o", "json"];
    all.extend_from_slice(args);
    f.hubble(&all)
}

/// `hubble observe --protocol icmp`: every ICMPv4 and ICMPv6 record of the
/// file, nothing else (the ping, and the closed port's ICMP errors).
fn protocol_icmp_is_both_families(f: &Fixture) {
    let out = all_over_the_socket(f, &["--protocol", "icmp"]);
    let mut got = observed(&out);
    let mut want = uuids(f.file.records.iter().filter(|r| r.protocol.starts_with("ICMP")));
    got.sort();
    want.sort();
    assert!(!want.is_empty(), "the fixture pings");
    assert_eq!(got, want);
}

/// L7 protocols are accepted as in Hubble; hubcap has no L7 records yet,
/// so they select nothing (an empty answer, not an error).
fn protocol_dns_selects_nothing(f: &Fixture) {
    let out = all_over_the_socket(f, &["--protocol", "dns"]);
    assert_eq!(out, "", "no L7 record");
}

/// Hubble 1.15+ sends `--field-mask` as the request's top-level
/// `field_mask`: only the masked fields come back.
fn top_level_field_mask(f: &Fixture) {
    let out = f.hubble(&[
        "observe",
        "--server",
        &f.socket_server(),
        "--last",
        "10",
        "--field-mask",
        "IP.source,l4",
        "-o",
        "json",
    ]);
    let flows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON")["flow"].clone())
        .collect();
    assert_eq!(flows.len(), 10, "{out}");
    for flow in &flows {
        let keys: Vec<&String> = flow.as_object().expect("flow").keys().collect();
        assert!(keys.iter().all(|k| *k == "IP" || *k == "l4"), "{flow}");
        let ip: Vec<&String> = flow["IP"].as_object().expect("IP").keys().collect();
        assert_eq!(ip, ["source"], "{flow}");
    }
}
