//! GetFlows filters, one case per kind of filter: the server's selection
//! against the same predicate worked out here on the captured records.

use std::net::IpAddr;

use hubcap::proto::flow::{
    DropReason, EventTypeFilter, FlowFilter, IpVersion, NetworkInterface, TcpFlags, TrafficDirection, Verdict,
};
use hubcap_tests::{output::Record, topology::Pod};

use crate::fixture::{Fixture, request, uuids};

/// A whitelist, a blacklist, and which records they must select.
type Selection<'a> = (Vec<FlowFilter>, Vec<FlowFilter>, Box<dyn Fn(&Record) -> bool + 'a>);

/// What the cases are written in terms of.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    p1: &'a Pod,
    p2: &'a Pod,
    p3: &'a Pod,
    subnet: u8,
    node_name: &'a str,
    /// The source port of the TCP transfer to port 5001.
    tcp_port: u64,
}

impl<'a> Ctx<'a> {
    fn of(f: &'a Fixture) -> Self {
        let pods = &f.node.pods;
        Ctx {
            p1: &pods[0],
            p2: &pods[1],
            p3: &pods[2],
            subnet: f.node.subnet,
            node_name: &f.node_name,
            tcp_port: f
                .records
                .iter()
                .find(|r| r.protocol == "TCP" && r.dst_port == 5001)
                .expect("the TCP transfer")
                .src_port,
        }
    }
}

fn s(v: &str) -> Vec<String> {
    vec![v.to_owned()]
}

/// Cases whose filter selects nothing here, or everything: any other must
/// select some records and not all, so that an ignored filter fails it.
fn selects_all_or_none(name: &str) -> bool {
    name.ends_with("none") || name == "node_name_glob"
}

pub type Case = (&'static str, for<'a> fn(&'a Fixture) -> Selection<'a>);

pub const CASES: &[Case] = &[
    ("source_ip_exact", |f| {
        let c = Ctx::of(f);
        (
            vec![FlowFilter {
                source_ip: s(&c.p1.ipv4.to_string()),
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.src == c.p1.ipv4.to_string()),
        )
    }),
    ("destination_ip_cidr", |f| {
        let c = Ctx::of(f);
        (
            vec![FlowFilter {
                destination_ip: s(&format!("10.77.{}.12/31", c.subnet)),
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.dst == c.p2.ipv4.to_string() || r.dst == c.p3.ipv4.to_string()),
        )
    }),
    ("source_ip_ipv6_cidr", |f| {
        let c = Ctx::of(f);
        (
            vec![FlowFilter {
                source_ip: s(&format!("fd77:{}::/64", c.subnet)),
                ..Default::default()
            }],
            vec![],
            Box::new(
                move |r| matches!(r.src.parse(), Ok(IpAddr::V6(v6)) if v6.segments()[..4] == [0xfd77, u16::from(c.subnet), 0, 0]),
            ),
        )
    }),
    ("protocol_udp", |_| {
        (
            vec![FlowFilter {
                protocol: s("udp"),
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.protocol == "UDP"),
        )
    }),
    ("protocol_icmpv4", |_| {
        (
            vec![FlowFilter {
                protocol: s("icmpv4"),
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.protocol == "ICMPv4"),
        )
    }),
    ("destination_port", |_| {
        (
            vec![FlowFilter {
                destination_port: s("5002"),
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.protocol == "UDP" && r.dst_port == 5002),
        )
    }),
    ("source_port", |f| {
        let c = Ctx::of(f);
        (
            vec![FlowFilter {
                source_port: s(&c.tcp_port.to_string()),
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.protocol == "TCP" && r.src_port == c.tcp_port),
        )
    }),
    ("verdict_dropped", |_| {
        (
            vec![FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.verdict == "DROPPED"),
        )
    }),
    ("event_type_drop", |_| {
        (
            vec![FlowFilter {
                event_type: vec![EventTypeFilter {
                    r#type: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.verdict == "DROPPED"),
        )
    }),
    ("traffic_direction_ingress", |_| {
        (
            vec![FlowFilter {
                traffic_direction: vec![TrafficDirection::Ingress as i32],
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.direction == "INGRESS"),
        )
    }),
    ("tcp_flags_syn", |_| {
        (
            vec![FlowFilter {
                tcp_flags: vec![TcpFlags {
                    syn: true,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.flags.iter().any(|f| f == "SYN")),
        )
    }),
    ("ip_version_ipv6", |_| {
        (
            vec![FlowFilter {
                ip_version: vec![IpVersion::IPv6 as i32],
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.src.contains(':')),
        )
    }),
    ("interface", |f| {
        let c = Ctx::of(f);
        (
            vec![FlowFilter {
                interface: vec![NetworkInterface {
                    index: 0,
                    name: c.p3.host_if.clone(),
                }],
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.interface == c.p3.host_if),
        )
    }),
    ("node_name_glob", |f| {
        let c = Ctx::of(f);
        (
            vec![FlowFilter {
                node_name: s(&format!("{}*", &c.node_name[..c.node_name.len() - 1])),
                ..Default::default()
            }],
            vec![],
            Box::new(move |_| true),
        )
    }),
    ("drop_reason_desc", |_| {
        (
            vec![FlowFilter {
                drop_reason_desc: vec![0],
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.verdict == "DROPPED" && r.json["drop_reason_desc"].is_null()),
        )
    }),
    // The cases above that match everything, or every drop, would pass
    // with the filter ignored; these would not.
    ("node_name_glob_of_another_node_none", |f| {
        let c = Ctx::of(f);
        (
            vec![FlowFilter {
                node_name: s(&format!("{}-other*", c.node_name)),
                ..Default::default()
            }],
            vec![],
            Box::new(move |_| false),
        )
    }),
    ("drop_reason_desc_policy_denied_none", |_| {
        (
            vec![FlowFilter {
                drop_reason_desc: vec![DropReason::PolicyDenied as i32],
                ..Default::default()
            }],
            vec![],
            Box::new(move |_| false),
        )
    }),
    ("reply", |_| {
        (
            vec![FlowFilter {
                reply: vec![true],
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.is_reply == Some(true)),
        )
    }),
    ("namespace_prefix_without_pod_metadata_none", |_| {
        (
            vec![FlowFilter {
                source_pod: s("default/"),
                ..Default::default()
            }],
            vec![],
            Box::new(move |_| false),
        )
    }),
    ("whitelist_minus_blacklist", |_| {
        (
            vec![FlowFilter {
                protocol: s("udp"),
                ..Default::default()
            }],
            vec![FlowFilter {
                ip_version: vec![IpVersion::IPv6 as i32],
                ..Default::default()
            }],
            Box::new(move |r| r.protocol == "UDP" && !r.src.contains(':')),
        )
    }),
    ("whitelist_filters_ored_fields_anded", |_| {
        (
            vec![
                FlowFilter {
                    protocol: s("icmpv4"),
                    ..Default::default()
                },
                FlowFilter {
                    protocol: s("tcp"),
                    destination_port: s("5001"),
                    ..Default::default()
                },
            ],
            vec![],
            Box::new(move |r| r.protocol == "ICMPv4" || (r.protocol == "TCP" && r.dst_port == 5001)),
        )
    }),
    ("blacklist_only", |_| {
        (
            vec![],
            vec![FlowFilter {
                traffic_direction: vec![TrafficDirection::Egress as i32],
                ..Default::default()
            }],
            Box::new(move |r| r.direction != "EGRESS"),
        )
    }),
];

pub fn check(f: &Fixture, name: &str, selection: for<'a> fn(&'a Fixture) -> Selection<'a>) {
    let (whitelist, blacklist, keep) = selection(f);
    let expected = uuids(f.records.iter().filter(|r| keep(r)));
    let got = f.query(request(whitelist, blacklist));
    assert_eq!(got, expected, "{name}");
    if !selects_all_or_none(name) {
        assert!(
            !got.is_empty() && got.len() < f.records.len(),
            "{name}: {} of {}",
            got.len(),
            f.records.len()
        );
    }
}
