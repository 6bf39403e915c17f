//! Turns kernel flow events into flow records.
//!
//! The kernel keeps running totals per flow direction (a [`FlowKey`]) and
//! sends an event on a new flow, on new TCP flags and periodically while a
//! flow is active. This table pairs the two directions of a connection
//! (for `is_reply`), remembers what it already reported, and decides when a
//! direction gets a record: `B` on its first event, `C` on periodic events
//! (or at a sweep, for a flow that went quiet with counts not yet reported),
//! and `E` when the connection closes (FIN from both sides, or RST, then a
//! short linger for the last ACKs), when it has been idle for the idle
//! timeout, or at shutdown. An ended direction's kernel entry is deleted
//! right after its final counts are read.
//!
//! Each record carries the counts since the previous record of that
//! direction, so the records of a flow sum to its totals. A `C` is only
//! made when there is something new to count; an `E` is made even when
//! there is not (an *empty* end, [`FlowUpdate::is_empty`]), because the
//! formats that track flow state (VNet tuples) need to hear that the flow
//! ended. Outputs that count traffic skip empty ends (see `output`).

mod connection;
#[cfg(test)]
mod tests;

use indexmap::IndexMap;

/// Seeded per process, so flows chosen by whoever sends the packets cannot
/// be made to collide.
type Hasher = foldhash::quality::RandomState;

/// The table's maps keep their entries in one dense vector and the hash
/// slots as indices into it. A plain hash map holds whole entries in its
/// slots, and its slots double: at a million flows it had 2^21 slots of
/// 137 (directions) and 73 bytes (connections), twice what the flows need.
type Table<K, V> = IndexMap<K, V, Hasher>;

use agent_common::{FlowEvent, FlowKey, FlowStats, report_reason, tcp_flags};
pub use connection::ConnKey;
use connection::Connection;

/// Where a record sits in its flow's life, as in NSG/VNet flow logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// First record of a flow direction.
    Begin,
    /// A periodic record of a flow direction that goes on.
    Continuing,
    /// Last record: FIN from both sides, RST, idle timeout or shutdown.
    End,
}

impl FlowState {
    pub fn letter(self) -> &'static str {
        match self {
            FlowState::Begin => "B",
            FlowState::Continuing => "C",
            FlowState::End => "E",
        }
    }
}

/// The kernel flow map, as the table needs it.
/// Receives the kernel map's entries, a batch at a time.
pub type EntryVisitor<'a> = dyn FnMut(&[(FlowKey, FlowStats)]) + 'a;

/// Appends the flow events waiting in the ring buffer to a list.
pub type RingEvents<'a> = dyn FnMut(&mut Vec<FlowEvent>) + 'a;

pub trait KernelFlows {
    fn get(&self, key: &FlowKey) -> Option<FlowStats>;
    /// Reads an entry and deletes it in one step, so a packet counted in
    /// it up to the delete is in what comes back (between a read and a
    /// later delete, a packet would land in an entry no one reads again).
    fn take(&mut self, key: &FlowKey) -> Option<FlowStats>;
    /// Deletes an entry, possibly deferred until [`KernelFlows::flush`].
    fn remove(&mut self, key: &FlowKey);
    /// Carries out deferred deletions.
    fn flush(&mut self) {}
    /// Every entry, copied out a batch at a time (a million flows are not
    /// copied at once). Deletions wait until the visit is over. False when
    /// the map could not be read to the end.
    fn visit_entries(&mut self, visit: &mut EntryVisitor) -> bool;
}

#[derive(Clone, Copy, Debug)]
pub struct TableConfig {
    pub report_interval_ns: u64,
    pub idle_timeout_ns: u64,
    /// How long a closed TCP connection stays open for its last packets
    /// (the final ACK after the second FIN) before its `E` records.
    pub close_linger_ns: u64,
}

/// One record to write: what changed in one flow direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowUpdate {
    pub key: FlowKey,
    /// The latest snapshot of the direction's kernel entry.
    pub stats: FlowStats,
    pub packets: u64,
    pub bytes: u64,
    /// TCP flags seen since the previous record.
    pub tcp_flags: u16,
    pub state: FlowState,
    /// `None` when the initiator is not known (a TCP connection that began
    /// before hubcap started).
    pub is_reply: Option<bool>,
}

impl FlowUpdate {
    /// An end with nothing new to count: it says only that the flow ended.
    pub fn is_empty(&self) -> bool {
        self.packets == 0 && self.bytes == 0
    }
}

/// What the table keeps per flow direction (its connection is found again
/// with [`ConnKey::of`], which is cheaper than storing it).
struct Direction {
    /// The latest snapshot of the kernel entry. Its `first_seen_ns` tells
    /// which entry the counts belong to: a new kernel entry for the same key
    /// is a new flow.
    latest: FlowStats,
    reported_packets: u64,
    reported_bytes: u64,
    pending_flags: u16,
    /// Kernel time of the last record, for quiet-flow `C` records.
    last_record_ns: u64,
    /// The last sweep that found this direction's kernel entry.
    swept: u32,
}

#[derive(Default)]
pub struct TableStats {
    /// Directions first learned from the map sweep: their `NEW` event was
    /// lost (ring buffer full), their counts were not.
    pub adopted_from_map: u64,
    /// Events left to the sweep: for a direction the table does not hold
    /// (its `NEW` event was lost, so the sweep adopts it; or it just ended
    /// and the event's counts are in its `E` record), or from a kernel
    /// entry older than the one the table holds.
    pub events_left_to_sweep: u64,
    /// Kernel map entries found by the last sweep.
    pub kernel_entries: u64,
}

/// Idle entries taken out of the kernel map between two reads of the ring
/// buffer during a sweep.
const IDLE_BATCH: usize = 4096;

pub struct FlowTable {
    config: TableConfig,
    directions: Table<FlowKey, Direction>,
    connections: Table<ConnKey, Connection>,
    sweep_epoch: u32,
    pub stats: TableStats,
}

impl FlowTable {
    pub fn new(config: TableConfig) -> Self {
        FlowTable {
            config,
            directions: Table::default(),
            connections: Table::default(),
            sweep_epoch: 0,
            stats: TableStats::default(),
        }
    }

    /// Flow directions currently open.
    pub fn len(&self) -> usize {
        self.directions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.directions.is_empty()
    }

    /// Handles one kernel event at kernel time `now_ns`.
    pub fn on_event(&mut self, event: &FlowEvent, now_ns: u64, out: &mut Vec<FlowUpdate>) {
        let key = event.key;
        let stats = event.stats;
        // Only a NEW event carries the flags of the very first packet.
        let first_packet_flags = (event.reason == report_reason::NEW).then_some(stats.tcp_flags_recent);
        match self.directions.get(&key) {
            Some(d) if d.latest.first_seen_ns == stats.first_seen_ns => {
                self.update(&key, &stats, stats.tcp_flags_recent, now_ns);
                if event.reason == report_reason::PERIODIC {
                    self.emit(&key, FlowState::Continuing, now_ns, out);
                }
            }
            // From an entry ended before the one held: a packet counted just
            // before the entry was taken out, its event read late.
            Some(d) if stats.first_seen_ns < d.latest.first_seen_ns => self.stats.events_left_to_sweep += 1,
            Some(_) => {
                // The kernel entry was recreated: close the old flow first.
                self.end(&key, None, now_ns, out);
                self.begin(&key, &stats, first_packet_flags, now_ns, out);
            }
            None if event.reason == report_reason::NEW => self.begin(&key, &stats, first_packet_flags, now_ns, out),
            // Either the direction just ended (its entry taken out with this
            // packet counted: starting it again would count it twice), or
            // its NEW event was lost and the next sweep adopts the entry,
            // counts and all.
            None => self.stats.events_left_to_sweep += 1,
        }
    }

    /// Ends closed connections whose linger has passed. Cheap: run it often.
    pub fn end_closed(&mut self, kernel: &mut impl KernelFlows, now_ns: u64, out: &mut Vec<FlowUpdate>) {
        let linger = self.config.close_linger_ns;
        let done: Vec<ConnKey> = self
            .connections
            .iter()
            .filter(|(_, c)| c.closed_since_ns != 0 && now_ns.saturating_sub(c.closed_since_ns) >= linger)
            .map(|(k, _)| *k)
            .collect();
        for conn in done {
            for key in conn.tcp_keys() {
                if self.directions.contains_key(&key) {
                    let final_stats = kernel.take(&key);
                    self.end(&key, final_stats.as_ref(), now_ns, out);
                }
            }
            // Anything left (not TCP: cannot happen) goes with the sweep.
        }
        kernel.flush();
    }

    /// Goes through the whole kernel map: picks up directions whose `NEW`
    /// event was lost, reports quiet directions' unreported counts, and ends
    /// directions idle for the idle timeout. Run it every report interval.
    pub fn sweep(&mut self, kernel: &mut impl KernelFlows, now_ns: u64, out: &mut Vec<FlowUpdate>) {
        self.sweep_with(kernel, now_ns, out, &mut |_| {});
    }

    /// [`FlowTable::sweep`], taking in the events `read_ring` reads before
    /// each batch of the map (and every [`IDLE_BATCH`] idle entries taken
    /// out). Under heavy flow churn a sweep of a large map takes longer
    /// than the ring buffer can hold the events that keep coming; and an
    /// entry whose `NEW` event is read before its batch is looked at is a
    /// direction the table knows, with its first packet's TCP flags, not
    /// one adopted as if the event were lost.
    pub fn sweep_with(
        &mut self,
        kernel: &mut impl KernelFlows,
        now_ns: u64,
        out: &mut Vec<FlowUpdate>,
        read_ring: &mut RingEvents,
    ) {
        self.sweep_epoch = self.sweep_epoch.wrapping_add(1);
        let epoch = self.sweep_epoch;
        let mut entries = 0;
        let mut idle = Vec::new();
        let mut events = Vec::new();
        let complete = kernel.visit_entries(&mut |batch| {
            self.take_events(read_ring, &mut events, out);
            entries += batch.len();
            for (key, stats) in batch {
                if self.sweep_entry(key, stats, epoch, now_ns, out) {
                    idle.push((*key, *stats));
                }
            }
        });
        self.stats.kernel_entries = entries as u64;
        for (i, (key, seen)) in idle.iter().enumerate() {
            // Counted in a packet that came after the visit read the entry.
            let last = kernel.take(key).unwrap_or(*seen);
            self.end(key, Some(&last), now_ns, out);
            // A syscall each: as long as a batch of the visit, or longer.
            if i % IDLE_BATCH == IDLE_BATCH - 1 {
                self.take_events(read_ring, &mut events, out);
            }
        }
        if !complete {
            // Unvisited directions are not gone; the next sweep decides.
            kernel.flush();
            return;
        }
        // Directions whose kernel entry is gone (not by us): end them with
        // what was last known.
        let gone: Vec<FlowKey> = self
            .directions
            .iter()
            .filter(|(_, d)| d.swept != epoch)
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            self.end(&key, None, now_ns, out);
        }
        kernel.flush();
    }

    /// Reads the ring buffer's waiting events with `read_ring` and applies
    /// them, each at its own last packet's time (as the ring's reader does).
    fn take_events(&mut self, read_ring: &mut RingEvents, events: &mut Vec<FlowEvent>, out: &mut Vec<FlowUpdate>) {
        read_ring(events);
        for event in events.drain(..) {
            self.on_event(&event, event.stats.last_seen_ns, out);
        }
    }

    /// One kernel entry in a sweep; true when it is idle (the sweep then
    /// takes the entry out of the map and ends the direction).
    fn sweep_entry(
        &mut self,
        key: &FlowKey,
        stats: &FlowStats,
        epoch: u32,
        now_ns: u64,
        out: &mut Vec<FlowUpdate>,
    ) -> bool {
        let known = self
            .directions
            .get(key)
            .map(|d| d.latest.first_seen_ns == stats.first_seen_ns);
        match known {
            None | Some(false) => {
                if known == Some(false) {
                    self.end(key, None, now_ns, out);
                }
                self.stats.adopted_from_map += 1;
                self.begin(key, stats, None, now_ns, out);
            }
            Some(true) => self.update(key, stats, stats.tcp_flags_recent, now_ns),
        }
        if now_ns.saturating_sub(stats.last_seen_ns) >= self.config.idle_timeout_ns {
            return true;
        }
        let d = self.directions.get_mut(key).expect("begun above");
        d.swept = epoch;
        let unreported = d.latest.packets > d.reported_packets;
        if unreported && now_ns.saturating_sub(d.last_record_ns) >= self.config.report_interval_ns {
            self.emit(key, FlowState::Continuing, now_ns, out);
        }
        false
    }

    /// Shutdown, after the programs are detached and the ring buffer is
    /// drained: every direction gets its final record and the map is emptied.
    pub fn finish(&mut self, kernel: &mut impl KernelFlows, now_ns: u64, out: &mut Vec<FlowUpdate>) {
        let mut seen = Vec::new();
        kernel.visit_entries(&mut |batch| {
            for (key, stats) in batch {
                match self.directions.get(key) {
                    Some(d) if d.latest.first_seen_ns == stats.first_seen_ns => {}
                    Some(_) => {
                        self.end(key, None, now_ns, out);
                        self.begin(key, stats, None, now_ns, out);
                    }
                    None => {
                        self.stats.adopted_from_map += 1;
                        self.begin(key, stats, None, now_ns, out);
                    }
                }
                self.end(key, Some(stats), now_ns, out);
                seen.push(*key);
            }
        });
        for key in &seen {
            kernel.remove(key);
        }
        let rest: Vec<FlowKey> = self.directions.keys().copied().collect();
        for key in rest {
            self.end(&key, None, now_ns, out);
        }
        kernel.flush();
    }

    /// Starts a direction. `first_packet_flags` are the TCP flags of its
    /// first packet when known (they tell a SYN from a SYN-ACK).
    fn begin(
        &mut self,
        key: &FlowKey,
        stats: &FlowStats,
        first_packet_flags: Option<u16>,
        now_ns: u64,
        out: &mut Vec<FlowUpdate>,
    ) {
        let conn_key = ConnKey::of(key);
        let conn = self.connections.entry(conn_key).or_default();
        conn.learn_initiator(key, first_packet_flags);
        conn.directions += 1;
        self.directions.insert(
            *key,
            Direction {
                latest: FlowStats {
                    first_seen_ns: stats.first_seen_ns,
                    ..FlowStats::default()
                },
                reported_packets: 0,
                reported_bytes: 0,
                pending_flags: 0,
                last_record_ns: now_ns,
                swept: self.sweep_epoch,
            },
        );
        self.update(key, stats, stats.tcp_flags_recent | stats.tcp_flags_seen, now_ns);
        self.emit(key, FlowState::Begin, now_ns, out);
    }

    /// Takes a newer snapshot of a direction's entry. Events from different
    /// CPUs may arrive out of order, so totals only ever grow. Packets and
    /// bytes are two atomic adds: a snapshot taken between them has the
    /// packet without its bytes, so of two with the same packets the one
    /// with more bytes is the newer.
    fn update(&mut self, key: &FlowKey, stats: &FlowStats, flags: u16, now_ns: u64) {
        let Some(d) = self.directions.get_mut(key) else { return };
        if (stats.packets, stats.bytes) >= (d.latest.packets, d.latest.bytes) {
            d.latest = *stats;
        }
        d.pending_flags |= flags;
        if flags & (tcp_flags::FIN | tcp_flags::RST) != 0
            && let Some(conn) = self.connections.get_mut(&ConnKey::of(key))
        {
            conn.note_close_flags(key, flags, now_ns);
        }
    }

    fn emit(&mut self, key: &FlowKey, state: FlowState, now_ns: u64, out: &mut Vec<FlowUpdate>) {
        let Some(d) = self.directions.get_mut(key) else { return };
        let nothing_new = (d.latest.packets, d.latest.bytes) <= (d.reported_packets, d.reported_bytes);
        if state == FlowState::Continuing && nothing_new {
            // A periodic event for counts a sweep already reported.
            return;
        }
        let is_reply = self.connections.get(&ConnKey::of(key)).and_then(|c| c.is_reply(key));
        out.push(FlowUpdate {
            key: *key,
            stats: d.latest,
            // Never below what was reported (see `update`); saturating so
            // that a record can never carry a wrapped, absurd count.
            packets: d.latest.packets.saturating_sub(d.reported_packets),
            bytes: d.latest.bytes.saturating_sub(d.reported_bytes),
            tcp_flags: d.pending_flags,
            state,
            is_reply,
        });
        d.reported_packets = d.latest.packets;
        d.reported_bytes = d.latest.bytes;
        d.pending_flags = 0;
        d.last_record_ns = now_ns;
    }

    /// Writes a direction's `E` record (with `final_stats` if known) and
    /// forgets it; the connection goes when its last direction does.
    fn end(&mut self, key: &FlowKey, final_stats: Option<&FlowStats>, now_ns: u64, out: &mut Vec<FlowUpdate>) {
        if !self.directions.contains_key(key) {
            return;
        }
        if let Some(stats) = final_stats {
            if stats.first_seen_ns == self.directions[key].latest.first_seen_ns {
                self.update(key, stats, stats.tcp_flags_recent, now_ns);
            }
        }
        self.emit(key, FlowState::End, now_ns, out);
        // Moves the last entry into the hole: order means nothing here.
        self.directions.swap_remove(key);
        let conn_key = ConnKey::of(key);
        if let Some(conn) = self.connections.get_mut(&conn_key) {
            conn.directions -= 1;
            if conn.directions == 0 {
                self.connections.swap_remove(&conn_key);
            }
        }
    }
}
