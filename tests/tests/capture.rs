//! hubcap on the host side of two pods' veths, with TCP, UDP, ICMP over
//! IPv4 and IPv6 and a burst of short connections between the pods. Every
//! line must be Hubble JSON, each flow must be there with the right
//! 5-tuple, direction, is_reply and flags, and per interface and direction
//! the packets and bytes must equal the interface's own counters exactly.

use std::net::SocketAddr;

use hubcap_tests::{
    output::{self, check_lifecycle, flow},
    require_root,
    topology::Node,
    traffic::{ping, tcp_transfer, udp_echo},
};

#[test]
fn flows_match_traffic_and_interface_counters() {
    require_root();
    let node = Node::new(2);
    let agent = node.capture(&["--report-interval", "2", "--node-name", "test-node"]);
    node.up();

    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let (a, b) = (&p1.host_if, &p2.host_if);
    let (ip1, ip2) = (p1.ipv4.to_string(), p2.ipv4.to_string());
    let (ip6_1, ip6_2) = (p1.ipv6.to_string(), p2.ipv6.to_string());

    let tcp_port = tcp_transfer(
        &p1.ns,
        &p2.ns,
        SocketAddr::new(p2.ipv4.into(), 5001),
        1_000_000,
        300_000,
    );
    let tcp_back_port = tcp_transfer(&p2.ns, &p1.ns, SocketAddr::new(p1.ipv4.into(), 5002), 200_000, 0);
    let udp_port = udp_echo(&p1.ns, &p2.ns, SocketAddr::new(p2.ipv4.into(), 5353), 50, 400);
    ping(&p1.ns, &ip2, 3);
    let tcp6_port = tcp_transfer(&p1.ns, &p2.ns, SocketAddr::new(p2.ipv6.into(), 6001), 500_000, 100_000);
    let udp6_port = udp_echo(&p2.ns, &p1.ns, SocketAddr::new(p1.ipv6.into(), 6053), 20, 1000);
    ping(&p1.ns, &ip6_2, 2);
    let burst_ports: Vec<u16> = (0..100)
        .map(|_| tcp_transfer(&p2.ns, &p1.ns, SocketAddr::new(p1.ipv4.into(), 7000), 100, 10))
        .collect();

    let counters_a = node.settled_counters(a);
    let counters_b = node.settled_counters(b);
    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exit: {:?}", finished.status);
    assert_eq!(
        node.counters(a),
        counters_a,
        "traffic after the agent stopped would not be comparable"
    );
    let out = output::parse(&finished.stdout);
    let records = &out.records;
    assert!(
        out.lost_events.is_empty(),
        "nothing may be lost here: {:?}",
        out.lost_events
    );

    // Exact accounting per interface and direction. On a pod's host-side
    // veth, received packets come from the pod (FROM_ENDPOINT) and sent ones
    // go to it (TO_ENDPOINT).
    let sums = output::sums(records);
    for (ifname, c) in [(a, counters_a), (b, counters_b)] {
        let from = sums
            .get(&(ifname.clone(), "FROM_ENDPOINT".into()))
            .copied()
            .unwrap_or_default();
        let to = sums
            .get(&(ifname.clone(), "TO_ENDPOINT".into()))
            .copied()
            .unwrap_or_default();
        assert_eq!(from, (c.rx_packets, c.rx_bytes), "{ifname} rx (packets, bytes)");
        assert_eq!(to, (c.tx_packets, c.tx_bytes), "{ifname} tx (packets, bytes)");
    }
    // Every record has its own uuid, as Hubble's flows do.
    let uuids: std::collections::HashSet<&str> =
        records.iter().map(|r| r.json["uuid"].as_str().unwrap_or("")).collect();
    assert_eq!(uuids.len(), records.len(), "uuids must be unique");
    assert!(
        uuids.iter().all(|u| u.len() == 36 && u.as_bytes()[14] == b'4'),
        "version-4 uuids"
    );
    for r in output::forwarded(records) {
        let expected = if r.point == "FROM_ENDPOINT" {
            "EGRESS"
        } else {
            "INGRESS"
        };
        assert_eq!(r.direction, expected, "{:?}", r.json);
        assert_eq!(r.json["node_name"], "test-node");
        assert_eq!(r.json["Type"], "L3_L4");
        assert_eq!(r.json["event_type"]["type"], 4);
    }

    // The 1 MB / 300 kB TCP connection, seen on both pods' veths.
    for (ifname, from_point, to_point) in [(a, "FROM_ENDPOINT", "TO_ENDPOINT"), (b, "TO_ENDPOINT", "FROM_ENDPOINT")] {
        let fwd = flow(records, ifname, "TCP", (&ip1, tcp_port.into()), (&ip2, 5001));
        let rev = flow(records, ifname, "TCP", (&ip2, 5001), (&ip1, tcp_port.into()));
        let (_, fwd_bytes, fwd_flags) = check_lifecycle(&fwd, Some(false));
        let (_, rev_bytes, rev_flags) = check_lifecycle(&rev, Some(true));
        assert!(fwd.iter().all(|r| r.point == from_point) && rev.iter().all(|r| r.point == to_point));
        assert_eq!(fwd[0].flags, ["SYN"], "the initiator's first record carries its SYN");
        assert!(rev[0].flags.contains(&"SYN".to_owned()) && rev[0].flags.contains(&"ACK".to_owned()));
        for f in ["SYN", "ACK", "FIN"] {
            assert!(
                fwd_flags.contains(&f.to_owned()) && rev_flags.contains(&f.to_owned()),
                "{f}: {fwd_flags:?} {rev_flags:?}"
            );
        }
        assert!(fwd_bytes > 1_000_000 && rev_bytes > 300_000);
        // Aggregated: a handful of records, never one per packet.
        assert!(
            fwd.len() <= 4 && rev.len() <= 4,
            "{} and {} records",
            fwd.len(),
            rev.len()
        );
    }

    // The connection opened from pod 2: is_reply follows the initiator.
    let fwd = flow(records, a, "TCP", (&ip1, 5002), (&ip2, tcp_back_port.into()));
    check_lifecycle(&fwd, Some(true));
    let rev = flow(records, a, "TCP", (&ip2, tcp_back_port.into()), (&ip1, 5002));
    check_lifecycle(&rev, Some(false));

    // UDP: 50 datagrams each way, exactly 50 packets per direction per veth.
    for ifname in [a, b] {
        let req = flow(records, ifname, "UDP", (&ip1, udp_port.into()), (&ip2, 5353));
        let resp = flow(records, ifname, "UDP", (&ip2, 5353), (&ip1, udp_port.into()));
        assert_eq!(check_lifecycle(&req, Some(false)).0, 50);
        assert_eq!(check_lifecycle(&resp, Some(true)).0, 50);
        // 400 bytes of payload + UDP 8 + IPv4 20 + Ethernet 14.
        assert_eq!(check_lifecycle(&req, Some(false)).1, 50 * 442);
    }

    // ICMP echo: 3 requests and 3 replies, paired.
    let requests = flow(records, a, "ICMPv4", (&ip1, 8), (&ip2, 0));
    let replies = flow(records, a, "ICMPv4", (&ip2, 0), (&ip1, 0));
    assert_eq!(check_lifecycle(&requests, Some(false)).0, 3);
    assert_eq!(check_lifecycle(&replies, Some(true)).0, 3);

    // IPv6: TCP, UDP and ICMPv6 echo.
    let fwd6 = flow(records, b, "TCP", (&ip6_1, tcp6_port.into()), (&ip6_2, 6001));
    assert!(check_lifecycle(&fwd6, Some(false)).1 > 500_000);
    assert_eq!(fwd6[0].json["IP"]["ipVersion"], "IPv6");
    let udp6 = flow(records, b, "UDP", (&ip6_2, udp6_port.into()), (&ip6_1, 6053));
    assert_eq!(
        check_lifecycle(&udp6, Some(false)),
        (20, 20 * (1000 + 8 + 40 + 14), vec![])
    );
    let echo6 = flow(records, a, "ICMPv6", (&ip6_1, 128), (&ip6_2, 0));
    assert_eq!(check_lifecycle(&echo6, Some(false)).0, 2);
    let reply6 = flow(records, a, "ICMPv6", (&ip6_2, 129), (&ip6_1, 0));
    assert_eq!(check_lifecycle(&reply6, Some(true)).0, 2);

    // The burst: 100 short connections, each begun and ended on each side.
    for port in burst_ports {
        let f = flow(records, b, "TCP", (&ip2, port.into()), (&ip1, 7000));
        let (_, _, flags) = check_lifecycle(&f, Some(false));
        assert!(flags.contains(&"SYN".to_owned()) && flags.contains(&"FIN".to_owned()));
    }
}
