//! From a packet's payload to the DNS messages in it.
//!
//! Over UDP a datagram is one message. Over TCP every message starts with
//! its 2-byte length (RFC 1035 4.2.2); a segment may hold several
//! messages, or the middle of one. Each observation point's byte stream
//! (flow key with interface and hook) remembers how much of a message is
//! still to come, so that a continuation segment is skipped instead of
//! being read as a message.

use std::collections::HashMap;

use agent_common::{FlowKey, ip_proto};

use super::{
    DnsPacket,
    message::{DnsMessage, Malformed},
};

/// Streams followed at most; beyond that a stream's continuation is not
/// known and its next segment is read as if it started a message (a
/// malformed one, counted).
const MAX_STREAMS: usize = 16_384;
/// A stream waiting this long for the rest of a message is forgotten.
const STREAM_IDLE_NS: u64 = 30_000_000_000;

#[derive(Default)]
pub struct Framing {
    /// Per TCP stream: bytes of the current message still to come, and
    /// when the stream was last seen.
    pending: HashMap<FlowKey, (usize, u64)>,
}

impl Framing {
    /// The messages in `packet`, each decoded or not.
    pub fn messages(&mut self, packet: &DnsPacket) -> Vec<Result<DnsMessage, Malformed>> {
        if packet.key.protocol != ip_proto::TCP {
            return vec![DnsMessage::parse(&packet.bytes)];
        }
        let total = packet.payload_len as usize;
        let mut pos = match self.pending.remove(&packet.key) {
            Some((rest, _)) if rest >= total => {
                self.remember(packet, rest - total);
                return Vec::new();
            }
            Some((rest, _)) => rest,
            None => 0,
        };
        let captured = packet.bytes.len();
        let mut messages = Vec::new();
        while pos + 2 <= total {
            if pos + 2 > captured {
                // The rest was not captured: where messages start in it is
                // not known, so the stream is followed no further.
                return messages;
            }
            let len = usize::from(u16::from_be_bytes([packet.bytes[pos], packet.bytes[pos + 1]]));
            let start = pos + 2;
            let end = start + len;
            if start < captured {
                messages.push(DnsMessage::parse(&packet.bytes[start..end.min(captured)]));
            }
            pos = end;
        }
        if pos > total {
            self.remember(packet, pos - total);
        }
        messages
    }

    fn remember(&mut self, packet: &DnsPacket, rest: usize) {
        if self.pending.len() < MAX_STREAMS {
            self.pending.insert(packet.key, (rest, packet.time_ns));
        }
    }

    /// Forgets streams idle since before `now_ns - STREAM_IDLE_NS`.
    pub fn expire(&mut self, now_ns: u64) {
        self.pending
            .retain(|_, (_, seen)| now_ns.saturating_sub(*seen) < STREAM_IDLE_NS);
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Message, MessageType, Query},
        rr::{Name, RecordType},
    };

    use super::*;

    fn message(id: u16) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id).set_message_type(MessageType::Query);
        m.add_query(Query::query(Name::from_ascii("example.com.").unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn packet(protocol: u8, bytes: Vec<u8>, payload_len: usize) -> DnsPacket {
        DnsPacket {
            key: FlowKey {
                protocol,
                ..Default::default()
            },
            time_ns: 1,
            payload_len: payload_len as u32,
            bytes,
        }
    }

    fn ids(messages: Vec<Result<DnsMessage, Malformed>>) -> Vec<u16> {
        messages.into_iter().map(|m| m.unwrap().id).collect()
    }

    #[test]
    fn a_udp_datagram_is_one_message() {
        let bytes = message(5);
        let n = bytes.len();
        assert_eq!(ids(Framing::default().messages(&packet(ip_proto::UDP, bytes, n))), [5]);
    }

    #[test]
    fn a_tcp_segment_may_hold_several_messages() {
        let mut bytes = framed(&message(1));
        bytes.extend(framed(&message(2)));
        let n = bytes.len();
        assert_eq!(
            ids(Framing::default().messages(&packet(ip_proto::TCP, bytes, n))),
            [1, 2]
        );
    }

    #[test]
    fn a_continuation_segment_is_skipped_and_the_next_message_read() {
        let mut framing = Framing::default();
        let first = framed(&message(1));
        let (head, tail) = first.split_at(10);
        assert!(
            framing
                .messages(&packet(ip_proto::TCP, head.to_vec(), head.len()))
                .len()
                == 1
        );
        let mut second = tail.to_vec();
        second.extend(framed(&message(2)));
        let n = second.len();
        assert_eq!(ids(framing.messages(&packet(ip_proto::TCP, second, n))), [2]);
        assert!(framing.pending.is_empty());
    }

    #[test]
    fn a_lying_length_prefix_does_not_read_past_the_capture() {
        let mut bytes = vec![0xff, 0xff];
        bytes.extend(message(3));
        let n = bytes.len();
        let messages = Framing::default().messages(&packet(ip_proto::TCP, bytes, n));
        assert_eq!(messages.len(), 1);
    }
}
