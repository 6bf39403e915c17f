//! The Observer API's metrics: flows in its ring, open GetFlows streams,
//! and flows slow followers skipped.

use prometheus::{IntCounter, IntGauge};

use crate::metrics::{Family, Metrics};

const RING_EVENTS: Family = Family {
    name: "hubcap_observer_ring_events",
    help: "Events in the Observer API's ring of recent flows",
    labels: &[],
};
const STREAMS: Family = Family {
    name: "hubcap_observer_streams",
    help: "Open GetFlows streams",
    labels: &[],
};
const EVENTS_MISSED: Family = Family {
    name: "hubcap_observer_events_missed_total",
    help: "Events GetFlows followers skipped because they read too slowly (each was sent lost_events)",
    labels: &[],
};

#[derive(Clone)]
pub struct ApiMetrics {
    pub ring_events: IntGauge,
    pub streams: IntGauge,
    pub events_missed: IntCounter,
}

impl ApiMetrics {
    pub fn register(metrics: &Metrics) -> ApiMetrics {
        ApiMetrics {
            ring_events: metrics.gauge(&RING_EVENTS),
            streams: metrics.gauge(&STREAMS),
            events_missed: metrics.counter(&EVENTS_MISSED),
        }
    }
}
