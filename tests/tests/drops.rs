//! Drop capture: packets the kernel drops become DROPPED records with the
//! kernel's reason, counted exactly.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use hubcap_tests::{
    agent::scrape_metrics,
    netns::{Netns, run},
    output::{self, Record},
    require_root,
    topology::Node,
    traffic::{ping, tcp_transfer, udp_echo},
    upstream::hubble,
};

fn nft(ns: &Netns, rule: &str) {
    run("ip", &["netns", "exec", &ns.name, "nft", rule]);
}

/// Packets counted by the nftables rule whose text contains `needle`.
fn nft_counter(ns: &Netns, needle: &str) -> u64 {
    let out = run("ip", &["netns", "exec", &ns.name, "nft", "-j", "list", "ruleset"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for item in v["nftables"].as_array().unwrap() {
        let Some(rule) = item.get("rule") else { continue };
        if !rule.to_string().contains(needle) {
            continue;
        }
        for expr in rule["expr"].as_array().unwrap() {
            if let Some(counter) = expr.get("counter") {
                return counter["packets"].as_u64().unwrap();
            }
        }
    }
    panic!("no counter rule with {needle}");
}

fn dropped<'a>(records: &'a [Record], src: &str, dst: &str, protocol: &str, dst_port: u64) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| {
            r.verdict == "DROPPED" && r.src == src && r.dst == dst && r.protocol == protocol && r.dst_port == dst_port
        })
        .collect()
}

fn kernel_reason(r: &Record) -> &str {
    r.json["extensions"]["value"]["kernel_drop_reason"]
        .as_str()
        .unwrap_or("")
}

#[test]
fn nftables_drops_match_the_rule_counters() {
    require_root();
    let node = Node::new(2);
    let agent = node.capture(&Node::METRICS_AND_QUICK_ENDS);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    nft(&p2.ns, "add table inet hubcap_test");
    nft(
        &p2.ns,
        "add chain inet hubcap_test input { type filter hook input priority 0; }",
    );
    nft(
        &p2.ns,
        "add rule inet hubcap_test input tcp dport 5555 tcp flags & (syn | ack) == syn counter drop",
    );
    nft(&p2.ns, "add rule inet hubcap_test input udp dport 6666 counter drop");

    // The client retries its SYN (after 1 s, then 2 s more) until it gives up.
    let target = SocketAddr::new(p2.ipv4.into(), 5555);
    let started = Instant::now();
    let result = p1
        .ns
        .enter(move || TcpStream::connect_timeout(&target, Duration::from_millis(3500)));
    assert!(
        result.is_err() && started.elapsed() >= Duration::from_secs(3),
        "the SYNs must be dropped"
    );
    let target = SocketAddr::new(p2.ipv4.into(), 6666);
    p1.ns.enter(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..10 {
            s.send_to(&[7; 100], target).unwrap();
        }
    });

    // Every drop record is out once the flows are idle (1 s) and swept.
    std::thread::sleep(Duration::from_secs(3));
    let scraped = scrape_metrics(&node.ns, "127.0.0.1:9965");
    // What a Hubble user asks: the real CLI over the Observer API.
    let socket = format!("unix://{}", agent.grpc_socket.as_ref().expect("socket").display());
    let observed = hubble(
        &node.ns,
        &[
            "observe",
            "--server",
            &socket,
            "--verdict",
            "DROPPED",
            "--all",
            "-o",
            "json",
        ],
    );
    let observed = output::parse(&observed).records;
    let finished = agent.stop();
    assert!(finished.status.success());
    let records = output::parse(&finished.stdout).records;
    let (ip1, ip2) = (p1.ipv4.to_string(), p2.ipv4.to_string());
    let processed: Vec<&str> = scraped
        .lines()
        .filter(|l| l.starts_with("hubble_flows_processed_total{") && l.contains(r#"type="Drop""#))
        .collect();
    for (protocol, port, needle) in [("TCP", 5555, "5555"), ("UDP", 6666, "6666")] {
        // N dropped packets: N in the flow log, N through the Observer API,
        // N in each drop metric; no record without a packet (`output::parse`
        // refuses those).
        let dropped_packets = nft_counter(&p2.ns, needle);
        let drops = dropped(&records, &ip1, &ip2, protocol, port);
        let packets: u64 = drops.iter().map(|r| r.packets).sum();
        assert_eq!(packets, dropped_packets, "{protocol} drops vs the nftables counter");
        let via_api: u64 = dropped(&observed, &ip1, &ip2, protocol, port)
            .iter()
            .map(|r| r.packets)
            .sum();
        assert_eq!(via_api, dropped_packets, "{protocol} drops through hubble observe");
        let series = format!(
            r#"hubble_flows_processed_total{{protocol="{protocol}",subtype="",type="Drop",verdict="DROPPED"}} {dropped_packets}"#
        );
        assert!(processed.contains(&series.as_str()), "{series} in {processed:#?}");
        for r in &drops {
            assert_eq!(r.json["drop_reason_desc"], "POLICY_DENIED");
            assert_eq!(r.json["event_type"]["type"], 1);
            assert_eq!(r.json["event_type"]["sub_type"], 133);
            assert_eq!(kernel_reason(r), "NETFILTER_DROP");
            assert!(r.json.get("is_reply").is_none() && r.json.get("traffic_direction").is_none());
        }
        assert_eq!(drops.first().unwrap().state, "B");
    }
    assert!(nft_counter(&p2.ns, "5555") >= 3, "connect retried its SYN");
    assert!(
        scraped.contains(r#"hubble_drop_total{protocol="UDP",reason="POLICY_DENIED"} 10"#),
        "{}",
        scraped
            .lines()
            .filter(|l| l.contains("hubble_drop_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let tcp_metric = format!(
        r#"hubble_drop_total{{protocol="TCP",reason="POLICY_DENIED"}} {}"#,
        nft_counter(&p2.ns, "5555")
    );
    assert!(scraped.contains(&tcp_metric), "{tcp_metric}");
}

#[test]
fn closed_port_and_missing_route_drops_have_their_reasons() {
    require_root();
    let node = Node::new(2);
    // Pods route everything else through the node, which forwards but has
    // no route beyond its bridge: the packet dies in the node namespace.
    node.ns.sysctl("net.ipv4.ip_forward", "1");
    for pod in &node.pods {
        pod.ns
            .ip(&["route", "add", "default", "via", &node.bridge_v4().to_string()]);
    }
    // The bridge is watched too: the unroutable packets die on it.
    let agent = node.capture(&["--interface", &node.bridge]);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let closed = SocketAddr::new(p2.ipv4.into(), 7777);
    let unroutable: SocketAddr = "10.200.0.1:9999".parse().unwrap();
    p1.ns.enter(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            s.send_to(&[1; 40], closed).unwrap();
            s.send_to(&[2; 40], unroutable).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let finished = agent.stop();
    assert!(finished.status.success());
    let records = output::parse(&finished.stdout).records;
    let ip1 = p1.ipv4.to_string();

    let closed_drops = dropped(&records, &ip1, &p2.ipv4.to_string(), "UDP", 7777);
    assert_eq!(closed_drops.iter().map(|r| r.packets).sum::<u64>(), 5);
    assert!(closed_drops.iter().all(|r| kernel_reason(r) == "NO_SOCKET"));
    // No Hubble equivalent: DROP_REASON_UNKNOWN, which protojson leaves out.
    assert!(closed_drops.iter().all(|r| r.json.get("drop_reason_desc").is_none()));
    // The drop was in pod 2's namespace: its interface means nothing here.
    assert!(closed_drops.iter().all(|r| r.json.get("interface").is_none()));

    let route_drops = dropped(&records, &ip1, "10.200.0.1", "UDP", 9999);
    assert_eq!(route_drops.iter().map(|r| r.packets).sum::<u64>(), 5);
    for r in &route_drops {
        assert_eq!(kernel_reason(r), "IP_INNOROUTES", "{:?}", r.json);
        assert_eq!(r.json["drop_reason_desc"], "FIB_LOOKUP_FAILED");
        // Dropped in hubcap's own namespace, on the bridge it arrived on.
        assert_eq!(r.json["interface"]["name"], node.bridge.as_str());
    }
}

/// Drops on an interface hubcap does not capture are counted, not written.
#[test]
fn drops_outside_what_is_watched_are_counted_not_written() {
    require_root();
    let node = Node::new(1);
    node.ns.sysctl("net.ipv4.ip_forward", "1");
    let pod = &node.pods[0];
    pod.ns
        .ip(&["route", "add", "default", "via", &node.bridge_v4().to_string()]);
    // The pod's veth only: the bridge, where these packets die, is not.
    let agent = node.capture(&Node::METRICS_AND_QUICK_ENDS);
    node.up();
    let unroutable: SocketAddr = "10.200.0.2:9999".parse().unwrap();
    pod.ns.enter(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            s.send_to(&[2; 40], unroutable).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let scraped = scrape_metrics(&node.ns, "127.0.0.1:9965");
    let finished = agent.stop();
    assert!(finished.status.success());
    let records = output::parse(&finished.stdout).records;
    let forwarded = dropped_or_not(&records, "10.200.0.2", "FORWARDED");
    assert_eq!(forwarded, 5, "the packets were seen leaving the pod");
    assert_eq!(dropped_or_not(&records, "10.200.0.2", "DROPPED"), 0);
    let unwatched: u64 = scraped
        .lines()
        .find_map(|l| l.strip_prefix(r#"hubcap_kernel_packets_total{counter="drops_unwatched"} "#))
        .expect("drops_unwatched counter")
        .parse()
        .unwrap();
    // The machine's other drops count here too.
    assert!(unwatched >= 5, "{unwatched} unwatched drops");
}

/// Packets to `dst` in records of `verdict`.
fn dropped_or_not(records: &[Record], dst: &str, verdict: &str) -> u64 {
    records
        .iter()
        .filter(|r| r.dst == dst && r.verdict == verdict)
        .map(|r| r.packets)
        .sum()
}

#[test]
fn plain_traffic_gives_no_dropped_records() {
    require_root();
    let node = Node::new(2);
    let agent = node.capture(&[]);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    tcp_transfer(&p1.ns, &p2.ns, SocketAddr::new(p2.ipv4.into(), 5001), 200_000, 100_000);
    udp_echo(&p1.ns, &p2.ns, SocketAddr::new(p2.ipv4.into(), 5002), 20, 100);
    ping(&p1.ns, &p2.ipv4.to_string(), 2);
    tcp_transfer(&p2.ns, &p1.ns, SocketAddr::new(p1.ipv6.into(), 5003), 50_000, 0);
    std::thread::sleep(Duration::from_millis(500));
    let finished = agent.stop();
    assert!(finished.status.success());
    // Drop capture was on (else this test would pass for nothing), and it
    // recognised the two echo replies `ping -c 2` got as delivered, not
    // dropped, although the kernel freed them as NO_SOCKET.
    assert!(
        finished.stderr.iter().any(|l| l.contains("drop capture on")),
        "drop capture must be on"
    );
    let summary = finished
        .stderr
        .iter()
        .find(|l| l.contains(" stopped "))
        .expect("stop summary");
    assert!(summary.contains("echo_replies_delivered=2 "), "{summary}");
    let records = output::parse(&finished.stdout).records;
    let ours: Vec<String> = node
        .pods
        .iter()
        .flat_map(|p| [p.ipv4.to_string(), p.ipv6.to_string()])
        .collect();
    let forwarded = records.iter().filter(|r| r.verdict == "FORWARDED").count();
    assert!(forwarded > 0);
    let drops: Vec<&Record> = records
        .iter()
        .filter(|r| r.verdict == "DROPPED" && (ours.contains(&r.src) || ours.contains(&r.dst)))
        .collect();
    assert!(
        drops.is_empty(),
        "unexpected drops: {:?}",
        drops.iter().map(|r| &r.json).collect::<Vec<_>>()
    );
}
