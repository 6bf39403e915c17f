//! The output stage's seam: every output sees every record and loss, built
//! once with the enrich stage's identities.

use std::sync::{Arc, Mutex};

use agent_common::{FlowKey, FlowStats, hook, ip_proto};

use super::*;
use crate::{
    enrich::{Enricher, Enrichers, Identities},
    flow_table::FlowState,
    proto::flow::Endpoint,
};

/// What an output was handed, shared with the test.
#[derive(Default)]
struct Seen {
    flows: Vec<(RecordSource, FlowRecord)>,
    lost: Vec<LostEvent>,
    batches: usize,
}

struct Recorder(Arc<Mutex<Seen>>);

/// A recorder that tracks flow state, as the VNet/NSG tuples do.
struct StateRecorder(Recorder);

impl Output for StateRecorder {
    fn flow(&mut self, source: &RecordSource, record: &FlowRecord) {
        self.0.flow(source, record)
    }
    fn lost(&mut self, lost: &LostEvent, time: &Timestamp) {
        self.0.lost(lost, time)
    }
    fn tracks_flow_state(&self) -> bool {
        true
    }
}

impl Output for Recorder {
    fn flow(&mut self, source: &RecordSource, record: &FlowRecord) {
        self.0.lock().unwrap().flows.push((source.clone(), record.clone()));
    }
    fn lost(&mut self, lost: &LostEvent, _: &Timestamp) {
        self.0.lock().unwrap().lost.push(*lost);
    }
    fn end_batch(&mut self) -> Result<(), OutputError> {
        self.0.lock().unwrap().batches += 1;
        Ok(())
    }
}

/// Names every flow's source pod.
struct OnePod;

impl Enricher for OnePod {
    fn enrich(&mut self, _: &FlowUpdate, identities: &mut Identities) {
        identities.source = Some(Arc::new(Endpoint {
            namespace: "shop".into(),
            pod_name: "cart-0".into(),
            ..Default::default()
        }));
    }
}

fn one_pod() -> Enrichers {
    let mut enrichers = Enrichers::none();
    enrichers.push(OnePod);
    enrichers
}

fn update(packets: u64) -> FlowUpdate {
    FlowUpdate {
        key: FlowKey {
            protocol: ip_proto::UDP,
            ip_version: 4,
            hook: hook::EGRESS,
            ..Default::default()
        },
        stats: FlowStats::default(),
        packets,
        bytes: packets * 100,
        tcp_flags: 0,
        state: FlowState::Begin,
        is_reply: None,
    }
}

fn outputs(enrichers: Enrichers, count: usize) -> (Outputs, Vec<Arc<Mutex<Seen>>>) {
    let mut outputs = Outputs::new(Arc::new(RecordBuilder::default()), enrichers);
    let seen: Vec<_> = (0..count).map(|_| Arc::new(Mutex::new(Seen::default()))).collect();
    for s in &seen {
        outputs.add(Recorder(Arc::clone(s)));
    }
    (outputs, seen)
}

#[test]
fn every_output_gets_every_record_of_a_batch_once() {
    let (mut outputs, seen) = outputs(Enrichers::none(), 2);
    outputs.write(&[update(1), update(2), update(3)]).unwrap();
    let first = seen[0].lock().unwrap();
    let second = seen[1].lock().unwrap();
    assert_eq!(first.batches, 1);
    let packets: Vec<u64> = first.flows.iter().map(|(_, r)| r.counts.packets).collect();
    assert_eq!(packets, [1, 2, 3]);
    // The same records (one build, same uuids), not two builds.
    let uuids = |s: &Seen| s.flows.iter().map(|(_, r)| r.flow.uuid.clone()).collect::<Vec<_>>();
    assert_eq!(uuids(&first), uuids(&second));
    // A record rebuilt from its source is the record written.
    let (source, record) = &first.flows[0];
    assert_eq!(&RecordBuilder::default().build(source), record);
}

#[test]
fn identities_from_the_enrich_stage_are_in_the_record_and_its_source() {
    let (mut outputs, seen) = outputs(one_pod(), 1);
    outputs.write(&[update(1)]).unwrap();
    let seen = seen[0].lock().unwrap();
    let (source, record) = &seen.flows[0];
    let pod = record.flow.source.as_ref().expect("source endpoint");
    assert_eq!((pod.namespace.as_str(), pod.pod_name.as_str()), ("shop", "cart-0"));
    assert!(record.flow.destination.is_none());
    assert_eq!(RecordBuilder::default().build(source).flow.source, record.flow.source);
}

#[test]
fn losses_reach_every_output_and_nothing_is_reported_for_zero() {
    let (mut outputs, seen) = outputs(Enrichers::none(), 2);
    outputs.lost(LostEventSource::PerfEventRingBuffer, 0);
    outputs.lost(LostEventSource::PerfEventRingBuffer, 12);
    for s in &seen {
        let s = s.lock().unwrap();
        assert_eq!(s.lost.len(), 1);
        assert_eq!(s.lost[0].num_events_lost, 12);
        assert_eq!(s.lost[0].source, LostEventSource::PerfEventRingBuffer as i32);
    }
}

#[test]
fn an_empty_end_reaches_only_the_outputs_that_track_flow_state() {
    let (mut outputs, seen) = outputs(Enrichers::none(), 1);
    let states = Arc::new(Mutex::new(Seen::default()));
    outputs.add(StateRecorder(Recorder(Arc::clone(&states))));
    let empty_end = FlowUpdate {
        state: FlowState::End,
        ..update(0)
    };
    let last_end = FlowUpdate {
        state: FlowState::End,
        ..update(2)
    };
    outputs.write(&[update(1), empty_end, last_end]).unwrap();
    let counted: Vec<_> = seen[0]
        .lock()
        .unwrap()
        .flows
        .iter()
        .map(|(_, r)| r.counts.packets)
        .collect();
    assert_eq!(counted, [1, 2], "no record without traffic");
    let tracked: Vec<_> = states
        .lock()
        .unwrap()
        .flows
        .iter()
        .map(|(_, r)| (r.counts.state, r.counts.packets))
        .collect();
    assert_eq!(
        tracked,
        [(FlowState::Begin, 1), (FlowState::End, 0), (FlowState::End, 2)]
    );
}

#[test]
fn without_an_output_that_tracks_state_an_empty_end_is_not_even_built() {
    let (mut outputs, seen) = outputs(Enrichers::none(), 1);
    let empty_end = FlowUpdate {
        state: FlowState::End,
        ..update(0)
    };
    outputs.write(&[empty_end]).unwrap();
    assert!(seen[0].lock().unwrap().flows.is_empty());
}
