//! Per-packet aggregation into the flow map: the kernel's rules for when a
//! flow is created, counted, reported to user space, or lost.
//!
//! Generic over [`FlowMaps`] so this one copy of the rules runs in the
//! kernel (over the BPF maps, `maps.rs`) and on the host (over
//! [`host::HostMaps`]), where the agent's flow-table tests drive it instead
//! of a re-implementation that could drift from it.

use agent_common::{Counter, FlowKey, FlowStats, hook, report_reason};

use crate::parse::{self, Macs, Note, PacketBytes, ParseError, ParsedPacket};

/// Why a new entry could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Another CPU created it between our lookup and our insert.
    Exists,
    /// The map is full (or out of memory).
    Full,
}

/// The kernel's maps and helpers, as aggregation needs them.
pub trait FlowMaps {
    /// The live entry of `key`, to update in place.
    fn entry(&mut self, key: &FlowKey) -> Option<&mut FlowStats>;
    /// Creates `key`'s entry unless it exists.
    fn insert_new(&mut self, key: &FlowKey, stats: &FlowStats) -> Result<(), InsertError>;
    /// Tells user space about a flow.
    fn send_event(&mut self, key: &FlowKey, stats: &FlowStats, reason: u32);
    fn count(&mut self, counter: Counter, n: u64);
}

/// Where a tc program saw a packet.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    pub ifindex: u32,
    /// [`hook::INGRESS`] or [`hook::EGRESS`].
    pub hook: u8,
    /// `skb->len`: the packet's length, L2 header included.
    pub len: u64,
}

/// What a tc program does with each packet: parses it and counts it in its
/// flow, or in the counter that says why it is in none. `slot` is scratch
/// for the parse (see [`ParsedPacket::zero_in`]); `now` reads the clock,
/// only for packets that reach a flow. The kernel's tc programs and the
/// kernel fuzzer's host model both run exactly this.
#[inline(always)]
pub fn account<M: FlowMaps, P: PacketBytes + ?Sized>(
    maps: &mut M,
    bytes: &P,
    slot: &mut core::mem::MaybeUninit<ParsedPacket>,
    at: Hook,
    now: impl FnOnce() -> u64,
    report_interval_ns: u64,
) {
    let packet = ParsedPacket::zero_in(slot);
    if let Err(e) = parse::parse(bytes, packet) {
        match e {
            ParseError::NonIp => {
                maps.count(Counter::NonIpPackets, 1);
                maps.count(Counter::NonIpBytes, at.len);
            }
            ParseError::Truncated => maps.count(Counter::TruncatedPackets, 1),
            ParseError::Malformed => maps.count(Counter::MalformedPackets, 1),
        }
        return;
    }
    match packet.note {
        Note::None => {}
        Note::Fragment => maps.count(Counter::Fragments, 1),
        Note::L4Truncated => maps.count(Counter::TruncatedPackets, 1),
    }
    let key = flow_key(packet, &at);
    aggregate(maps, &key, packet, at.len, now(), report_interval_ns, || {
        parse::macs(bytes)
    });
}

/// The flow key of a parsed packet seen at `at`.
#[inline(always)]
pub fn flow_key(packet: &ParsedPacket, at: &Hook) -> FlowKey {
    FlowKey {
        src_addr: packet.src_addr,
        dst_addr: packet.dst_addr,
        src_port: packet.src_port,
        dst_port: packet.dst_port,
        ifindex: at.ifindex,
        protocol: packet.protocol,
        ip_version: packet.ip_version,
        hook: at.hook,
        _pad: 0,
        drop_reason: 0,
    }
}

/// Counts a packet of `len` bytes, seen at kernel time `now`, in its flow:
/// updates the entry, or creates it (and tells user space), or counts the
/// packet as lost when the map is full. An active flow is reported at most
/// once per `report_interval_ns`, and whenever it shows new TCP flags.
/// `macs` reads the packet's Ethernet addresses, for a new flow only.
#[inline(always)]
pub fn aggregate<M: FlowMaps>(
    maps: &mut M,
    key: &FlowKey,
    packet: &ParsedPacket,
    len: u64,
    now: u64,
    report_interval_ns: u64,
    macs: impl FnOnce() -> Macs,
) {
    if update_existing(maps, key, packet, len, now, report_interval_ns) {
        return;
    }
    let macs = macs();
    let stats = FlowStats {
        first_seen_ns: now,
        last_seen_ns: now,
        last_report_ns: now,
        packets: 1,
        bytes: len,
        src_mac: macs.src,
        dst_mac: macs.dst,
        tcp_flags_seen: packet.tcp_flags,
        tcp_flags_recent: 0,
    };
    match maps.insert_new(key, &stats) {
        Ok(()) => {
            // Only this event carries the first packet's flags (they tell a
            // SYN from a SYN-ACK); the entry starts with none pending.
            let event = FlowStats {
                tcp_flags_recent: packet.tcp_flags,
                ..stats
            };
            maps.send_event(key, &event, report_reason::NEW);
        }
        Err(InsertError::Exists) => {
            if !update_existing(maps, key, packet, len, now, report_interval_ns) {
                count_map_full(maps, key, len);
            }
        }
        Err(InsertError::Full) => count_map_full(maps, key, len),
    }
}

/// A packet that found the flow map full is in no record: count it, apart
/// for drops so that interface accounting stays exact.
#[inline(always)]
fn count_map_full<M: FlowMaps>(maps: &mut M, key: &FlowKey, len: u64) {
    if key.hook == hook::DROP {
        maps.count(Counter::DropsMapFull, 1);
    } else {
        maps.count(Counter::MapFullPackets, 1);
        maps.count(Counter::MapFullBytes, len);
    }
}

/// Adds the packet to an existing entry; sends an event when the flow shows
/// new TCP flags or has not been reported for the report interval.
#[inline(always)]
fn update_existing<M: FlowMaps>(
    maps: &mut M,
    key: &FlowKey,
    packet: &ParsedPacket,
    len: u64,
    now: u64,
    report_interval_ns: u64,
) -> bool {
    let Some(stats) = maps.entry(key) else {
        return false;
    };
    // Packets of one flow can be on several CPUs at once: the counters are
    // added atomically; the other fields tolerate a lost race.
    atomic_add(&mut stats.packets, 1);
    atomic_add(&mut stats.bytes, len);
    stats.last_seen_ns = now;
    stats.tcp_flags_recent |= packet.tcp_flags;
    let new_flags = packet.tcp_flags & !stats.tcp_flags_seen;
    let reason = if new_flags != 0 {
        stats.tcp_flags_seen |= new_flags;
        report_reason::NEW_TCP_FLAGS
    } else if now.wrapping_sub(stats.last_report_ns) >= report_interval_ns {
        report_reason::PERIODIC
    } else {
        return true;
    };
    stats.last_report_ns = now;
    let reported = *stats;
    // The flags just reported are no longer pending.
    stats.tcp_flags_recent = 0;
    maps.send_event(key, &reported, reason);
    true
}

/// `*target += n`, as one BPF atomic add in the kernel.
#[inline(always)]
fn atomic_add(target: &mut u64, n: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: `target` is a valid, aligned u64 in a map value. The BPF target
    // has no compare-and-swap, so core's AtomicU64::fetch_add is missing; the
    // intrinsic lowers to the BPF atomic add instruction.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(target, n);
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        *target += n;
    }
}

/// The kernel's maps on the host, for tests of everything downstream of
/// them: a bounded hash map, the events it would have sent, its counters.
#[cfg(not(target_arch = "bpf"))]
pub mod host {
    extern crate std;
    use std::{collections::HashMap, vec::Vec};

    use agent_common::{Counter, FlowEvent, FlowKey, FlowStats};

    use super::{FlowMaps, InsertError};

    pub struct HostMaps {
        pub flows: HashMap<FlowKey, FlowStats>,
        /// Entries each address family holds at most (the kernel has a map
        /// per family, each with this `max_entries`).
        pub capacity: usize,
        /// Events sent and not yet taken.
        pub events: Vec<FlowEvent>,
        pub counters: [u64; Counter::LEN as usize],
    }

    impl HostMaps {
        pub fn new(capacity: usize) -> Self {
            HostMaps {
                flows: HashMap::new(),
                capacity,
                events: Vec::new(),
                counters: [0; Counter::LEN as usize],
            }
        }

        pub fn counter(&self, counter: Counter) -> u64 {
            self.counters[counter as usize]
        }
    }

    impl FlowMaps for HostMaps {
        fn entry(&mut self, key: &FlowKey) -> Option<&mut FlowStats> {
            self.flows.get_mut(key)
        }

        fn insert_new(&mut self, key: &FlowKey, stats: &FlowStats) -> Result<(), InsertError> {
            if self.flows.contains_key(key) {
                return Err(InsertError::Exists);
            }
            let family = self.flows.keys().filter(|k| k.ip_version == key.ip_version).count();
            if family >= self.capacity {
                return Err(InsertError::Full);
            }
            self.flows.insert(*key, *stats);
            Ok(())
        }

        fn send_event(&mut self, key: &FlowKey, stats: &FlowStats, reason: u32) {
            self.events.push(FlowEvent {
                key: *key,
                reason,
                _pad: 0,
                stats: *stats,
            });
        }

        fn count(&mut self, counter: Counter, n: u64) {
            self.counters[counter as usize] += n;
        }
    }
}
