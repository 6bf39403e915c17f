//! The kernel flow map behind the flow table's [`KernelFlows`] view.

use agent_common::{FlowKey, FlowStats};
use aya::maps::{HashMap, MapData};
use tracing::warn;

use crate::flow_table::KernelFlows;

impl KernelFlows for HashMap<MapData, FlowKey, FlowStats> {
    fn get(&self, key: &FlowKey) -> Option<FlowStats> {
        HashMap::get(self, key, 0).ok()
    }

    fn remove(&mut self, key: &FlowKey) {
        // Not found is fine: the entry may already be gone.
        let _ = HashMap::remove(self, key);
    }

    fn entries(&self) -> Vec<(FlowKey, FlowStats)> {
        let mut out = Vec::new();
        for entry in self.iter() {
            match entry {
                Ok(kv) => out.push(kv),
                // A key deleted while iterating; the next call goes on.
                Err(e) => warn!(error = %e, "reading the flow map"),
            }
        }
        out
    }
}
