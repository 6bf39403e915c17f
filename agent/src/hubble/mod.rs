//! Hubble's vocabulary, each piece in one place: protocol names, event
//! types and trace points, where a packet was seen, time windows and the
//! time format. Records, filters, metrics, the Observer API and `hubcap
//! observe` all take these from here; `field_mask` applies Hubble's field
//! masks to flows (the Observer API's and the flow logs').

pub mod field_mask;

use agent_common::hook;
use prost_types::Timestamp;

use crate::{
    interfaces::InterfaceKind,
    proto::flow::{self, Layer7, TraceObservationPoint, TrafficDirection, layer7},
};

// ---- Event types and observation points -------------------------------

/// Hubble's event type for trace (forwarded) events.
pub const EVENT_TYPE_TRACE: i32 = 4;

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

/// Hubble's event type for drops (sub type: the Hubble drop reason).
pub const EVENT_TYPE_DROP: i32 = 1;

/// Hubble's event type for L7 records (Cilium's access log message).
pub const EVENT_TYPE_L7: i32 = 129;

// ---- DNS --------------------------------------------------------------

/// `l7.dns.observation_source` of hubcap's DNS records: seen on the wire
/// by eBPF (Cilium's own are `proxy`, from its DNS proxy).
pub const DNS_OBSERVATION_SOURCE: &str = "ebpf";

/// A DNS RCODE's name as Hubble's summaries print it (gopacket's names).
pub fn dns_rcode_name(rcode: u16) -> &'static str {
    match rcode {
        0 => "No Error",
        1 => "Format Error",
        2 => "Server Failure",
        3 => "Non-Existent Domain",
        4 => "Not Implemented",
        5 => "Query Refused",
        6 => "Name Exists when it should not",
        7 => "RR Set Exists when it should not",
        8 => "RR Set that should exist does not",
        9 => "Server Not Authoritative for zone",
        10 => "Name not contained in zone",
        _ => "Unknown",
    }
}

/// The `rcode` label of Hubble's DNS metrics: the summaries' names, but
/// for the two Hubble's metrics name otherwise and an empty label for an
/// unknown code.
pub fn dns_rcode_metric_label(rcode: u32) -> &'static str {
    match rcode {
        9 => "Not Authorized",
        11 => "DSO-TYPE Not Implemented",
        0..=10 => dns_rcode_name(rcode as u16),
        _ => "",
    }
}

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

// ---- Protocols -------------------------------------------------------

/// Hubble's names of the L4 protocols (the `l4` oneof), as the metrics'
/// `protocol` label, printed flows and the protocol filter use them.
pub mod protocol {
    pub const TCP: &str = "TCP";
    pub const UDP: &str = "UDP";
    pub const SCTP: &str = "SCTP";
    pub const ICMPV4: &str = "ICMPv4";
    pub const ICMPV6: &str = "ICMPv6";
    pub const VRRP: &str = "VRRP";
    pub const IGMP: &str = "IGMP";
    /// The ones hubcap's records carry.
    pub const RECORDED: [&str; 5] = [TCP, UDP, SCTP, ICMPV4, ICMPV6];
    /// What Hubble's flow metric writes for a flow without L4.
    pub const UNKNOWN_L4: &str = "Unknown L4";
}

/// One value of Hubble's protocol filter (`--protocol`, `protocol:` in
/// flow-log configs and resources), with Hubble's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolFilter {
    /// An L4 protocol by its Hubble name ([`protocol`]).
    L4(&'static str),
    /// `icmp`: ICMPv4 or ICMPv6.
    AnyIcmp,
    /// `dns`, `http`, `kafka`: L7 records of that protocol. hubcap writes
    /// DNS ones; `http` and `kafka` select nothing (as on a Hubble node
    /// without L7 visibility), rather than being refused.
    L7(&'static str),
}

impl ProtocolFilter {
    /// Hubble's filter names, each once.
    pub const NAMES: [(&'static str, ProtocolFilter); 11] = [
        ("tcp", Self::L4(protocol::TCP)),
        ("udp", Self::L4(protocol::UDP)),
        ("sctp", Self::L4(protocol::SCTP)),
        ("icmp", Self::AnyIcmp),
        ("icmpv4", Self::L4(protocol::ICMPV4)),
        ("icmpv6", Self::L4(protocol::ICMPV6)),
        ("vrrp", Self::L4(protocol::VRRP)),
        ("igmp", Self::L4(protocol::IGMP)),
        ("dns", Self::L7("dns")),
        ("http", Self::L7("http")),
        ("kafka", Self::L7("kafka")),
    ];

    /// Case-insensitive, as Hubble.
    pub fn parse(name: &str) -> Option<ProtocolFilter> {
        let lower = name.to_ascii_lowercase();
        Self::NAMES.iter().find(|(n, _)| *n == lower).map(|(_, p)| *p)
    }

    /// Whether a flow with this L4 protocol ([`L4Parts::protocol`]) and
    /// L7 record matches. An L7 record matches its L4 protocol's name too
    /// (a DNS answer over UDP is `udp`), as on Hubble.
    pub fn matches(self, l4_protocol: &str, l7: Option<&Layer7>) -> bool {
        match self {
            Self::L4(name) => name == l4_protocol,
            Self::AnyIcmp => matches!(l4_protocol, protocol::ICMPV4 | protocol::ICMPV6),
            Self::L7(name) => {
                name == "dns" && matches!(l7.and_then(|l7| l7.record.as_ref()), Some(layer7::Record::Dns(_)))
            }
        }
    }

    /// The accepted names, for error messages.
    pub fn names() -> String {
        Self::NAMES.map(|(n, _)| n).join(", ")
    }
}

// ---- Layer 4 ---------------------------------------------------------

/// A flow's layer 4 at a glance, for the places that name its protocol or
/// read its ports (filters, metrics labels, printed flows).
pub struct L4Parts<'a> {
    /// Hubble's name (`TCP`, `UDP`, `SCTP`, `ICMPv4`, `ICMPv6`, `VRRP`,
    /// `IGMP`), or empty without L4.
    pub protocol: &'static str,
    /// Source and destination ports, for TCP, UDP and SCTP.
    pub ports: Option<(u32, u32)>,
    pub tcp_flags: Option<&'a flow::TcpFlags>,
}

impl flow::Flow {
    pub fn l4_parts(&self) -> L4Parts<'_> {
        use flow::layer4::Protocol;
        let (protocol, ports, tcp_flags) = match self.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
            Some(Protocol::Tcp(t)) => (
                protocol::TCP,
                Some((t.source_port, t.destination_port)),
                t.flags.as_ref(),
            ),
            Some(Protocol::Udp(u)) => (protocol::UDP, Some((u.source_port, u.destination_port)), None),
            Some(Protocol::Sctp(s)) => (protocol::SCTP, Some((s.source_port, s.destination_port)), None),
            Some(Protocol::IcmPv4(_)) => (protocol::ICMPV4, None, None),
            Some(Protocol::IcmPv6(_)) => (protocol::ICMPV6, None, None),
            Some(Protocol::Vrrp(_)) => (protocol::VRRP, None, None),
            Some(Protocol::Igmp(_)) => (protocol::IGMP, None, None),
            None => ("", None, None),
        };
        L4Parts {
            protocol,
            ports,
            tcp_flags,
        }
    }
}

// ---- Time ------------------------------------------------------------

/// Nanoseconds since the Unix epoch.
pub fn nanos(t: &Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

/// GetFlows' `since`/`until`: either end may be open; both are inclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeWindow {
    since: Option<i128>,
    until: Option<i128>,
}

impl TimeWindow {
    pub fn new(since: Option<&Timestamp>, until: Option<&Timestamp>) -> Self {
        TimeWindow {
            since: since.map(nanos),
            until: until.map(nanos),
        }
    }

    pub fn contains(&self, t: &Timestamp) -> bool {
        let t = nanos(t);
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }
}

/// A time as Hubble writes it: RFC 3339 in UTC.
pub fn rfc3339(t: &Timestamp) -> String {
    let mut out = Vec::with_capacity(32);
    write_rfc3339(&mut out, t);
    String::from_utf8(out).expect("ASCII")
}

/// RFC 3339 in UTC, `Z` suffix, fraction trimmed to 0/3/6/9 digits.
/// Inlined into the JSON writer, whose hot path it is (three per record).
#[inline]
pub fn write_rfc3339(out: &mut Vec<u8>, t: &Timestamp) {
    let days = t.seconds.div_euclid(86_400);
    let secs_of_day = t.seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    // Digits written directly: `write!` costs more than the rest of the
    // line (three times per record).
    digits(out, year.max(0) as u64, 4);
    out.push(b'-');
    digits(out, u64::from(month), 2);
    out.push(b'-');
    digits(out, u64::from(day), 2);
    out.push(b'T');
    digits(out, h as u64, 2);
    out.push(b':');
    digits(out, m as u64, 2);
    out.push(b':');
    digits(out, s as u64, 2);
    let nanos = u64::try_from(t.nanos).unwrap_or(0);
    if nanos != 0 {
        out.push(b'.');
        if nanos % 1_000_000 == 0 {
            digits(out, nanos / 1_000_000, 3);
        } else if nanos % 1_000 == 0 {
            digits(out, nanos / 1_000, 6);
        } else {
            digits(out, nanos, 9);
        }
    }
    out.push(b'Z');
}

/// `value` in decimal, zero-padded to `width` digits (more if it needs them).
#[inline]
fn digits(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let text = buf.format(value).as_bytes();
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(text.len())));
    out.extend_from_slice(text);
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
#[inline]
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
