//! Types shared by the eBPF programs and the user-space agent.
//!
//! Everything here is `#[repr(C)]`, made of integers and byte arrays only, and
//! laid out without implicit padding, so both sides read the same bytes.
#![no_std]

/// Name of the kernel flow map of IPv6 flows (`HashMap<FlowKey, FlowStats>`).
pub const FLOWS_MAP: &str = "FLOWS";
/// Name of the kernel flow map of IPv4 flows (`HashMap<FlowKey4, FlowStats>`).
pub const FLOWS4_MAP: &str = "FLOWS4";
/// Name of the ring buffer carrying [`FlowEvent`]s.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the ring buffer carrying DNS messages ([`DnsEvent`]s, each cut
/// to its header and the bytes captured).
pub const DNS_EVENTS_MAP: &str = "DNS_EVENTS";
/// Name of the global that turns the DNS hand-over on (1) or off (0).
pub const DNS_CAPTURE_GLOBAL: &str = "DNS_CAPTURE";
/// Name of the per-CPU array of [`Counter`]s.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the global that sets how often an active flow is reported.
pub const REPORT_INTERVAL_GLOBAL: &str = "REPORT_INTERVAL_NS";
/// The drop program (`tp_btf` on `kfree_skb`) and its load-time globals.
pub const DROP_PROGRAM: &str = "hubcap_kfree_skb";
pub const SKB_LAYOUT_GLOBAL: &str = "SKB_LAYOUT";
pub const DROP_FILTER_GLOBAL: &str = "DROP_FILTER";
/// Name of the drop program's scope: the devices whose drops it reports
/// (`HashMap<u64, u8>`, keys from [`drop_scope_key`]).
pub const DROP_SCOPE_MAP: &str = "DROP_SCOPE";

/// A drop-scope key: one device (`ifindex`) of network namespace `netns`
/// (its inode number), or with `ifindex` 0 every device of that namespace.
#[inline(always)]
pub fn drop_scope_key(netns: u32, ifindex: u32) -> u64 {
    (u64::from(netns) << 32) | u64::from(ifindex)
}

/// Names of the tc programs.
pub const INGRESS_PROGRAM: &str = "hubcap_ingress";
pub const EGRESS_PROGRAM: &str = "hubcap_egress";
/// A classifier that does nothing but return "continue": the benchmark's
/// measure of what the tc hook itself costs.
pub const NOOP_PROGRAM: &str = "hubcap_noop";

/// Where a packet was seen: a tc hook, or the kernel dropping it.
pub mod hook {
    pub const INGRESS: u8 = 0;
    pub const EGRESS: u8 = 1;
    /// Freed by the kernel with a drop reason (`kfree_skb`).
    pub const DROP: u8 = 2;
}

/// IP protocol numbers the parser reads ports (or ICMP fields) from, and
/// the ICMP rules both sides apply to them.
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;

    /// ICMP messages that carry an identifier tying a request to its reply
    /// (the parser keeps it as the flow's source port; pairing matches on it).
    pub fn is_icmp_query(protocol: u8, icmp_type: u8) -> bool {
        match protocol {
            // Echo reply/request, timestamp, information request/reply.
            ICMP => matches!(icmp_type, 0 | 8 | 13 | 14 | 15 | 16),
            // Echo request/reply.
            ICMPV6 => matches!(icmp_type, 128 | 129),
            _ => false,
        }
    }

    /// An ICMP echo reply (v4 type 0, v6 type 129).
    pub fn is_echo_reply(protocol: u8, icmp_type: u8) -> bool {
        matches!((protocol, icmp_type), (ICMP, 0) | (ICMPV6, 129))
    }
}

/// TCP flag bits as kept in [`FlowStats`]: bits 0..8 are the TCP header's
/// flag byte (FIN..CWR) and bit 8 is NS, the low bit of the byte before it.
pub mod tcp_flags {
    pub const FIN: u16 = 1 << 0;
    pub const SYN: u16 = 1 << 1;
    pub const RST: u16 = 1 << 2;
    pub const PSH: u16 = 1 << 3;
    pub const ACK: u16 = 1 << 4;
    pub const URG: u16 = 1 << 5;
    pub const ECE: u16 = 1 << 6;
    pub const CWR: u16 = 1 << 7;
    pub const NS: u16 = 1 << 8;
}

/// One direction of a flow as seen on one hook of one interface.
///
/// Addresses are kept in network byte order; an IPv4 address fills the first
/// four bytes and leaves the rest zero. Ports are in host byte order. For
/// ICMP, `src_port` is the echo identifier (0 for other messages) and
/// `dst_port` is `type << 8 | code`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub ifindex: u32,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP, ...).
    pub protocol: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// One of [`hook`].
    pub hook: u8,
    pub _pad: u8,
    /// The kernel's `enum skb_drop_reason` for [`hook::DROP`]; 0 otherwise.
    pub drop_reason: u32,
}

impl FlowKey {
    /// The source address (an IPv4 one fills the first four bytes).
    pub fn src_ip(&self) -> core::net::IpAddr {
        self.ip(&self.src_addr)
    }

    pub fn dst_ip(&self) -> core::net::IpAddr {
        self.ip(&self.dst_addr)
    }

    /// Source and destination ports, for the protocols that have them
    /// (TCP, UDP, SCTP). The one place that says so: ICMP keys hold an
    /// identifier and the type and code in the same fields.
    pub fn ports(&self) -> Option<(u16, u16)> {
        matches!(self.protocol, ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP)
            .then_some((self.src_port, self.dst_port))
    }

    /// ICMP's (or ICMPv6's) type and code.
    pub fn icmp_type_code(&self) -> Option<(u8, u8)> {
        matches!(self.protocol, ip_proto::ICMP | ip_proto::ICMPV6)
            .then_some(((self.dst_port >> 8) as u8, (self.dst_port & 0xff) as u8))
    }

    fn ip(&self, bytes: &[u8; 16]) -> core::net::IpAddr {
        if self.ip_version == 6 {
            core::net::IpAddr::from(*bytes)
        } else {
            core::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
        }
    }
}

/// An IPv4 [`FlowKey`] as the IPv4 flow map keeps it: the same fields
/// without the 24 address bytes IPv4 leaves zero.
///
/// Half the bytes to hash and compare on every packet, and a kernel map
/// element of 128 bytes (two cache lines, the kmalloc-128 cache) in place
/// of 152 (kmalloc-192, three lines): what a new flow's first packet
/// writes, and what a million flows hold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey4 {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub ifindex: u32,
    pub protocol: u8,
    pub hook: u8,
    pub _pad: u16,
    pub drop_reason: u32,
}

impl FlowKey4 {
    /// The compact form of an IPv4 key; `None` for IPv6.
    #[inline(always)]
    pub fn from_key(key: &FlowKey) -> Option<FlowKey4> {
        (key.ip_version == 4).then(|| FlowKey4 {
            src_addr: [key.src_addr[0], key.src_addr[1], key.src_addr[2], key.src_addr[3]],
            dst_addr: [key.dst_addr[0], key.dst_addr[1], key.dst_addr[2], key.dst_addr[3]],
            src_port: key.src_port,
            dst_port: key.dst_port,
            ifindex: key.ifindex,
            protocol: key.protocol,
            hook: key.hook,
            _pad: 0,
            drop_reason: key.drop_reason,
        })
    }

    /// The full key again (`from_key` loses nothing: IPv4 leaves the other
    /// address bytes zero).
    pub fn to_key(&self) -> FlowKey {
        let mut key = FlowKey {
            src_port: self.src_port,
            dst_port: self.dst_port,
            ifindex: self.ifindex,
            protocol: self.protocol,
            ip_version: 4,
            hook: self.hook,
            drop_reason: self.drop_reason,
            ..FlowKey::default()
        };
        key.src_addr[..4].copy_from_slice(&self.src_addr);
        key.dst_addr[..4].copy_from_slice(&self.dst_addr);
        key
    }
}

/// Counts the kernel keeps for a [`FlowKey`]. Totals since the entry was
/// created; user space computes what changed since its last record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the first and last packet.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// When the kernel last sent a [`FlowEvent`] for this entry.
    pub last_report_ns: u64,
    pub packets: u64,
    /// Sum of `skb->len` as tc sees it, L2 header included.
    pub bytes: u64,
    /// MAC addresses of the first packet.
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Every TCP flag seen since the entry was created.
    pub tcp_flags_seen: u16,
    /// TCP flags seen since the last [`FlowEvent`] for this entry.
    pub tcp_flags_recent: u16,
}

/// Why the kernel sent a [`FlowEvent`].
pub mod report_reason {
    /// First packet of a flow direction.
    pub const NEW: u32 = 1;
    /// A TCP flag this flow direction had not shown before.
    pub const NEW_TCP_FLAGS: u32 = 2;
    /// The report interval passed since the last event.
    pub const PERIODIC: u32 = 3;
}

/// A record sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub key: FlowKey,
    /// One of [`report_reason`].
    pub reason: u32,
    pub _pad: u32,
    /// Snapshot of the entry right after this packet was counted.
    pub stats: FlowStats,
}

/// DNS's port: TCP and UDP packets to or from it carry DNS messages.
pub const DNS_PORT: u16 = 53;

/// The most bytes of a DNS packet's payload handed to user space: 1232,
/// the EDNS buffer size of DNS Flag Day 2020, which today's resolvers
/// (BIND, Unbound, Knot, PowerDNS, CoreDNS) default to, so every answer
/// sent over UDP without fragments fits whole. Longer TCP answers are
/// read up to their last complete record.
pub const DNS_CAPTURE_BYTES: usize = 1232;

/// What the tc programs say about one DNS packet; `captured` bytes of its
/// L4 payload follow it in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsEventHeader {
    /// The packet's flow key (its 5-tuple, interface and hook).
    pub key: FlowKey,
    /// `bpf_ktime_get_ns` when the packet was seen (the precise clock:
    /// query-to-answer latency is measured on it).
    pub time_ns: u64,
    /// The L4 payload's length on the wire; for TCP it starts with the
    /// message's 2-byte length and may hold part of a message or several.
    pub payload_len: u32,
    /// How many of those bytes follow (at most [`DNS_CAPTURE_BYTES`]).
    pub captured: u32,
}

/// The kernel's staging copy of a DNS event: the header and room for the
/// most bytes captured. Only `size_of::<DnsEventHeader>() + captured`
/// bytes of it go into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsEvent {
    pub header: DnsEventHeader,
    pub payload: [u8; DNS_CAPTURE_BYTES],
}

/// Where the drop program finds what it needs in this kernel's `sk_buff`
/// (byte offsets, from the kernel's BTF at load time, so one binary works
/// across kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkbLayout {
    pub len: u32,
    pub head: u32,
    pub data: u32,
    pub mac_header: u32,
    pub network_header: u32,
    /// `__be16 protocol`.
    pub protocol: u32,
    pub dev: u32,
    /// `net_device.ifindex`.
    pub netdev_ifindex: u32,
    /// `net_device.nd_net` (a `possible_net_t`, whose first member is the
    /// `struct net *`).
    pub netdev_net: u32,
    /// `net.ns.inum`: the network namespace's inode number.
    pub net_inum: u32,
    /// The namespace hubcap runs in: drops on its interfaces are attributed
    /// to them; other namespaces' interface indexes mean nothing here.
    pub own_netns_inum: u32,
    pub _pad: u32,
}

impl SkbLayout {
    pub const ZERO: SkbLayout = SkbLayout {
        len: 0,
        head: 0,
        data: 0,
        mac_header: 0,
        network_header: 0,
        protocol: 0,
        dev: 0,
        netdev_ifindex: 0,
        netdev_net: 0,
        net_inum: 0,
        own_netns_inum: 0,
        _pad: 0,
    };
}

/// Which drop reasons the drop program records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropFilter {
    /// Bit `r` set: record reason `r` (core reasons are below 256).
    pub reasons: [u64; 4],
    /// Non-zero: also record reasons of 256 and above (subsystem reasons).
    pub other_reasons: u32,
    /// This kernel's value of NO_SOCKET (0 if unknown): ICMP echo replies
    /// freed with it were already delivered to a raw socket and are not
    /// drops (see `Counter::EchoRepliesDelivered`).
    pub no_socket_reason: u32,
}

impl DropFilter {
    pub const NONE: DropFilter = DropFilter {
        reasons: [0; 4],
        other_reasons: 0,
        no_socket_reason: 0,
    };

    #[inline(always)]
    pub fn captures(&self, reason: u32) -> bool {
        if reason >= 256 {
            return self.other_reasons != 0;
        }
        // Masked, not just bounded by the check above: the BPF target has
        // no panic path, so an index the compiler cannot prove in range
        // would not load.
        let word = self.reasons[((reason >> 6) & 3) as usize];
        word & (1u64 << (reason & 63)) != 0
    }
}

/// Indexes into the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets that are not IPv4/IPv6 (ARP, LLDP, ...), and their bytes.
    NonIpPackets = 0,
    NonIpBytes,
    /// IP packets cut short before the header the parser needed.
    TruncatedPackets,
    /// IP packets whose headers are invalid (bad version, header length, ...).
    MalformedPackets,
    /// IPv4/IPv6 non-first fragments: counted in their flow without ports.
    Fragments,
    /// Packets (and bytes) that found the flow map full: not in any flow.
    MapFullPackets,
    MapFullBytes,
    /// Events the ring buffer had no room for. The flow's counts stay in the
    /// map and reach user space with a later event or the map sweep.
    RingBufFull,
    /// Dropped packets of a captured reason that were not IPv4/IPv6 or
    /// whose headers could not be read: in no drop record.
    DropsNotIp,
    /// Dropped packets that found the flow map full: in no drop record.
    DropsMapFull,
    /// ICMP echo replies freed as NO_SOCKET after a raw socket (iputils
    /// `ping` as root) received them: not drops, so in no drop record.
    EchoRepliesDelivered,
    /// Dropped packets of a captured reason outside the drop scope (a
    /// device hubcap does not watch, or none): in no drop record.
    DropsUnwatched,
    /// DNS packets handed to user space (they still count in their flow
    /// like any packet).
    DnsMessages,
    /// DNS packets the DNS ring buffer had no room for: no DNS record.
    DnsRingFull,
    /// DNS packets whose payload could not be read: no DNS record.
    DnsUnreadable,
}

impl Counter {
    pub const ALL: [Counter; 15] = [
        Counter::NonIpPackets,
        Counter::NonIpBytes,
        Counter::TruncatedPackets,
        Counter::MalformedPackets,
        Counter::Fragments,
        Counter::MapFullPackets,
        Counter::MapFullBytes,
        Counter::RingBufFull,
        Counter::DropsNotIp,
        Counter::DropsMapFull,
        Counter::EchoRepliesDelivered,
        Counter::DropsUnwatched,
        Counter::DnsMessages,
        Counter::DnsRingFull,
        Counter::DnsUnreadable,
    ];
    pub const LEN: u32 = Self::ALL.len() as u32;

    /// Its name in hubcap's stop summary. Adding a counter here, to
    /// [`Counter::ALL`] and (for packets) [`Counter::packet_label`] is all
    /// that user space needs.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::NonIpPackets => "non_ip_packets",
            Counter::NonIpBytes => "non_ip_bytes",
            Counter::TruncatedPackets => "truncated_packets",
            Counter::MalformedPackets => "malformed_packets",
            Counter::Fragments => "fragments",
            Counter::MapFullPackets => "map_full_packets",
            Counter::MapFullBytes => "map_full_bytes",
            Counter::RingBufFull => "ringbuf_full",
            Counter::DropsNotIp => "drops_not_ip",
            Counter::DropsMapFull => "drops_map_full",
            Counter::EchoRepliesDelivered => "echo_replies_delivered",
            Counter::DropsUnwatched => "drops_unwatched",
            Counter::DnsMessages => "dns_messages",
            Counter::DnsRingFull => "dns_ringbuf_full",
            Counter::DnsUnreadable => "dns_unreadable",
        }
    }

    /// The `counter` label of `hubcap_kernel_packets_total`, for the
    /// counters of packets outside any record (bytes, events and delivered
    /// echo replies are reported elsewhere).
    pub const fn packet_label(self) -> Option<&'static str> {
        match self {
            Counter::NonIpPackets => Some("non_ip"),
            Counter::TruncatedPackets => Some("truncated"),
            Counter::MalformedPackets => Some("malformed"),
            Counter::Fragments => Some("fragments"),
            Counter::MapFullPackets => Some("map_full"),
            Counter::DropsNotIp => Some("drops_not_ip"),
            Counter::DropsMapFull => Some("drops_map_full"),
            Counter::DropsUnwatched => Some("drops_unwatched"),
            Counter::NonIpBytes
            | Counter::MapFullBytes
            | Counter::RingBufFull
            | Counter::EchoRepliesDelivered
            | Counter::DnsMessages
            | Counter::DnsRingFull
            | Counter::DnsUnreadable => None,
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: integers and byte arrays, no padding, any bit
    // pattern is valid.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::DnsEventHeader {}
    unsafe impl aya::Pod for super::FlowKey4 {}
    unsafe impl aya::Pod for super::SkbLayout {}
    unsafe impl aya::Pod for super::DropFilter {}
}

// Both sides rely on these layouts; a change must be deliberate.
const _: () = assert!(core::mem::size_of::<FlowKey>() == 48);
const _: () = assert!(core::mem::size_of::<FlowKey4>() == 24);
const _: () = assert!(core::mem::size_of::<FlowStats>() == 56);
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 112);
const _: () = assert!(core::mem::size_of::<DnsEventHeader>() == 64);
const _: () = assert!(core::mem::size_of::<DnsEvent>().is_multiple_of(8));

#[cfg(test)]
mod tests {
    use super::*;

    fn key(protocol: u8, src_port: u16, dst_port: u16) -> FlowKey {
        FlowKey {
            protocol,
            src_port,
            dst_port,
            ..Default::default()
        }
    }

    #[test]
    fn only_tcp_udp_and_sctp_have_ports() {
        for protocol in [ip_proto::TCP, ip_proto::UDP, ip_proto::SCTP] {
            assert_eq!(key(protocol, 40000, 443).ports(), Some((40000, 443)));
        }
        for protocol in [ip_proto::ICMP, ip_proto::ICMPV6, 47] {
            assert_eq!(key(protocol, 7, 0x0800).ports(), None);
        }
    }

    #[test]
    fn an_ipv4_key_survives_its_compact_form() {
        let mut v4 = FlowKey {
            src_port: 40000,
            dst_port: 53,
            ifindex: 7,
            protocol: ip_proto::UDP,
            ip_version: 4,
            hook: hook::DROP,
            drop_reason: 5,
            ..Default::default()
        };
        v4.src_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        v4.dst_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let compact = FlowKey4::from_key(&v4).expect("an IPv4 key");
        assert_eq!(compact.src_addr, [10, 0, 0, 1]);
        assert_eq!(compact.to_key(), v4);
    }

    #[test]
    fn an_ipv6_key_has_no_compact_form() {
        let v6 = FlowKey {
            ip_version: 6,
            ..key(ip_proto::TCP, 1, 2)
        };
        assert_eq!(FlowKey4::from_key(&v6), None);
    }

    #[test]
    fn every_counter_has_its_own_name_and_label() {
        let mut names: [&str; Counter::LEN as usize] = [""; Counter::LEN as usize];
        for (i, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, i, "ALL is in index order");
            names[i] = counter.name();
        }
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name), "{name} twice");
        }
        let labels = Counter::ALL.iter().filter_map(|c| c.packet_label());
        assert_eq!(labels.count(), 8);
    }

    #[test]
    fn icmp_keys_hold_type_and_code() {
        assert_eq!(key(ip_proto::ICMP, 7, 0x0303).icmp_type_code(), Some((3, 3)));
        assert_eq!(key(ip_proto::ICMPV6, 7, 0x8000).icmp_type_code(), Some((128, 0)));
        assert_eq!(key(ip_proto::UDP, 7, 0x0303).icmp_type_code(), None);
    }
}
