//! DNS hand-over: the tc programs copy the payload of every TCP or UDP
//! packet to or from port 53 into a ring buffer of its own, for user space
//! to parse. The packet still counts in its flow like any other; this only
//! adds a copy, and only for DNS.

use agent_common::{Counter, DNS_CAPTURE_BYTES, DnsEvent, DnsEventHeader};
use agent_ebpf::{
    aggregate::{Hook, flow_key},
    dns_payload::dns_payload,
    parse::ParsedPacket,
    ring_wakeup::{ring_record_bytes, wakes_reader},
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::map,
    maps::{PerCpuArray, RingBuf},
    programs::TcContext,
};

use crate::maps::count;

/// Whether DNS is handed over (`--dns on|off`). Set by user space at load
/// time; off, the check below is one load and a branch per TCP/UDP packet.
#[unsafe(no_mangle)]
static DNS_CAPTURE: u8 = 1;

/// DNS messages for user space. Its own ring: a burst of DNS can fill it
/// without costing a single flow event, and the other way round. Size set
/// by user space at load time.
#[map(name = "DNS_EVENTS")]
static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Where a message is staged: too big for the 512-byte BPF stack, and
/// copied into the ring at its real length (most messages are under 200
/// bytes, where reserving the largest size would take 1.3 KB each).
#[map(name = "DNS_SCRATCH")]
static DNS_SCRATCH: PerCpuArray<DnsEvent> = PerCpuArray::with_max_entries(1, 0);

/// The reader is woken each time this many more bytes are pending (as for
/// flow events).
const WAKEUP_BYTES: u64 = 16 * 1024;

/// Copies the DNS payload of `packet` (seen at `at`), if it has one by
/// [`dns_payload`], into the DNS ring buffer.
#[inline(always)]
pub fn hand_over(ctx: &TcContext, packet: &ParsedPacket, at: &Hook) {
    let Some(payload) = dns_payload(packet) else {
        return;
    };
    // SAFETY: a global written by user space only before load.
    if unsafe { core::ptr::read_volatile(&DNS_CAPTURE) } == 0 {
        return;
    }
    let Some(event) = DNS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; tc programs do not nest on one CPU.
    let event = unsafe { &mut *event };
    let captured = payload.captured;
    // Already so by `dns_payload`, but the verifier wants the copy's
    // length proven in 1..=DNS_CAPTURE_BYTES here.
    if captured == 0 || captured as usize > DNS_CAPTURE_BYTES {
        return;
    }
    // SAFETY: `payload` has room for DNS_CAPTURE_BYTES bytes.
    let read = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            u32::from(payload.offset),
            event.payload.as_mut_ptr().cast(),
            captured,
        )
    };
    if read != 0 {
        count(Counter::DnsUnreadable, 1);
        return;
    }
    event.header = DnsEventHeader {
        key: flow_key(packet, at),
        // SAFETY: a helper without preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        payload_len: payload.len,
        captured,
    };
    let size = size_of::<DnsEventHeader>() + captured as usize;
    if size > size_of::<DnsEvent>() {
        return;
    }
    // SAFETY: `size` bytes of the staged event, checked just above.
    let bytes = unsafe { core::slice::from_raw_parts((event as *const DnsEvent).cast::<u8>(), size) };
    let pending = DNS_EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let wake = if wakes_reader(pending, ring_record_bytes(size as u64), WAKEUP_BYTES) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match DNS_EVENTS.output::<[u8]>(bytes, u64::from(wake)) {
        Ok(()) => count(Counter::DnsMessages, 1),
        Err(_) => count(Counter::DnsRingFull, 1),
    }
}
