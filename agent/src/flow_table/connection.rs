//! Pairing the two directions of a connection seen on one interface.

use agent_common::{FlowKey, tcp_flags};
use agent_ebpf::parse::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, is_icmp_query};

/// An address and port (or ICMP identifier).
type Endpoint = ([u8; 16], u16);

/// Identifies a connection on one interface regardless of direction: the
/// two endpoints in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    ifindex: u32,
    protocol: u8,
    low: Endpoint,
    high: Endpoint,
    /// ICMP: which request/reply pair (echo, timestamp, ...) or, for error
    /// messages, their type and code. 0 for other protocols.
    icmp_class: u16,
}

impl ConnKey {
    pub fn of(key: &FlowKey) -> Self {
        let (src, dst, icmp_class) = match key.protocol {
            PROTO_TCP | PROTO_UDP | PROTO_SCTP => ((key.src_addr, key.src_port), (key.dst_addr, key.dst_port), 0),
            PROTO_ICMP | PROTO_ICMPV6 => {
                let icmp_type = (key.dst_port >> 8) as u8;
                if is_icmp_query(key.protocol, icmp_type) {
                    let id = key.src_port;
                    (
                        (key.src_addr, id),
                        (key.dst_addr, id),
                        u16::from(query_family(key.protocol, icmp_type)),
                    )
                } else {
                    ((key.src_addr, 0), (key.dst_addr, 0), key.dst_port)
                }
            }
            _ => ((key.src_addr, 0), (key.dst_addr, 0), 0),
        };
        let (low, high) = if src <= dst { (src, dst) } else { (dst, src) };
        ConnKey {
            ifindex: key.ifindex,
            protocol: key.protocol,
            low,
            high,
            icmp_class,
        }
    }
}

/// The request type of an ICMP request/reply pair.
fn query_family(protocol: u8, icmp_type: u8) -> u8 {
    match (protocol, icmp_type) {
        (PROTO_ICMP, 0) => 8,
        (PROTO_ICMP, 14) => 13,
        (PROTO_ICMP, 16) => 15,
        (PROTO_ICMPV6, 129) => 128,
        (_, t) => t,
    }
}

fn is_icmp_request(protocol: u8, icmp_type: u8) -> bool {
    matches!((protocol, icmp_type), (PROTO_ICMP, 8 | 13 | 15) | (PROTO_ICMPV6, 128))
}

fn source(key: &FlowKey) -> Endpoint {
    (key.src_addr, key.src_port)
}

fn destination(key: &FlowKey) -> Endpoint {
    (key.dst_addr, key.dst_port)
}

/// Directions one connection can have on one interface: two endpoints,
/// each seen on the ingress and the egress hook.
const MAX_DIRECTIONS: usize = 4;

/// Kept per connection, for hundreds of thousands of them: small and with
/// no heap allocation.
#[derive(Default)]
pub struct Connection {
    /// The endpoint that opened the connection; `None` while unknown.
    initiator: Option<Endpoint>,
    /// Which endpoints sent a FIN: bit 0 the lower, bit 1 the higher (in
    /// [`ConnKey`] order).
    fin_from: u8,
    pub closed_since: Option<u64>,
    /// The open flow directions of this connection.
    keys: [FlowKey; MAX_DIRECTIONS],
    key_count: u8,
}

impl Connection {
    /// Decides the initiator from a direction's first packets, unless known:
    /// TCP by who sent the SYN (a SYN-ACK names the other side); ICMP
    /// queries by request versus reply; anything else, the first seen.
    /// A TCP connection already running when capture began stays unknown.
    pub fn learn_initiator(&mut self, key: &FlowKey, first_packet_flags: Option<u16>) {
        if self.initiator.is_some() {
            return;
        }
        self.initiator = match key.protocol {
            PROTO_TCP => {
                let flags = first_packet_flags.unwrap_or(0);
                if flags & tcp_flags::SYN == 0 {
                    None
                } else if flags & tcp_flags::ACK == 0 {
                    Some(source(key))
                } else {
                    Some(destination(key))
                }
            }
            PROTO_ICMP | PROTO_ICMPV6 => {
                let icmp_type = (key.dst_port >> 8) as u8;
                if !is_icmp_query(key.protocol, icmp_type) || is_icmp_request(key.protocol, icmp_type) {
                    Some((key.src_addr, key.src_port))
                } else {
                    // A reply: the initiator is the other address, same id.
                    Some((key.dst_addr, key.src_port))
                }
            }
            _ => Some(source(key)),
        };
    }

    pub fn keys(&self) -> &[FlowKey] {
        &self.keys[..usize::from(self.key_count)]
    }

    pub fn add_key(&mut self, key: &FlowKey) {
        if !self.keys().contains(key) && usize::from(self.key_count) < MAX_DIRECTIONS {
            self.keys[usize::from(self.key_count)] = *key;
            self.key_count += 1;
        }
    }

    pub fn remove_key(&mut self, key: &FlowKey) {
        if let Some(i) = self.keys().iter().position(|k| k == key) {
            let last = usize::from(self.key_count) - 1;
            self.keys.swap(i, last);
            self.key_count -= 1;
        }
    }

    pub fn is_reply(&self, key: &FlowKey) -> Option<bool> {
        self.initiator.map(|init| (key.src_addr, key.src_port) != init)
    }

    /// A connection is closed by RST, or once both endpoints sent a FIN.
    pub fn note_close_flags(&mut self, key: &FlowKey, flags: u16, now_ns: u64) {
        if flags & tcp_flags::FIN != 0 {
            let src = source(key);
            let dst = destination(key);
            self.fin_from |= if src <= dst { 1 } else { 2 };
        }
        let closed = flags & tcp_flags::RST != 0 || self.fin_from == 3;
        if closed && self.closed_since.is_none() {
            self.closed_since = Some(now_ns);
        }
    }
}
