//! L2-L4 header parsing into a flow key.
//!
//! Generic over [`PacketBytes`] so the same code reads an `__sk_buff` in the
//! kernel (through `bpf_skb_load_bytes`, which also works on non-linear skbs)
//! and a byte slice in host unit tests. Every loop is bounded and every
//! offset is checked, which keeps the verifier content.

use agent_common::{
    ip_proto::{self, is_icmp_query},
    tcp_flags,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
};

/// Random access to a packet's bytes.
pub trait PacketBytes {
    /// Copies `size_of::<T>()` bytes at `offset`, or `None` when they are not
    /// all inside the packet.
    fn load<T: Copy>(&self, offset: usize) -> Option<T>;
}

impl PacketBytes for [u8] {
    fn load<T: Copy>(&self, offset: usize) -> Option<T> {
        let end = offset.checked_add(core::mem::size_of::<T>())?;
        let bytes = self.get(offset..end)?;
        // SAFETY: `bytes` holds exactly size_of::<T>() bytes; T is a Copy
        // header type for which every bit pattern is valid.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }
}

/// Stacked 802.1Q/802.1ad tags we look through (QinQ).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers we walk before giving up on finding L4.
const MAX_IPV6_EXT_HEADERS: usize = 8;

/// What a packet contributes to its flow. In the kernel, make it with
/// [`ParsedPacket::zero_in`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParsedPacket {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    /// Ports in host order; for ICMP the echo id and `type << 8 | code`.
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub ip_version: u8,
    pub tcp_flags: u16,
    /// What was unusual about a packet that still counts in a flow.
    pub note: Note,
    /// For TCP and UDP: where the L4 payload starts, and how long it is
    /// by the IP and L4 headers' own lengths (never counting the padding
    /// of a short Ethernet frame). What DNS hand-over copies.
    pub payload_offset: u16,
    pub payload_len: u16,
}

/// The Ethernet addresses of a packet. Read only for a flow's first packet
/// (see [`macs`]): every other packet would pay for copying them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Macs {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

/// The Ethernet addresses of a packet that starts with its L2 header.
#[inline(always)]
pub fn macs<P: PacketBytes + ?Sized>(packet: &P) -> Macs {
    match packet.load::<[u8; 12]>(0) {
        Some(b) => Macs {
            dst: [b[0], b[1], b[2], b[3], b[4], b[5]],
            src: [b[6], b[7], b[8], b[9], b[10], b[11]],
        },
        None => Macs::default(),
    }
}

impl ParsedPacket {
    /// Zeroes `slot` in place with 8-byte stores and returns it.
    /// `Default::default()` compiles to a call into a byte-at-a-time memset
    /// loop on the BPF target (the backend has no inline memset), which cost
    /// more than the whole parse; so does returning a zeroed value by copy.
    #[inline(always)]
    pub fn zero_in(slot: &mut core::mem::MaybeUninit<Self>) -> &mut Self {
        let words = slot.as_mut_ptr().cast::<u64>();
        for i in 0..size_of::<Self>() / 8 {
            // SAFETY: the type is 8-byte aligned and a multiple of 8 bytes
            // long; volatile keeps LLVM from merging the stores back into a
            // memset call.
            unsafe { words.add(i).write_volatile(0) };
        }
        // SAFETY: every field is an integer, array or fieldless enum whose
        // all-zero pattern is valid (Note::None is 0).
        unsafe { slot.assume_init_mut() }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Note {
    #[default]
    None,
    /// A non-first fragment: no L4 header, so no ports.
    Fragment,
    /// The L3 header was fine but the L4 header was cut short: no ports.
    L4Truncated,
}

/// Why a packet could not be attributed to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NonIp,
    /// Cut short before the end of the L2 or L3 header.
    Truncated,
    /// An IP header that cannot be right (version or header length).
    Malformed,
}

pub fn parse<P: PacketBytes + ?Sized>(packet: &P, out: &mut ParsedPacket) -> Result<(), ParseError> {
    // Only the EtherType: the addresses before it are read for new flows
    // alone ([`macs`]).
    let mut ether_type: u16 = packet.load(12).ok_or(ParseError::Truncated)?;
    let mut offset = EthHdr::LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != EtherType::Ieee8021q as u16 && ether_type != EtherType::Ieee8021ad as u16 {
            break;
        }
        // A tag is 2 bytes of TCI then the next EtherType.
        ether_type = packet.load(offset + 2).ok_or(ParseError::Truncated)?;
        offset += 4;
    }
    if ether_type == EtherType::Ipv4 as u16 {
        parse_ipv4(packet, offset, out)
    } else if ether_type == EtherType::Ipv6 as u16 {
        parse_ipv6(packet, offset, out)
    } else {
        Err(ParseError::NonIp)
    }
}

/// Parses from an IPv4 header at `offset` (when the L2 header is not at
/// hand, as for packets the kernel drops).
pub fn parse_ipv4<P: PacketBytes + ?Sized>(
    packet: &P,
    offset: usize,
    out: &mut ParsedPacket,
) -> Result<(), ParseError> {
    // The fields one by one: copying the whole header costs more than the
    // fields it would save reading.
    let (first, frags, proto, addrs): ([u8; 4], [u8; 2], u8, [[u8; 4]; 2]) = (
        packet.load(offset).ok_or(ParseError::Truncated)?,
        packet.load(offset + 6).ok_or(ParseError::Truncated)?,
        packet.load(offset + 9).ok_or(ParseError::Truncated)?,
        packet.load(offset + 12).ok_or(ParseError::Truncated)?,
    );
    let vihl = first[0];
    if vihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let header_len = usize::from(vihl & 0x0f) * 4;
    if header_len < Ipv4Hdr::LEN {
        return Err(ParseError::Malformed);
    }
    out.ip_version = 4;
    out.protocol = proto;
    out.src_addr[..4].copy_from_slice(&addrs[0]);
    out.dst_addr[..4].copy_from_slice(&addrs[1]);
    // Only the first fragment carries the L4 header.
    let fragment_offset = u16::from_be_bytes(frags) & 0x1fff;
    if fragment_offset != 0 {
        out.note = Note::Fragment;
        return Ok(());
    }
    let total_len = usize::from(u16::from_be_bytes([first[2], first[3]]));
    parse_l4(packet, offset + header_len, offset + total_len, out);
    Ok(())
}

/// Parses from an IPv6 header at `offset`.
pub fn parse_ipv6<P: PacketBytes + ?Sized>(
    packet: &P,
    offset: usize,
    out: &mut ParsedPacket,
) -> Result<(), ParseError> {
    let (first, addrs): ([u8; 8], [[u8; 16]; 2]) = (
        packet.load(offset).ok_or(ParseError::Truncated)?,
        packet.load(offset + 8).ok_or(ParseError::Truncated)?,
    );
    let (version, next_header) = (first[0], first[6]);
    // Where the IP payload ends, by the header's own length.
    let end = offset + Ipv6Hdr::LEN + usize::from(u16::from_be_bytes([first[4], first[5]]));
    if version >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    out.ip_version = 6;
    out.src_addr = addrs[0];
    out.dst_addr = addrs[1];
    let mut next = next_header;
    let mut offset = offset + Ipv6Hdr::LEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_extension(next) {
            break;
        }
        // Every extension header starts with next-header and a length byte.
        // (Read as a pair: a lone byte read would defeat the verifier's
        // tracking of direct packet access.)
        let h: [u8; 2] = packet.load(offset).ok_or(ParseError::Truncated)?;
        let ext_len = match next {
            // Authentication header: length in 4-octet units, minus 2.
            51 => (usize::from(h[1]) + 2) * 4,
            44 => {
                let frag: [u8; 4] = packet.load(offset).ok_or(ParseError::Truncated)?;
                if u16::from_be_bytes([frag[2], frag[3]]) >> 3 != 0 {
                    out.protocol = frag[0];
                    out.note = Note::Fragment;
                    return Ok(());
                }
                8
            }
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6:
            // length in 8-octet units, not counting the first 8.
            _ => (usize::from(h[1]) + 1) * 8,
        };
        next = h[0];
        offset += ext_len;
    }
    out.protocol = next;
    parse_l4(packet, offset, end, out);
    Ok(())
}

fn is_ipv6_extension(next_header: u8) -> bool {
    matches!(next_header, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140)
}

/// Fills ports (or ICMP type/code/id), TCP flags and, for TCP and UDP,
/// where the payload is (the IP payload ends at `l3_end`). A missing L4
/// header leaves the flow without ports instead of dropping the packet from
/// the accounting.
fn parse_l4<P: PacketBytes + ?Sized>(packet: &P, offset: usize, l3_end: usize, out: &mut ParsedPacket) {
    let ok = match out.protocol {
        ip_proto::TCP => match (packet.load::<[u8; 4]>(offset), packet.load::<[u8; 2]>(offset + 12)) {
            (Some(ports), Some(flags)) => {
                out.src_port = u16::from_be_bytes([ports[0], ports[1]]);
                out.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
                out.tcp_flags = u16::from(flags[1]) | (u16::from(flags[0] & 1) << 8);
                // The data offset, in 32-bit words.
                set_payload(out, offset + usize::from(flags[0] >> 4) * 4, l3_end);
                true
            }
            _ => false,
        },
        ip_proto::UDP => match packet.load::<[u8; 4]>(offset) {
            Some(h) => {
                out.src_port = u16::from_be_bytes([h[0], h[1]]);
                out.dst_port = u16::from_be_bytes([h[2], h[3]]);
                set_payload(out, offset + 8, l3_end);
                true
            }
            None => false,
        },
        ip_proto::SCTP => match packet.load::<[u8; 4]>(offset) {
            Some(h) => {
                out.src_port = u16::from_be_bytes([h[0], h[1]]);
                out.dst_port = u16::from_be_bytes([h[2], h[3]]);
                true
            }
            None => false,
        },
        ip_proto::ICMP | ip_proto::ICMPV6 => match packet.load::<[u8; 8]>(offset) {
            Some(h) => {
                out.dst_port = u16::from_be_bytes([h[0], h[1]]);
                if is_icmp_query(out.protocol, h[0]) {
                    out.src_port = u16::from_be_bytes([h[4], h[5]]);
                }
                true
            }
            None => false,
        },
        // Other protocols (GRE, ESP, ...) are flows by address only.
        _ => true,
    };
    if !ok {
        out.note = Note::L4Truncated;
    }
}

/// The payload from `start` to `end`; none when the headers' lengths
/// disagree (a header longer than the packet says it is).
#[inline(always)]
fn set_payload(out: &mut ParsedPacket, start: usize, end: usize) {
    if start < end && end <= usize::from(u16::MAX) {
        out.payload_offset = start as u16;
        out.payload_len = (end - start) as u16;
    }
}

// Keep the flag layout in one place: the parser writes header bits directly.
const _: () = assert!(tcp_flags::FIN == 0x01 && tcp_flags::CWR == 0x80 && tcp_flags::NS == 0x100);
const _: () = assert!(size_of::<ParsedPacket>().is_multiple_of(8));

#[cfg(test)]
mod tests;
