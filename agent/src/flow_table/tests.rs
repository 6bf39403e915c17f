use agent_common::{Counter, FlowEvent, FlowKey, FlowStats, hook, report_reason, tcp_flags};
use agent_ebpf::{
    aggregate::{aggregate, host::HostMaps},
    parse::{Macs, ParsedPacket},
};

use super::*;

const SEC: u64 = 1_000_000_000;

fn config() -> TableConfig {
    TableConfig {
        report_interval_ns: 5 * SEC,
        idle_timeout_ns: 30 * SEC,
        close_linger_ns: SEC,
    }
}

/// The kernel side on the host: the kernel's own aggregation code
/// (`agent_ebpf::aggregate`) over host maps, so these tests follow the
/// kernel's rules and cannot drift from them.
struct HostKernel {
    maps: HostMaps,
    /// Makes a visit of the map stop after that many entries, as when the
    /// kernel refuses a batch part way.
    visit_limit: Option<usize>,
    /// A packet (key, length, time) that lands in its entry just before
    /// user space takes an entry out: after the sweep read it, before the
    /// delete.
    late_packet: Option<(FlowKey, u64, u64)>,
    /// The late packet's event, still in the ring when the entry is taken.
    late_events: Vec<FlowEvent>,
}

impl Default for HostKernel {
    fn default() -> Self {
        HostKernel {
            maps: HostMaps::new(1 << 16),
            visit_limit: None,
            late_packet: None,
            late_events: Vec::new(),
        }
    }
}

impl KernelFlows for HostKernel {
    fn get(&self, key: &FlowKey) -> Option<FlowStats> {
        self.maps.flows.get(key).copied()
    }
    fn take(&mut self, key: &FlowKey) -> Option<FlowStats> {
        if let Some((late, len, now)) = self.late_packet.take() {
            let event = self.packet(late, len, 0, now);
            self.late_events.extend(event);
        }
        self.maps.flows.remove(key)
    }
    fn remove(&mut self, key: &FlowKey) {
        self.maps.flows.remove(key);
    }
    fn visit_entries(&mut self, visit: &mut EntryVisitor) -> bool {
        let mut all: Vec<_> = self.maps.flows.iter().map(|(k, v)| (*k, *v)).collect();
        let complete = self.visit_limit.is_none_or(|limit| limit >= all.len());
        all.truncate(self.visit_limit.unwrap_or(usize::MAX));
        // In small batches, as the kernel map hands them out.
        for batch in all.chunks(3) {
            visit(batch);
        }
        complete
    }
}

impl HostKernel {
    /// One packet through the kernel's aggregation; the event it sent, if any.
    fn packet(&mut self, key: FlowKey, len: u64, flags: u16, now: u64) -> Option<FlowEvent> {
        let packet = ParsedPacket {
            tcp_flags: flags,
            ..Default::default()
        };
        aggregate(&mut self.maps, &key, &packet, len, now, 5 * SEC, Macs::default);
        let event = self.maps.events.pop();
        assert!(self.maps.events.is_empty(), "one packet, at most one event");
        event
    }

    fn is_empty(&self) -> bool {
        self.maps.flows.is_empty()
    }
}

fn key(src: u8, sport: u16, dst: u8, dport: u16, protocol: u8, hook: u8) -> FlowKey {
    let mut k = FlowKey {
        src_port: sport,
        dst_port: dport,
        ifindex: 7,
        protocol,
        ip_version: 4,
        hook,
        ..Default::default()
    };
    k.src_addr[..4].copy_from_slice(&[10, 0, 0, src]);
    k.dst_addr[..4].copy_from_slice(&[10, 0, 0, dst]);
    k
}

struct Harness {
    kernel: HostKernel,
    table: FlowTable,
    out: Vec<FlowUpdate>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            kernel: HostKernel::default(),
            table: FlowTable::new(config()),
            out: Vec::new(),
        }
    }
    fn send(&mut self, key: FlowKey, len: u64, flags: u16, now: u64) {
        if let Some(ev) = self.kernel.packet(key, len, flags, now) {
            self.table.on_event(&ev, now, &mut self.out);
        }
    }
    /// The late packet's event, read from the ring after the take.
    fn read_late_events(&mut self) {
        for ev in std::mem::take(&mut self.kernel.late_events) {
            self.table.on_event(&ev, ev.stats.last_seen_ns, &mut self.out);
        }
    }
    fn records_of(&self, key: &FlowKey) -> Vec<&FlowUpdate> {
        self.out.iter().filter(|u| u.key == *key).collect()
    }
    fn totals(&self, key: &FlowKey) -> (u64, u64) {
        self.records_of(key)
            .iter()
            .fold((0, 0), |(p, b), u| (p + u.packets, b + u.bytes))
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

#[test]
fn tcp_connection_begins_continues_and_ends_with_exact_sums() {
    let mut h = Harness::new();
    let fwd = key(1, 40000, 2, 80, TCP, hook::INGRESS);
    let rev = key(2, 80, 1, 40000, TCP, hook::EGRESS);
    h.send(fwd, 74, tcp_flags::SYN, 0);
    h.send(rev, 74, tcp_flags::SYN | tcp_flags::ACK, 1000);
    h.send(fwd, 66, tcp_flags::ACK, 2000);
    // 12 seconds of data both ways, one packet each way every 10 ms.
    let mut now = 3000;
    for _ in 0..1200 {
        now += 10_000_000;
        h.send(fwd, 1500, tcp_flags::ACK | tcp_flags::PSH, now);
        h.send(rev, 66, tcp_flags::ACK, now);
    }
    h.send(fwd, 66, tcp_flags::FIN | tcp_flags::ACK, now + 1);
    h.send(rev, 66, tcp_flags::FIN | tcp_flags::ACK, now + 2);
    h.send(fwd, 66, tcp_flags::ACK, now + 3); // the last ACK, after both FINs
    // Not yet: the linger has not passed.
    h.table.end_closed(&mut h.kernel, now + 500_000_000, &mut h.out);
    assert!(h.out.iter().all(|u| u.state != FlowState::End));
    h.table.end_closed(&mut h.kernel, now + 2 * SEC, &mut h.out);

    for (k, reply, packets, bytes) in [
        (fwd, false, 3 + 1200 + 1, 74 + 66 + 1200 * 1500 + 66 + 66),
        (rev, true, 1 + 1200 + 1, 74 + 1200 * 66 + 66),
    ] {
        let records = h.records_of(&k);
        let states: Vec<_> = records.iter().map(|u| u.state).collect();
        assert_eq!(states.first(), Some(&FlowState::Begin));
        assert_eq!(states.last(), Some(&FlowState::End));
        // B, two periodic C (at ~5 s and ~10 s), E: a handful, not one per packet.
        assert_eq!(states.len(), 4, "{states:?}");
        assert!(records.iter().all(|u| u.is_reply == Some(reply)));
        assert_eq!(h.totals(&k), (packets, bytes));
    }
    assert_eq!(h.records_of(&fwd)[0].tcp_flags, tcp_flags::SYN);
    assert_eq!(h.records_of(&rev)[0].tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
    assert_ne!(h.records_of(&fwd).last().unwrap().tcp_flags & tcp_flags::FIN, 0);
    assert!(h.kernel.is_empty(), "ended flows leave the kernel map");
    assert!(h.table.is_empty());
}

#[test]
fn rst_ends_a_connection() {
    let mut h = Harness::new();
    let fwd = key(1, 1234, 2, 81, TCP, hook::INGRESS);
    let rev = key(2, 81, 1, 1234, TCP, hook::EGRESS);
    h.send(fwd, 74, tcp_flags::SYN, 0);
    h.send(rev, 54, tcp_flags::RST | tcp_flags::ACK, 10);
    h.table.end_closed(&mut h.kernel, 2 * SEC, &mut h.out);
    let states: Vec<_> = h.out.iter().map(|u| (u.key == fwd, u.state, u.is_reply)).collect();
    assert_eq!(
        states,
        vec![
            (true, FlowState::Begin, Some(false)),
            (false, FlowState::Begin, Some(true)),
            (true, FlowState::End, Some(false)),
            (false, FlowState::End, Some(true)),
        ]
    );
}

#[test]
fn tcp_without_handshake_has_unknown_direction() {
    let mut h = Harness::new();
    let k = key(1, 5000, 2, 6000, TCP, hook::INGRESS);
    h.send(k, 100, tcp_flags::ACK, 0);
    assert_eq!(h.out[0].is_reply, None);
}

#[test]
fn udp_initiator_is_the_first_sender_and_idle_flows_end() {
    let mut h = Harness::new();
    let req = key(1, 5353, 2, 53, UDP, hook::INGRESS);
    let resp = key(2, 53, 1, 5353, UDP, hook::EGRESS);
    h.send(req, 80, 0, 0);
    h.send(resp, 120, 0, 1000);
    h.send(req, 80, 0, 2000);
    h.table.sweep(&mut h.kernel, 10 * SEC, &mut h.out);
    // Quiet for 10 s with one unreported packet: a C carries it.
    let c: Vec<_> = h
        .records_of(&req)
        .into_iter()
        .filter(|u| u.state == FlowState::Continuing)
        .cloned()
        .collect();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].packets, 1);
    h.table.sweep(&mut h.kernel, 31 * SEC, &mut h.out);
    assert!(h.table.is_empty(), "idle flows end");
    assert_eq!(h.totals(&req), (2, 160));
    assert_eq!(h.totals(&resp), (1, 120));
    assert!(h.records_of(&req).iter().all(|u| u.is_reply == Some(false)));
    assert!(h.records_of(&resp).iter().all(|u| u.is_reply == Some(true)));
}

#[test]
fn icmp_echo_reply_pairs_with_its_request_even_if_seen_first() {
    let mut h = Harness::new();
    // Echo id 77: request type 8 from .1, reply type 0 from .2.
    let request = key(1, 77, 2, 8 << 8, ICMP, hook::INGRESS);
    let reply = key(2, 77, 1, 0, ICMP, hook::EGRESS);
    h.send(reply, 98, 0, 0);
    h.send(request, 98, 0, 10);
    assert_eq!(h.records_of(&reply)[0].is_reply, Some(true));
    assert_eq!(h.records_of(&request)[0].is_reply, Some(false));
    assert_eq!(ConnKey::of(&request), ConnKey::of(&reply));
    // A different echo id is a different connection.
    assert_ne!(
        ConnKey::of(&request),
        ConnKey::of(&key(1, 78, 2, 8 << 8, ICMP, hook::INGRESS))
    );
}

#[test]
fn directions_whose_new_event_was_lost_are_adopted_from_the_map() {
    let mut h = Harness::new();
    let k = key(1, 1, 2, 2, UDP, hook::INGRESS);
    // The kernel counted 3 packets, but the ring buffer dropped the events.
    for i in 0..3 {
        let _ = h.kernel.packet(k, 100, 0, i);
    }
    h.table.sweep(&mut h.kernel, SEC, &mut h.out);
    assert_eq!(h.table.stats.adopted_from_map, 1);
    h.table.finish(&mut h.kernel, 2 * SEC, &mut h.out);
    assert_eq!(h.totals(&k), (3, 300));
    assert_eq!(h.out.first().unwrap().state, FlowState::Begin);
    assert_eq!(h.out.last().unwrap().state, FlowState::End);
}

#[test]
fn a_packet_after_the_sweep_read_an_idle_entry_is_in_its_last_record() {
    let mut h = Harness::new();
    let k = key(1, 1, 2, 2, UDP, hook::INGRESS);
    h.send(k, 100, 0, SEC);
    // Idle by the sweep's read; one more packet before the entry is taken.
    h.kernel.late_packet = Some((k, 60, 31 * SEC));
    h.table.sweep(&mut h.kernel, 31 * SEC, &mut h.out);
    assert_eq!(h.out.last().unwrap().state, FlowState::End);
    assert_eq!(h.totals(&k), (2, 160));
    assert!(h.kernel.is_empty());
    // The packet's periodic event, read after: counted once, in the E.
    assert_eq!(h.kernel.late_events.len(), 1);
    h.read_late_events();
    assert_eq!(h.totals(&k), (2, 160));
    assert_eq!(h.table.len(), 0);
    assert_eq!(h.table.stats.events_left_to_sweep, 1);
}

#[test]
fn a_packet_before_a_closed_connection_is_taken_out_is_in_its_last_record() {
    let mut h = Harness::new();
    let (out, back) = (
        key(1, 40000, 2, 80, TCP, hook::EGRESS),
        key(2, 80, 1, 40000, TCP, hook::INGRESS),
    );
    h.send(out, 60, tcp_flags::SYN, SEC);
    h.send(back, 60, tcp_flags::SYN | tcp_flags::ACK, SEC);
    h.send(out, 60, tcp_flags::FIN | tcp_flags::ACK, SEC);
    h.send(back, 60, tcp_flags::FIN | tcp_flags::ACK, SEC);
    // The last ACK lands as the linger ends and the entries are taken.
    h.kernel.late_packet = Some((out, 52, 3 * SEC));
    h.table.end_closed(&mut h.kernel, 3 * SEC, &mut h.out);
    assert_eq!(h.totals(&out), (3, 172));
    assert_eq!(h.totals(&back), (2, 120));
    assert!(h.kernel.is_empty());
}

#[test]
fn a_sweep_reads_the_ring_once_per_batch_of_the_map() {
    let mut h = Harness::new();
    for i in 0..10 {
        h.send(key(1, 1000 + i, 2, 53, UDP, hook::EGRESS), 100, 0, SEC);
    }
    let mut calls = 0;
    h.table
        .sweep_with(&mut h.kernel, 2 * SEC, &mut h.out, &mut |_| calls += 1);
    // The host map hands out 3 entries a batch: 3 + 3 + 3 + 1.
    assert_eq!(calls, 4);
}

#[test]
fn a_periodic_event_after_a_lost_new_one_leaves_the_direction_to_the_sweep() {
    let mut h = Harness::new();
    let k = key(1, 1, 2, 2, UDP, hook::INGRESS);
    // The NEW event was lost (ring full); the next one is periodic.
    let _ = h.kernel.packet(k, 100, 0, 0);
    h.send(k, 100, 0, 6 * SEC);
    assert_eq!(h.table.stats.events_left_to_sweep, 1);
    assert!(h.out.is_empty());
    h.table.sweep(&mut h.kernel, 7 * SEC, &mut h.out);
    assert_eq!(h.table.stats.adopted_from_map, 1);
    assert_eq!(h.totals(&k), (2, 200));
}

#[test]
fn a_new_event_read_during_a_sweep_is_taken_before_its_entry_is_looked_at() {
    let mut h = Harness::new();
    // A connection opened while the reader was behind: both NEW events
    // still in the ring when the sweep starts.
    let (reply, request) = (
        key(2, 80, 1, 40000, TCP, hook::INGRESS),
        key(1, 40000, 2, 80, TCP, hook::EGRESS),
    );
    let mut ring: Vec<FlowEvent> = Vec::new();
    ring.extend(h.kernel.packet(request, 60, tcp_flags::SYN, SEC));
    ring.extend(h.kernel.packet(reply, 60, tcp_flags::SYN | tcp_flags::ACK, SEC));
    assert_eq!(ring.len(), 2);
    h.table.sweep_with(&mut h.kernel, 2 * SEC, &mut h.out, &mut |events| {
        events.append(&mut ring)
    });
    assert_eq!(h.table.stats.adopted_from_map, 0);
    // The SYN's flags name the initiator, whichever entry the map hands out first.
    let is_reply = |k: &FlowKey| h.records_of(k)[0].is_reply;
    assert_eq!((is_reply(&request), is_reply(&reply)), (Some(false), Some(true)));
    assert_eq!(h.totals(&request), (1, 60));
    assert_eq!(h.totals(&reply), (1, 60));
}

#[test]
fn an_event_from_an_entry_older_than_the_one_held_is_left_alone() {
    let mut h = Harness::new();
    let k = key(1, 1, 2, 2, UDP, hook::INGRESS);
    let old = h.kernel.packet(k, 100, 0, SEC).expect("NEW");
    h.kernel.remove(&k);
    h.send(k, 80, 0, 2 * SEC);
    h.table.on_event(&old, SEC, &mut h.out);
    assert_eq!(h.table.stats.events_left_to_sweep, 1);
    assert_eq!(h.totals(&k), (1, 80));
    assert_eq!(h.table.len(), 1);
}

#[test]
fn a_sweep_that_could_not_read_the_whole_map_ends_nothing_it_did_not_see() {
    let mut h = Harness::new();
    let flows: Vec<FlowKey> = (1..=10).map(|i| key(1, 1000 + i, 2, 53, UDP, hook::EGRESS)).collect();
    for k in &flows {
        h.send(*k, 100, 0, SEC);
    }
    h.out.clear();
    h.kernel.visit_limit = Some(4);
    h.table.sweep(&mut h.kernel, 2 * SEC, &mut h.out);
    assert!(
        h.out.iter().all(|u| u.state != FlowState::End),
        "nothing ended: {:?}",
        h.out
    );
    assert_eq!(h.table.len(), 10);
    h.kernel.visit_limit = None;
    h.table.sweep(&mut h.kernel, 3 * SEC, &mut h.out);
    assert_eq!(h.table.len(), 10, "a whole sweep finds every one still there");
}

#[test]
fn shutdown_ends_everything_with_final_counts() {
    let mut h = Harness::new();
    let a = key(1, 1, 2, 2, UDP, hook::INGRESS);
    let b = key(3, 1, 4, 2, UDP, hook::EGRESS);
    for i in 0..10 {
        h.send(a, 60, 0, i);
        h.send(b, 70, 0, i);
    }
    h.table.finish(&mut h.kernel, SEC, &mut h.out);
    assert_eq!(h.totals(&a), (10, 600));
    assert_eq!(h.totals(&b), (10, 700));
    assert!(h.kernel.is_empty() && h.table.is_empty());
}

#[test]
fn out_of_order_events_never_make_counts_go_backwards() {
    let mut h = Harness::new();
    let k = key(1, 1, 2, 2, UDP, hook::INGRESS);
    h.send(k, 100, 0, 0);
    let newer = FlowEvent {
        key: k,
        reason: report_reason::PERIODIC,
        _pad: 0,
        stats: FlowStats {
            first_seen_ns: 0,
            packets: 10,
            bytes: 1000,
            ..Default::default()
        },
    };
    let older = FlowEvent {
        stats: FlowStats {
            packets: 5,
            bytes: 500,
            ..newer.stats
        },
        ..newer
    };
    h.table.on_event(&newer, 6 * SEC, &mut h.out);
    h.table.on_event(&older, 6 * SEC, &mut h.out);
    assert_eq!(h.totals(&k), (10, 1000));
}

/// Found by the ringbuf_records fuzz target: packets and bytes are added
/// one after the other, so a snapshot can hold a packet without its bytes.
/// One that arrives after a newer one with the same packets must not take
/// bytes back (a record of 2^64 - 100 bytes).
#[test]
fn a_snapshot_between_the_packet_and_its_bytes_never_takes_bytes_back() {
    let mut h = Harness::new();
    let k = key(1, 1, 2, 2, UDP, hook::INGRESS);
    h.send(k, 100, 0, 0);
    let event = |packets, bytes| FlowEvent {
        key: k,
        reason: report_reason::PERIODIC,
        _pad: 0,
        stats: FlowStats {
            first_seen_ns: 0,
            packets,
            bytes,
            ..Default::default()
        },
    };
    h.table.on_event(&event(2, 200), 6 * SEC, &mut h.out);
    h.table.on_event(&event(2, 100), 12 * SEC, &mut h.out);
    h.table.on_event(&event(3, 300), 18 * SEC, &mut h.out);
    assert_eq!(h.totals(&k), (3, 300));
    assert!(h.records_of(&k).iter().all(|u| u.bytes <= 300));
}

#[test]
fn a_full_kernel_map_counts_new_flows_as_lost_and_keeps_counting_old_ones() {
    let mut h = Harness::new();
    h.kernel.maps.capacity = 1;
    let old = key(1, 1, 2, 2, UDP, hook::INGRESS);
    let new = key(3, 1, 4, 2, UDP, hook::INGRESS);
    h.send(old, 100, 0, 0);
    h.send(new, 60, 0, 1);
    h.send(new, 60, 0, 2);
    h.send(old, 100, 0, 3);
    assert_eq!(h.kernel.maps.counter(Counter::MapFullPackets), 2);
    assert_eq!(h.kernel.maps.counter(Counter::MapFullBytes), 120);
    h.table.finish(&mut h.kernel, SEC, &mut h.out);
    assert_eq!(h.totals(&old), (2, 200));
    assert!(h.records_of(&new).is_empty());
}

#[test]
fn a_flow_is_reported_once_per_interval_and_on_each_new_tcp_flag() {
    let mut kernel = HostKernel::default();
    let k = key(1, 1, 2, 2, TCP, hook::INGRESS);
    let reasons: Vec<_> = [
        (tcp_flags::SYN, 0),
        (tcp_flags::ACK, 1),
        (tcp_flags::ACK, 2),
        // The interval counts from the last report (the ACK at 1 ns).
        (tcp_flags::ACK, 5 * SEC),
        (tcp_flags::ACK, 5 * SEC + 1),
        (tcp_flags::ACK, 5 * SEC + 2),
        (tcp_flags::ACK | tcp_flags::FIN, 5 * SEC + 3),
    ]
    .into_iter()
    .map(|(flags, now)| kernel.packet(k, 60, flags, now).map(|e| e.reason))
    .collect();
    use report_reason::{NEW, NEW_TCP_FLAGS, PERIODIC};
    assert_eq!(
        reasons,
        [
            Some(NEW),
            Some(NEW_TCP_FLAGS),
            None,
            None,
            Some(PERIODIC),
            None,
            Some(NEW_TCP_FLAGS)
        ]
    );
}

#[test]
fn a_single_packet_flow_is_counted_by_its_begin_and_ended_by_an_empty_end() {
    let mut h = Harness::new();
    let k = key(1, 5000, 2, 53, UDP, hook::INGRESS);
    h.send(k, 80, 0, SEC);
    h.table.sweep(&mut h.kernel, 40 * SEC, &mut h.out);
    let records = h.records_of(&k);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(
        (records[0].state, records[0].packets, records[0].bytes),
        (FlowState::Begin, 1, 80)
    );
    assert_eq!(records[1].state, FlowState::End);
    assert!(records[1].is_empty() && !records[0].is_empty());
}

#[test]
fn a_periodic_event_for_counts_a_sweep_reported_makes_no_record() {
    let mut h = Harness::new();
    let k = key(1, 5000, 2, 53, UDP, hook::INGRESS);
    h.send(k, 100, 0, 0);
    h.send(k, 100, 0, SEC);
    // The sweep reports the second packet (quiet for a report interval)...
    h.table.sweep(&mut h.kernel, 6 * SEC, &mut h.out);
    assert_eq!(h.records_of(&k).len(), 2);
    // ...and a periodic event with the same totals arrives late.
    let mut stats = h.kernel.get(&k).unwrap();
    stats.tcp_flags_recent = 0;
    let late = FlowEvent {
        key: k,
        stats,
        reason: report_reason::PERIODIC,
        ..Default::default()
    };
    h.table.on_event(&late, 7 * SEC, &mut h.out);
    let records = h.records_of(&k);
    assert_eq!(records.len(), 2, "no empty C: {records:?}");
    assert!(records.iter().all(|u| !u.is_empty()));
}
