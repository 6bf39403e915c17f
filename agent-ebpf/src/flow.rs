//! Per-packet aggregation into the flow map.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use agent_common::{Counter, FlowKey, FlowStats, report_reason};
use agent_ebpf::parse::{self, Note, PacketBytes, ParseError, ParsedPacket};
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, programs::TcContext};

use crate::maps::{FLOWS, count, send_event};

/// How long an active flow may go without an event. Set by user space at
/// load time (`--report-interval`).
#[unsafe(no_mangle)]
static REPORT_INTERVAL_NS: u64 = 5_000_000_000;

const EEXIST: i32 = -17;

struct Skb<'a>(&'a TcContext);

impl PacketBytes for Skb<'_> {
    /// Reads straight from the packet when the bytes are in its linear
    /// part (almost always: tc sees the headers linear), and through
    /// `bpf_skb_load_bytes` otherwise. The direct read saves a helper call
    /// per header.
    #[inline(always)]
    fn load<T: Copy>(&self, offset: usize) -> Option<T> {
        let start = self.0.data();
        let end = self.0.data_end();
        // Bounding the offset first lets the verifier follow the pointer.
        if offset < 0x4000 && start + offset + size_of::<T>() <= end {
            // SAFETY: the bytes were just checked to lie inside the packet.
            Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
        } else {
            self.0.load::<T>(offset).ok()
        }
    }
}

pub fn account(ctx: &TcContext, hook: u8) {
    let len = u64::from(ctx.len());
    let mut slot = core::mem::MaybeUninit::uninit();
    let packet = ParsedPacket::zero_in(&mut slot);
    if let Err(e) = parse::parse(&Skb(ctx), packet) {
        match e {
            ParseError::NonIp => {
                count(Counter::NonIpPackets, 1);
                count(Counter::NonIpBytes, len);
            }
            ParseError::Truncated => count(Counter::TruncatedPackets, 1),
            ParseError::Malformed => count(Counter::MalformedPackets, 1),
        }
        return;
    }
    match packet.note {
        Note::None => {}
        Note::Fragment => count(Counter::Fragments, 1),
        Note::L4Truncated => count(Counter::TruncatedPackets, 1),
    }
    let key = FlowKey {
        src_addr: packet.src_addr,
        dst_addr: packet.dst_addr,
        src_port: packet.src_port,
        dst_port: packet.dst_port,
        // SAFETY: reading a field of the `__sk_buff` context.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        protocol: packet.protocol,
        ip_version: packet.ip_version,
        hook,
        _pad: 0,
        drop_reason: 0,
    };
    aggregate(&key, packet, len);
}

/// Counts a packet of `len` bytes in its flow: updates the entry, or
/// creates it (and tells user space), or counts the packet as lost when the
/// map is full. Shared by the tc programs and the drop program.
#[inline(always)]
pub fn aggregate(key: &FlowKey, packet: &ParsedPacket, len: u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    if update_existing(key, packet, len, now) {
        return;
    }
    let stats = FlowStats {
        first_seen_ns: now,
        last_seen_ns: now,
        last_report_ns: now,
        packets: 1,
        bytes: len,
        src_mac: packet.src_mac,
        dst_mac: packet.dst_mac,
        tcp_flags_seen: packet.tcp_flags,
        tcp_flags_recent: 0,
    };
    match FLOWS.insert(key, &stats, u64::from(BPF_NOEXIST)) {
        Ok(()) => send_event(
            key,
            &FlowStats {
                tcp_flags_recent: packet.tcp_flags,
                ..stats
            },
            report_reason::NEW,
        ),
        // Another CPU created it between our lookup and insert.
        Err(EEXIST) => {
            if !update_existing(key, packet, len, now) {
                count_map_full(key, len);
            }
        }
        Err(_) => count_map_full(key, len),
    }
}

/// A packet that found the flow map full is in no record: count it, apart
/// for drops so that interface accounting stays exact.
#[inline(always)]
fn count_map_full(key: &FlowKey, len: u64) {
    if key.hook == agent_common::hook::DROP {
        count(Counter::DropsMapFull, 1);
    } else {
        count(Counter::MapFullPackets, 1);
        count(Counter::MapFullBytes, len);
    }
}

/// Adds the packet to an existing entry; sends an event when the flow shows
/// new TCP flags or has not been reported for the report interval.
#[inline(always)]
fn update_existing(key: &FlowKey, packet: &ParsedPacket, len: u64, now: u64) -> bool {
    let Some(stats) = FLOWS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: the map value stays valid for this program run (RCU); counters
    // are updated atomically because packets of one flow can be on several
    // CPUs at once. The other fields tolerate a lost race.
    let stats = unsafe { &mut *stats };
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut stats.packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut stats.bytes, len);
    }
    stats.last_seen_ns = now;
    stats.tcp_flags_recent |= packet.tcp_flags;
    let new_flags = packet.tcp_flags & !stats.tcp_flags_seen;
    let interval = unsafe { core::ptr::read_volatile(&REPORT_INTERVAL_NS) };
    let reason = if new_flags != 0 {
        stats.tcp_flags_seen |= new_flags;
        report_reason::NEW_TCP_FLAGS
    } else if now.wrapping_sub(stats.last_report_ns) >= interval {
        report_reason::PERIODIC
    } else {
        return true;
    };
    stats.last_report_ns = now;
    send_event(key, stats, reason);
    stats.tcp_flags_recent = 0;
    true
}
