//! Packets the kernel drops: `tp_btf` on `kfree_skb(skb, location, reason)`.
//!
//! The `sk_buff` is read with `bpf_probe_read_kernel` at offsets user space
//! took from this kernel's BTF (`SKB_LAYOUT`), so one object works across
//! kernel versions. Drops are aggregated per 5-tuple and reason like
//! forwarded flows: a flood of drops costs one event per new (flow, reason),
//! not one per packet.

use agent_common::{Counter, DropFilter, FlowKey, SkbLayout, drop_scope_key, hook};
use agent_ebpf::parse::{self, Macs, PacketBytes, ParsedPacket};
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::maps::{DROP_SCOPE, count};

/// Set by user space at load time.
#[unsafe(no_mangle)]
static SKB_LAYOUT: SkbLayout = SkbLayout::ZERO;
#[unsafe(no_mangle)]
static DROP_FILTER: DropFilter = DropFilter::NONE;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// An `sk_buff` header offset that was never set.
const UNSET_HEADER: u16 = 0xffff;
/// Bytes of headers worth reading past the network header.
const MAX_HEADERS: u64 = 512;

/// `kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason
/// reason, ...)`: called only for drops (normal frees use `consume_skb`).
#[btf_tracepoint(function = "kfree_skb")]
pub fn hubcap_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let reason: u64 = ctx.arg(2);
    // SAFETY: reading a global of this object.
    let filter = unsafe { core::ptr::read_volatile(&DROP_FILTER) };
    if filter.captures(reason as u32) {
        let skb: u64 = ctx.arg(0);
        record(skb, reason as u32, filter.no_socket_reason);
    }
    0
}

/// Kernel memory read through `bpf_probe_read_kernel`.
#[inline(always)]
fn read<T: Copy>(address: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel(address as *const T).ok() }
}

/// The packet's headers from the network header on, in kernel memory.
struct KernelBytes {
    start: u64,
    available: u64,
}

impl PacketBytes for KernelBytes {
    #[inline(always)]
    fn load<T: Copy>(&self, offset: usize) -> Option<T> {
        let offset = offset as u64;
        if offset + size_of::<T>() as u64 > self.available {
            return None;
        }
        read(self.start + offset)
    }
}

#[inline(always)]
fn record(skb: u64, reason: u32, no_socket_reason: u32) {
    // SAFETY: reading a global of this object.
    let layout = unsafe { core::ptr::read_volatile(&SKB_LAYOUT) };
    let field = |offset: u32| skb + u64::from(offset);
    // Only what hubcap watches is reported: its captured interfaces, and
    // the namespaces behind its captured pod veths.
    let Some(ifindex) = watched_ifindex(field(layout.dev), &layout) else {
        count(Counter::DropsUnwatched, 1);
        return;
    };
    let (Some(head), Some(data), Some(len), Some(network_header), Some(protocol)) = (
        read::<u64>(field(layout.head)),
        read::<u64>(field(layout.data)),
        read::<u32>(field(layout.len)),
        read::<u16>(field(layout.network_header)),
        read::<u16>(field(layout.protocol)),
    ) else {
        count(Counter::DropsNotIp, 1);
        return;
    };
    let protocol = u16::from_be(protocol);
    if network_header == UNSET_HEADER || (protocol != ETH_P_IP && protocol != ETH_P_IPV6) {
        count(Counter::DropsNotIp, 1);
        return;
    }
    let start = head + u64::from(network_header);
    let end = data + u64::from(len);
    let packet = KernelBytes {
        start,
        available: end.saturating_sub(start).min(MAX_HEADERS),
    };
    let mut slot = core::mem::MaybeUninit::uninit();
    let parsed = ParsedPacket::zero_in(&mut slot);
    let result = if protocol == ETH_P_IP {
        parse::parse_ipv4(&packet, 0, parsed)
    } else {
        parse::parse_ipv6(&packet, 0, parsed)
    };
    if result.is_err() {
        count(Counter::DropsNotIp, 1);
        return;
    }
    // `ping_rcv` frees every echo reply nobody's *ping* socket wanted as
    // NO_SOCKET, even after a raw socket received it: not a drop.
    if reason == no_socket_reason
        && agent_common::ip_proto::is_echo_reply(parsed.protocol, (parsed.dst_port >> 8) as u8)
    {
        count(Counter::EchoRepliesDelivered, 1);
        return;
    }
    let mut macs = Macs::default();
    if let Some(mac_header) = read::<u16>(field(layout.mac_header))
        && mac_header != UNSET_HEADER
        && let Some(eth) = read::<[u8; 12]>(head + u64::from(mac_header))
    {
        macs.dst.copy_from_slice(&eth[..6]);
        macs.src.copy_from_slice(&eth[6..]);
    }
    let key = FlowKey {
        src_addr: parsed.src_addr,
        dst_addr: parsed.dst_addr,
        src_port: parsed.src_port,
        dst_port: parsed.dst_port,
        ifindex,
        protocol: parsed.protocol,
        ip_version: parsed.ip_version,
        hook: hook::DROP,
        _pad: 0,
        drop_reason: reason,
    };
    // SAFETY: a helper without preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    crate::flow::aggregate(&key, parsed, u64::from(len), now, || macs);
}

/// For a drop on a watched device, the ifindex its record names: the
/// device's when it is in hubcap's network namespace, else 0 (an index from
/// another namespace names nothing hubcap can show). `None` outside the
/// scope, or without a device.
#[inline(always)]
fn watched_ifindex(dev_field: u64, layout: &SkbLayout) -> Option<u32> {
    let dev = read::<u64>(dev_field).filter(|d| *d != 0)?;
    let net = read::<u64>(dev + u64::from(layout.netdev_net)).filter(|n| *n != 0)?;
    let netns = read::<u32>(net + u64::from(layout.net_inum))?;
    let ifindex = read::<u32>(dev + u64::from(layout.netdev_ifindex))?;
    // SAFETY: map lookups; the values are not read.
    let watched = unsafe {
        DROP_SCOPE.get(&drop_scope_key(netns, ifindex)).is_some() || DROP_SCOPE.get(&drop_scope_key(netns, 0)).is_some()
    };
    if !watched {
        return None;
    }
    Some(if netns == layout.own_netns_inum { ifindex } else { 0 })
}
