//! Output into the Observer API's ring of recent flows (and its live feed).

use std::sync::Arc;

use prost_types::Timestamp;

use super::api_metrics::ApiMetrics;
use crate::output::{Output, OutputError};
use crate::{
    hubble_api::service::ObserverState,
    proto::flow::{Flow, LostEvent},
    record::{FlowRecord, RecordSource},
};

pub struct ObserverFeed {
    state: Arc<ObserverState>,
    metrics: ApiMetrics,
}

impl ObserverFeed {
    pub(super) fn new(state: Arc<ObserverState>, metrics: ApiMetrics) -> Self {
        ObserverFeed { state, metrics }
    }
}

impl Output for ObserverFeed {
    fn flow(&mut self, source: &RecordSource, _: &FlowRecord) {
        // Locked per push, so the API's thread never waits for a batch.
        self.state.ring().push_flow(source.clone());
    }

    fn lost(&mut self, lost: &LostEvent, time: &Timestamp) {
        self.state.ring().push_lost(*lost, *time);
    }

    fn l7(&mut self, source: &RecordSource, flow: &Arc<Flow>) {
        // Kept built: an L7 record is not rebuilt from its packet's source.
        self.state.ring().push_l7(source, Arc::clone(flow));
    }

    fn end_batch(&mut self) -> Result<(), OutputError> {
        self.metrics.ring_events.set(self.state.ring().len() as i64);
        Ok(())
    }
}
