//! Builds Hubble flow records from flow-table updates.

#![allow(deprecated)] // `Summary`: deprecated in the proto, still written by Hubble.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use agent_common::{FlowKey, hook, ip_proto, tcp_flags};

use prost_types::Timestamp;

use super::record::{FlowRecord, RecordCounts};
use crate::drop_reasons::{DropReasons, hubble_reason};
use crate::{
    clock::WallClock,
    flow_table::FlowUpdate,
    interfaces::InterfaceKind,
    proto::flow::{
        self, CiliumEventType, Ethernet, Flow, FlowType, IpVersion, Layer4, NetworkInterface, TcpFlags,
        TraceObservationPoint, TrafficDirection, Verdict, layer4::Protocol,
    },
};

/// Hubble's event type for trace (forwarded) events.
const EVENT_TYPE_TRACE: i32 = 4;

/// Cilium's trace point number (`event_type.sub_type` of a trace event) and
/// its name (the `subtype` label of Hubble's flow metrics).
pub fn trace_point(point: TraceObservationPoint) -> (i32, &'static str) {
    match point {
        TraceObservationPoint::ToEndpoint => (0, "to-endpoint"),
        TraceObservationPoint::FromEndpoint => (5, "from-endpoint"),
        TraceObservationPoint::FromNetwork => (10, "from-network"),
        TraceObservationPoint::ToNetwork => (11, "to-network"),
        _ => (0, "unknown"),
    }
}

/// What hubcap knows about an interface it captured on; kept after the
/// interface goes so that its last flows still name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: Arc<str>,
    pub kind: InterfaceKind,
}

/// What every record shares and never changes while hubcap runs.
#[derive(Debug, Default)]
pub struct RecordContext {
    pub node_name: String,
    /// Names of this kernel's drop reasons.
    pub drop_reasons: DropReasons,
}

/// Everything a record is built from, fixed when it is first built: about
/// 250 bytes where the built record takes about 1.5 KB. The Observer API's
/// ring of recent flows keeps these and builds the records a client asks
/// for, identical to the ones written.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordSource {
    pub update: FlowUpdate,
    /// The record's uuid (random bits; see [`uuid_string`]).
    pub uuid: u128,
    /// Wall-clock times of the last and the first packet.
    pub time: Timestamp,
    pub flow_start_time: Timestamp,
    /// The interface as it was named then.
    pub interface: Option<InterfaceInfo>,
}

pub struct RecordBuilder {
    pub context: Arc<RecordContext>,
    pub interfaces: HashMap<u32, InterfaceInfo>,
    /// For each record's uuid (as Hubble gives every flow one).
    pub ids: fastrand::Rng,
}

/// 128 random bits as a version 4 UUID, hyphenated.
pub fn uuid_string(random: u128) -> String {
    let id = uuid::Builder::from_random_bytes(random.to_le_bytes()).into_uuid();
    id.hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

/// Hubble's event type for drops (sub type: the Hubble drop reason).
const EVENT_TYPE_DROP: i32 = 1;

/// Where a packet was seen, in Hubble's terms (see README, "Direction and
/// observation point"):
///
/// | interface | tc ingress | tc egress |
/// |---|---|---|
/// | pod veth (host side) | FROM_ENDPOINT, EGRESS | TO_ENDPOINT, INGRESS |
/// | other (uplink, bridge) | FROM_NETWORK, INGRESS | TO_NETWORK, EGRESS |
pub fn observation(kind: InterfaceKind, hook_id: u8) -> (TraceObservationPoint, TrafficDirection) {
    match (kind, hook_id) {
        (InterfaceKind::Endpoint, hook::INGRESS) => (TraceObservationPoint::FromEndpoint, TrafficDirection::Egress),
        (InterfaceKind::Endpoint, _) => (TraceObservationPoint::ToEndpoint, TrafficDirection::Ingress),
        (InterfaceKind::Network, hook::INGRESS) => (TraceObservationPoint::FromNetwork, TrafficDirection::Ingress),
        (InterfaceKind::Network, _) => (TraceObservationPoint::ToNetwork, TrafficDirection::Egress),
    }
}

impl RecordBuilder {
    /// Fixes what a record of `u` is built from (its uuid, times and
    /// interface); [`RecordContext::build`] builds it.
    pub fn source(&mut self, u: &FlowUpdate, clock: &WallClock) -> RecordSource {
        RecordSource {
            update: u.clone(),
            uuid: self.ids.u128(..),
            time: clock.timestamp(u.stats.last_seen_ns),
            flow_start_time: clock.timestamp(u.stats.first_seen_ns),
            interface: self.interfaces.get(&u.key.ifindex).cloned(),
        }
    }
}

impl RecordContext {
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
                source: address(key, &key.src_addr).to_string(),
                destination: address(key, &key.dst_addr).to_string(),
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

fn address(key: &FlowKey, bytes: &[u8; 16]) -> IpAddr {
    if key.ip_version == 6 {
        IpAddr::from(*bytes)
    } else {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

fn mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
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
            let (t, c) = (dst >> 8, dst & 0xff);
            (
                Protocol::IcmPv4(flow::IcmPv4 { r#type: t, code: c }),
                format!("ICMPv4 {}", icmpv4_name(t)),
            )
        }
        ip_proto::ICMPV6 => {
            let (t, c) = (dst >> 8, dst & 0xff);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let mut rng = fastrand::Rng::with_seed(7);
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| uuid_string(rng.u128(..))).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(id.len(), 36);
        }
    }
}
