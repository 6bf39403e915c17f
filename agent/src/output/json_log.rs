//! Output as a Hubble JSON flow log: one `ExportEvent` line per record or
//! loss, written per batch to stdout or a size-rotated file.

use prost_types::Timestamp;
use tracing::{info, warn};

use super::{Output, OutputError, sink_metrics::SinkMetrics};
use crate::{
    json::{ExportPayload, write_export_event},
    metrics::Metrics,
    proto::flow::{Flow, LostEvent},
    record::{FlowRecord, RecordSource},
    sink::{Sink, SinkStats},
};

/// The line buffer is shrunk back to this after a burst.
const BUFFER_KEEP: usize = 1 << 20;

pub struct JsonLog {
    sink: Sink,
    stats: SinkStats,
    node_name: String,
    /// Lines of the batch not yet written.
    lines: Vec<u8>,
    line_count: u64,
    /// Records that could not be written (a full disk, a removed file):
    /// reported in a `lost_events` line once writing works again.
    lost: u64,
    metrics: SinkMetrics,
}

impl JsonLog {
    pub fn new(sink: Sink, node_name: String, metrics: &Metrics) -> Self {
        let metrics = SinkMetrics::register(metrics, sink.name());
        JsonLog {
            sink,
            stats: SinkStats::default(),
            node_name,
            lines: Vec::with_capacity(1 << 16),
            line_count: 0,
            lost: 0,
            metrics,
        }
    }

    /// Writes one event of any payload (a masked flow, for instance).
    pub fn payload(&mut self, payload: ExportPayload<'_>, time: &Timestamp) {
        write_export_event(&mut self.lines, payload, &self.node_name, time);
        self.line_count += 1;
    }

    /// Lines, bytes and rotations written so far.
    pub fn stats(&self) -> SinkStats {
        self.stats
    }

    /// The batch's records are lost: counted, and the buffer emptied.
    fn count_lost(&mut self) {
        self.lost += self.line_count;
        self.metrics.records_lost.inc_by(self.line_count);
        self.clear();
    }

    fn clear(&mut self) {
        self.lines.clear();
        self.line_count = 0;
        // A burst may have grown the buffer; do not keep that memory.
        if self.lines.capacity() > BUFFER_KEEP {
            self.lines.shrink_to(BUFFER_KEEP);
        }
    }

    /// `lost_events` for the records lost since writing last worked.
    fn write_lost_line(&mut self) -> std::io::Result<()> {
        let lost = LostEvent {
            source: crate::proto::flow::LostEventSource::UnknownLostEventSource as i32,
            num_events_lost: self.lost,
            ..Default::default()
        };
        let mut line = Vec::new();
        let now = crate::clock::WallClock::now_timestamp();
        write_export_event(&mut line, ExportPayload::LostEvents(&lost), &self.node_name, &now);
        self.sink.write_lines(&line, 1, &mut self.stats)?;
        info!(
            output = self.sink.name(),
            lost = self.lost,
            "writing the flow log works again"
        );
        self.lost = 0;
        Ok(())
    }

    fn error(&self, source: std::io::Error) -> OutputError {
        OutputError::Write {
            output: self.sink.name(),
            source,
        }
    }
}

impl Output for JsonLog {
    fn flow(&mut self, _: &RecordSource, record: &FlowRecord) {
        // The event's time is the flow's, as in Hubble's exporter.
        let time = record.flow.time.unwrap_or_default();
        write_export_event(&mut self.lines, ExportPayload::record(record), &self.node_name, &time);
        self.line_count += 1;
    }

    fn lost(&mut self, lost: &LostEvent, time: &Timestamp) {
        write_export_event(&mut self.lines, ExportPayload::LostEvents(lost), &self.node_name, time);
        self.line_count += 1;
    }

    fn l7(&mut self, _: &RecordSource, flow: &std::sync::Arc<Flow>) {
        let time = flow.time.unwrap_or_default();
        write_export_event(&mut self.lines, ExportPayload::Flow(flow, None), &self.node_name, &time);
        self.line_count += 1;
    }

    /// A write that fails (disk full, file gone) does not stop capture:
    /// the batch's records are counted as lost, and the first write that
    /// works again is preceded by a `lost_events` line saying how many.
    fn end_batch(&mut self) -> Result<(), OutputError> {
        if self.line_count == 0 {
            return Ok(());
        }
        let name = self.sink.name();
        if self.lost > 0 && self.write_lost_line().is_err() {
            self.count_lost();
            return Ok(());
        }
        let rotations_before = self.stats.rotations;
        let written = self.sink.write_lines(&self.lines, self.line_count, &mut self.stats);
        let m = &self.metrics;
        m.rotations.inc_by(self.stats.rotations - rotations_before);
        if let Err(e) = written {
            m.write_errors.inc();
            if self.lost == 0 {
                warn!(output = name, error = %e, "cannot write the flow log: records are counted as lost until it works again");
            }
            self.count_lost();
            return Ok(());
        }
        m.records_written.inc_by(self.line_count);
        m.bytes_written.inc_by(self.lines.len() as u64);
        self.clear();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.sink.flush().map_err(|e| self.error(e))
    }

    fn close(&mut self) {
        if let Err(e) = self.sink.close() {
            self.metrics.write_errors.inc();
            tracing::warn!(output = self.sink.name(), "closing the flow log: {e}");
        }
        info!(
            output = %self.sink.target(),
            records = self.stats.lines,
            bytes_written = self.stats.bytes,
            rotations = self.stats.rotations,
            "flow log closed"
        );
    }
}
