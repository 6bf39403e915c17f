//! The output stage: from flow-table updates to every place records go.
//!
//! For each update it fixes the record's source (uuid, times, interface),
//! asks the enrich stage who the endpoints are, builds the Hubble record
//! once and hands it to each [`Output`] in turn: the JSON flow log, the
//! metrics, the Observer API's ring. Loss reports take the same way, so
//! every output sees every loss.
//!
//! An empty end (a flow's `E` with nothing new to count) is not traffic: it
//! reaches only the outputs that track flow state ([`Output::tracks_flow_state`],
//! the VNet/NSG tuples). Everything that counts (Hubble logs, the Observer
//! API, metrics, IPFIX) sees each packet exactly once, in a record that
//! carries it.
//!
//! An output is one type behind the [`Output`] trait, in a file of its own;
//! adding one is that file, its settings in [`OutputSettings`] (and the
//! flag that fills them in `cli.rs`), and one line in `setup.rs` that opens
//! it.

pub mod azure;
mod dns_metrics;
pub mod flow_logs;
mod flow_metrics;
pub mod ipfix;
mod json_log;
mod setup;
mod sink_metrics;

use std::{io, sync::Arc};

pub use flow_metrics::FlowMetrics;
pub use json_log::JsonLog;
use prost_types::Timestamp;
pub use setup::OutputSettings;

use crate::{
    dns::DnsObservation,
    enrich::Enrichers,
    flow_table::FlowUpdate,
    interfaces::InterfaceKind,
    proto::flow::{Flow, LostEvent, LostEventSource},
    record::{FlowRecord, RecordBuilder, RecordSource, Stamper},
};

/// Records an output format has no way to write, by format: shared by the
/// formats that skip some.
pub(crate) const FORMAT_SKIPPED: crate::metrics::Family = crate::metrics::Family {
    name: "hubcap_format_skipped_records_total",
    help: "Records an output format has no way to write (NSG tuples are TCP and UDP only; tuples and IPFIX take no L7 records), by format",
    labels: &["format"],
};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("writing flow records to {output}")]
    Write {
        output: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A place records go. `flow` and `lost` may only buffer; `end_batch`
/// writes out what a batch buffered, `flush` pushes it to its destination.
pub trait Output: Send {
    /// A record and what it was built from (the Observer API keeps that).
    fn flow(&mut self, source: &RecordSource, record: &FlowRecord);
    /// A report of `lost.num_events_lost` events lost before this stage.
    fn lost(&mut self, lost: &LostEvent, time: &Timestamp);
    /// An L7 record (a DNS query or answer) and the source of its packet.
    /// The outputs that write Hubble records take it; formats with no
    /// place for one (VNet/NSG tuples, IPFIX) leave it, and the flow's
    /// packets and bytes reach them in its L3/L4 records all the same.
    fn l7(&mut self, _source: &RecordSource, _flow: &Arc<Flow>) {}
    fn end_batch(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
    /// On the agent's timer (every 500 ms): work that is due with or
    /// without records (re-reading a config, time-windowed lines).
    fn tick(&mut self) {}
    /// At exit, after the last batch: log what it did.
    fn close(&mut self) {}
    /// Whether this output wants empty ends too (see the module's doc).
    fn tracks_flow_state(&self) -> bool {
        false
    }
}

pub struct Outputs {
    stamper: Stamper,
    enrichers: Enrichers,
    builder: Arc<RecordBuilder>,
    outputs: Vec<Box<dyn Output>>,
}

/// Records built and buffered before the outputs write them out.
pub const WRITE_CHUNK: usize = 4096;

impl Outputs {
    pub fn new(builder: Arc<RecordBuilder>, enrichers: Enrichers) -> Self {
        Outputs {
            stamper: Stamper::default(),
            enrichers,
            builder,
            outputs: Vec::new(),
        }
    }

    pub fn add(&mut self, output: impl Output + 'static) {
        self.add_boxed(Box::new(output));
    }

    pub fn add_boxed(&mut self, output: Box<dyn Output>) {
        self.outputs.push(output);
    }

    /// Builds each update's record and hands it to every output; then
    /// writes the batch out, at most [`WRITE_CHUNK`] records at a time (a
    /// sweep or shutdown with a million flows would otherwise hold every
    /// line in memory at once).
    pub fn write(&mut self, updates: &[FlowUpdate]) -> Result<(), OutputError> {
        // Asked once per call: an output may have to look inside to answer.
        let any_tracks_state = self.outputs.iter().any(|o| o.tracks_flow_state());
        for chunk in updates.chunks(WRITE_CHUNK) {
            for update in chunk {
                let empty = update.is_empty();
                if empty && !any_tracks_state {
                    continue;
                }
                let identities = self.enrichers.identify(update);
                let source = self.stamper.stamp(update, identities);
                let record = self.builder.build(&source);
                for output in &mut self.outputs {
                    if !empty || output.tracks_flow_state() {
                        output.flow(&source, &record);
                    }
                }
            }
            self.end_batch()?;
        }
        if updates.is_empty() {
            // Still a batch: it writes out losses reported since the last.
            self.end_batch()?;
        }
        Ok(())
    }

    /// Builds each DNS message's L7 record and hands it to every output,
    /// then writes the batch out. Its endpoints are identified as its
    /// packet's would be.
    /// Writes (and takes) every observation in `observations`.
    pub fn write_dns(&mut self, observations: &mut Vec<DnsObservation>) -> Result<(), OutputError> {
        if observations.is_empty() {
            return Ok(());
        }
        for observation in observations.drain(..) {
            let update = observation.flow_update();
            let identities = self.enrichers.identify(&update);
            let source = self.stamper.stamp(&update, identities);
            // Shared, not copied, with the outputs that keep it.
            let flow = Arc::new(self.builder.build_dns(&source, observation));
            for output in &mut self.outputs {
                output.l7(&source, &flow);
            }
        }
        self.end_batch()
    }

    /// Reports `count` events lost at `source` (before records were built).
    pub fn lost(&mut self, source: LostEventSource, count: u64) {
        if count == 0 {
            return;
        }
        let event = LostEvent {
            source: source as i32,
            num_events_lost: count,
            ..Default::default()
        };
        let now = self.stamper.now();
        for output in &mut self.outputs {
            output.lost(&event, &now);
        }
    }

    /// Writes out what every output buffered.
    pub fn end_batch(&mut self) -> Result<(), OutputError> {
        self.each(|o| o.end_batch())
    }

    pub fn flush(&mut self) -> Result<(), OutputError> {
        self.each(|o| o.flush())
    }

    /// Runs `step` on every output, even after one fails; the first error
    /// is returned.
    fn each(&mut self, mut step: impl FnMut(&mut dyn Output) -> Result<(), OutputError>) -> Result<(), OutputError> {
        let mut result = Ok(());
        for output in &mut self.outputs {
            let r = step(output.as_mut());
            result = result.and(r);
        }
        result
    }

    pub fn close(&mut self) {
        for output in &mut self.outputs {
            output.close();
        }
    }

    /// Names an interface in later records.
    pub fn learn_interface(&mut self, index: u32, name: &str, kind: InterfaceKind) {
        self.stamper.learn_interface(index, name, kind);
    }

    /// The timer's work: re-reads the wall clock's offset (NTP steps show
    /// in later records) and lets each output do what is due.
    pub fn tick(&mut self) {
        self.stamper.refresh_clock();
        for output in &mut self.outputs {
            output.tick();
        }
    }
}

#[cfg(test)]
mod tests;
