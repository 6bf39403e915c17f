//! Output into the Prometheus metrics: each record and each loss counted
//! in Hubble's and hubcap's metrics (the labels are in `metrics.rs`), and
//! each DNS record in Hubble's DNS metrics (`dns_metrics.rs`).

use std::sync::Arc;

use prost_types::Timestamp;

use super::{Output, dns_metrics::DnsMetrics};
use crate::{
    metrics::Metrics,
    proto::flow::{Flow, LostEvent},
    record::{FlowRecord, RecordSource},
};

pub struct FlowMetrics {
    metrics: Arc<Metrics>,
    /// Registered with the first DNS record (no DNS, no DNS series).
    dns: Option<DnsMetrics>,
}

impl FlowMetrics {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        FlowMetrics { metrics, dns: None }
    }
}

impl Output for FlowMetrics {
    fn flow(&mut self, source: &RecordSource, record: &FlowRecord) {
        self.metrics.count_record(&source.update, record);
    }

    fn lost(&mut self, lost: &LostEvent, _: &Timestamp) {
        self.metrics.count_lost(lost);
    }

    fn l7(&mut self, _: &RecordSource, flow: &Arc<Flow>) {
        self.metrics.count_l7(flow);
        let metrics = &self.metrics;
        self.dns
            .get_or_insert_with(|| DnsMetrics::new(metrics))
            .count(metrics, flow);
    }
}
