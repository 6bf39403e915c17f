//! Aggregation of one flow log (Cilium's `aggregationOptions`): over each
//! window, the records that agree on the chosen fields become one line with
//! their packets and bytes summed, so the sums still add up to what the
//! interfaces counted. Used where 5-tuples don't matter, for instance the
//! source ports of many short connections.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use prost::Message as _;
use prost_types::Timestamp;

use crate::{
    hubble::field_mask::FieldMask,
    proto::flow::{Aggregate, Flow, TrafficDirection},
    record::{AggregateCounts, FlowRecord},
};

/// One line in the making: the record's chosen fields and the sums.
pub struct Group {
    /// Only the aggregation fields, the first record's time, and how many
    /// records were merged (`aggregate`).
    pub flow: Flow,
    pub counts: AggregateCounts,
}

pub struct Aggregator {
    fields: FieldMask,
    window: Duration,
    /// When the current window took its first record.
    started: Option<Instant>,
    /// Index into `groups` by the encoded chosen fields.
    index: HashMap<Vec<u8>, usize, foldhash::quality::RandomState>,
    /// In the order the groups began, so that lines come out in time order.
    groups: Vec<Group>,
}

impl Aggregator {
    pub fn new(fields: FieldMask, window: Duration) -> Self {
        Aggregator {
            fields,
            window,
            started: None,
            index: HashMap::default(),
            groups: Vec::new(),
        }
    }

    pub fn add(&mut self, record: &FlowRecord, now: Instant) {
        // Masking goes through a dynamic message: a few microseconds a
        // record, paid only by aggregated logs.
        let chosen = self.fields.apply(&record.flow);
        let key = chosen.encode_to_vec();
        let c = &record.counts;
        let i = *self.index.entry(key).or_insert_with(|| {
            self.groups.push(Group {
                flow: Flow {
                    time: record.flow.time,
                    aggregate: Some(Aggregate::default()),
                    ..chosen
                },
                counts: AggregateCounts {
                    packets: 0,
                    bytes: 0,
                    flow_start_time: c.flow_start_time,
                },
            });
            self.groups.len() - 1
        });
        let group = &mut self.groups[i];
        group.counts.packets += c.packets;
        group.counts.bytes += c.bytes;
        if earlier(&c.flow_start_time, &group.counts.flow_start_time) {
            group.counts.flow_start_time = c.flow_start_time;
        }
        let aggregate = group.flow.aggregate.get_or_insert_default();
        match record.flow.traffic_direction() {
            TrafficDirection::Ingress => aggregate.ingress_flow_count += 1,
            TrafficDirection::Egress => aggregate.egress_flow_count += 1,
            TrafficDirection::Unknown => aggregate.unknown_direction_flow_count += 1,
        }
        self.started.get_or_insert(now);
    }

    /// The groups of a window that is over (or of any window, with `all`),
    /// and a new window begins.
    pub fn take(&mut self, now: Instant, all: bool) -> Vec<Group> {
        let due = self
            .started
            .is_some_and(|started| all || now.duration_since(started) >= self.window);
        if !due {
            return Vec::new();
        }
        self.started = None;
        self.index.clear();
        std::mem::take(&mut self.groups)
    }
}

fn earlier(a: &Timestamp, b: &Timestamp) -> bool {
    (a.seconds, a.nanos) < (b.seconds, b.nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flow_table::FlowState,
        proto::flow::{Ip, Layer4, Udp, layer4},
        record::RecordCounts,
    };

    fn udp(source_port: u32, packets: u64, direction: TrafficDirection) -> FlowRecord {
        let mut flow = Flow {
            time: Some(Timestamp {
                seconds: 100 + source_port as i64,
                nanos: 0,
            }),
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Udp(Udp {
                    source_port,
                    destination_port: 53,
                })),
            }),
            ..Default::default()
        };
        flow.set_traffic_direction(direction);
        FlowRecord {
            flow,
            counts: RecordCounts {
                packets,
                bytes: packets * 100,
                state: FlowState::Begin,
                flow_start_time: Timestamp {
                    seconds: 100 + source_port as i64,
                    nanos: 0,
                },
                kernel_drop_reason: None,
            },
        }
    }

    fn aggregator(fields: &[&str]) -> Aggregator {
        let fields = fields.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        Aggregator::new(FieldMask::new(&fields).unwrap().unwrap(), Duration::from_secs(10))
    }

    #[test]
    fn records_that_agree_on_the_fields_become_one_with_sums() {
        let mut agg = aggregator(&["IP", "l4.UDP.destination_port"]);
        let t0 = Instant::now();
        agg.add(&udp(40001, 2, TrafficDirection::Egress), t0);
        agg.add(&udp(40002, 3, TrafficDirection::Egress), t0);
        agg.add(&udp(40003, 4, TrafficDirection::Ingress), t0);
        assert!(
            agg.take(t0 + Duration::from_secs(9), false).is_empty(),
            "window not over"
        );
        let groups = agg.take(t0 + Duration::from_secs(10), false);
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!((g.counts.packets, g.counts.bytes), (9, 900));
        assert_eq!(g.counts.flow_start_time.seconds, 40101, "the earliest start");
        assert_eq!(g.flow.time.unwrap().seconds, 40101, "the first record's time");
        let a = g.flow.aggregate.unwrap();
        assert_eq!((a.egress_flow_count, a.ingress_flow_count), (2, 1));
        let Some(layer4::Protocol::Udp(u)) = g.flow.l4.as_ref().and_then(|l| l.protocol.clone()) else {
            panic!("UDP kept")
        };
        assert_eq!(
            (u.source_port, u.destination_port),
            (0, 53),
            "the source port is not a chosen field"
        );
        assert!(
            agg.take(t0 + Duration::from_secs(30), true).is_empty(),
            "a new window is empty"
        );
    }

    #[test]
    fn records_that_differ_on_a_field_stay_apart() {
        let mut agg = aggregator(&["l4"]);
        let t0 = Instant::now();
        agg.add(&udp(1, 1, TrafficDirection::Egress), t0);
        agg.add(&udp(2, 1, TrafficDirection::Egress), t0);
        agg.add(&udp(1, 1, TrafficDirection::Egress), t0);
        let groups = agg.take(t0, true);
        assert_eq!(groups.iter().map(|g| g.counts.packets).collect::<Vec<_>>(), [2, 1]);
    }
}
