//! The cases, each a check of the shared run.

use std::collections::BTreeSet;

use serde_json::Value;

use hubcap_tests::output::Record;

use crate::fixture::{
    ALIAS, BIG_TXT, DnsRun, EDNS_TXT, FAILING, GAI, HOST, MISSING, OUTSIDE, OVER_TCP, OVER_V6, PEER, SHORT, UNANSWERED,
    WEB_A, WEB_AAAA,
};

type Case = (&'static str, fn(&DnsRun));

pub const CASES: &[Case] = &[
    (
        "each_question_is_one_request_and_one_response",
        each_question_is_one_request_and_one_response,
    ),
    ("answers_carry_what_dig_printed", answers_carry_what_dig_printed),
    ("error_answers_carry_their_rcode", error_answers_carry_their_rcode),
    ("a_cname_chain_names_its_target", a_cname_chain_names_its_target),
    ("latency_is_within_digs_query_time", latency_is_within_digs_query_time),
    (
        "a_truncated_answer_and_the_tcp_retry",
        a_truncated_answer_and_the_tcp_retry,
    ),
    ("tcp_and_ipv6_transports", tcp_and_ipv6_transports),
    (
        "an_edns_answer_over_512_bytes_is_one_udp_record",
        an_edns_answer_over_512_bytes_is_one_udp_record,
    ),
    (
        "an_unanswered_query_is_recorded_and_counted",
        an_unanswered_query_is_recorded_and_counted,
    ),
    ("records_are_hubbles_l7_dns_records", records_are_hubbles_l7_dns_records),
    (
        "hubble_observe_protocol_dns_and_type_l7",
        hubble_observe_protocol_dns_and_type_l7,
    ),
    ("get_flows_dns_query", get_flows_dns_query),
    (
        "hubble_observe_compact_prints_dns_lines",
        hubble_observe_compact_prints_dns_lines,
    ),
    (
        "a_flow_to_an_answered_address_carries_the_name",
        a_flow_to_an_answered_address_carries_the_name,
    ),
    (
        "a_flow_to_an_address_never_answered_has_no_name",
        a_flow_to_an_address_never_answered_has_no_name,
    ),
    ("an_expired_ttl_names_no_new_flow", an_expired_ttl_names_no_new_flow),
    ("hubble_observe_to_fqdn", hubble_observe_to_fqdn),
    ("dns_metrics_count_the_records", dns_metrics_count_the_records),
    (
        "a_flow_log_of_protocol_dns_holds_the_dns_records",
        a_flow_log_of_protocol_dns_holds_the_dns_records,
    ),
    (
        "the_systems_resolvers_are_recorded_too",
        the_systems_resolvers_are_recorded_too,
    ),
    ("hubble_observe_from_fqdn", hubble_observe_from_fqdn),
    ("hubble_observe_fqdn_pattern", hubble_observe_fqdn_pattern),
    (
        "tuple_logs_skip_dns_records_and_count_them",
        tuple_logs_skip_dns_records_and_count_them,
    ),
];

fn l7_type(record: &Value) -> &str {
    record["l7"]["type"].as_str().unwrap_or_default()
}

/// The question's REQUEST and RESPONSE records, one each.
fn pair<'a>(run: &'a DnsRun, question: (&str, &str)) -> (&'a Value, &'a Value) {
    let records = run.records(question);
    let requests: Vec<_> = records.iter().filter(|r| l7_type(r) == "REQUEST").collect();
    let responses: Vec<_> = records.iter().filter(|r| l7_type(r) == "RESPONSE").collect();
    assert_eq!(
        (requests.len(), responses.len()),
        (1, 1),
        "{question:?}: {records:#?}\ndig said:\n{}",
        run.dig(question).output
    );
    (requests[0], responses[0])
}

fn each_question_is_one_request_and_one_response(run: &DnsRun) {
    for question in [
        WEB_A, WEB_AAAA, ALIAS, MISSING, OUTSIDE, OVER_TCP, OVER_V6, FAILING, EDNS_TXT,
    ] {
        pair(run, question);
    }
    // Seen on both pods' veths, written once: 2 records per question (11
    // dig asked with an answer, 2 getaddrinfo asked, 3 `host` asked), 4
    // for the truncated one (UDP, then TCP), 1 for the unanswered one.
    // dnsmasq's question to unbound stays on the server pod's loopback.
    assert_eq!(run.file.l7.len(), (11 + 2 + 3) * 2 + 4 + 1, "{:#?}", run.file.l7);
}

fn answers_carry_what_dig_printed(run: &DnsRun) {
    for question in [WEB_A, WEB_AAAA, ALIAS, OVER_TCP, OVER_V6] {
        let dig = run.dig(question);
        assert_eq!(dig.status, "NOERROR", "{}", dig.output);
        let (_, response) = pair(run, question);
        let dns = &response["l7"]["dns"];
        let ips: Vec<&str> = dns["ips"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(ips, dig.addresses, "{question:?}: {response}");
        assert!(dns.get("rcode").is_none(), "NOERROR is rcode 0, left out: {response}");
        assert_eq!(dns["ttl"], 60, "{response}");
    }
}

fn error_answers_carry_their_rcode(run: &DnsRun) {
    for (question, status, rcode, name) in [
        (MISSING, "NXDOMAIN", 3, "Non-Existent Domain"),
        (OUTSIDE, "REFUSED", 5, "Query Refused"),
        (FAILING, "SERVFAIL", 2, "Server Failure"),
    ] {
        let dig = run.dig(question);
        assert_eq!(dig.status, status, "{}", dig.output);
        let (_, response) = pair(run, question);
        assert_eq!(response["l7"]["dns"]["rcode"], rcode, "{response}");
        assert!(response["l7"]["dns"].get("ips").is_none(), "{response}");
        let summary = response["Summary"].as_str().unwrap();
        assert!(summary.starts_with(&format!("DNS Answer RCode: {name} ")), "{summary}");
    }
}

fn a_cname_chain_names_its_target(run: &DnsRun) {
    let (_, response) = pair(run, ALIAS);
    let dns = &response["l7"]["dns"];
    assert_eq!(dns["cnames"], serde_json::json!(["web.test."]), "{response}");
    assert_eq!(dns["rrtypes"], serde_json::json!(["CNAME", "A"]), "{response}");
}

fn latency_is_within_digs_query_time(run: &DnsRun) {
    for question in [
        WEB_A, WEB_AAAA, ALIAS, MISSING, OUTSIDE, OVER_TCP, OVER_V6, FAILING, EDNS_TXT,
    ] {
        let (request, response) = pair(run, question);
        let latency: u64 = response["l7"]["latency_ns"]
            .as_str()
            .unwrap_or_else(|| panic!("no latency: {response}"))
            .parse()
            .unwrap();
        let dig_ms = run.dig(question).query_time_ms.expect("dig's query time");
        // dig times from its socket, hubcap between the two packets on the
        // veths, and dig rounds down to whole milliseconds. A veth delivers
        // inside the sender's send(): the query can be on the veth before
        // dig's clock starts, by as long as that call takes on a loaded
        // machine (seen: 1.19 ms against dig's 0 ms under CI), hence 1 ms
        // more.
        assert!(
            latency > 0 && latency < (dig_ms + 2) * 1_000_000,
            "{question:?}: {latency} ns, dig {dig_ms} ms"
        );
        assert!(request["l7"].get("latency_ns").is_none(), "{request}");
    }
}

fn a_truncated_answer_and_the_tcp_retry(run: &DnsRun) {
    let dig = run.dig(BIG_TXT);
    assert!(dig.output.contains("Truncated, retrying in TCP mode"), "{}", dig.output);
    let records = run.records(BIG_TXT);
    let kinds: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            let transport = if r["l4"].get("TCP").is_some() { "TCP" } else { "UDP" };
            (transport, l7_type(r))
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("UDP", "REQUEST"),
            ("UDP", "RESPONSE"),
            ("TCP", "REQUEST"),
            ("TCP", "RESPONSE")
        ],
        "{records:#?}"
    );
    let tcp_answer = records[3];
    assert_eq!(
        tcp_answer["l7"]["dns"]["rrtypes"],
        serde_json::json!(["TXT"]),
        "{tcp_answer}"
    );
}

fn an_edns_answer_over_512_bytes_is_one_udp_record(run: &DnsRun) {
    let dig = run.dig(EDNS_TXT);
    assert_eq!(dig.status, "NOERROR", "{}", dig.output);
    assert!(dig.output.contains("; EDNS: version: 0"), "{}", dig.output);
    let size: usize = dig
        .output
        .split(";; MSG SIZE  rcvd: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no message size:\n{}", dig.output));
    assert!(
        size > 512,
        "the answer fits classic DNS's 512 bytes ({size}): not an EDNS case"
    );
    let flags = dig.output.split(";; flags: ").nth(1).and_then(|s| s.split(';').next());
    assert!(!flags.unwrap_or_default().contains("tc"), "truncated: {}", dig.output);
    let (request, response) = pair(run, EDNS_TXT);
    for record in [request, response] {
        assert!(record["l4"].get("UDP").is_some(), "{record}");
    }
    let dns = &response["l7"]["dns"];
    assert_eq!(dns["rrtypes"], serde_json::json!(["TXT"]), "{response}");
    assert_eq!(dns["ttl"], 60, "{response}");
}

fn tcp_and_ipv6_transports(run: &DnsRun) {
    let (request, response) = pair(run, OVER_TCP);
    assert_eq!(request["l4"]["TCP"]["destination_port"], 53, "{request}");
    assert_eq!(response["l4"]["TCP"]["source_port"], 53, "{response}");
    let (request, response) = pair(run, OVER_V6);
    assert_eq!(request["IP"]["ipVersion"], "IPv6", "{request}");
    assert_eq!(request["IP"]["destination"], run.server_v6.to_string(), "{request}");
    assert_eq!(response["IP"]["source"], run.server_v6.to_string(), "{response}");
}

fn an_unanswered_query_is_recorded_and_counted(run: &DnsRun) {
    let records = run.records(UNANSWERED);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(l7_type(records[0]), "REQUEST");
    let summary = run
        .stderr
        .iter()
        .find(|l| l.contains("DNS: packets="))
        .expect("the DNS stop summary");
    assert!(summary.contains(" unanswered=1 "), "{summary}");
    assert!(summary.contains(" malformed=0 "), "{summary}");
}

fn records_are_hubbles_l7_dns_records(run: &DnsRun) {
    let (request, response) = pair(run, WEB_A);
    for record in [request, response] {
        assert_eq!(record["Type"], "L7", "{record}");
        assert_eq!(record["event_type"]["type"], 129, "{record}");
        assert_eq!(record["verdict"], "FORWARDED", "{record}");
        assert_eq!(record["l7"]["dns"]["observation_source"], "ebpf", "{record}");
        assert!(record.get("extensions").is_none(), "{record}");
    }
    assert_eq!(request["is_reply"], false);
    assert_eq!(response["is_reply"], true);
    assert_eq!(request["IP"]["destination"], run.server_v4.to_string());
    assert_eq!(
        response["IP"]["source"],
        run.server_v4.to_string(),
        "an answer comes from the server"
    );
    assert_eq!(request["Summary"], "DNS Query web.test. A");
    assert_eq!(
        response["Summary"],
        "DNS Answer \"192.0.2.10\" TTL: 60 (Query web.test. A)"
    );
}

/// The uuids of the flows in `hubble observe -o jsonpb` output.
fn uuids(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("jsonpb line");
            v["flow"]["uuid"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

fn file_uuids(records: &[&Value]) -> Vec<String> {
    records.iter().map(|r| r["uuid"].as_str().unwrap().to_owned()).collect()
}

fn hubble_observe_protocol_dns_and_type_l7(run: &DnsRun) {
    let all: Vec<&Value> = run.file.l7.iter().collect();
    for flags in [&["--protocol", "dns"][..], &["--type", "l7"]] {
        assert_eq!(uuids(run.observed(flags)), file_uuids(&all), "hubble observe {flags:?}");
    }
}

fn get_flows_dns_query(run: &DnsRun) {
    let alias = run.records(ALIAS);
    let got: Vec<&Value> = run.dns_query_alias.l7.iter().collect();
    assert_eq!(file_uuids(&got), file_uuids(&alias));
    assert!(run.dns_query_alias.records.is_empty(), "L3/L4 flows have no DNS query");
}

fn hubble_observe_compact_prints_dns_lines(run: &DnsRun) {
    let out = run.observed(&["--protocol", "dns", "-o", "compact"]);
    assert!(out.contains("DNS Query web.test. A"), "{out}");
    assert!(
        out.contains("DNS Answer \"192.0.2.10\" TTL: 60 (Query web.test. A)"),
        "{out}"
    );
    assert_eq!(out.lines().count(), run.file.l7.len(), "{out}");
}

fn names(record: &Record, key: &str) -> Vec<String> {
    record.json[key]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// ICMP echo records between the client and `peer`, each way.
fn echoes<'a>(run: &'a DnsRun, peer: &str) -> (Vec<&'a Record>, Vec<&'a Record>) {
    let icmp = |r: &&Record| r.protocol.starts_with("ICMP");
    let to = run.file.records.iter().filter(icmp).filter(|r| r.dst == peer).collect();
    let from = run.file.records.iter().filter(icmp).filter(|r| r.src == peer).collect();
    (to, from)
}

fn a_flow_to_an_answered_address_carries_the_name(run: &DnsRun) {
    assert_eq!(run.dig(PEER).addresses, [run.server_v4.to_string()]);
    let (to, from) = echoes(run, &run.server_v4.to_string());
    assert!(!to.is_empty() && !from.is_empty(), "{:#?}", run.file.records);
    for r in &to {
        assert_eq!(names(r, "destination_names"), ["peer.test"], "{}", r.json);
        assert!(names(r, "source_names").is_empty(), "{}", r.json);
    }
    for r in &from {
        assert_eq!(names(r, "source_names"), ["peer.test"], "{}", r.json);
    }
}

fn a_flow_to_an_address_never_answered_has_no_name(run: &DnsRun) {
    let (to, _) = echoes(run, &run.bridge.to_string());
    assert!(!to.is_empty(), "{:#?}", run.file.records);
    for r in &to {
        assert!(names(r, "destination_names").is_empty(), "{}", r.json);
    }
}

fn an_expired_ttl_names_no_new_flow(run: &DnsRun) {
    assert_eq!(run.dig(SHORT).addresses, [run.server_v6.to_string()]);
    let (to, _) = echoes(run, &run.server_v6.to_string());
    let start = |r: &Record| {
        r.json["extensions"]["value"]["flow_start_time"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut starts: Vec<String> = to.iter().map(|r| start(r)).collect();
    starts.sort();
    starts.dedup();
    assert_eq!(starts.len(), 2, "two pings, two flows: {to:#?}");
    for r in &to {
        let expected: &[&str] = if start(r) == starts[0] { &["short.test"] } else { &[] };
        assert_eq!(names(r, "destination_names"), expected, "{}", r.json);
    }
}

/// An FQDN filter against the agent's own unfiltered answers just before
/// and just after it: it selects every flow of the first whose names
/// (`keys`) match, and nothing else that was there or came later; the
/// file, written later, names them the same.
fn fqdn_filter_selects_exactly(run: &DnsRun, flags: &[&str], keys: &[&str], matches: fn(&str) -> bool) {
    let named = |flow: &Value| {
        keys.iter().any(|key| {
            flow[*key]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n.as_str().is_some_and(matches)))
        })
    };
    let select = |out: &str| -> BTreeSet<String> {
        out.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("jsonpb line"))
            .filter(|v| named(&v["flow"]))
            .map(|v| v["flow"]["uuid"].as_str().unwrap().to_owned())
            .collect()
    };
    let (before, after) = (select(run.observed(&[])), select(run.observed(&["-o", "jsonpb"])));
    let got: BTreeSet<String> = uuids(run.observed(flags)).into_iter().collect();
    assert!(!before.is_empty(), "{flags:?}");
    assert!(before.is_subset(&got), "{flags:?}: {before:?} not all in {got:?}");
    assert!(got.is_subset(&after), "{flags:?}: {got:?} not all in {after:?}");
    let in_file: BTreeSet<String> = run
        .file
        .records
        .iter()
        .map(|r| &r.json)
        .chain(&run.file.l7)
        .filter(|f| named(f))
        .map(|f| f["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        got.is_subset(&in_file),
        "{flags:?}: {got:?} not all in the file's {in_file:?}"
    );
}

fn hubble_observe_to_fqdn(run: &DnsRun) {
    fqdn_filter_selects_exactly(run, &["--to-fqdn", "peer.test"], &["destination_names"], |n| {
        n == "peer.test"
    });
}

fn hubble_observe_from_fqdn(run: &DnsRun) {
    fqdn_filter_selects_exactly(run, &["--from-fqdn", "peer.test"], &["source_names"], |n| {
        n == "peer.test"
    });
}

/// Hubble's `*` is one or more name characters: `*.test` is every name
/// learned here, either side.
fn hubble_observe_fqdn_pattern(run: &DnsRun) {
    fqdn_filter_selects_exactly(
        run,
        &["--fqdn", "*.test"],
        &["source_names", "destination_names"],
        |n| n.ends_with(".test"),
    );
}

/// The value of the series `name{labels}` in the scrape (0 when absent).
fn series(run: &DnsRun, name_and_labels: &str) -> u64 {
    run.metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

fn dns_metrics_count_the_records(run: &DnsRun) {
    // Scraped before the agent stopped: the unanswered query still waits.
    let l7 = &run.file.l7;
    let count = |pred: &dyn Fn(&Value) -> bool| l7.iter().filter(|f| pred(f)).count() as u64;
    assert_eq!(
        series(
            run,
            r#"hubble_flows_processed_total{protocol="DNS",subtype="DNS",type="L7",verdict="FORWARDED"}"#
        ),
        l7.len() as u64,
        "{}",
        run.metrics
    );
    let is_query = |f: &Value| f["is_reply"] == false;
    let queries_a = count(&|f| is_query(f) && f["l7"]["dns"]["qtypes"] == serde_json::json!(["A"]));
    assert_eq!(
        series(run, r#"hubble_dns_queries_total{ips_returned="0",qtypes="A",rcode=""}"#),
        queries_a
    );
    let nxdomain = count(&|f| !is_query(f) && f["l7"]["dns"]["rcode"] == 3);
    assert_eq!(nxdomain, 1);
    assert_eq!(
        series(
            run,
            r#"hubble_dns_responses_total{ips_returned="0",qtypes="A",rcode="Non-Existent Domain"}"#
        ),
        nxdomain
    );
    let servfail = count(&|f| !is_query(f) && f["l7"]["dns"]["rcode"] == 2);
    assert_eq!(servfail, 1);
    assert_eq!(
        series(
            run,
            r#"hubble_dns_responses_total{ips_returned="0",qtypes="A",rcode="Server Failure"}"#
        ),
        servfail
    );
    let cname_answers = count(&|f| {
        f["l7"]["dns"]["rrtypes"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "CNAME"))
    });
    assert_eq!(
        series(run, r#"hubble_dns_response_types_total{qtypes="A",type="CNAME"}"#),
        cname_answers
    );
    assert_eq!(series(run, "hubcap_dns_queries_waiting"), 1, "{}", run.metrics);
    assert_eq!(
        series(run, r#"hubcap_dns_messages_total{outcome="recorded"}"#),
        l7.len() as u64
    );
    assert_eq!(series(run, r#"hubcap_dns_messages_total{outcome="malformed"}"#), 0);
    assert!(series(run, r#"hubcap_dns_messages_total{outcome="copy"}"#) > 0);
    for reason in ["ringbuf_full", "unreadable", "bad_record"] {
        let line = format!("hubcap_dns_packets_lost_total{{reason=\"{reason}\"}} 0");
        assert!(run.metrics.lines().any(|l| l == line), "{line}: {}", run.metrics);
    }
}

fn a_flow_log_of_protocol_dns_holds_the_dns_records(run: &DnsRun) {
    assert!(run.dns_log.records.is_empty(), "{:#?}", run.dns_log.records);
    let all: Vec<&Value> = run.file.l7.iter().collect();
    let logged: Vec<&Value> = run.dns_log.l7.iter().collect();
    assert_eq!(file_uuids(&logged), file_uuids(&all));
}

/// getaddrinfo asks A and AAAA at once from one socket (same port, two
/// ids); `host` asks A, AAAA and MX: each question one request and one
/// answer, with what the resolvers printed.
fn the_systems_resolvers_are_recorded_too(run: &DnsRun) {
    assert_eq!(run.gai, "['192.0.2.13', '2001:db8::13']", "getaddrinfo");
    for qtype in ["A", "AAAA"] {
        pair(run, (GAI, qtype));
    }
    assert!(run.host.contains("host.test has address 192.0.2.14"), "{}", run.host);
    for qtype in ["A", "AAAA", "MX"] {
        pair(run, (HOST, qtype));
    }
    let (_, a) = pair(run, (GAI, "A"));
    assert_eq!(a["l7"]["dns"]["ips"], serde_json::json!(["192.0.2.13"]), "{a}");
}

/// A VNet tuple log has no place for an L7 record: each one is counted as
/// skipped (its packets are in the flow's tuples).
fn tuple_logs_skip_dns_records_and_count_them(run: &DnsRun) {
    assert_eq!(
        series(run, r#"hubcap_format_skipped_records_total{format="vnet"}"#),
        run.file.l7.len() as u64,
        "{}",
        run.metrics
    );
}
