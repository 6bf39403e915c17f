//! The fuzzer's inputs: well-formed packets of every kind the parser reads,
//! then mutated the ways real traffic and attackers break them.
//!
//! Addresses and ports come from small pools so that packets meet again in
//! the same flows (aggregation, TCP flag events and a full map are all
//! exercised, not only first packets).

use etherparse::TcpHeader;
use fastrand::Rng;

/// The kernel's test run wants at least an Ethernet header.
pub const MIN_LEN: usize = 14;
/// A full-size Ethernet frame; test runs take up to about a page.
pub const MAX_LEN: usize = 1514;

/// Ports drawn from a pool so flows recur.
const PORTS: [u16; 7] = [53, 80, 443, 8080, 40000, 40001, 51000];

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;

/// The kinds of packet generated, so a run can say what it covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Ipv4,
    Ipv4Options,
    Ipv4Fragment,
    Ipv6,
    Ipv6ExtensionChain,
    Ipv6ExtensionLoop,
    Ipv6Fragment,
    NonIp,
    RandomBytes,
}

pub struct Generator {
    rng: Rng,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: Rng::with_seed(seed),
        }
    }

    /// One input: a generated packet, mutated most of the time.
    pub fn next(&mut self) -> (Kind, Vec<u8>) {
        let (kind, mut bytes) = self.packet();
        if kind != Kind::RandomBytes && self.rng.u8(..4) != 0 {
            for _ in 0..self.rng.usize(1..=3) {
                self.mutate(&mut bytes);
            }
        }
        bytes.truncate(MAX_LEN);
        if bytes.len() < MIN_LEN {
            bytes.resize(MIN_LEN, 0);
        }
        (kind, bytes)
    }

    fn packet(&mut self) -> (Kind, Vec<u8>) {
        let kind = match self.rng.u8(..100) {
            0..25 => Kind::Ipv4,
            25..33 => Kind::Ipv4Options,
            33..40 => Kind::Ipv4Fragment,
            40..62 => Kind::Ipv6,
            62..75 => Kind::Ipv6ExtensionChain,
            75..80 => Kind::Ipv6ExtensionLoop,
            80..86 => Kind::Ipv6Fragment,
            86..92 => Kind::NonIp,
            _ => Kind::RandomBytes,
        };
        let bytes = match kind {
            Kind::Ipv4 => self.ipv4(&[]),
            Kind::Ipv4Options => {
                let words = self.rng.usize(1..=10);
                let options: Vec<u8> = (0..words * 4).map(|_| self.rng.u8(..)).collect();
                self.ipv4(&options)
            }
            Kind::Ipv4Fragment => {
                let mut bytes = self.ipv4(&[]);
                let ip = self.l2_len(&bytes);
                // More-fragments and an offset, or the first fragment.
                let offset: u16 = if self.rng.bool() { self.rng.u16(1..0x1fff) } else { 0 };
                let flags = 0x2000 | offset;
                bytes[ip + 6..ip + 8].copy_from_slice(&flags.to_be_bytes());
                bytes
            }
            Kind::Ipv6 => self.ipv6(&[]),
            Kind::Ipv6ExtensionChain => {
                let chain: Vec<u8> = (0..self.rng.usize(1..=10))
                    .map(|_| *self.pick(&[0, 43, 51, 60, 135, 139, 140]))
                    .collect();
                self.ipv6(&chain)
            }
            Kind::Ipv6ExtensionLoop => {
                // Hop-by-hop headers that each name another hop-by-hop next.
                self.ipv6(&[0; 12])
            }
            Kind::Ipv6Fragment => self.ipv6(&[44]),
            Kind::NonIp => {
                let ether_type = *self.pick(&[0x0806, 0x88cc, 0x8847, 0x88e5, 0x0842, 0x9000]);
                let mut bytes = self.ethernet(ether_type);
                let len = self.rng.usize(0..100);
                bytes.extend((0..len).map(|_| self.rng.u8(..)));
                bytes
            }
            Kind::RandomBytes => {
                let len = self.rng.usize(MIN_LEN..=256);
                (0..len).map(|_| self.rng.u8(..)).collect()
            }
        };
        (kind, bytes)
    }

    /// Ethernet with 0-3 VLAN tags (the parser looks through two) before
    /// `ether_type`.
    fn ethernet(&mut self, ether_type: u16) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&[0x02, 0, 0, 0, 0, self.rng.u8(..4)]);
        bytes.extend_from_slice(&[0x02, 0, 0, 0, 1, self.rng.u8(..4)]);
        let tags = match self.rng.u8(..10) {
            0..7 => 0,
            7 => 1,
            8 => 2,
            _ => 3,
        };
        for _ in 0..tags {
            let tpid = if self.rng.bool() { ETH_VLAN } else { ETH_QINQ };
            bytes.extend_from_slice(&tpid.to_be_bytes());
            bytes.extend_from_slice(&self.rng.u16(..0x1000).to_be_bytes());
        }
        bytes.extend_from_slice(&ether_type.to_be_bytes());
        bytes
    }

    /// Where the L3 header starts (after any VLAN tags).
    fn l2_len(&self, bytes: &[u8]) -> usize {
        let mut offset = 12;
        while offset + 2 <= bytes.len()
            && matches!(
                u16::from_be_bytes([bytes[offset], bytes[offset + 1]]),
                ETH_VLAN | ETH_QINQ
            )
        {
            offset += 4;
        }
        offset + 2
    }

    fn ipv4(&mut self, options: &[u8]) -> Vec<u8> {
        let mut bytes = self.ethernet(ETH_IPV4);
        let (protocol, l4) = self.l4(false);
        let header_len = 20 + options.len();
        let total = (header_len + l4.len()) as u16;
        bytes.push(0x40 | (header_len / 4) as u8);
        bytes.push(0);
        bytes.extend_from_slice(&total.to_be_bytes());
        bytes.extend_from_slice(&self.rng.u16(..).to_be_bytes());
        bytes.extend_from_slice(&[0x40, 0]); // don't fragment
        bytes.push(64);
        bytes.push(protocol);
        bytes.extend_from_slice(&[0, 0]); // the parser does not check sums
        bytes.extend_from_slice(&[10, 0, 0, self.rng.u8(1..9)]);
        bytes.extend_from_slice(&[10, 0, 1, self.rng.u8(1..9)]);
        bytes.extend_from_slice(options);
        bytes.extend_from_slice(&l4);
        bytes
    }

    /// IPv6 with the extension headers of `chain` (each 8 bytes, or a
    /// fragment header for 44) before the L4 header.
    fn ipv6(&mut self, chain: &[u8]) -> Vec<u8> {
        let mut bytes = self.ethernet(ETH_IPV6);
        let (protocol, l4) = self.l4(true);
        let mut extensions = Vec::new();
        for (i, &header) in chain.iter().enumerate() {
            let next = chain.get(i + 1).copied().unwrap_or(protocol);
            match header {
                44 => {
                    let offset: u16 = if self.rng.bool() {
                        self.rng.u16(1..0x1fff) << 3
                    } else {
                        1
                    };
                    extensions.extend_from_slice(&[next, 0]);
                    extensions.extend_from_slice(&offset.to_be_bytes());
                    extensions.extend_from_slice(&self.rng.u32(..).to_be_bytes());
                }
                // AH: length in 4-octet units minus 2; 1 makes 12 bytes.
                51 => {
                    extensions.extend_from_slice(&[next, 1]);
                    extensions.extend((0..10).map(|_| self.rng.u8(..)));
                }
                _ => {
                    extensions.extend_from_slice(&[next, 0]);
                    extensions.extend((0..6).map(|_| self.rng.u8(..)));
                }
            }
        }
        let first = chain.first().copied().unwrap_or(protocol);
        let payload = (extensions.len() + l4.len()) as u16;
        bytes.extend_from_slice(&[0x60, 0, 0, 0]);
        bytes.extend_from_slice(&payload.to_be_bytes());
        bytes.push(first);
        bytes.push(64);
        bytes.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, self.rng.u8(1..9)]);
        bytes.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, self.rng.u8(1..9)]);
        bytes.extend_from_slice(&extensions);
        bytes.extend_from_slice(&l4);
        bytes
    }

    /// An L4 header and a little payload: (protocol, bytes).
    fn l4(&mut self, v6: bool) -> (u8, Vec<u8>) {
        let icmp = if v6 { 58 } else { 1 };
        let protocol = *self.pick(&[6, 6, 17, 17, icmp, 132, 47, 50]);
        let port = |rng: &mut Rng| PORTS[rng.usize(..PORTS.len())];
        let mut bytes = match protocol {
            6 => {
                let mut tcp = TcpHeader::new(port(&mut self.rng), port(&mut self.rng), self.rng.u32(..), 65535);
                let flags = self.rng.u16(..0x200);
                tcp.fin = flags & 0x01 != 0;
                tcp.syn = flags & 0x02 != 0;
                tcp.rst = flags & 0x04 != 0;
                tcp.psh = flags & 0x08 != 0;
                tcp.ack = flags & 0x10 != 0;
                tcp.urg = flags & 0x20 != 0;
                tcp.ece = flags & 0x40 != 0;
                tcp.cwr = flags & 0x80 != 0;
                tcp.ns = flags & 0x100 != 0;
                tcp.to_bytes().to_vec()
            }
            17 | 132 => {
                let mut h = Vec::new();
                h.extend_from_slice(&port(&mut self.rng).to_be_bytes());
                h.extend_from_slice(&port(&mut self.rng).to_be_bytes());
                h.extend_from_slice(&[0, 8, 0, 0]);
                h
            }
            1 | 58 => {
                // Echo request/reply, unreachable, time exceeded, neighbour
                // solicitation: queries carry an id, errors do not.
                let types: &[u8] = if v6 { &[128, 129, 1, 3, 135] } else { &[8, 0, 3, 11, 13] };
                let icmp_type = types[self.rng.usize(..types.len())];
                let mut h = vec![icmp_type, self.rng.u8(..4), 0, 0];
                h.extend_from_slice(&self.rng.u16(..4).to_be_bytes());
                h.extend_from_slice(&self.rng.u16(..).to_be_bytes());
                h
            }
            _ => (0..8).map(|_| self.rng.u8(..)).collect(),
        };
        let payload = self.rng.usize(0..64);
        bytes.extend((0..payload).map(|_| self.rng.u8(..)));
        (protocol, bytes)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.usize(..items.len())]
    }

    /// One of the ways packets break: cut short, bits flipped, a header
    /// byte set to a value parsers trip on, lengths that lie, junk appended.
    fn mutate(&mut self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        // Most of what the parser reads is in the first 128 bytes.
        let header_byte = self.rng.usize(..len.min(128));
        match self.rng.u8(..6) {
            0 => bytes.truncate(self.rng.usize(MIN_LEN..=len.max(MIN_LEN))),
            1 => {
                for _ in 0..self.rng.usize(1..=8) {
                    let bit = self.rng.usize(..len * 8);
                    bytes[bit / 8] ^= 1 << (bit % 8);
                }
            }
            2 => bytes[header_byte] = *self.pick(&[0x00, 0x01, 0x2c, 0x3b, 0x40, 0x45, 0x4f, 0x60, 0x7f, 0x80, 0xff]),
            3 => {
                // IPv4 IHL and total length, IPv6 payload length, VLAN TPIDs:
                // length-like fields at their usual offsets.
                let at = *self.pick(&[14, 16, 17, 18, 19, 22, 23, 12, 13]);
                if at < len {
                    bytes[at] = self.rng.u8(..);
                }
            }
            4 => {
                let extra = self.rng.usize(1..64);
                bytes.extend((0..extra).map(|_| self.rng.u8(..)));
            }
            _ => bytes[header_byte] = self.rng.u8(..),
        }
    }
}
