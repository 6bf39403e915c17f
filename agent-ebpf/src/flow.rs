//! Per-packet aggregation into the flow map.

use agent_common::FlowKey;
use agent_ebpf::{
    aggregate,
    parse::{Macs, PacketBytes, ParsedPacket},
};
use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::TcContext};

use crate::maps::KernelMaps;

/// How long an active flow may go without an event. Set by user space at
/// load time (`--report-interval`).
#[unsafe(no_mangle)]
static REPORT_INTERVAL_NS: u64 = 5_000_000_000;

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
    // SAFETY: reading a field of the `__sk_buff` context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let mut slot = core::mem::MaybeUninit::uninit();
    // SAFETY: a global written by user space only before load.
    let interval = unsafe { core::ptr::read_volatile(&REPORT_INTERVAL_NS) };
    let at = aggregate::Hook {
        ifindex,
        hook,
        len: u64::from(ctx.len()),
    };
    aggregate::account(
        &mut KernelMaps,
        &Skb(ctx),
        &mut slot,
        at,
        // The coarse clock (the last tick, 4 ms at HZ=250) is ample for flow
        // times and timeouts, and reading it is a load where the precise
        // clock reads the hardware counter on every packet.
        // SAFETY: a helper without preconditions.
        || unsafe { bpf_ktime_get_coarse_ns() },
        interval,
    );
    // SAFETY: `account` zeroes the slot before anything else.
    let packet = unsafe { slot.assume_init_ref() };
    // Fields the parse did not reach stay zero: a packet it gave up on has
    // no payload, so it is never handed over.
    crate::dns::hand_over(ctx, packet, &at);
}

/// Counts a packet of `len` bytes, seen at kernel time `now`, in its flow
/// (see `agent_ebpf::aggregate`). Shared by the tc programs and the drop
/// program.
#[inline(always)]
pub fn aggregate(key: &FlowKey, packet: &ParsedPacket, len: u64, now: u64, macs: impl FnOnce() -> Macs) {
    // SAFETY: a global written by user space only before load.
    let interval = unsafe { core::ptr::read_volatile(&REPORT_INTERVAL_NS) };
    aggregate::aggregate(&mut KernelMaps, key, packet, len, now, interval, macs);
}
