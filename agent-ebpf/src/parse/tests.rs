//! Parser tests on real packet bytes built by etherparse, plus hand-made
//! malformed and truncated packets.

use etherparse::{IpNumber, Ipv4Header, Ipv6FragmentHeader, Ipv6RawExtHeader, PacketBuilder, VlanId};

use super::*;

const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const V4_SRC: [u8; 4] = [10, 0, 0, 1];
const V4_DST: [u8; 4] = [10, 0, 0, 2];
const V6_SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&a);
    out
}

fn parsed(bytes: &[u8]) -> Result<ParsedPacket, ParseError> {
    let mut slot = std::mem::MaybeUninit::uninit();
    let out = ParsedPacket::zero_in(&mut slot);
    assert_eq!(*out, ParsedPacket::default());
    parse(bytes, out).map(|()| *out)
}

/// Ethernet + IPv4 + `proto` header bytes given by the caller.
fn ipv4_with(proto: IpNumber, l4: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(V4_SRC, V4_DST, 64)
        .write(&mut bytes, proto, l4)
        .unwrap();
    bytes
}

/// Ethernet + IPv6 whose first next-header is `next`, then `rest`.
fn ipv6_with(next: IpNumber, rest: &[u8]) -> Vec<u8> {
    // etherparse would validate extension headers it is handed; write an
    // experimental protocol number (253) and patch the real one in.
    let mut bytes = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(V6_SRC, V6_DST, 64)
        .write(&mut bytes, IpNumber(253), rest)
        .unwrap();
    bytes[14 + 6] = next.0;
    bytes
}

fn tcp_header(configure: impl FnOnce(&mut etherparse::TcpHeader)) -> Vec<u8> {
    let mut tcp = etherparse::TcpHeader::new(40000, 80, 1, 65535);
    configure(&mut tcp);
    let mut bytes = tcp.to_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    bytes
}

fn tcp_v4(configure: impl FnOnce(&mut etherparse::TcpHeader)) -> Vec<u8> {
    ipv4_with(IpNumber::TCP, &tcp_header(configure))
}

#[test]
fn tcp_over_ipv4_gives_five_tuple_macs_and_flags() {
    let p = parsed(&tcp_v4(|t| {
        t.syn = true;
        t.ack = true;
    }))
    .unwrap();
    assert_eq!((p.src_addr, p.dst_addr), (v4(V4_SRC), v4(V4_DST)));
    assert_eq!(
        (p.src_port, p.dst_port, p.protocol, p.ip_version),
        (40000, 80, ip_proto::TCP, 4)
    );
    assert_eq!(p.tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
    assert_eq!(p.note, Note::None);
}

#[test]
fn macs_are_read_from_the_ethernet_header() {
    let m = macs(tcp_v4(|_| {}).as_slice());
    assert_eq!((m.src, m.dst), (SRC_MAC, DST_MAC));
    assert_eq!(macs([0u8; 11].as_slice()), Macs::default(), "too short for both");
}

#[test]
fn all_nine_tcp_flags_are_read() {
    let mut bytes = tcp_v4(|t| {
        (t.fin, t.syn, t.rst, t.psh, t.ack, t.urg, t.ece, t.cwr, t.ns) =
            (true, true, true, true, true, true, true, true, true);
    });
    assert_eq!(parsed(&bytes).unwrap().tcp_flags, 0x1ff);
    let flags_byte = 14 + 20 + 13;
    for (bit, flag) in [
        (0x01, tcp_flags::FIN),
        (0x02, tcp_flags::SYN),
        (0x04, tcp_flags::RST),
        (0x08, tcp_flags::PSH),
        (0x10, tcp_flags::ACK),
        (0x20, tcp_flags::URG),
        (0x40, tcp_flags::ECE),
        (0x80, tcp_flags::CWR),
    ] {
        bytes[flags_byte - 1] = 0x50; // data offset 5, NS clear
        bytes[flags_byte] = bit;
        assert_eq!(parsed(&bytes).unwrap().tcp_flags, flag);
    }
    bytes[flags_byte - 1] = 0x51;
    bytes[flags_byte] = 0;
    assert_eq!(parsed(&bytes).unwrap().tcp_flags, tcp_flags::NS);
}

#[test]
fn ipv4_options_are_skipped_to_reach_ports() {
    let mut ip = Ipv4Header::new(8, 64, IpNumber::UDP, V4_SRC, V4_DST).unwrap();
    ip.options = [1u8, 1, 1, 0, 1, 1, 1, 0][..].try_into().unwrap(); // NOPs and EOLs: 8 bytes
    let mut bytes = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .udp(5353, 53)
        .write(&mut bytes, &[0u8; 4])
        .unwrap();
    assert_eq!(bytes[14] & 0x0f, 7, "IHL includes the options");
    let p = parsed(&bytes).unwrap();
    assert_eq!((p.src_port, p.dst_port, p.protocol), (5353, 53, ip_proto::UDP));
}

#[test]
fn vlan_and_qinq_tags_are_looked_through() {
    let mut bytes = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .single_vlan(VlanId::try_new(42).unwrap())
        .ipv4(V4_SRC, V4_DST, 64)
        .udp(1, 2)
        .write(&mut bytes, &[])
        .unwrap();
    let p = parsed(&bytes).unwrap();
    assert_eq!((p.src_port, p.dst_port), (1, 2));

    let mut bytes = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .double_vlan(VlanId::try_new(100).unwrap(), VlanId::try_new(200).unwrap())
        .ipv6(V6_SRC, V6_DST, 64)
        .udp(3, 4)
        .write(&mut bytes, &[])
        .unwrap();
    // Make the outer tag 802.1ad, as a provider bridge would.
    bytes[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    let p = parsed(&bytes).unwrap();
    assert_eq!(
        (p.ip_version, p.src_port, p.dst_port, p.protocol),
        (6, 3, 4, ip_proto::UDP)
    );
}

#[test]
fn udp_and_sctp_ports() {
    let p = parsed(&ipv4_with(
        IpNumber::UDP,
        &[0x04, 0xd2, 0x16, 0x2e, 0, 11, 0, 0, 9, 9, 9],
    ))
    .unwrap();
    assert_eq!(
        (p.src_port, p.dst_port, p.protocol, p.tcp_flags),
        (1234, 5678, ip_proto::UDP, 0)
    );

    // SCTP common header: ports, verification tag, checksum.
    let p = parsed(&ipv4_with(
        IpNumber::SCTP,
        &[0x0b, 0xb8, 0x0f, 0xa0, 0, 0, 0, 1, 0, 0, 0, 0],
    ))
    .unwrap();
    assert_eq!((p.src_port, p.dst_port, p.protocol), (3000, 4000, ip_proto::SCTP));
}

#[test]
fn icmp_carries_id_for_queries_and_type_code() {
    let mut bytes = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(V4_SRC, V4_DST, 64)
        .icmpv4_echo_request(0x1234, 7)
        .write(&mut bytes, &[0; 8])
        .unwrap();
    let p = parsed(&bytes).unwrap();
    assert_eq!((p.protocol, p.src_port, p.dst_port), (ip_proto::ICMP, 0x1234, 8 << 8));

    let mut bytes = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(V6_SRC, V6_DST, 64)
        .icmpv6_echo_reply(0x4321, 1)
        .write(&mut bytes, &[])
        .unwrap();
    let p = parsed(&bytes).unwrap();
    assert_eq!(
        (p.protocol, p.ip_version, p.src_port, p.dst_port),
        (ip_proto::ICMPV6, 6, 0x4321, 129 << 8)
    );

    // Destination unreachable, port unreachable (3/3): no identifier.
    let p = parsed(&ipv4_with(IpNumber::ICMP, &[3, 3, 0, 0, 0xaa, 0xbb, 0, 0])).unwrap();
    assert_eq!((p.src_port, p.dst_port), (0, (3 << 8) | 3));
}

#[test]
fn ipv6_extension_headers_are_walked_to_l4() {
    // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> TCP.
    let hop = Ipv6RawExtHeader::new_raw(IpNumber::IPV6_DESTINATION_OPTIONS, &[1, 4, 0, 0, 0, 0]).unwrap();
    let dst = Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    let mut rest = Vec::new();
    rest.extend_from_slice(&hop.to_bytes());
    rest.extend_from_slice(&dst.to_bytes());
    assert_eq!(rest.len(), 24);
    rest.extend_from_slice(&tcp_header(|t| {
        (t.source_port, t.destination_port, t.fin, t.ack) = (443, 50000, true, true);
    }));
    let p = parsed(&ipv6_with(IpNumber::IPV6_HEADER_HOP_BY_HOP, &rest)).unwrap();
    assert_eq!((p.src_addr, p.dst_addr), (V6_SRC, V6_DST));
    assert_eq!((p.protocol, p.src_port, p.dst_port), (ip_proto::TCP, 443, 50000));
    assert_eq!(p.tcp_flags, tcp_flags::FIN | tcp_flags::ACK);
}

#[test]
fn fragments_keep_ports_only_in_the_first() {
    // IPv4: a non-first fragment (offset 185 * 8 bytes) of a UDP datagram.
    let mut bytes = ipv4_with(IpNumber::UDP, &[0, 1, 0, 2, 0, 8, 0, 0]);
    bytes[14 + 6..14 + 8].copy_from_slice(&185u16.to_be_bytes());
    let p = parsed(&bytes).unwrap();
    assert_eq!(
        (p.note, p.src_port, p.dst_port, p.protocol),
        (Note::Fragment, 0, 0, ip_proto::UDP)
    );

    // IPv4 first fragment (more-fragments set, offset 0) still has ports.
    bytes[14 + 6..14 + 8].copy_from_slice(&0x2000u16.to_be_bytes());
    let p = parsed(&bytes).unwrap();
    assert_eq!((p.note, p.src_port, p.dst_port), (Note::None, 1, 2));

    // IPv6: fragment header with offset 100.
    let frag = Ipv6FragmentHeader::new(IpNumber::UDP, etherparse::IpFragOffset::try_new(100).unwrap(), false, 7);
    let mut rest = frag.to_bytes().to_vec();
    rest.extend_from_slice(&[0; 16]);
    let p = parsed(&ipv6_with(IpNumber::IPV6_FRAGMENTATION_HEADER, &rest)).unwrap();
    assert_eq!((p.note, p.protocol, p.src_port), (Note::Fragment, ip_proto::UDP, 0));

    // IPv6 first fragment: ports are read behind the fragment header.
    let frag = Ipv6FragmentHeader::new(IpNumber::UDP, etherparse::IpFragOffset::ZERO, true, 7);
    let mut rest = frag.to_bytes().to_vec();
    rest.extend_from_slice(&[0x00, 0x35, 0x00, 0x36, 0, 8, 0, 0]);
    let p = parsed(&ipv6_with(IpNumber::IPV6_FRAGMENTATION_HEADER, &rest)).unwrap();
    assert_eq!(
        (p.note, p.protocol, p.src_port, p.dst_port),
        (Note::None, ip_proto::UDP, 53, 54)
    );
}

#[test]
fn non_ip_is_reported_as_such() {
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(parsed(&arp), Err(ParseError::NonIp));
}

#[test]
fn every_prefix_of_a_packet_is_classified_without_panicking() {
    let full = tcp_v4(|t| t.syn = true);
    for len in 0..full.len() {
        let result = parsed(&full[..len]);
        match len {
            // Ethernet or IPv4 header cut short: no flow can be named.
            0..34 => assert_eq!(result, Err(ParseError::Truncated), "len {len}"),
            // IP header complete, TCP header cut: a flow without ports.
            34..48 => assert_eq!(result.unwrap().note, Note::L4Truncated, "len {len}"),
            _ => assert_eq!(result.unwrap().src_port, 40000, "len {len}"),
        }
    }
    // Cut inside stacked VLAN tags, or inside an IPv6 extension header.
    assert_eq!(parsed(&[0x81, 0x00].repeat(8)), Err(ParseError::Truncated));
    assert_eq!(
        parsed(&ipv6_with(IpNumber::IPV6_HEADER_HOP_BY_HOP, &[])),
        Err(ParseError::Truncated)
    );
}

#[test]
fn malformed_ip_headers_are_rejected() {
    let mut bytes = tcp_v4(|t| t.syn = true);
    bytes[14] = 0x44; // IHL 4 < 5
    assert_eq!(parsed(&bytes), Err(ParseError::Malformed));
    bytes[14] = 0x65; // version 6 in an IPv4 frame
    assert_eq!(parsed(&bytes), Err(ParseError::Malformed));
    let mut v6 = ipv6_with(IpNumber::UDP, &[0, 1, 0, 2, 0, 8, 0, 0]);
    v6[14] = 0x40; // version 4 in an IPv6 frame
    assert_eq!(parsed(&v6), Err(ParseError::Malformed));
    // IHL pointing past the packet: the IP header is fine, L4 is missing.
    bytes[14] = 0x4f;
    assert_eq!(parsed(&bytes).unwrap().note, Note::L4Truncated);
}

#[test]
fn endless_ipv6_extension_chain_stops_at_its_bound() {
    // 20 hop-by-hop headers in a row: the walk stops after its bound
    // without reading past the packet, and the flow has no ports.
    let p = parsed(&ipv6_with(IpNumber::IPV6_HEADER_HOP_BY_HOP, &[0u8; 160])).unwrap();
    assert_eq!((p.protocol, p.src_port, p.dst_port), (0, 0, 0));
}
