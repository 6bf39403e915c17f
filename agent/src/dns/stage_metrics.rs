//! The DNS path's own metrics: what became of every DNS packet and
//! message between the kernel and a record, and how full its tables are.
//! Registered when DNS is on.

use agent_common::Counter;
use prometheus::{IntCounter, IntCounterVec, IntGauge};

use super::DnsCounts;
use crate::{
    datapath::CounterValues,
    metrics::{Family, Metrics},
};

const MESSAGES: Family = Family {
    name: "hubcap_dns_messages_total",
    help: "DNS messages by what became of them: recorded, copy (the same message at another hook, recorded once), malformed (no record)",
    labels: &["outcome"],
};
const PACKETS_LOST: Family = Family {
    name: "hubcap_dns_packets_lost_total",
    help: "DNS packets that reached no record, by reason: ringbuf_full, unreadable (kernel), bad_record (a kernel/user mismatch); their flows still count them",
    labels: &["reason"],
};
const UNANSWERED: Family = Family {
    name: "hubcap_dns_queries_unanswered_total",
    help: "DNS queries no answer was seen for within 10 s (or before the same query was asked again)",
    labels: &[],
};
const WITHOUT_QUERY: Family = Family {
    name: "hubcap_dns_answers_without_query_total",
    help: "DNS answers whose query was not seen: recorded without latency",
    labels: &[],
};
const NOT_TRACKED: Family = Family {
    name: "hubcap_dns_not_tracked_total",
    help: "What the DNS tables had no room for: message (may be recorded twice or without latency), name (flows to its addresses go unnamed)",
    labels: &["what"],
};
const WAITING: Family = Family {
    name: "hubcap_dns_queries_waiting",
    help: "DNS queries waiting for their answer",
    labels: &[],
};
const NAMES: Family = Family {
    name: "hubcap_dns_names",
    help: "(client, address) pairs whose DNS names are remembered for later flows",
    labels: &[],
};

pub struct StageMetrics {
    messages: IntCounterVec,
    lost: IntCounterVec,
    unanswered: IntCounter,
    without_query: IntCounter,
    not_tracked: IntCounterVec,
    waiting: IntGauge,
    names: IntGauge,
    /// The counts as last published.
    published: DnsCounts,
}

impl StageMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let messages = metrics.counters(&MESSAGES);
        let lost = metrics.counters(&PACKETS_LOST);
        let not_tracked = metrics.counters(&NOT_TRACKED);
        // Every series at 0 from the start: "nothing lost" is a value.
        for outcome in ["recorded", "copy", "malformed"] {
            messages.with_label_values(&[outcome]);
        }
        for reason in ["ringbuf_full", "unreadable", "bad_record"] {
            lost.with_label_values(&[reason]);
        }
        for what in ["message", "name"] {
            not_tracked.with_label_values(&[what]);
        }
        StageMetrics {
            messages,
            lost,
            unanswered: metrics.counter(&UNANSWERED),
            without_query: metrics.counter(&WITHOUT_QUERY),
            not_tracked,
            waiting: metrics.gauge(&WAITING),
            names: metrics.gauge(&NAMES),
            published: DnsCounts::default(),
        }
    }

    /// Adds what grew since the last call; sets the gauges.
    pub fn publish(&mut self, now: &DnsCounts, waiting: usize, names: usize) {
        let before = self.published;
        let grew = |now: u64, before: u64| now.saturating_sub(before);
        let message = |outcome: &str, n| self.messages.with_label_values(&[outcome]).inc_by(n);
        message("recorded", grew(now.recorded, before.recorded));
        message("copy", grew(now.tracker.copies, before.tracker.copies));
        message("malformed", grew(now.malformed, before.malformed));
        self.lost
            .with_label_values(&["bad_record"])
            .inc_by(grew(now.bad_records, before.bad_records));
        self.unanswered
            .inc_by(grew(now.tracker.unanswered, before.tracker.unanswered));
        self.without_query.inc_by(grew(
            now.tracker.answers_without_query,
            before.tracker.answers_without_query,
        ));
        self.not_tracked
            .with_label_values(&["message"])
            .inc_by(grew(now.tracker.untracked, before.tracker.untracked));
        self.not_tracked
            .with_label_values(&["name"])
            .inc_by(grew(now.names_full, before.names_full));
        self.waiting.set(waiting as i64);
        self.names.set(names as i64);
        self.published = *now;
    }

    /// The kernel's DNS losses since the last report.
    pub fn count_kernel(&self, delta: &CounterValues) {
        self.lost
            .with_label_values(&["ringbuf_full"])
            .inc_by(delta.get(Counter::DnsRingFull));
        self.lost
            .with_label_values(&["unreadable"])
            .inc_by(delta.get(Counter::DnsUnreadable));
    }
}
