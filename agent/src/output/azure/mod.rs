//! Azure's flow log formats for network teams (`--output-format vnet|nsg`):
//! VNet flow logs (version 4) and NSG flow logs (version 2), whose tuples
//! Traffic Analytics, SIEM connectors and Power BI read. Each write batch
//! becomes one line per interface: `{"records":[...]}` with one record in
//! Azure's envelope, its tuples in `flowTuples`. hubcap fills Azure's
//! identifiers with what it knows: the node (`flowLogResourceID`,
//! `systemId`), the interface (`targetResourceID`, `macAddress`).

mod blobs;
mod tuple;

use std::collections::BTreeMap;

use prost_types::Timestamp;
use serde_json::{Value, json};
use tracing::{info, warn};

pub use self::{blobs::HourlyBlobs, tuple::Tuple};
use super::{Output, OutputError, sink_metrics::SinkMetrics};
use prometheus::IntCounter;

use crate::{
    metrics::Metrics,
    proto::flow::LostEvent,
    record::{FlowRecord, RecordSource},
    sink::{Sink, SinkStats},
};

/// `--output-format`, and `format` of a flow log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    /// Hubble's JSON flows (ExportEvent lines).
    Hubble,
    /// Azure VNet flow logs, version 4.
    Vnet,
    /// Azure NSG flow logs, version 2 (TCP and UDP only).
    Nsg,
}

/// Where the records go: lines (`{"records":[record]}` each) to a file or
/// stdout, or the storage account's hourly blobs under a directory.
pub enum Destination {
    Lines(Sink),
    Blobs(HourlyBlobs),
}

fn destination_name(destination: &Destination) -> &'static str {
    match destination {
        Destination::Lines(sink) => sink.name(),
        Destination::Blobs(_) => "blobs",
    }
}

pub struct AzureFlowLog {
    format: OutputFormat,
    sink: Destination,
    stats: SinkStats,
    node_name: String,
    /// This batch's tuples by interface.
    batch: BTreeMap<String, Vec<Tuple>>,
    /// Interface MAC addresses, as Azure writes them (`00224871C205`).
    macs: BTreeMap<String, String>,
    metrics: SinkMetrics,
    /// Records the format cannot express (NSG tuples: TCP and UDP only).
    skipped: IntCounter,
    /// Writing failed last time (said once, not for every batch).
    failing: bool,
}

impl AzureFlowLog {
    pub fn new(format: OutputFormat, sink: Destination, node_name: String, metrics: &Metrics) -> Self {
        let skipped = metrics
            .counters(&super::FORMAT_SKIPPED)
            .with_label_values(&[format_name(format)]);
        let metrics = SinkMetrics::register(metrics, destination_name(&sink));
        AzureFlowLog {
            format,
            sink,
            stats: SinkStats::default(),
            node_name,
            batch: BTreeMap::new(),
            macs: BTreeMap::new(),
            metrics,
            skipped,
            failing: false,
        }
    }

    /// A write that failed (disk full, path gone) does not stop capture:
    /// its records are counted as lost (these formats have no loss record)
    /// and the next batch tries again.
    fn count_lost(&mut self, records: u64, error: &std::io::Error) {
        let name = self.name();
        self.metrics.write_errors.inc();
        self.metrics.records_lost.inc_by(records);
        if !self.failing {
            warn!(output = name, %error, "cannot write the flow log: records are counted as lost until it works again");
        }
        self.failing = true;
    }

    fn written(&mut self, records: u64, bytes: u64) {
        let name = self.name();
        if self.failing {
            info!(output = name, "writing the flow log works again");
        }
        self.failing = false;
        self.metrics.records_written.inc_by(records);
        self.metrics.bytes_written.inc_by(bytes);
    }

    /// The `sink` label of the output metrics.
    fn name(&self) -> &'static str {
        destination_name(&self.sink)
    }

    /// Lines, bytes and rotations written so far.
    pub fn stats(&self) -> SinkStats {
        self.stats
    }

    fn mac(&mut self, interface: &str) -> String {
        self.macs
            .entry(interface.to_owned())
            .or_insert_with(|| {
                std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))
                    .map(|m| m.trim().replace(':', "").to_uppercase())
                    .unwrap_or_default()
            })
            .clone()
    }

    fn envelope(&mut self, time: &str, interface: &str, tuples: Vec<String>) -> Value {
        let mac = self.mac(interface);
        let node = &self.node_name;
        match self.format {
            OutputFormat::Nsg => json!({
                "time": time,
                "systemId": node_guid(node),
                "macAddress": mac,
                "category": "NetworkSecurityGroupFlowEvent",
                "resourceId": format!("/HUBCAP/NODES/{}/INTERFACES/{}", node.to_uppercase(), interface.to_uppercase()),
                "operationName": "NetworkSecurityGroupFlowEvents",
                "properties": {"Version": 2, "flows": [{"rule": "hubcap", "flows": [{"mac": mac, "flowTuples": tuples}]}]},
            }),
            _ => json!({
                "time": time,
                "flowLogVersion": 4,
                "flowLogGUID": node_guid(node),
                "macAddress": mac,
                "category": "FlowLogFlowEvent",
                "flowLogResourceID": format!("/HUBCAP/NODES/{}/FLOWLOGS/HUBCAP", node.to_uppercase()),
                "targetResourceID": format!("/hubcap/nodes/{node}/interfaces/{interface}"),
                "operationName": "FlowLogFlowEvent",
                "flowRecords": {"flows": [{"aclID": "00000000-0000-0000-0000-000000000000", "flowGroups": [{"rule": "hubcap", "flowTuples": tuples}]}]},
            }),
        }
    }
}

fn format_name(format: OutputFormat) -> &'static str {
    match format {
        OutputFormat::Hubble => "hubble",
        OutputFormat::Vnet => "vnet",
        OutputFormat::Nsg => "nsg",
    }
}

/// A stable GUID-shaped id of the node (its name hashed twice with FNV-1a).
fn node_guid(node: &str) -> String {
    let hash = |seed: u64| {
        node.bytes()
            .fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
    };
    let (a, b) = (hash(0xcbf2_9ce4_8422_2325), hash(0x8422_2325_cbf2_9ce4));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

impl Output for AzureFlowLog {
    /// Flow tuples have no place for an L7 record (its packets are in the
    /// flow's tuples all the same).
    fn l7(&mut self, _: &RecordSource, _: &std::sync::Arc<crate::proto::flow::Flow>) {
        self.skipped.inc();
    }

    fn flow(&mut self, source: &RecordSource, record: &FlowRecord) {
        // Checked on the key, before the tuple's strings are made.
        if self.format == OutputFormat::Nsg && tuple::nsg_letter(source.update.key.protocol).is_none() {
            // No letter for this protocol in NSG tuples: counted, not lost
            // silently (the Hubble outputs have it).
            self.skipped.inc();
            return;
        }
        let tuple = Tuple::of(source, record);
        let interface = record.flow.interface.as_ref().map_or("", |i| i.name.as_str());
        self.batch.entry(interface.to_owned()).or_default().push(tuple);
    }

    /// The formats have no loss record; losses are in the metrics.
    fn lost(&mut self, _: &LostEvent, _: &Timestamp) {}

    fn end_batch(&mut self) -> Result<(), OutputError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let time = crate::hubble::rfc3339(&crate::clock::WallClock::now_timestamp());
        let mut lines = Vec::new();
        let mut count = 0;
        for (interface, tuples) in std::mem::take(&mut self.batch) {
            let texts = tuple::merge(tuples)
                .iter()
                .filter_map(|t| match self.format {
                    OutputFormat::Nsg => t.nsg(),
                    _ => Some(t.vnet()),
                })
                .collect();
            let record = self.envelope(&time, &interface, texts);
            count += 1;
            match &mut self.sink {
                Destination::Lines(_) => {
                    serde_json::to_writer(&mut lines, &json!({ "records": [record] })).expect("JSON to memory");
                    lines.push(b'\n');
                }
                Destination::Blobs(blobs) => {
                    let mac = record["macAddress"].as_str().unwrap_or_default().to_owned();
                    let bytes = serde_json::to_vec(&record).expect("JSON to memory");
                    match blobs.append(&time, &mac, &bytes) {
                        Ok(written) => {
                            self.stats.lines += 1;
                            self.stats.bytes += written;
                            self.written(1, written);
                        }
                        Err(error) => self.count_lost(1, &error),
                    }
                }
            }
        }
        if let Destination::Lines(sink) = &mut self.sink {
            match sink.write_lines(&lines, count, &mut self.stats) {
                Ok(()) => self.written(count, lines.len() as u64),
                Err(error) => self.count_lost(count, &error),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        let name = self.name();
        match &mut self.sink {
            Destination::Lines(sink) => sink
                .flush()
                .map_err(|source| OutputError::Write { output: name, source }),
            Destination::Blobs(_) => Ok(()),
        }
    }

    fn close(&mut self) {
        if let Destination::Lines(sink) = &mut self.sink {
            let _ = sink.close();
        }
        let target = match &self.sink {
            Destination::Lines(sink) => sink.target(),
            Destination::Blobs(blobs) => blobs.root().display().to_string(),
        };
        info!(
            output = %target,
            format = format_name(self.format),
            lines = self.stats.lines,
            "flow log closed"
        );
    }

    /// VNet/NSG tuples carry the flow's state: an `E` with no new counts
    /// still tells the reader that the connection ended.
    fn tracks_flow_state(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_guids_are_stable_and_guid_shaped() {
        let g = node_guid("node-a");
        assert_eq!(g, node_guid("node-a"));
        assert_ne!(g, node_guid("node-b"));
        let parts: Vec<usize> = g.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
    }
}
