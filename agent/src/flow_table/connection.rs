//! Pairing the two directions of a connection seen on one interface.
//!
//! A node may hold hundreds of thousands of connections, so what is kept
//! per connection is a few bytes: which side opened it, which sides sent a
//! FIN, and how many of its directions are open. The directions themselves
//! live in the flow table, keyed by [`FlowKey`].

use agent_common::{FlowKey, hook, ip_proto, tcp_flags};

/// An address and port (or ICMP identifier).
type Endpoint = ([u8; 16], u16);

/// Identifies a connection on one interface regardless of direction: the
/// two endpoints in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    ifindex: u32,
    protocol: u8,
    ip_version: u8,
    low: Endpoint,
    high: Endpoint,
    /// ICMP: which request/reply pair (echo, timestamp, ...) or, for error
    /// messages, their type and code. 0 for other protocols.
    icmp_class: u16,
    /// Dropped packets are their own "connection" per reason: they must not
    /// take part in pairing or closing the forwarded flow.
    dropped: bool,
    drop_reason: u32,
}

/// A direction's source and destination endpoints as pairing sees them,
/// and its ICMP class.
fn endpoints(key: &FlowKey) -> (Endpoint, Endpoint, u16) {
    if let Some((sport, dport)) = key.ports() {
        return ((key.src_addr, sport), (key.dst_addr, dport), 0);
    }
    match key.icmp_type_code() {
        Some((icmp_type, _)) if ip_proto::is_icmp_query(key.protocol, icmp_type) => {
            let id = key.src_port;
            (
                (key.src_addr, id),
                (key.dst_addr, id),
                u16::from(query_family(key.protocol, icmp_type)),
            )
        }
        Some(_) => ((key.src_addr, 0), (key.dst_addr, 0), key.dst_port),
        None => ((key.src_addr, 0), (key.dst_addr, 0), 0),
    }
}

/// Sides of a connection, as bits.
const LOW: u8 = 1;
const HIGH: u8 = 2;

/// Which side sent this direction's packets.
fn source_side(key: &FlowKey) -> u8 {
    let (src, dst, _) = endpoints(key);
    if src <= dst { LOW } else { HIGH }
}

impl ConnKey {
    pub fn of(key: &FlowKey) -> Self {
        let (src, dst, icmp_class) = endpoints(key);
        let (low, high) = if src <= dst { (src, dst) } else { (dst, src) };
        ConnKey {
            ifindex: key.ifindex,
            protocol: key.protocol,
            ip_version: key.ip_version,
            low,
            high,
            icmp_class,
            dropped: key.hook == hook::DROP,
            drop_reason: key.drop_reason,
        }
    }

    /// Every flow key a TCP connection can have: each endpoint sending, on
    /// each hook. (Only TCP connections close, so only they need this.)
    pub fn tcp_keys(&self) -> impl Iterator<Item = FlowKey> + '_ {
        // Drops are their own connections, on their own hook.
        let hooks: &[u8] = if self.dropped {
            &[hook::DROP]
        } else {
            &[hook::INGRESS, hook::EGRESS]
        };
        [(self.low, self.high), (self.high, self.low)]
            .into_iter()
            .flat_map(move |(src, dst)| {
                hooks.iter().map(move |&hook| FlowKey {
                    src_addr: src.0,
                    dst_addr: dst.0,
                    src_port: src.1,
                    dst_port: dst.1,
                    ifindex: self.ifindex,
                    protocol: self.protocol,
                    ip_version: self.ip_version,
                    hook,
                    _pad: 0,
                    drop_reason: self.drop_reason,
                })
            })
    }
}

/// The request type of an ICMP request/reply pair.
fn query_family(protocol: u8, icmp_type: u8) -> u8 {
    match (protocol, icmp_type) {
        (ip_proto::ICMP, 0) => 8,
        (ip_proto::ICMP, 14) => 13,
        (ip_proto::ICMP, 16) => 15,
        (ip_proto::ICMPV6, 129) => 128,
        (_, t) => t,
    }
}

fn is_icmp_request(protocol: u8, icmp_type: u8) -> bool {
    matches!(
        (protocol, icmp_type),
        (ip_proto::ICMP, 8 | 13 | 15) | (ip_proto::ICMPV6, 128)
    )
}

#[derive(Default)]
pub struct Connection {
    /// The side that opened the connection ([`LOW`] or [`HIGH`]); 0 while
    /// unknown.
    initiator: u8,
    /// The sides that sent a FIN.
    fin_from: u8,
    /// Open flow directions of this connection in the table.
    pub directions: u8,
    /// Kernel time the connection closed (RST, or FIN from both sides); 0
    /// while open.
    pub closed_since_ns: u64,
}

impl Connection {
    /// Decides the initiator from a direction's first packets, unless known:
    /// TCP by who sent the SYN (a SYN-ACK names the other side); ICMP
    /// queries by request versus reply; anything else, the first seen.
    /// A TCP connection already running when capture began stays unknown.
    pub fn learn_initiator(&mut self, key: &FlowKey, first_packet_flags: Option<u16>) {
        if self.initiator != 0 {
            return;
        }
        let source = source_side(key);
        let other = LOW + HIGH - source;
        self.initiator = match key.protocol {
            ip_proto::TCP => {
                let flags = first_packet_flags.unwrap_or(0);
                if flags & tcp_flags::SYN == 0 {
                    0
                } else if flags & tcp_flags::ACK == 0 {
                    source
                } else {
                    other
                }
            }
            ip_proto::ICMP | ip_proto::ICMPV6 => {
                let icmp_type = (key.dst_port >> 8) as u8;
                if !ip_proto::is_icmp_query(key.protocol, icmp_type) || is_icmp_request(key.protocol, icmp_type) {
                    source
                } else {
                    // A reply: the other side asked.
                    other
                }
            }
            _ => source,
        };
    }

    pub fn is_reply(&self, key: &FlowKey) -> Option<bool> {
        (self.initiator != 0).then(|| source_side(key) != self.initiator)
    }

    /// A connection is closed by RST, or once both sides sent a FIN.
    pub fn note_close_flags(&mut self, key: &FlowKey, flags: u16, now_ns: u64) {
        if flags & tcp_flags::FIN != 0 {
            self.fin_from |= source_side(key);
        }
        let closed = flags & tcp_flags::RST != 0 || self.fin_from == LOW | HIGH;
        if closed && self.closed_since_ns == 0 {
            self.closed_since_ns = now_ns.max(1);
        }
    }
}
