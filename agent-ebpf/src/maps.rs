//! Maps shared with user space. Names match `agent_common::*_MAP`.

use agent_common::{Counter, FlowEvent, FlowKey, FlowKey4, FlowStats};
use agent_ebpf::{
    aggregate::{FlowMaps, InsertError},
    ring_wakeup::{ring_record_bytes, wakes_reader},
};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};

/// Live IPv6 flows. User space sets the real size at load time.
///
/// `BPF_F_NO_PREALLOC`: user space deletes entries of ended flows while
/// packets may be updating them on other CPUs. Without preallocation a
/// deleted element is freed after an RCU grace period, so a late update
/// lands in the dead element instead of in a recycled one that already
/// belongs to another flow.
///
/// Measured against a preallocated map (churn benchmark, kernel bpf_stats):
/// preallocation halves a new flow's first packet (1.0-1.5 us against
/// 2.3-2.9 us) but takes the whole map's memory at load (93 MB against 20
/// MB with 10,000 flows at the default size), and recycles a deleted
/// element at once. Memory on every node won. Measured again once the
/// reader was no longer woken by every record (`ring_wakeup`): 1.5-2.7 us
/// without preallocation against 0.95-1.2 us with it, in a 1M-entry map.
#[map(name = "FLOWS")]
pub static FLOWS: HashMap<FlowKey, FlowStats> = HashMap::with_max_entries(65_536, BPF_F_NO_PREALLOC);

/// Live IPv4 flows, under their compact key (see `FlowKey4`); as `FLOWS`
/// otherwise.
#[map(name = "FLOWS4")]
pub static FLOWS4: HashMap<FlowKey4, FlowStats> = HashMap::with_max_entries(65_536, BPF_F_NO_PREALLOC);

/// Flow events for user space. Size set by user space at load time.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// The devices whose drops are reported (see `agent_common::drop_scope_key`);
/// user space keeps it in step with what it captures on.
#[map(name = "DROP_SCOPE")]
pub static DROP_SCOPE: HashMap<u64, u8> = HashMap::with_max_entries(16_384, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::LEN, 0);

#[inline(always)]
pub fn count(counter: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and tc programs do not nest on one CPU.
        unsafe { *slot += n };
    }
}

/// The reader is woken each time this many more bytes are pending (see
/// `agent_ebpf::ring_wakeup`); below it, records wait for the reader's own
/// timer (100 ms).
const WAKEUP_BYTES: u64 = 64 * 1024;
const EVENT_RECORD_BYTES: u64 = ring_record_bytes(size_of::<FlowEvent>() as u64);

pub fn send_event(key: &FlowKey, stats: &FlowStats, reason: u32) {
    match EVENTS.reserve::<FlowEvent>(0) {
        Some(mut entry) => {
            entry.write(FlowEvent {
                key: *key,
                reason,
                _pad: 0,
                stats: *stats,
            });
            // Reserved: the pending bytes include this record.
            let pending = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
            let before = pending.saturating_sub(EVENT_RECORD_BYTES);
            let wake = if wakes_reader(before, EVENT_RECORD_BYTES, WAKEUP_BYTES) {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            entry.submit(u64::from(wake));
        }
        // The counts stay in FLOWS; user space still gets them from a later
        // event or from its sweep of the map.
        None => count(Counter::RingBufFull, 1),
    }
}

const EEXIST: i32 = -17;

/// The maps above, as the shared aggregation code (`agent_ebpf::aggregate`)
/// uses them.
pub struct KernelMaps;

impl FlowMaps for KernelMaps {
    #[inline(always)]
    fn entry(&mut self, key: &FlowKey) -> Option<&mut FlowStats> {
        let value = match FlowKey4::from_key(key) {
            Some(key) => FLOWS4.get_ptr_mut(&key),
            None => FLOWS.get_ptr_mut(key),
        };
        // SAFETY: the map value stays valid for this program run (RCU).
        value.map(|p| unsafe { &mut *p })
    }

    #[inline(always)]
    fn insert_new(&mut self, key: &FlowKey, stats: &FlowStats) -> Result<(), InsertError> {
        let flags = u64::from(BPF_NOEXIST);
        let inserted = match FlowKey4::from_key(key) {
            Some(key) => FLOWS4.insert(&key, stats, flags),
            None => FLOWS.insert(key, stats, flags),
        };
        match inserted {
            Ok(()) => Ok(()),
            Err(EEXIST) => Err(InsertError::Exists),
            Err(_) => Err(InsertError::Full),
        }
    }

    #[inline(always)]
    fn send_event(&mut self, key: &FlowKey, stats: &FlowStats, reason: u32) {
        send_event(key, stats, reason);
    }

    #[inline(always)]
    fn count(&mut self, counter: Counter, n: u64) {
        count(counter, n);
    }
}
