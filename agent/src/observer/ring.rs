//! Recent flows for the Observer API: a bounded ring (Hubble's default is
//! 4,095) that `GetFlows` reads with `number`/`first`/`since`/`until`, and a
//! live feed for `follow`.
//!
//! Capture never waits for a client. The ring drops its oldest flow when
//! full, and a follower that falls behind the feed skips ahead and is told
//! how many flows it missed (sent to it as `lost_events`).

use std::{collections::VecDeque, sync::Arc};

use prost_types::Timestamp;
use tokio::sync::broadcast;

use crate::export::FlowRecord;

/// What a follower receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    Flow(Arc<FlowRecord>),
    /// This many flows went by while the follower was too slow.
    Missed(u64),
}

pub struct FlowRing {
    flows: VecDeque<Arc<FlowRecord>>,
    capacity: usize,
    /// Every flow ever pushed (Hubble's `seen_flows`).
    seen: u64,
    live: broadcast::Sender<Arc<FlowRecord>>,
}

/// How far a follower may fall behind before it starts missing flows.
const FOLLOW_BACKLOG: usize = 4096;

fn nanos(t: &Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        FlowRing {
            flows: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            seen: 0,
            live: broadcast::channel(FOLLOW_BACKLOG).0,
        }
    }

    /// Adds a flow; the oldest goes when the ring is full. Never blocks.
    pub fn push(&mut self, flow: FlowRecord) {
        let flow = Arc::new(flow);
        if self.flows.len() == self.capacity {
            self.flows.pop_front();
        }
        self.flows.push_back(Arc::clone(&flow));
        self.seen += 1;
        // No follower is not an error.
        let _ = self.live.send(flow);
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Flows in the ring within [`since`, `until`] that `keep` accepts,
    /// oldest first: the last `number` of them, or with `first` the first
    /// `number`. `number` 0 means all.
    pub fn query(
        &self,
        number: usize,
        first: bool,
        since: Option<&Timestamp>,
        until: Option<&Timestamp>,
        keep: impl Fn(&FlowRecord) -> bool,
    ) -> Vec<Arc<FlowRecord>> {
        let in_window = |f: &FlowRecord| {
            let t = f.flow.time.as_ref().map_or(0, nanos);
            since.is_none_or(|s| t >= nanos(s)) && until.is_none_or(|u| t <= nanos(u))
        };
        let selected = self.flows.iter().filter(|f| in_window(f) && keep(f));
        let limit = if number == 0 { usize::MAX } else { number };
        if first {
            selected.take(limit).cloned().collect()
        } else {
            let mut last: Vec<Arc<FlowRecord>> = selected.rev().take(limit).cloned().collect();
            last.reverse();
            last
        }
    }

    /// A live feed of flows pushed from now on.
    pub fn follow(&self) -> Follower {
        Follower {
            receiver: self.live.subscribe(),
        }
    }
}

pub struct Follower {
    receiver: broadcast::Receiver<Arc<FlowRecord>>,
}

impl Follower {
    /// The next flow, or how many were missed; `None` once the ring is gone.
    pub async fn next(&mut self) -> Option<Feed> {
        match self.receiver.recv().await {
            Ok(flow) => Some(Feed::Flow(flow)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Feed::Missed(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::{FlowState, RecordCounts},
        proto::flow::Flow,
    };

    fn record(second: i64) -> FlowRecord {
        FlowRecord {
            flow: Flow {
                time: Some(Timestamp {
                    seconds: second,
                    nanos: 0,
                }),
                uuid: second.to_string(),
                ..Default::default()
            },
            counts: RecordCounts {
                packets: 1,
                bytes: 60,
                state: FlowState::Begin,
                flow_start_time: Timestamp::default(),
                kernel_drop_reason: None,
            },
        }
    }

    fn uuids(flows: &[Arc<FlowRecord>]) -> Vec<String> {
        flows.iter().map(|f| f.flow.uuid.clone()).collect()
    }

    #[test]
    fn keeps_the_newest_up_to_capacity() {
        let mut ring = FlowRing::new(3);
        for s in 1..=5 {
            ring.push(record(s));
        }
        assert_eq!((ring.len(), ring.seen(), ring.capacity()), (3, 5, 3));
        assert_eq!(uuids(&ring.query(0, false, None, None, |_| true)), ["3", "4", "5"]);
    }

    #[test]
    fn last_first_since_until_and_filters() {
        let mut ring = FlowRing::new(10);
        for s in 1..=6 {
            ring.push(record(s));
        }
        let all = |_: &FlowRecord| true;
        assert_eq!(uuids(&ring.query(2, false, None, None, all)), ["5", "6"]);
        assert_eq!(uuids(&ring.query(2, true, None, None, all)), ["1", "2"]);
        let since = Timestamp { seconds: 3, nanos: 0 };
        let until = Timestamp { seconds: 5, nanos: 0 };
        assert_eq!(
            uuids(&ring.query(0, false, Some(&since), Some(&until), all)),
            ["3", "4", "5"]
        );
        let even = |f: &FlowRecord| f.flow.uuid.parse::<i64>().unwrap() % 2 == 0;
        assert_eq!(uuids(&ring.query(2, false, None, None, even)), ["4", "6"]);
    }

    #[tokio::test]
    async fn a_slow_follower_is_told_what_it_missed() {
        let mut ring = FlowRing::new(10);
        let mut follower = ring.follow();
        ring.push(record(1));
        assert!(matches!(follower.next().await, Some(Feed::Flow(f)) if f.flow.uuid == "1"));
        // Far more than the backlog while the follower is not reading:
        // capture goes on, the follower learns how many it missed.
        let extra = FOLLOW_BACKLOG as u64 + 100;
        for s in 0..extra as i64 {
            ring.push(record(100 + s));
        }
        assert_eq!(follower.next().await, Some(Feed::Missed(100)));
        let mut received = 0;
        while let Some(Feed::Flow(_)) = tokio::time::timeout(std::time::Duration::from_millis(10), follower.next())
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
