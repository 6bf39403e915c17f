//! IPFIX messages (RFC 7011): a header, an optional template set, and one
//! data set of flow records, each message at most [`MAX_MESSAGE`] bytes so
//! that it fits one UDP datagram on any path.

use agent_common::{hook, tcp_flags};

use crate::{flow_table::FlowState, record::RecordSource};

/// Fits a 1,500-byte MTU with IP and UDP headers.
pub const MAX_MESSAGE: usize = 1400;
const VERSION: u16 = 10;
const HEADER: usize = 16;
const SET_HEADER: usize = 4;
const TEMPLATE_SET_ID: u16 = 2;
pub const IPV4_TEMPLATE: u16 = 256;
pub const IPV6_TEMPLATE: u16 = 257;

/// Information elements (IANA number, length), in record order; the
/// addresses and the ICMP element differ by IP version.
fn fields(ipv6: bool) -> [(u16, u16); 18] {
    let (src, dst, icmp, addr_len) = if ipv6 { (27, 28, 139, 16) } else { (8, 12, 32, 4) };
    [
        (src, addr_len), // sourceIPv{4,6}Address
        (dst, addr_len), // destinationIPv{4,6}Address
        (7, 2),          // sourceTransportPort
        (11, 2),         // destinationTransportPort
        (4, 1),          // protocolIdentifier
        (6, 2),          // tcpControlBits
        (1, 8),          // octetDeltaCount
        (2, 8),          // packetDeltaCount
        (152, 8),        // flowStartMilliseconds
        (153, 8),        // flowEndMilliseconds
        (10, 4),         // ingressInterface
        (14, 4),         // egressInterface
        (61, 1),         // flowDirection (0 ingress, 1 egress)
        (136, 1),        // flowEndReason
        (89, 1),         // forwardingStatus
        (56, 6),         // sourceMacAddress
        (80, 6),         // destinationMacAddress
        (icmp, 2),       // icmpTypeCode{IPv4,IPv6}
    ]
}

pub fn record_len(ipv6: bool) -> usize {
    fields(ipv6).iter().map(|(_, len)| *len as usize).sum()
}

/// Both templates, as one template set.
pub fn template_set() -> Vec<u8> {
    let mut set = Vec::new();
    set.extend(TEMPLATE_SET_ID.to_be_bytes());
    set.extend([0, 0]);
    for (id, ipv6) in [(IPV4_TEMPLATE, false), (IPV6_TEMPLATE, true)] {
        let fields = fields(ipv6);
        set.extend(id.to_be_bytes());
        set.extend((fields.len() as u16).to_be_bytes());
        for (element, len) in fields {
            set.extend(element.to_be_bytes());
            set.extend(len.to_be_bytes());
        }
    }
    let len = set.len() as u16;
    set[2..4].copy_from_slice(&len.to_be_bytes());
    set
}

fn millis(t: &prost_types::Timestamp) -> u64 {
    (t.seconds.max(0) as u64) * 1000 + (t.nanos.max(0) as u64) / 1_000_000
}

/// RFC 5102's flowEndReason: active timeout for records of a flow that
/// goes on, end of flow detected for a closed TCP connection, else idle.
fn end_reason(source: &RecordSource) -> u8 {
    let update = &source.update;
    match update.state {
        FlowState::Begin | FlowState::Continuing => 0x02,
        FlowState::End if update.stats.tcp_flags_seen & (tcp_flags::FIN | tcp_flags::RST) != 0 => 0x03,
        FlowState::End => 0x01,
    }
}

/// Appends one data record of `source` (in its template's layout).
pub fn encode_record(out: &mut Vec<u8>, source: &RecordSource) {
    let update = &source.update;
    let key = &update.key;
    let ipv6 = key.ip_version == 6;
    let addr_len = if ipv6 { 16 } else { 4 };
    out.extend(&key.src_addr[..addr_len]);
    out.extend(&key.dst_addr[..addr_len]);
    // For ICMP the key holds the echo id and the type and code, which go
    // in their own element.
    let (sport, dport) = key.ports().unwrap_or((0, 0));
    out.extend(sport.to_be_bytes());
    out.extend(dport.to_be_bytes());
    out.push(key.protocol);
    out.extend(update.tcp_flags.to_be_bytes());
    out.extend(update.bytes.to_be_bytes());
    out.extend(update.packets.to_be_bytes());
    out.extend(millis(&source.flow_start_time).to_be_bytes());
    out.extend(millis(&source.time).to_be_bytes());
    let (ingress, egress, direction) = match key.hook {
        hook::INGRESS => (key.ifindex, 0, 0),
        hook::EGRESS => (0, key.ifindex, 1),
        _ => (0, 0, 0),
    };
    out.extend(ingress.to_be_bytes());
    out.extend(egress.to_be_bytes());
    out.push(direction);
    out.push(end_reason(source));
    // RFC 7270: 0b01 forwarded, 0b10 dropped (status in the top two bits).
    out.push(if key.hook == hook::DROP { 0x80 } else { 0x40 });
    out.extend(update.stats.src_mac);
    out.extend(update.stats.dst_mac);
    let type_code = key.icmp_type_code().map_or(0, |(t, c)| u16::from_be_bytes([t, c]));
    out.extend(type_code.to_be_bytes());
}

/// Builds messages of one observation domain; the sequence number counts
/// the data records sent before each message, as RFC 7011 has it.
pub struct MessageBuilder {
    domain: u32,
    sequence: u32,
    /// The message being filled: header and sets; `data_start` where its
    /// open data set begins, and that set's template.
    current: Vec<u8>,
    open_set: Option<(usize, u16)>,
    records_in_message: u32,
    templates_due: bool,
    done: Vec<Vec<u8>>,
}

impl MessageBuilder {
    pub fn new(domain: u32) -> Self {
        MessageBuilder {
            domain,
            sequence: 0,
            current: Vec::new(),
            open_set: None,
            records_in_message: 0,
            templates_due: true,
            done: Vec::new(),
        }
    }

    /// The next message starts with the templates (UDP collectors learn
    /// them again, or for the first time after a restart).
    pub fn refresh_templates(&mut self) {
        self.templates_due = true;
    }

    pub fn add(&mut self, source: &RecordSource) {
        let ipv6 = source.update.key.ip_version == 6;
        let template = if ipv6 { IPV6_TEMPLATE } else { IPV4_TEMPLATE };
        let len = record_len(ipv6);
        let same_set = self.open_set.is_some_and(|(_, t)| t == template);
        let needed = len + if same_set { 0 } else { SET_HEADER };
        if !self.current.is_empty() && self.current.len() + needed > MAX_MESSAGE {
            self.finish_message();
        }
        if self.current.is_empty() {
            self.start_message();
        }
        if self.open_set.is_none_or(|(_, t)| t != template) {
            self.close_set();
            self.open_set = Some((self.current.len(), template));
            self.current.extend(template.to_be_bytes());
            self.current.extend([0, 0]);
        }
        encode_record(&mut self.current, source);
        self.records_in_message += 1;
    }

    fn start_message(&mut self) {
        self.current.extend([0; HEADER]);
        if self.templates_due {
            self.current.extend(template_set());
            self.templates_due = false;
        }
    }

    fn close_set(&mut self) {
        if let Some((start, _)) = self.open_set.take() {
            let len = (self.current.len() - start) as u16;
            self.current[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    fn finish_message(&mut self) {
        if self.current.is_empty() {
            return;
        }
        self.close_set();
        let export_time = crate::clock::WallClock::now_timestamp().seconds as u32;
        let len = self.current.len() as u16;
        let header = &mut self.current[..HEADER];
        header[0..2].copy_from_slice(&VERSION.to_be_bytes());
        header[2..4].copy_from_slice(&len.to_be_bytes());
        header[4..8].copy_from_slice(&export_time.to_be_bytes());
        header[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        header[12..16].copy_from_slice(&self.domain.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(self.records_in_message);
        self.records_in_message = 0;
        self.done.push(std::mem::take(&mut self.current));
    }

    /// The finished messages (the open one is finished first). A message
    /// with only templates is sent when they are due and nothing else is.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        if self.current.is_empty() && self.templates_due && self.done.is_empty() {
            self.start_message();
        }
        self.finish_message();
        std::mem::take(&mut self.done)
    }
}

/// A message of the templates alone, for the start of a TCP connection.
pub fn templates_message(domain: u32) -> Vec<u8> {
    let mut b = MessageBuilder::new(domain);
    b.take().pop().expect("a message of templates")
}

/// How many data records a finished message holds.
pub fn records_in(message: &[u8]) -> u64 {
    let mut count = 0;
    let mut at = HEADER;
    while at + SET_HEADER <= message.len() {
        let id = u16::from_be_bytes([message[at], message[at + 1]]);
        let len = u16::from_be_bytes([message[at + 2], message[at + 3]]) as usize;
        if len < SET_HEADER {
            break;
        }
        if id >= IPV4_TEMPLATE {
            count += ((len - SET_HEADER) / record_len(id == IPV6_TEMPLATE)) as u64;
        }
        at += len;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::ip_proto;

    use crate::flow_table::FlowUpdate;

    fn source(ipv6: bool, packets: u64) -> RecordSource {
        let mut key = agent_common::FlowKey {
            ip_version: if ipv6 { 6 } else { 4 },
            protocol: ip_proto::UDP,
            src_port: 40000,
            dst_port: 53,
            ifindex: 7,
            hook: hook::EGRESS,
            ..Default::default()
        };
        key.src_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        key.dst_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        RecordSource {
            update: FlowUpdate {
                key,
                stats: Default::default(),
                packets,
                bytes: packets * 100,
                tcp_flags: 0,
                state: FlowState::Begin,
                is_reply: None,
            },
            uuid: 0,
            time: Default::default(),
            flow_start_time: Default::default(),
            interface: None,
            identities: Default::default(),
        }
    }

    /// (set id, set length) of each set of a message.
    fn sets(message: &[u8]) -> Vec<(u16, usize)> {
        let mut out = Vec::new();
        let mut at = HEADER;
        while at < message.len() {
            let id = u16::from_be_bytes([message[at], message[at + 1]]);
            let len = u16::from_be_bytes([message[at + 2], message[at + 3]]) as usize;
            out.push((id, len));
            at += len;
        }
        assert_eq!(at, message.len(), "sets fill the message exactly");
        out
    }

    #[test]
    fn messages_carry_templates_first_and_count_records() {
        let mut b = MessageBuilder::new(42);
        for i in 0..40 {
            b.add(&source(i % 10 == 9, i + 1));
        }
        let messages = b.take();
        assert!(messages.len() >= 2, "40 records of 72-96 bytes need several messages");
        let mut sequence = 0;
        for (n, m) in messages.iter().enumerate() {
            assert!(m.len() <= MAX_MESSAGE);
            assert_eq!(u16::from_be_bytes([m[0], m[1]]), 10);
            assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len());
            assert_eq!(u32::from_be_bytes(m[8..12].try_into().unwrap()), sequence);
            assert_eq!(u32::from_be_bytes(m[12..16].try_into().unwrap()), 42);
            let sets = sets(m);
            assert_eq!(
                sets[0].0 == TEMPLATE_SET_ID,
                n == 0,
                "templates in the first message only"
            );
            for (id, len) in sets.iter().filter(|(id, _)| *id != TEMPLATE_SET_ID) {
                let record = record_len(*id == IPV6_TEMPLATE);
                assert_eq!((len - SET_HEADER) % record, 0);
                sequence += ((len - SET_HEADER) / record) as u32;
            }
        }
        assert_eq!(sequence, 40);
        b.refresh_templates();
        let again = b.take();
        assert_eq!(
            sets(&again[0]),
            [(TEMPLATE_SET_ID, template_set().len())],
            "templates alone"
        );
    }

    #[test]
    fn a_record_has_the_template_s_layout() {
        let mut out = Vec::new();
        encode_record(&mut out, &source(false, 3));
        assert_eq!(out.len(), record_len(false));
        assert_eq!(&out[..8], &[10, 0, 0, 1, 10, 0, 0, 2]);
        assert_eq!(u16::from_be_bytes([out[10], out[11]]), 53);
        assert_eq!(out[12], ip_proto::UDP);
        assert_eq!(u64::from_be_bytes(out[15..23].try_into().unwrap()), 300, "octets");
        assert_eq!(u64::from_be_bytes(out[23..31].try_into().unwrap()), 3, "packets");
        assert_eq!(
            u32::from_be_bytes(out[51..55].try_into().unwrap()),
            7,
            "egress interface"
        );
        assert_eq!(out[55], 1, "egress");
    }
}
