//! DNS hand-over: the tc programs copy the payload of every TCP or UDP
//! packet to or from port 53 into a ring buffer of its own, for user space
//! to parse. The packet still counts in its flow like any other; this only
//! adds a copy, and only for DNS.

use agent_common::{Counter, DNS_CAPTURE_BYTES, DNS_PORT, DnsEvent, DnsEventHeader, FlowKey, ip_proto};
use agent_ebpf::parse::ParsedPacket;
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

/// Pending bytes at which the reader is woken (as for flow events).
const WAKEUP_BYTES: u64 = 16 * 1024;

#[inline(always)]
pub fn hand_over(ctx: &TcContext, packet: &ParsedPacket, ifindex: u32, hook: u8) {
    if packet.src_port != DNS_PORT && packet.dst_port != DNS_PORT {
        return;
    }
    if packet.protocol != ip_proto::UDP && packet.protocol != ip_proto::TCP {
        return;
    }
    // A TCP segment without data (SYN, ACK, FIN) carries no message.
    let payload_len = u32::from(packet.payload_len);
    if payload_len == 0 {
        return;
    }
    // SAFETY: a global written by user space only before load.
    if unsafe { core::ptr::read_volatile(&DNS_CAPTURE) } == 0 {
        return;
    }
    let Some(event) = DNS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; tc programs do not nest on one CPU.
    let event = unsafe { &mut *event };
    let captured = if payload_len as usize > DNS_CAPTURE_BYTES {
        DNS_CAPTURE_BYTES as u32
    } else {
        payload_len
    };
    // The verifier wants the copy's length proven in 1..=DNS_CAPTURE_BYTES.
    if captured == 0 || captured as usize > DNS_CAPTURE_BYTES {
        return;
    }
    // SAFETY: `payload` has room for DNS_CAPTURE_BYTES bytes.
    let read = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            u32::from(packet.payload_offset),
            event.payload.as_mut_ptr().cast(),
            captured,
        )
    };
    if read != 0 {
        count(Counter::DnsUnreadable, 1);
        return;
    }
    event.header = DnsEventHeader {
        key: FlowKey {
            src_addr: packet.src_addr,
            dst_addr: packet.dst_addr,
            src_port: packet.src_port,
            dst_port: packet.dst_port,
            ifindex,
            protocol: packet.protocol,
            ip_version: packet.ip_version,
            hook,
            _pad: 0,
            drop_reason: 0,
        },
        // SAFETY: a helper without preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        payload_len,
        captured,
    };
    let size = size_of::<DnsEventHeader>() + captured as usize;
    if size > size_of::<DnsEvent>() {
        return;
    }
    // SAFETY: `size` bytes of the staged event, checked just above.
    let bytes = unsafe { core::slice::from_raw_parts((event as *const DnsEvent).cast::<u8>(), size) };
    let wake = if DNS_EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match DNS_EVENTS.output::<[u8]>(bytes, u64::from(wake)) {
        Ok(()) => count(Counter::DnsMessages, 1),
        Err(_) => count(Counter::DnsRingFull, 1),
    }
}
