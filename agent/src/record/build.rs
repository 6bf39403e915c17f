//! Builds a Hubble flow record from what a flow update's source fixed.

#![allow(deprecated)] // `Summary`: deprecated in the proto, still written by Hubble.

use agent_common::{FlowKey, hook, ip_proto, tcp_flags};

use super::{FlowRecord, RecordCounts, RecordSource, source::uuid_string};
use crate::{
    drop_reasons::{DropReasons, hubble_reason},
    hubble::{EVENT_TYPE_DROP, EVENT_TYPE_TRACE, observation, trace_point},
    interfaces::InterfaceKind,
    proto::flow::{
        self, CiliumEventType, Ethernet, Flow, FlowType, IpVersion, Layer4, NetworkInterface, TcpFlags, Verdict,
        layer4::Protocol,
    },
};

/// Builds records: what every record shares and never changes while
/// hubcap runs.
#[derive(Debug, Default)]
pub struct RecordBuilder {
    pub node_name: String,
    /// Names of this kernel's drop reasons.
    pub drop_reasons: DropReasons,
}

impl RecordBuilder {
    pub fn build(&self, source: &RecordSource) -> FlowRecord {
        let u = &source.update;
        let key = &u.key;
        let iface = source.interface.as_ref();
        let kind = iface.map_or(InterfaceKind::Network, |i| i.kind);
        let (point, direction) = observation(kind, key.hook);
        let (l4, summary) = layer4(key, u.tcp_flags);
        let dropped = key.hook == hook::DROP;
        let mut flow = Flow {
            time: Some(source.time),
            uuid: uuid_string(source.uuid),
            verdict: if dropped { Verdict::Dropped } else { Verdict::Forwarded } as i32,
            ethernet: Some(Ethernet {
                source: mac(&u.stats.src_mac),
                destination: mac(&u.stats.dst_mac),
            }),
            ip: Some(flow::Ip {
                source: super::ip_text(key.src_ip()),
                destination: super::ip_text(key.dst_ip()),
                ip_version: if key.ip_version == 6 {
                    IpVersion::IPv6
                } else {
                    IpVersion::IPv4
                } as i32,
                ..Default::default()
            }),
            l4,
            r#type: FlowType::L3L4 as i32,
            node_name: self.node_name.clone(),
            event_type: Some(CiliumEventType {
                r#type: EVENT_TYPE_TRACE,
                sub_type: trace_point(point).0,
            }),
            traffic_direction: direction as i32,
            trace_observation_point: point as i32,
            is_reply: u.is_reply,
            interface: Some(NetworkInterface {
                index: key.ifindex,
                name: iface.map(|i| i.name.to_string()).unwrap_or_default(),
            }),
            summary,
            source: source.identities.source.as_deref().cloned(),
            destination: source.identities.destination.as_deref().cloned(),
            source_service: source.identities.source_service.as_deref().cloned(),
            destination_service: source.identities.destination_service.as_deref().cloned(),
            node_labels: source.identities.node_labels.as_deref().cloned().unwrap_or_default(),
            source_names: source.identities.source_names.as_deref().cloned().unwrap_or_default(),
            destination_names: source
                .identities
                .destination_names
                .as_deref()
                .cloned()
                .unwrap_or_default(),
            ..Default::default()
        };
        let mut kernel_drop_reason = None;
        if dropped {
            // A drop is seen where the kernel frees the packet, not on a
            // hook: no observation point, no direction, no pairing. The
            // interface is known only when it is in hubcap's namespace.
            let name = self.drop_reasons.name(key.drop_reason);
            let reason = hubble_reason(&name) as i32;
            flow.event_type = Some(CiliumEventType {
                r#type: EVENT_TYPE_DROP,
                sub_type: reason,
            });
            flow.drop_reason = reason as u32;
            flow.drop_reason_desc = reason;
            flow.traffic_direction = 0;
            flow.trace_observation_point = 0;
            flow.is_reply = None;
            if key.ifindex == 0 {
                flow.interface = None;
            }
            if u.stats.src_mac == [0; 6] && u.stats.dst_mac == [0; 6] {
                flow.ethernet = None;
            }
            kernel_drop_reason = Some(name);
        }
        FlowRecord {
            flow,
            counts: RecordCounts {
                packets: u.packets,
                bytes: u.bytes,
                state: u.state,
                flow_start_time: source.flow_start_time,
                kernel_drop_reason,
            },
        }
    }
}

fn mac(m: &[u8; 6]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(17);
    for (i, byte) in m.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        text.push(HEX[usize::from(byte >> 4)] as char);
        text.push(HEX[usize::from(byte & 0xf)] as char);
    }
    text
}

const FLAG_NAMES: [(u16, &str); 9] = [
    (tcp_flags::SYN, "SYN"),
    (tcp_flags::ACK, "ACK"),
    (tcp_flags::FIN, "FIN"),
    (tcp_flags::RST, "RST"),
    (tcp_flags::PSH, "PSH"),
    (tcp_flags::URG, "URG"),
    (tcp_flags::ECE, "ECE"),
    (tcp_flags::CWR, "CWR"),
    (tcp_flags::NS, "NS"),
];

/// The `l4` field and a Hubble-style one-line summary.
fn layer4(key: &FlowKey, flags: u16) -> (Option<Layer4>, String) {
    let (src, dst) = (u32::from(key.src_port), u32::from(key.dst_port));
    let (protocol, summary) = match key.protocol {
        ip_proto::TCP => {
            let names: Vec<&str> = FLAG_NAMES
                .iter()
                .filter(|(bit, _)| flags & bit != 0)
                .map(|(_, n)| *n)
                .collect();
            let flags_msg = (flags != 0).then_some(TcpFlags {
                fin: flags & tcp_flags::FIN != 0,
                syn: flags & tcp_flags::SYN != 0,
                rst: flags & tcp_flags::RST != 0,
                psh: flags & tcp_flags::PSH != 0,
                ack: flags & tcp_flags::ACK != 0,
                urg: flags & tcp_flags::URG != 0,
                ece: flags & tcp_flags::ECE != 0,
                cwr: flags & tcp_flags::CWR != 0,
                ns: flags & tcp_flags::NS != 0,
            });
            let summary = if names.is_empty() {
                "TCP".to_owned()
            } else {
                format!("TCP Flags: {}", names.join(", "))
            };
            (
                Protocol::Tcp(flow::Tcp {
                    source_port: src,
                    destination_port: dst,
                    flags: flags_msg,
                }),
                summary,
            )
        }
        ip_proto::UDP => (
            Protocol::Udp(flow::Udp {
                source_port: src,
                destination_port: dst,
            }),
            "UDP".to_owned(),
        ),
        ip_proto::SCTP => (
            Protocol::Sctp(flow::Sctp {
                source_port: src,
                destination_port: dst,
                chunk_type: 0,
            }),
            "SCTP".to_owned(),
        ),
        ip_proto::ICMP => {
            let (t, c) = icmp_type_code(key);
            (
                Protocol::IcmPv4(flow::IcmPv4 { r#type: t, code: c }),
                format!("ICMPv4 {}", icmpv4_name(t)),
            )
        }
        ip_proto::ICMPV6 => {
            let (t, c) = icmp_type_code(key);
            (
                Protocol::IcmPv6(flow::IcmPv6 { r#type: t, code: c }),
                format!("ICMPv6 {}", icmpv6_name(t)),
            )
        }
        other => return (None, format!("IP protocol {other}")),
    };
    (
        Some(Layer4 {
            protocol: Some(protocol),
        }),
        summary,
    )
}

fn icmp_type_code(key: &FlowKey) -> (u32, u32) {
    let (t, c) = key.icmp_type_code().unwrap_or_default();
    (u32::from(t), u32::from(c))
}

fn icmpv4_name(t: u32) -> String {
    match t {
        0 => "EchoReply".into(),
        3 => "DestinationUnreachable".into(),
        5 => "Redirect".into(),
        8 => "EchoRequest".into(),
        11 => "TimeExceeded".into(),
        12 => "ParameterProblem".into(),
        13 => "TimestampRequest".into(),
        14 => "TimestampReply".into(),
        t => format!("Type{t}"),
    }
}

fn icmpv6_name(t: u32) -> String {
    match t {
        1 => "DestinationUnreachable".into(),
        2 => "PacketTooBig".into(),
        3 => "TimeExceeded".into(),
        4 => "ParameterProblem".into(),
        128 => "EchoRequest".into(),
        129 => "EchoReply".into(),
        133 => "RouterSolicitation".into(),
        134 => "RouterAdvertisement".into(),
        135 => "NeighborSolicitation".into(),
        136 => "NeighborAdvertisement".into(),
        143 => "MulticastListenerReportV2".into(),
        t => format!("Type{t}"),
    }
}
