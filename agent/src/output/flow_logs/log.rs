//! One configured flow log: selects, aggregates, masks and writes records.

use std::time::Instant;

use prost_types::Timestamp;

use super::{
    aggregate::{Aggregator, Group},
    config::{ConfigError, FlowLogConfig, end_time, flow_filter},
    log_metrics::LogMetrics,
};
use crate::{
    filter::FlowSelector,
    hubble::field_mask::FieldMask,
    json::{Counts, ExportPayload},
    metrics::Metrics,
    output::{
        JsonLog, Output, OutputError,
        azure::{AzureFlowLog, Destination, OutputFormat},
    },
    proto::flow::{Flow, LostEvent},
    record::{FlowRecord, RecordSource},
    sink::{RotationConfig, Sink, SinkStats},
};

/// Where a log's lines go: Hubble's JSON, or Azure's flow tuples.
enum Writer {
    Hubble(JsonLog),
    Tuples(AzureFlowLog),
}

impl Writer {
    fn output(&mut self) -> &mut dyn Output {
        match self {
            Writer::Hubble(log) => log,
            Writer::Tuples(log) => log,
        }
    }

    fn stats(&self) -> SinkStats {
        match self {
            Writer::Hubble(log) => log.stats(),
            Writer::Tuples(log) => log.stats(),
        }
    }
}

pub struct FlowLog {
    name: String,
    selector: FlowSelector,
    mask: Option<FieldMask>,
    aggregator: Option<Aggregator>,
    log: Writer,
    metrics: LogMetrics,
    /// From the config's `end`; `ended` once the wall clock passed it.
    end: Option<Timestamp>,
    ended: bool,
}

impl FlowLog {
    /// Checks filters and masks and opens the log's file (an unwritable
    /// path fails here).
    pub fn open(config: &FlowLogConfig, node_name: &str, metrics: &Metrics) -> Result<FlowLog, ConfigError> {
        let name = config.name.clone();
        let filters = |values: &[serde_json::Value]| {
            values
                .iter()
                .map(|v| flow_filter(&name, v))
                .collect::<Result<Vec<_>, _>>()
        };
        let selector = FlowSelector::new(&filters(&config.include_filters)?, &filters(&config.exclude_filters)?)
            .map_err(|error| ConfigError::Filter {
                name: name.clone(),
                error,
            })?;
        let mask_error = |error| ConfigError::Mask {
            name: name.clone(),
            error,
        };
        let mask = FieldMask::new(&config.field_mask).map_err(mask_error)?;
        let aggregator = match &config.aggregation_options {
            None => None,
            Some(options) => {
                let fields = FieldMask::new(&options.aggregation_fields).map_err(mask_error)?;
                let (Some(fields), Some(window)) = (fields, options.window()) else {
                    return Err(ConfigError::Invalid {
                        name: name.clone(),
                        what: "aggregationOptions needs aggregationFields and a windowInterval".into(),
                    });
                };
                Some(Aggregator::new(fields, window))
            }
        };
        let rotation = RotationConfig {
            max_bytes: config.file_max_size_mb * 1024 * 1024,
            max_backups: config.file_max_backups,
            compress: config.file_compress,
        };
        let sink = Sink::open(&config.file_path, rotation).map_err(|error| ConfigError::Open {
            name: name.clone(),
            path: config.file_path.clone(),
            error,
        })?;
        Ok(FlowLog {
            metrics: LogMetrics::register(metrics, &name),
            name,
            selector,
            mask,
            aggregator,
            log: match config.format {
                OutputFormat::Hubble => Writer::Hubble(JsonLog::new(sink, node_name.to_owned(), metrics)),
                format => Writer::Tuples(AzureFlowLog::new(
                    format,
                    Destination::Lines(sink),
                    node_name.to_owned(),
                    metrics,
                )),
            },
            end: config.end.as_deref().and_then(end_time),
            ended: false,
        })
    }

    /// Writes the aggregated lines of a window that is over (all of them
    /// with `all`). Also called from a timer, so that a quiet log's last
    /// window does not wait for the next record.
    pub fn write_due_aggregates(&mut self, all: bool) {
        let Some(aggregator) = &mut self.aggregator else { return };
        for group in aggregator.take(Instant::now(), all) {
            self.write_group(group);
        }
    }

    fn write_group(&mut self, group: Group) {
        let time = group.flow.time.unwrap_or_default();
        let counts = Counts::Aggregate(&group.counts);
        self.write_flow(&group.flow, Some(counts), &time);
    }

    /// With the field mask applied; hubcap's counts are the `extensions`
    /// field, kept when the mask names it. An aggregated line keeps its
    /// `aggregate`, as in Cilium.
    fn write_flow(&mut self, flow: &Flow, counts: Option<Counts<'_>>, time: &Timestamp) {
        // Tuple logs take records whole (their config has no mask and no
        // aggregation): only Hubble logs come here.
        let Writer::Hubble(log) = &mut self.log else { return };
        match &self.mask {
            None => log.payload(ExportPayload::Flow(flow, counts), time),
            Some(mask) => {
                let mut masked = mask.apply(flow);
                masked.aggregate = flow.aggregate;
                let counts = counts.filter(|_| mask.keeps("extensions"));
                log.payload(ExportPayload::Flow(&masked, counts), time);
            }
        }
    }

    /// The end is on the wall clock, as in Cilium: from then on the log
    /// takes nothing, whatever time the records carry.
    fn check_end(&mut self) {
        let Some(end) = &self.end else { return };
        if self.ended {
            return;
        }
        let now = crate::clock::WallClock::now_timestamp();
        if (now.seconds, now.nanos) > (end.seconds, end.nanos) {
            self.ended = true;
            self.write_due_aggregates(true);
            tracing::info!(log = %self.name, "flow log reached its end time: stopped");
        }
    }

    /// Writes what is pending and closes the file: at exit, or when the
    /// log is removed from the config.
    pub fn finish(&mut self) {
        self.write_due_aggregates(true);
        let _ = self.end_batch();
        let _ = self.flush();
        self.close();
    }

    /// A log removed from the config leaves no metric series behind.
    pub fn forget_metrics(&self) {
        self.metrics.forget();
    }
}

impl Output for FlowLog {
    fn flow(&mut self, source: &RecordSource, record: &FlowRecord) {
        self.check_end();
        if self.ended {
            return;
        }
        if !self.selector.selects(&record.flow) {
            self.metrics.filtered.inc();
            return;
        }
        self.metrics.records.inc();
        if let Writer::Tuples(log) = &mut self.log {
            log.flow(source, record);
            return;
        }
        match &mut self.aggregator {
            Some(aggregator) => {
                aggregator.add(record, Instant::now());
                self.write_due_aggregates(false);
            }
            None => {
                let time = record.flow.time.unwrap_or_default();
                self.write_flow(&record.flow, Some(Counts::Record(&record.counts)), &time);
            }
        }
    }

    /// An L7 record through the log's filters and mask; never aggregated
    /// (it carries no counts to sum), and left to the tuple writer's rule.
    fn l7(&mut self, source: &RecordSource, flow: &std::sync::Arc<Flow>) {
        self.check_end();
        if self.ended {
            return;
        }
        if !self.selector.selects(flow) {
            self.metrics.filtered.inc();
            return;
        }
        self.metrics.records.inc();
        if let Writer::Tuples(log) = &mut self.log {
            log.l7(source, flow);
            return;
        }
        let time = flow.time.unwrap_or_default();
        self.write_flow(flow, None, &time);
    }

    fn lost(&mut self, lost: &LostEvent, time: &Timestamp) {
        if !self.ended {
            self.log.output().lost(lost, time);
        }
    }

    fn end_batch(&mut self) -> Result<(), OutputError> {
        let before = self.log.stats();
        let result = self.log.output().end_batch();
        let after = self.log.stats();
        let m = &self.metrics;
        m.bytes.inc_by(after.bytes - before.bytes);
        m.rotations.inc_by(after.rotations - before.rotations);
        result
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.log.output().flush()
    }

    fn close(&mut self) {
        self.log.output().close();
    }

    fn tracks_flow_state(&self) -> bool {
        matches!(self.log, Writer::Tuples(_))
    }
}
