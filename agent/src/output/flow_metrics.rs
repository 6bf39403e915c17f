//! Output into the Prometheus metrics: each record and each loss counted
//! in Hubble's and hubcap's metrics (the labels are in `metrics.rs`).

use std::sync::Arc;

use prost_types::Timestamp;

use super::Output;
use crate::{
    metrics::Metrics,
    proto::flow::LostEvent,
    record::{FlowRecord, RecordSource},
};

pub struct FlowMetrics(pub Arc<Metrics>);

impl Output for FlowMetrics {
    fn flow(&mut self, source: &RecordSource, record: &FlowRecord) {
        self.0.count_record(&source.update, record);
    }

    fn lost(&mut self, lost: &LostEvent, _: &Timestamp) {
        self.0.count_lost(lost);
    }
}
