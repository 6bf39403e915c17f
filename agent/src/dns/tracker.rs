//! One record per message per node, and each answer's latency.
//!
//! A message crosses several hooks on its way through a node (the client
//! pod's veth, the node's uplink, the server pod's veth), each seeing the
//! same bytes, perhaps with addresses translated by kube-proxy or a
//! masquerade. The first observation point to see a message speaks for it;
//! the same message at another point soon after is a copy. A message is
//! known by the client's port, its id, and its question, which no address
//! translation changes; the same message again at the same point is a
//! retransmission, and counts.
//!
//! A query waits for its answer; the answer's latency is the time between
//! the two first sightings, on the kernel's clock. A query unanswered for
//! [`UNANSWERED_AFTER_NS`] is counted as such.

use std::collections::HashMap;

/// The keys are hashes already: a fast hasher is all they need.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use agent_common::FlowKey;

use super::message::DnsMessage;

/// How long a copy of a message may trail the first sighting (copies
/// trail by microseconds; a retransmission at another hook comes later).
const COPY_WINDOW_NS: u64 = 1_000_000_000;
/// How long a query waits for its answer before it counts as unanswered
/// (resolvers give up after 5 s; dig and glibc retry by then).
pub const UNANSWERED_AFTER_NS: u64 = 10_000_000_000;
/// Messages and queries remembered at most (each about 40 bytes, so at
/// most about 10 MB in all): 100,000 queries a second on one node, with
/// their answers and copies, fit. Beyond that copies may be recorded twice
/// and latencies go missing (both counted).
const MAX_TRACKED: usize = 262_144;

/// A transaction, by a 64-bit hash of what names it (protocol, client
/// port, id and question): the tables hold no strings, and two different
/// transactions share a hash once in 2^64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Transaction(u64);

impl Transaction {
    fn of(key: &FlowKey, message: &DnsMessage) -> Self {
        use std::hash::{BuildHasher, Hash, Hasher};
        let client_port = if message.is_response {
            key.dst_port
        } else {
            key.src_port
        };
        let mut h = HASHER.build_hasher();
        (key.protocol, client_port, message.id).hash(&mut h);
        message.query.hash(&mut h);
        message.qtypes.hash(&mut h);
        Transaction(h.finish())
    }
}

/// Fixed seeds: the hashes only need to be stable within one run.
static HASHER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x646e_735f_7478);

/// Where a packet was seen: interface and hook.
type Point = (u32, u8);

/// What the tracker decided about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first sighting: record it. For an answer, the latency when its
    /// query was seen.
    Record { latency_ns: Option<u64> },
    /// A copy seen at another point.
    Copy,
}

/// What the tracker counted since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrackerCounts {
    /// Copies of messages already recorded at another point.
    pub copies: u64,
    /// Queries that got no answer in time (or were asked again first).
    pub unanswered: u64,
    /// Answers whose query was not seen (asked before hubcap started, or
    /// over an interface it does not watch): recorded without latency.
    pub answers_without_query: u64,
    /// Messages not tracked because the tracker was full.
    pub untracked: u64,
}

#[derive(Default)]
pub struct Tracker {
    /// First sightings, by message and direction.
    seen: FastMap<(Transaction, bool), (Point, u64)>,
    /// Queries waiting for their answer, with their first sighting's time.
    waiting: FastMap<Transaction, u64>,
    pub counts: TrackerCounts,
}

impl Tracker {
    pub fn observe(&mut self, key: &FlowKey, time_ns: u64, message: &DnsMessage) -> Verdict {
        let tx = Transaction::of(key, message);
        let point = (key.ifindex, key.hook);
        let sighting = (tx, message.is_response);
        let room = self.seen.len() < MAX_TRACKED;
        match self.seen.get_mut(&sighting) {
            Some((first, at)) if *first != point && time_ns.saturating_sub(*at) < COPY_WINDOW_NS => {
                self.counts.copies += 1;
                return Verdict::Copy;
            }
            Some(entry) => *entry = (point, time_ns),
            None if room => {
                self.seen.insert(sighting, (point, time_ns));
            }
            None => self.counts.untracked += 1,
        }
        let (tx, is_response) = sighting;
        if !is_response {
            if self.waiting.len() < MAX_TRACKED || self.waiting.contains_key(&tx) {
                if self.waiting.insert(tx, time_ns).is_some() {
                    // Asked again before an answer came.
                    self.counts.unanswered += 1;
                }
            } else {
                self.counts.untracked += 1;
            }
            return Verdict::Record { latency_ns: None };
        }
        let latency_ns = self.waiting.remove(&tx).map(|asked| time_ns.saturating_sub(asked));
        if latency_ns.is_none() {
            self.counts.answers_without_query += 1;
        }
        Verdict::Record { latency_ns }
    }

    /// Forgets old sightings and counts the queries that waited too long.
    pub fn expire(&mut self, now_ns: u64) {
        self.seen
            .retain(|_, (_, at)| now_ns.saturating_sub(*at) < COPY_WINDOW_NS);
        let before = self.waiting.len();
        self.waiting
            .retain(|_, asked| now_ns.saturating_sub(*asked) < UNANSWERED_AFTER_NS);
        self.counts.unanswered += (before - self.waiting.len()) as u64;
    }

    /// Queries still waiting for an answer.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// At exit: every query still waiting is unanswered.
    pub fn finish(&mut self) {
        self.counts.unanswered += self.waiting.len() as u64;
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{hook, ip_proto};

    use super::*;

    const MS: u64 = 1_000_000;

    fn key(ifindex: u32, hook: u8, src_port: u16, dst_port: u16) -> FlowKey {
        FlowKey {
            protocol: ip_proto::UDP,
            ifindex,
            hook,
            src_port,
            dst_port,
            ..Default::default()
        }
    }

    fn message(id: u16, is_response: bool) -> DnsMessage {
        DnsMessage {
            id,
            is_response,
            query: "example.com.".into(),
            qtypes: vec!["A".into()],
            ..Default::default()
        }
    }

    #[test]
    fn an_answer_gets_the_latency_since_its_query() {
        let mut t = Tracker::default();
        let q = t.observe(&key(3, hook::INGRESS, 40000, 53), 100 * MS, &message(1, false));
        assert_eq!(q, Verdict::Record { latency_ns: None });
        let a = t.observe(&key(3, hook::EGRESS, 53, 40000), 107 * MS, &message(1, true));
        assert_eq!(
            a,
            Verdict::Record {
                latency_ns: Some(7 * MS)
            }
        );
        assert_eq!(t.waiting(), 0);
        assert_eq!(t.counts, TrackerCounts::default());
    }

    #[test]
    fn the_same_message_at_a_second_hook_is_a_copy() {
        let mut t = Tracker::default();
        t.observe(&key(3, hook::INGRESS, 40000, 53), 100 * MS, &message(1, false));
        // The server's veth sees it after DNAT: other addresses, same port and id.
        let copy = t.observe(&key(4, hook::EGRESS, 40000, 53), 100 * MS + 20_000, &message(1, false));
        assert_eq!(copy, Verdict::Copy);
        let answer = t.observe(&key(4, hook::INGRESS, 53, 40000), 102 * MS, &message(1, true));
        assert_eq!(
            answer,
            Verdict::Record {
                latency_ns: Some(2 * MS)
            }
        );
        assert_eq!(
            t.observe(&key(3, hook::EGRESS, 53, 40000), 102 * MS + 5, &message(1, true)),
            Verdict::Copy
        );
        assert_eq!(t.counts.copies, 2);
    }

    #[test]
    fn a_retransmission_at_the_same_hook_counts_and_the_first_query_is_unanswered() {
        let mut t = Tracker::default();
        let k = key(3, hook::INGRESS, 40000, 53);
        t.observe(&k, 0, &message(1, false));
        let again = t.observe(&k, 1000 * MS, &message(1, false));
        assert_eq!(again, Verdict::Record { latency_ns: None });
        assert_eq!(t.counts.unanswered, 1);
        let a = t.observe(&key(3, hook::EGRESS, 53, 40000), 1003 * MS, &message(1, true));
        assert_eq!(
            a,
            Verdict::Record {
                latency_ns: Some(3 * MS)
            }
        );
    }

    #[test]
    fn a_query_without_answer_is_unanswered_after_the_timeout() {
        let mut t = Tracker::default();
        t.observe(&key(3, hook::INGRESS, 40000, 53), 0, &message(1, false));
        t.expire(UNANSWERED_AFTER_NS - 1);
        assert_eq!((t.waiting(), t.counts.unanswered), (1, 0));
        t.expire(UNANSWERED_AFTER_NS);
        assert_eq!((t.waiting(), t.counts.unanswered), (0, 1));
    }

    #[test]
    fn an_answer_without_its_query_is_recorded_and_counted() {
        let mut t = Tracker::default();
        let a = t.observe(&key(3, hook::EGRESS, 53, 40000), 5, &message(9, true));
        assert_eq!(a, Verdict::Record { latency_ns: None });
        assert_eq!(t.counts.answers_without_query, 1);
    }

    #[test]
    fn other_ids_ports_and_questions_are_other_transactions() {
        let mut t = Tracker::default();
        t.observe(&key(3, hook::INGRESS, 40000, 53), 0, &message(1, false));
        assert_ne!(
            t.observe(&key(4, hook::INGRESS, 40000, 53), 1, &message(2, false)),
            Verdict::Copy
        );
        assert_ne!(
            t.observe(&key(4, hook::INGRESS, 40001, 53), 1, &message(1, false)),
            Verdict::Copy
        );
        let mut other = message(1, false);
        other.query = "example.org.".into();
        assert_ne!(t.observe(&key(4, hook::INGRESS, 40000, 53), 1, &other), Verdict::Copy);
        assert_eq!(t.waiting(), 4);
    }
}
