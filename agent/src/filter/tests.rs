//! FlowFilter semantics, case by case.

use super::*;
use crate::proto::flow::{
    self, CiliumEventType, Dns, DropReason, Endpoint, IpVersion, L7FlowType, Layer4, Layer7, TrafficDirection, Udp,
    Verdict, layer4::Protocol, layer7,
};

/// A TCP SYN from default/client-7d9 (10.0.1.5:40000) to 10.0.2.9:80 on eth0.
fn tcp_flow() -> Flow {
    Flow {
        uuid: "u-1".into(),
        verdict: Verdict::Forwarded as i32,
        ip: Some(flow::Ip {
            source: "10.0.1.5".into(),
            destination: "10.0.2.9".into(),
            ip_version: IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(flow::Tcp {
                source_port: 40000,
                destination_port: 80,
                flags: Some(TcpFlags {
                    syn: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(Endpoint {
            namespace: "default".into(),
            pod_name: "client-7d9".into(),
            ..Default::default()
        }),
        node_name: "aks-node-1".into(),
        event_type: Some(CiliumEventType { r#type: 4, sub_type: 5 }),
        traffic_direction: TrafficDirection::Egress as i32,
        is_reply: Some(false),
        interface: Some(NetworkInterface {
            index: 3,
            name: "eth0".into(),
        }),
        ..Default::default()
    }
}

fn udp6_drop() -> Flow {
    Flow {
        verdict: Verdict::Dropped as i32,
        drop_reason_desc: DropReason::PolicyDenied as i32,
        ip: Some(flow::Ip {
            source: "fd00::5".into(),
            destination: "fd00:1::9".into(),
            ip_version: IpVersion::IPv6 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Udp(flow::Udp {
                source_port: 5353,
                destination_port: 53,
            })),
        }),
        event_type: Some(CiliumEventType {
            r#type: 1,
            sub_type: 133,
        }),
        node_name: "aks-node-2".into(),
        ..Default::default()
    }
}

fn selects(white: Vec<FlowFilter>, black: Vec<FlowFilter>, flow: &Flow) -> bool {
    FlowSelector::new(&white, &black).expect("valid filters").selects(flow)
}

fn f(build: impl FnOnce(&mut FlowFilter)) -> FlowFilter {
    let mut filter = FlowFilter::default();
    build(&mut filter);
    filter
}

#[test]
fn each_field_kind() {
    let (tcp, udp) = (tcp_flow(), udp6_drop());
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, FlowFilter, bool, bool)> = vec![
        ("empty filter matches all", f(|_| {}), true, true),
        (
            "source ip exact",
            f(|x| x.source_ip = vec!["10.0.1.5".into()]),
            true,
            false,
        ),
        (
            "source ip cidr",
            f(|x| x.source_ip = vec!["10.0.0.0/16".into()]),
            true,
            false,
        ),
        (
            "source ip other cidr",
            f(|x| x.source_ip = vec!["10.1.0.0/16".into()]),
            false,
            false,
        ),
        (
            "destination v6 cidr",
            f(|x| x.destination_ip = vec!["fd00:1::/64".into()]),
            false,
            true,
        ),
        (
            "any of several ips",
            f(|x| x.source_ip = vec!["1.2.3.4".into(), "fd00::5/128".into()]),
            false,
            true,
        ),
        (
            "cidr /0 of the family",
            f(|x| x.source_ip = vec!["0.0.0.0/0".into()]),
            true,
            false,
        ),
        (
            "namespace prefix",
            f(|x| x.source_pod = vec!["default/".into()]),
            true,
            false,
        ),
        (
            "namespace and pod prefix",
            f(|x| x.source_pod = vec!["default/client".into()]),
            true,
            false,
        ),
        (
            "other namespace",
            f(|x| x.source_pod = vec!["kube-system/".into()]),
            false,
            false,
        ),
        (
            "pod prefix in any namespace",
            f(|x| x.source_pod = vec!["client-".into()]),
            true,
            false,
        ),
        ("verdict", f(|x| x.verdict = vec![Verdict::Dropped as i32]), false, true),
        ("protocol", f(|x| x.protocol = vec!["UDP".into()]), false, true),
        (
            "protocol icmp (either family)",
            f(|x| x.protocol = vec!["icmp".into()]),
            false,
            false,
        ),
        (
            "protocol dns (L7 records only)",
            f(|x| x.protocol = vec!["dns".into()]),
            false,
            false,
        ),
        (
            "destination fqdn on a flow without names",
            f(|x| x.destination_fqdn = vec!["*".into()]),
            false,
            false,
        ),
        ("source port", f(|x| x.source_port = vec!["40000".into()]), true, false),
        (
            "destination port",
            f(|x| x.destination_port = vec!["53".into(), "80".into()]),
            true,
            true,
        ),
        ("reply false", f(|x| x.reply = vec![false]), true, false),
        ("reply true", f(|x| x.reply = vec![true]), false, false),
        (
            "tcp flags subset",
            f(|x| {
                x.tcp_flags = vec![TcpFlags {
                    syn: true,
                    ..Default::default()
                }]
            }),
            true,
            false,
        ),
        (
            "tcp flags not set",
            f(|x| {
                x.tcp_flags = vec![TcpFlags {
                    fin: true,
                    ..Default::default()
                }]
            }),
            false,
            false,
        ),
        (
            "node name glob",
            f(|x| x.node_name = vec!["aks-node-*".into()]),
            true,
            true,
        ),
        (
            "node name exact",
            f(|x| x.node_name = vec!["aks-node-2".into()]),
            false,
            true,
        ),
        (
            "ip version",
            f(|x| x.ip_version = vec![IpVersion::IPv6 as i32]),
            false,
            true,
        ),
        (
            "traffic direction",
            f(|x| x.traffic_direction = vec![TrafficDirection::Egress as i32]),
            true,
            false,
        ),
        (
            "interface by name",
            f(|x| {
                x.interface = vec![NetworkInterface {
                    index: 0,
                    name: "eth0".into(),
                }]
            }),
            true,
            false,
        ),
        (
            "interface by index",
            f(|x| {
                x.interface = vec![NetworkInterface {
                    index: 4,
                    name: String::new(),
                }]
            }),
            false,
            false,
        ),
        (
            "drop reason",
            f(|x| x.drop_reason_desc = vec![DropReason::PolicyDenied as i32]),
            false,
            true,
        ),
        (
            "event type",
            f(|x| {
                x.event_type = vec![EventTypeFilter {
                    r#type: 1,
                    ..Default::default()
                }]
            }),
            false,
            true,
        ),
        (
            "event type with sub type",
            f(|x| {
                x.event_type = vec![EventTypeFilter {
                    r#type: 4,
                    match_sub_type: true,
                    sub_type: 6,
                }]
            }),
            false,
            false,
        ),
        ("uuid", f(|x| x.uuid = vec!["u-1".into()]), true, false),
        (
            "all fields in one filter must match",
            f(|x| {
                x.source_ip = vec!["10.0.1.5".into()];
                x.protocol = vec!["udp".into()];
            }),
            false,
            false,
        ),
    ];
    for (name, filter, want_tcp, want_udp) in cases {
        assert_eq!(
            selects(vec![filter.clone()], vec![], &tcp),
            want_tcp,
            "{name} (tcp flow)"
        );
        assert_eq!(selects(vec![filter], vec![], &udp), want_udp, "{name} (udp drop)");
    }
}

#[test]
fn lists_are_ored_and_blacklist_wins() {
    let (tcp, udp) = (tcp_flow(), udp6_drop());
    let tcp_only = f(|x| x.protocol = vec!["tcp".into()]);
    let dropped = f(|x| x.verdict = vec![Verdict::Dropped as i32]);
    // Whitelist: either filter will do.
    assert!(selects(vec![tcp_only.clone(), dropped.clone()], vec![], &tcp));
    assert!(selects(vec![tcp_only.clone(), dropped.clone()], vec![], &udp));
    // No whitelist: everything but the blacklist.
    assert!(!selects(vec![], vec![dropped.clone()], &udp));
    assert!(selects(vec![], vec![dropped.clone()], &tcp));
    // Whitelist minus blacklist.
    assert!(!selects(vec![tcp_only.clone()], vec![tcp_only], &tcp));
}

#[test]
fn bad_and_unsupported_filters_are_errors() {
    let err = |filter: FlowFilter| FlowSelector::new(&[filter], &[]).unwrap_err();
    assert_eq!(
        err(f(|x| x.source_ip = vec!["10.0.0.300".into()])),
        FilterError::Ip("10.0.0.300".into())
    );
    assert_eq!(
        err(f(|x| x.source_ip = vec!["10.0.0.0/33".into()])),
        FilterError::Ip("10.0.0.0/33".into())
    );
    assert_eq!(
        err(f(|x| x.destination_port = vec!["http".into()])),
        FilterError::Port("http".into())
    );
    assert_eq!(
        err(f(|x| x.protocol = vec!["gre".into()])),
        FilterError::Protocol("gre".into())
    );
    assert_eq!(
        err(f(|x| x.source_label = vec!["app=web,".into()])),
        FilterError::Label("app=web,".into())
    );
    assert_eq!(
        err(f(|x| x.source_fqdn = vec!["exa mple.com".into()])),
        FilterError::Fqdn("exa mple.com".into())
    );
    assert!(matches!(
        err(f(|x| x.dns_query = vec!["*.example.com".into()])),
        FilterError::DnsQuery(q, _) if q == "*.example.com"
    ));
    assert_eq!(
        err(f(|x| x.http_method = vec!["GET".into()])),
        FilterError::Unsupported("http_method")
    );
}

fn dns_flow(query: &str) -> Flow {
    Flow {
        l4: Some(Layer4 {
            protocol: Some(Protocol::Udp(Udp {
                source_port: 40000,
                destination_port: 53,
            })),
        }),
        l7: Some(Layer7 {
            r#type: L7FlowType::Request as i32,
            latency_ns: 0,
            record: Some(layer7::Record::Dns(Dns {
                query: query.into(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

#[test]
fn dns_filters_select_dns_records_only() {
    let selects = |filter: FlowFilter, flow: &Flow| FlowSelector::new(&[filter], &[]).unwrap().selects(flow);
    let dns = dns_flow("www.example.com.");
    let plain_udp = Flow {
        l7: None,
        ..dns.clone()
    };
    let protocol = |p: &str| FlowFilter {
        protocol: vec![p.into()],
        ..Default::default()
    };
    assert!(selects(protocol("dns"), &dns));
    assert!(!selects(protocol("dns"), &plain_udp));
    assert!(selects(protocol("udp"), &dns), "an L7 record is also its L4 protocol's");
    assert!(!selects(protocol("http"), &dns));
    let query = |q: &str| FlowFilter {
        dns_query: vec![q.into()],
        ..Default::default()
    };
    assert!(selects(query(r"example\.com"), &dns), "unanchored, as Hubble's");
    assert!(selects(query(r"^www\."), &dns));
    assert!(!selects(query(r"^example"), &dns));
    assert!(!selects(query("."), &plain_udp), "a flow without DNS never matches");
}

fn icmp_flow(v6: bool) -> Flow {
    let protocol = if v6 {
        Protocol::IcmPv6(flow::IcmPv6 { r#type: 128, code: 0 })
    } else {
        Protocol::IcmPv4(flow::IcmPv4 { r#type: 8, code: 0 })
    };
    Flow {
        l4: Some(Layer4 {
            protocol: Some(protocol),
        }),
        ..Default::default()
    }
}

#[test]
fn protocol_icmp_selects_both_families_as_in_hubble() {
    let icmp = FlowSelector::new(&[f(|x| x.protocol = vec!["ICMP".into()])], &[]).unwrap();
    assert!(icmp.selects(&icmp_flow(false)));
    assert!(icmp.selects(&icmp_flow(true)));
    assert!(!icmp.selects(&tcp_flow()));
    let v6 = FlowSelector::new(&[f(|x| x.protocol = vec!["icmpv6".into()])], &[]).unwrap();
    assert!(!v6.selects(&icmp_flow(false)));
    assert!(v6.selects(&icmp_flow(true)));
}

#[test]
fn every_protocol_hubble_accepts_is_accepted() {
    for name in [
        "tcp", "udp", "sctp", "icmp", "icmpv4", "icmpv6", "vrrp", "igmp", "dns", "http", "kafka",
    ] {
        FlowSelector::new(&[f(|x| x.protocol = vec![name.to_uppercase()])], &[]).unwrap();
    }
}

/// What the Hubble UI always sends: a blacklist on both FQDNs. It must
/// exclude nothing from flows without names, and exclude named ones.
#[test]
fn the_hubble_ui_fqdn_blacklist_keeps_flows_without_names() {
    let blacklist = [
        f(|x| x.source_fqdn = vec!["*.cluster.local*".into()]),
        f(|x| x.destination_fqdn = vec!["*.cluster.local*".into()]),
    ];
    let selector = FlowSelector::new(&[], &blacklist).unwrap();
    assert!(selector.selects(&tcp_flow()));
    let mut named = tcp_flow();
    named.destination_names = vec!["web.default.svc.cluster.local".into()];
    assert!(!selector.selects(&named));
    named.destination_names = vec!["example.com".into()];
    assert!(selector.selects(&named));
}
