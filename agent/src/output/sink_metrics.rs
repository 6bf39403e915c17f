//! What each sink wrote and lost, by `sink` (stdout, file, blobs): the
//! metrics of the JSON log and the VNet/NSG log, which share the families
//! and tell themselves apart by the label.

use prometheus::IntCounter;

use crate::metrics::{Family, Metrics};

const RECORDS_WRITTEN: Family = Family {
    name: "hubcap_records_written_total",
    help: "Lines written, by sink",
    labels: &["sink"],
};
const BYTES_WRITTEN: Family = Family {
    name: "hubcap_bytes_written_total",
    help: "Bytes written, by sink",
    labels: &["sink"],
};
const WRITE_ERRORS: Family = Family {
    name: "hubcap_write_errors_total",
    help: "Failed writes, by sink",
    labels: &["sink"],
};
const RECORDS_LOST: Family = Family {
    name: "hubcap_output_records_lost_total",
    help: "Records an output could not write (full disk, removed file), by sink",
    labels: &["sink"],
};
const FILE_ROTATIONS: Family = Family {
    name: "hubcap_file_rotations_total",
    help: "Output file rotations",
    labels: &[],
};

/// One sink's series, at 0 from the start (for alerts).
pub struct SinkMetrics {
    pub records_written: IntCounter,
    pub bytes_written: IntCounter,
    pub write_errors: IntCounter,
    /// Records it could not write; each episode also ends with a
    /// `lost_events` line where the format has one.
    pub records_lost: IntCounter,
    pub rotations: IntCounter,
}

impl SinkMetrics {
    pub fn register(metrics: &Metrics, sink: &str) -> SinkMetrics {
        let series = |family: &Family| metrics.counters(family).with_label_values(&[sink]);
        SinkMetrics {
            records_written: series(&RECORDS_WRITTEN),
            bytes_written: series(&BYTES_WRITTEN),
            write_errors: series(&WRITE_ERRORS),
            records_lost: series(&RECORDS_LOST),
            rotations: metrics.counter(&FILE_ROTATIONS),
        }
    }
}
