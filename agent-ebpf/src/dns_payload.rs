//! Which packets' payloads go to user space as DNS, and how much of them:
//! the one rule the tc programs (`src/dns.rs`, which copies it) and the
//! kernel fuzzer's host model both apply.

use agent_common::{DNS_CAPTURE_BYTES, DNS_PORT, ip_proto};

use crate::parse::ParsedPacket;

/// The part of a packet to hand over as DNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsPayload {
    /// Where the L4 payload starts in the packet.
    pub offset: u16,
    /// Its length on the wire.
    pub len: u32,
    /// How much of it to copy: at most [`DNS_CAPTURE_BYTES`], never 0.
    pub captured: u32,
}

/// TCP or UDP to or from port 53 with a payload (a TCP segment without
/// data, SYN, ACK or FIN, carries no message). Ports first: for every
/// other packet this is one comparison pair.
#[inline(always)]
pub fn dns_payload(packet: &ParsedPacket) -> Option<DnsPayload> {
    if packet.src_port != DNS_PORT && packet.dst_port != DNS_PORT {
        return None;
    }
    if packet.protocol != ip_proto::UDP && packet.protocol != ip_proto::TCP {
        return None;
    }
    let len = u32::from(packet.payload_len);
    if len == 0 {
        return None;
    }
    Some(DnsPayload {
        offset: packet.payload_offset,
        len,
        captured: len.min(DNS_CAPTURE_BYTES as u32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(protocol: u8, src_port: u16, dst_port: u16, payload_len: u16) -> ParsedPacket {
        ParsedPacket {
            protocol,
            src_port,
            dst_port,
            payload_offset: 42,
            payload_len,
            ..Default::default()
        }
    }

    #[test]
    fn udp_and_tcp_to_or_from_port_53_with_a_payload_are_handed_over() {
        for (protocol, src, dst) in [(ip_proto::UDP, 40000, 53), (ip_proto::TCP, 53, 40000)] {
            assert_eq!(
                dns_payload(&packet(protocol, src, dst, 60)),
                Some(DnsPayload {
                    offset: 42,
                    len: 60,
                    captured: 60
                })
            );
        }
    }

    #[test]
    fn a_long_payload_is_cut_to_the_capture_size() {
        let p = dns_payload(&packet(ip_proto::TCP, 53, 40000, 4000)).unwrap();
        assert_eq!((p.len, p.captured), (4000, DNS_CAPTURE_BYTES as u32));
    }

    #[test]
    fn other_ports_protocols_and_empty_segments_are_not() {
        assert_eq!(dns_payload(&packet(ip_proto::UDP, 40000, 5353, 60)), None);
        assert_eq!(dns_payload(&packet(ip_proto::SCTP, 40000, 53, 60)), None);
        assert_eq!(dns_payload(&packet(ip_proto::TCP, 40000, 53, 0)), None);
    }
}
