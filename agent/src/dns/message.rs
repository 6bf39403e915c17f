//! What a DNS message says, as Hubble's L7 DNS record needs it, decoded
//! with hickory-proto from bytes nobody vouches for.
//!
//! A message may be cut short (the kernel hands over at most
//! `DNS_CAPTURE_BYTES`, and a TCP answer may span segments): the header and
//! the question must be whole, the answers are read up to the last complete
//! record. Anything else that does not decode is [`Malformed`].

use std::net::IpAddr;

use hickory_proto::{
    op::{Header, MessageType, Query},
    rr::{RData, Record},
    serialize::binary::{BinDecodable, BinDecoder},
};

/// A message that is not DNS, or too broken to say what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a DNS message: {0}")]
pub struct Malformed(pub String);

/// One DNS message, reduced to what records and metrics use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub is_response: bool,
    /// The header's 4-bit RCODE (EDNS's extended bits are not read).
    pub rcode: u16,
    /// The first question's name, with its final dot (`example.com.`), as
    /// Hubble writes `query`; empty for a message without a question.
    pub query: String,
    /// Every question's type (`A`, `AAAA`, ...).
    pub qtypes: Vec<String>,
    /// Addresses in A and AAAA answers, in order.
    pub ips: Vec<IpAddr>,
    /// Targets of CNAME answers, in order.
    pub cnames: Vec<String>,
    /// Each answer's type, in order.
    pub rrtypes: Vec<String>,
    /// The smallest TTL among the answers (0 without answers).
    pub ttl: u32,
    /// Answers announced by the header that could not be read (the
    /// message was cut short).
    pub answers_missing: u16,
}

impl DnsMessage {
    /// Decodes one message (without TCP's length prefix).
    pub fn parse(bytes: &[u8]) -> Result<DnsMessage, Malformed> {
        let mut decoder = BinDecoder::new(bytes);
        let header = Header::read(&mut decoder).map_err(|e| Malformed(format!("header: {e}")))?;
        let mut message = DnsMessage {
            id: header.id(),
            is_response: header.message_type() == MessageType::Response,
            rcode: u16::from(header.response_code().low()),
            ..DnsMessage::default()
        };
        for i in 0..header.query_count() {
            let question = Query::read(&mut decoder).map_err(|e| Malformed(format!("question: {e}")))?;
            if i == 0 {
                message.query = question.name().to_string();
            }
            message.qtypes.push(question.query_type().to_string());
        }
        let mut ttl: Option<u32> = None;
        for read in 0..header.answer_count() {
            // A record cut short ends the answers: what was read stands.
            let Ok(record) = Record::<RData>::read(&mut decoder) else {
                message.answers_missing = header.answer_count() - read;
                break;
            };
            message.rrtypes.push(record.record_type().to_string());
            ttl = Some(ttl.map_or(record.ttl(), |t| t.min(record.ttl())));
            match record.data() {
                RData::A(a) => message.ips.push(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => message.ips.push(IpAddr::V6(aaaa.0)),
                RData::CNAME(cname) => message.cnames.push(cname.0.to_string()),
                _ => {}
            }
        }
        message.ttl = ttl.unwrap_or(0);
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::{
        op::{Message, ResponseCode},
        rr::{
            Name, RecordType,
            rdata::{A, AAAA, CNAME, TXT},
        },
    };

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn query(id: u16, qname: &str, qtype: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_recursion_desired(true);
        m.add_query(Query::query(name(qname), qtype));
        m
    }

    fn answer_to(q: &Message, records: Vec<Record>) -> Message {
        let mut m = q.clone();
        m.set_message_type(MessageType::Response);
        m.add_answers(records);
        m
    }

    fn bytes(m: &Message) -> Vec<u8> {
        m.to_vec().unwrap()
    }

    #[test]
    fn a_query_says_its_id_name_and_type() {
        let parsed = DnsMessage::parse(&bytes(&query(0x1234, "example.com.", RecordType::AAAA))).unwrap();
        assert_eq!(parsed.id, 0x1234);
        assert!(!parsed.is_response);
        assert_eq!(parsed.query, "example.com.");
        assert_eq!(parsed.qtypes, ["AAAA"]);
        assert!(parsed.ips.is_empty() && parsed.rrtypes.is_empty());
    }

    #[test]
    fn an_answer_lists_addresses_cnames_types_and_the_smallest_ttl() {
        let q = query(7, "www.example.com.", RecordType::A);
        let records = vec![
            Record::from_rdata(
                name("www.example.com."),
                300,
                RData::CNAME(CNAME(name("web.example.net."))),
            ),
            Record::from_rdata(name("web.example.net."), 60, RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))),
            Record::from_rdata(name("web.example.net."), 90, RData::A(A(Ipv4Addr::new(192, 0, 2, 2)))),
            Record::from_rdata(name("web.example.net."), 90, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
        ];
        let parsed = DnsMessage::parse(&bytes(&answer_to(&q, records))).unwrap();
        assert!(parsed.is_response);
        assert_eq!(parsed.rcode, 0);
        assert_eq!(parsed.cnames, ["web.example.net."]);
        assert_eq!(
            parsed.ips,
            [
                IpAddr::from([192, 0, 2, 1]),
                IpAddr::from([192, 0, 2, 2]),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
        assert_eq!(parsed.rrtypes, ["CNAME", "A", "A", "AAAA"]);
        assert_eq!(parsed.ttl, 60);
        assert_eq!(parsed.answers_missing, 0);
    }

    #[test]
    fn an_error_answer_carries_its_rcode() {
        let mut m = answer_to(&query(9, "nope.example.", RecordType::A), vec![]);
        m.set_response_code(ResponseCode::NXDomain);
        let parsed = DnsMessage::parse(&bytes(&m)).unwrap();
        assert_eq!((parsed.rcode, parsed.ttl), (3, 0));
        m.set_response_code(ResponseCode::ServFail);
        assert_eq!(DnsMessage::parse(&bytes(&m)).unwrap().rcode, 2);
    }

    #[test]
    fn a_cut_answer_keeps_the_records_that_are_whole() {
        let q = query(11, "big.example.", RecordType::TXT);
        let records = (0..20)
            .map(|i| {
                Record::from_rdata(
                    name("big.example."),
                    30,
                    RData::TXT(TXT::new(vec![format!("{i:0>200}")])),
                )
            })
            .collect();
        let whole = bytes(&answer_to(&q, records));
        let cut = &whole[..agent_common::DNS_CAPTURE_BYTES];
        let parsed = DnsMessage::parse(cut).unwrap();
        assert_eq!(parsed.query, "big.example.");
        assert!(!parsed.rrtypes.is_empty() && parsed.rrtypes.len() < 20);
        assert_eq!(usize::from(parsed.answers_missing) + parsed.rrtypes.len(), 20);
    }

    #[test]
    fn garbage_and_cut_headers_are_malformed_not_panics() {
        assert!(DnsMessage::parse(&[]).is_err());
        assert!(DnsMessage::parse(&[0; 11]).is_err());
        // A question count with no question behind it.
        let mut header = [0u8; 12];
        header[5] = 1;
        assert!(DnsMessage::parse(&header).is_err());
        // A name whose compression pointer points at itself.
        let mut looped = header.to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(DnsMessage::parse(&looped).is_err());
        for seed in 0..2000u32 {
            let noise: Vec<u8> = (0..64)
                .map(|i| (seed.wrapping_mul(2654435761).rotate_left(i) & 0xff) as u8)
                .collect();
            let _ = DnsMessage::parse(&noise);
        }
    }
}
