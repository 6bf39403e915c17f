//! The flow logs' metrics: per log (`log` label) what it selected, left
//! out and wrote, and for the whole feature the refused config changes and
//! the custom resources by state.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec};

use crate::metrics::{Family, Metrics};

const RECORDS: Family = Family {
    name: "hubcap_flow_log_records_total",
    help: "Records a configured flow log selected and wrote, by log",
    labels: &["log"],
};
const FILTERED: Family = Family {
    name: "hubcap_flow_log_filtered_total",
    help: "Records a configured flow log's filters left out, by log",
    labels: &["log"],
};
const BYTES: Family = Family {
    name: "hubcap_flow_log_bytes_total",
    help: "Bytes a configured flow log wrote to its file, by log",
    labels: &["log"],
};
const ROTATIONS: Family = Family {
    name: "hubcap_flow_log_rotations_total",
    help: "Rotations of a configured flow log's file, by log",
    labels: &["log"],
};
const CONFIG_ERRORS: Family = Family {
    name: "hubcap_flow_log_config_errors_total",
    help: "Changes to the flow-logs config that were not applied (the previous one stayed)",
    labels: &[],
};
const RESOURCES: Family = Family {
    name: "hubcap_flow_log_resources",
    help: "RetinaNetworkFlowLog and ContainerNetworkLog resources, by state (configured, failed)",
    labels: &["state"],
};

/// One log's series, at 0 from its start; [`LogMetrics::forget`] removes
/// them when the log is removed.
pub struct LogMetrics {
    pub records: IntCounter,
    pub filtered: IntCounter,
    pub bytes: IntCounter,
    pub rotations: IntCounter,
    name: String,
    families: [IntCounterVec; 4],
}

impl LogMetrics {
    pub fn register(metrics: &Metrics, name: &str) -> LogMetrics {
        let families = [RECORDS, FILTERED, BYTES, ROTATIONS].map(|f| metrics.counters(&f));
        let [records, filtered, bytes, rotations] = families.each_ref().map(|f| f.with_label_values(&[name]));
        LogMetrics {
            records,
            filtered,
            bytes,
            rotations,
            name: name.to_owned(),
            families,
        }
    }

    /// A log removed from the config leaves no metric series behind.
    pub fn forget(&self) {
        for family in &self.families {
            let _ = family.remove_label_values(&[&self.name]);
        }
    }
}

/// Config changes (file or resources) that were refused.
pub fn config_errors(metrics: &Metrics) -> IntCounter {
    metrics.counter(&CONFIG_ERRORS)
}

/// The custom resources by state (`configured`, `failed`).
pub fn resources(metrics: &Metrics) -> IntGaugeVec {
    metrics.gauges(&RESOURCES)
}
