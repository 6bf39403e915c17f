//! Recent events for the Observer API: a bounded ring (Hubble's default is
//! 4,095) that `GetFlows` reads with `number`/`first`/`since`/`until`, and a
//! live feed for `follow`.
//!
//! Capture never waits for a client. The ring drops its oldest event when
//! full, and a follower that falls behind the feed skips ahead and is told
//! how many events it missed (sent to it as `lost_events`).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use prost_types::Timestamp;
use tokio::sync::broadcast;

use crate::{
    hubble::{TimeWindow, nanos},
    proto::flow::{Flow, LostEvent},
    record::RecordSource,
};

/// The time of an L7 record without one (never built so).
const NO_TIME: Timestamp = Timestamp { seconds: 0, nanos: 0 };

/// What the ring holds: flows (as what they are built from, a fifth of
/// their built size), and the kernel's loss reports, which Hubble clients
/// see among the flows as `lost_events`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Flow(RecordSource),
    /// An L7 record (DNS), as built.
    L7(Arc<Flow>),
    Lost {
        event: LostEvent,
        time: Timestamp,
    },
}

impl Event {
    pub fn time(&self) -> &Timestamp {
        match self {
            Event::Flow(source) => &source.time,
            Event::L7(flow) => flow.time.as_ref().unwrap_or(&NO_TIME),
            Event::Lost { time, .. } => time,
        }
    }
}

/// What a follower receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    Event(Arc<Event>),
    /// This many events went by while the follower was too slow.
    Missed(u64),
}

pub struct FlowRing {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Every flow ever pushed (Hubble's `seen_flows`).
    seen: u64,
    live: broadcast::Sender<Arc<Event>>,
    /// Kubernetes namespaces seen in flows, with the last time (seconds).
    namespaces: HashMap<String, i64>,
}

/// How far a follower may fall behind before it starts missing events.
const FOLLOW_BACKLOG: usize = 4096;

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        FlowRing {
            events: VecDeque::with_capacity(capacity),
            capacity,
            seen: 0,
            live: broadcast::channel(FOLLOW_BACKLOG).0,
            namespaces: HashMap::new(),
        }
    }

    /// Adds a flow, and notes its endpoints' namespaces (from the enrich
    /// stage) for GetNamespaces. Never blocks.
    pub fn push_flow(&mut self, source: RecordSource) {
        self.note_flow(&source);
        self.push(Event::Flow(source));
    }

    /// Adds an L7 record built from a packet of `source`.
    pub fn push_l7(&mut self, source: &RecordSource, flow: Arc<Flow>) {
        self.note_flow(source);
        self.push(Event::L7(flow));
    }

    fn note_flow(&mut self, source: &RecordSource) {
        self.seen += 1;
        let seconds = source.time.seconds;
        let identities = &source.identities;
        for endpoint in [&identities.source, &identities.destination].into_iter().flatten() {
            if !endpoint.namespace.is_empty() {
                match self.namespaces.get_mut(&endpoint.namespace) {
                    Some(last) => *last = (*last).max(seconds),
                    None => {
                        self.namespaces.insert(endpoint.namespace.clone(), seconds);
                    }
                }
            }
        }
    }

    /// Adds a report of events lost before the ring. Never blocks.
    pub fn push_lost(&mut self, event: LostEvent, time: Timestamp) {
        self.push(Event::Lost { event, time });
    }

    /// Adds an event; the oldest goes when the ring is full.
    fn push(&mut self, event: Event) {
        let event = Arc::new(event);
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(Arc::clone(&event));
        // No follower is not an error.
        let _ = self.live.send(event);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Namespaces seen in flows since `since_seconds`, sorted; older ones are
    /// forgotten.
    pub fn namespaces(&mut self, since_seconds: i64) -> Vec<String> {
        self.namespaces.retain(|_, last| *last >= since_seconds);
        let mut names: Vec<String> = self.namespaces.keys().cloned().collect();
        names.sort();
        names
    }

    /// Flows per second over the minute before `now`: the flows in the ring
    /// within it, over the minute (or over the span the ring covers, when it
    /// holds less than a minute).
    pub fn flows_rate(&self, now: &Timestamp) -> f64 {
        const MINUTE: i128 = 60_000_000_000;
        let now = nanos(now);
        let mut count = 0u64;
        let mut oldest = now;
        for event in self.events.iter().rev() {
            let Event::Flow(source) = &**event else { continue };
            let t = nanos(&source.time);
            if now - t > MINUTE {
                return count as f64 / 60.0;
            }
            count += 1;
            oldest = oldest.min(t);
        }
        if count == 0 {
            return 0.0;
        }
        // The ring does not reach back a minute: rate over what it holds,
        // unless it was never full (then the minute is all there was).
        if self.seen > self.events.len() as u64 {
            let span = (now - oldest).max(1_000_000_000);
            count as f64 * 1e9 / span as f64
        } else {
            count as f64 / 60.0
        }
    }

    /// Every event in the ring, oldest first: cheap (shared pointers), so
    /// that selecting from them happens without the lock.
    pub fn snapshot(&self) -> Vec<Arc<Event>> {
        self.events.iter().cloned().collect()
    }

    /// A live feed of events pushed from now on. Taken together with a
    /// [`snapshot`](Self::snapshot) under the same lock, nothing falls
    /// between the two and nothing is sent twice.
    pub fn follow(&self) -> Follower {
        Follower {
            receiver: self.live.subscribe(),
        }
    }
}

/// The events of `events` (oldest first) within `window` that `keep`
/// accepts: the last `number` of them, or with `first` the first `number`.
/// `number` 0 means all.
pub fn pick(
    events: &[Arc<Event>],
    number: usize,
    first: bool,
    window: TimeWindow,
    keep: impl Fn(&Event) -> bool,
) -> Vec<Arc<Event>> {
    let selected = events.iter().filter(|e| window.contains(e.time()) && keep(e));
    let limit = if number == 0 { usize::MAX } else { number };
    if first {
        selected.take(limit).cloned().collect()
    } else {
        let mut last: Vec<Arc<Event>> = selected.rev().take(limit).cloned().collect();
        last.reverse();
        last
    }
}

pub struct Follower {
    receiver: broadcast::Receiver<Arc<Event>>,
}

impl Follower {
    /// The next event, or how many were missed; `None` once the ring is gone.
    pub async fn next(&mut self) -> Option<Feed> {
        match self.receiver.recv().await {
            Ok(event) => Some(Feed::Event(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Feed::Missed(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        enrich::Identities,
        flow_table::{FlowState, FlowUpdate},
        proto::flow::Endpoint,
    };

    /// A flow whose uuid is the second it was seen.
    fn source(second: i64) -> RecordSource {
        RecordSource {
            update: FlowUpdate {
                key: Default::default(),
                stats: Default::default(),
                packets: 1,
                bytes: 60,
                tcp_flags: 0,
                state: FlowState::Begin,
                is_reply: None,
            },
            uuid: second as u128,
            time: Timestamp {
                seconds: second,
                nanos: 0,
            },
            flow_start_time: Timestamp::default(),
            interface: None,
            identities: Identities::default(),
        }
    }

    trait PushSecond {
        fn push_second(&mut self, second: i64);
    }

    impl PushSecond for FlowRing {
        fn push_second(&mut self, second: i64) {
            self.push_flow(source(second));
        }
    }

    fn uuid(event: &Event) -> String {
        match event {
            Event::Flow(source) => source.uuid.to_string(),
            Event::L7(flow) => flow.uuid.clone(),
            Event::Lost { event, .. } => format!("lost {}", event.num_events_lost),
        }
    }

    fn uuids(events: &[Arc<Event>]) -> Vec<String> {
        events.iter().map(|e| uuid(e)).collect()
    }

    #[test]
    fn keeps_the_newest_up_to_capacity() {
        let mut ring = FlowRing::new(3);
        for s in 1..=5 {
            ring.push_second(s);
        }
        assert_eq!((ring.len(), ring.seen(), ring.capacity()), (3, 5, 3));
        assert_eq!(
            uuids(&pick(&ring.snapshot(), 0, false, TimeWindow::default(), |_| true)),
            ["3", "4", "5"]
        );
    }

    #[test]
    fn last_first_since_until_and_filters() {
        let mut ring = FlowRing::new(10);
        for s in 1..=6 {
            ring.push_second(s);
        }
        let all = |_: &Event| true;
        assert_eq!(
            uuids(&pick(&ring.snapshot(), 2, false, TimeWindow::default(), all)),
            ["5", "6"]
        );
        assert_eq!(
            uuids(&pick(&ring.snapshot(), 2, true, TimeWindow::default(), all)),
            ["1", "2"]
        );
        let since = Timestamp { seconds: 3, nanos: 0 };
        let until = Timestamp { seconds: 5, nanos: 0 };
        assert_eq!(
            uuids(&pick(
                &ring.snapshot(),
                0,
                false,
                TimeWindow::new(Some(&since), Some(&until)),
                all
            )),
            ["3", "4", "5"]
        );
        let even = |e: &Event| uuid(e).parse::<i64>().unwrap() % 2 == 0;
        assert_eq!(
            uuids(&pick(&ring.snapshot(), 2, false, TimeWindow::default(), even)),
            ["4", "6"]
        );
    }

    #[test]
    fn loss_reports_take_their_place_among_flows() {
        let mut ring = FlowRing::new(10);
        ring.push_second(1);
        let lost = LostEvent {
            num_events_lost: 7,
            ..Default::default()
        };
        ring.push_lost(lost, Timestamp { seconds: 2, nanos: 0 });
        ring.push_second(3);
        assert_eq!(
            uuids(&pick(&ring.snapshot(), 0, false, TimeWindow::default(), |_| true)),
            ["1", "lost 7", "3"]
        );
        assert_eq!(ring.seen(), 2, "seen_flows counts flows only");
    }

    #[test]
    fn namespaces_of_the_last_hour_sorted() {
        let mut ring = FlowRing::new(10);
        for (second, from, to) in [(100, "web", "db"), (5000, "app", ""), (5001, "web", "")] {
            let endpoint = |namespace: &str| {
                Some(Arc::new(Endpoint {
                    namespace: namespace.into(),
                    ..Default::default()
                }))
            };
            ring.push_flow(RecordSource {
                identities: Identities {
                    source: endpoint(from),
                    destination: endpoint(to),
                    ..Default::default()
                },
                ..source(second)
            });
        }
        assert_eq!(ring.namespaces(0), ["app", "db", "web"]);
        // "db" was last seen at second 100.
        assert_eq!(ring.namespaces(1000), ["app", "web"]);
    }

    #[test]
    fn flows_rate_over_the_last_minute() {
        let now = Timestamp {
            seconds: 1000,
            nanos: 0,
        };
        let mut ring = FlowRing::new(1000);
        assert_eq!(ring.flows_rate(&now), 0.0);
        // 120 flows in the last minute, 50 before it.
        for i in 0..50 {
            ring.push_second(800 + i);
        }
        for i in 0..120 {
            ring.push_second(941 + i / 2);
        }
        assert_eq!(ring.flows_rate(&now), 2.0);
        // A ring too small to hold the minute: rate over what it covers,
        // 10 flows over the last 4 seconds (the ring's oldest is 996).
        let mut small = FlowRing::new(10);
        for i in 0..120 {
            small.push_second(941 + i / 2);
        }
        assert_eq!(small.flows_rate(&now), 10.0 / 4.0);
    }

    #[tokio::test]
    async fn a_slow_follower_is_told_what_it_missed() {
        let mut ring = FlowRing::new(10);
        let mut follower = ring.follow();
        ring.push_second(1);
        assert!(matches!(follower.next().await, Some(Feed::Event(e)) if uuid(&e) == "1"));
        // Far more than the backlog while the follower is not reading:
        // capture goes on, the follower learns how many it missed.
        let extra = FOLLOW_BACKLOG as u64 + 100;
        for s in 0..extra as i64 {
            ring.push_second(100 + s);
        }
        assert_eq!(follower.next().await, Some(Feed::Missed(100)));
        let mut received = 0;
        while let Some(Feed::Event(_)) = tokio::time::timeout(std::time::Duration::from_millis(10), follower.next())
            .await
            .ok()
            .flatten()
        {
            received += 1;
        }
        assert_eq!(received, FOLLOW_BACKLOG as u64);
        assert_eq!(ring.seen(), 1 + extra);
    }
}
