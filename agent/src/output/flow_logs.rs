//! Several stored flow logs, each with its own filters, field mask, file
//! and rotation, read from a file in the shape of Cilium's dynamic exporter
//! config (`hubcap run --flow-logs-config PATH`):
//!
//! ```yaml
//! flowLogs:
//!   - name: dropped
//!     filePath: /var/log/hubcap/dropped.log
//!     includeFilters: [{verdict: [DROPPED]}]
//!     fieldMask: [time, verdict, drop_reason_desc, IP, l4]
//!     fileMaxSizeMb: 10
//!     fileMaxBackups: 5
//! ```
//!
//! Filters are Hubble's `FlowFilter` (the API's semantics, identities
//! included); a record goes to a log when any include filter selects it (or
//! there are none) and no exclude filter does.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use prost_reflect::{DeserializeOptions, DynamicMessage};
use serde::Deserialize;

use super::{JsonLog, Output, OutputError};
use crate::{
    filter::{FilterError, FlowSelector},
    hubble_api::field_mask::{FieldMask, FieldMaskError},
    json::ExportPayload,
    metrics::Metrics,
    proto::{descriptor_pool, flow::FlowFilter},
    record::{FlowRecord, RecordSource},
    sink::{RotationConfig, Sink},
};

/// What is wrong with a flow-log config. The fields are `error`, not
/// `source`: the message already says what went wrong, and a `source`
/// would be printed a second time in the error chain.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {error}")]
    Parse { path: String, error: serde_norway::Error },
    #[error("flow log {name:?}: {what}")]
    Invalid { name: String, what: String },
    #[error("flow log {name:?}: {error}")]
    Filter { name: String, error: FilterError },
    #[error("flow log {name:?}: {error}")]
    Mask { name: String, error: FieldMaskError },
    #[error("flow log {name:?}: cannot write to {path}: {error}")]
    Open {
        name: String,
        path: String,
        error: std::io::Error,
    },
}

/// The file: Cilium's `flowLogs:` list.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    flow_logs: Vec<FlowLogConfig>,
}

/// One log, with Cilium's field names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowLogConfig {
    pub name: String,
    pub file_path: String,
    #[serde(default)]
    pub field_mask: Vec<String>,
    #[serde(default)]
    pub include_filters: Vec<serde_json::Value>,
    #[serde(default)]
    pub exclude_filters: Vec<serde_json::Value>,
    #[serde(default = "default_max_size_mb")]
    pub file_max_size_mb: u64,
    #[serde(default = "default_max_backups")]
    pub file_max_backups: u32,
    #[serde(default)]
    pub file_compress: bool,
    /// RFC 3339: from then on the log takes nothing (it stops).
    #[serde(default)]
    pub end: Option<String>,
}

fn default_max_size_mb() -> u64 {
    10
}

fn default_max_backups() -> u32 {
    5
}

/// Reads and checks the config file: every log's filters, mask and name.
pub fn read_config(path: &Path) -> Result<Vec<FlowLogConfig>, ConfigError> {
    parse_config(path, &read_text(path)?)
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.display().to_string(),
        error,
    })
}

fn parse_config(path: &Path, text: &str) -> Result<Vec<FlowLogConfig>, ConfigError> {
    let file: ConfigFile = serde_norway::from_str(text).map_err(|error| ConfigError::Parse {
        path: path.display().to_string(),
        error,
    })?;
    let mut names = HashSet::new();
    for log in &file.flow_logs {
        let invalid = |what: &str| ConfigError::Invalid {
            name: log.name.clone(),
            what: what.to_owned(),
        };
        if log.name.is_empty() {
            return Err(invalid("a name is required"));
        }
        if !names.insert(log.name.as_str()) {
            return Err(invalid("the name is used twice"));
        }
        if log.file_path.is_empty() {
            return Err(invalid("filePath is required"));
        }
        if log.file_compress {
            return Err(invalid("fileCompress is not supported yet"));
        }
        if log.end.as_ref().is_some_and(|end| end_time(end).is_none()) {
            return Err(invalid("end is not an RFC 3339 time"));
        }
    }
    Ok(file.flow_logs)
}

fn end_time(text: &str) -> Option<prost_types::Timestamp> {
    text.parse().ok()
}

/// A `FlowFilter` written in YAML with Hubble's field names.
fn flow_filter(name: &str, value: &serde_json::Value) -> Result<FlowFilter, ConfigError> {
    let invalid = |what: String| ConfigError::Invalid {
        name: name.to_owned(),
        what,
    };
    let descriptor = descriptor_pool()
        .get_message_by_name("flow.FlowFilter")
        .expect("flow.FlowFilter is in the descriptors");
    let message = DynamicMessage::deserialize_with_options(descriptor, value, &DeserializeOptions::new())
        .map_err(|e| invalid(format!("bad filter {value}: {e}")))?;
    message
        .transcode_to()
        .map_err(|e| invalid(format!("bad filter {value}: {e}")))
}

/// One configured log: selects, masks and writes records.
pub struct FlowLog {
    name: String,
    selector: FlowSelector,
    mask: Option<FieldMask>,
    log: JsonLog,
    metrics: Arc<Metrics>,
    /// From the config's `end`; `ended` once the wall clock passed it.
    end: Option<prost_types::Timestamp>,
    ended: bool,
}

impl FlowLog {
    /// Opens the log's file (an unwritable path fails here).
    pub fn open(config: &FlowLogConfig, node_name: &str, metrics: Arc<Metrics>) -> Result<FlowLog, ConfigError> {
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
        let mask = FieldMask::new(&config.field_mask).map_err(|error| ConfigError::Mask {
            name: name.clone(),
            error,
        })?;
        let rotation = RotationConfig {
            max_bytes: config.file_max_size_mb * 1024 * 1024,
            max_backups: config.file_max_backups,
        };
        let sink = Sink::open(&config.file_path, rotation).map_err(|error| ConfigError::Open {
            name: name.clone(),
            path: config.file_path.clone(),
            error,
        })?;
        for counter in [&metrics.flow_log_records, &metrics.flow_log_filtered] {
            counter.with_label_values(&[&name]);
        }
        Ok(FlowLog {
            name,
            selector,
            mask,
            log: JsonLog::new(sink, node_name.to_owned(), Arc::clone(&metrics)),
            metrics,
            end: config.end.as_deref().and_then(end_time),
            ended: false,
        })
    }
}

impl Output for FlowLog {
    fn flow(&mut self, source: &RecordSource, record: &FlowRecord) {
        // The end is on the wall clock, as in Cilium: from then on the log
        // takes nothing, whatever time the records carry.
        if let Some(end) = &self.end
            && !self.ended
            && {
                let now = crate::clock::WallClock::now_timestamp();
                (now.seconds, now.nanos) > (end.seconds, end.nanos)
            }
        {
            self.ended = true;
            tracing::info!(log = %self.name, "flow log reached its end time: stopped");
        }
        if self.ended {
            return;
        }
        if !self.selector.selects(&record.flow) {
            self.metrics.flow_log_filtered.with_label_values(&[&self.name]).inc();
            return;
        }
        self.metrics.flow_log_records.with_label_values(&[&self.name]).inc();
        match &self.mask {
            None => self.log.flow(source, record),
            Some(mask) => {
                // The counts are the `extensions` field: kept only when the
                // mask names it.
                let flow = mask.apply(&record.flow);
                let counts = mask.keeps("extensions").then_some(&record.counts);
                let time = record.flow.time.unwrap_or_default();
                self.log.payload(ExportPayload::Flow(&flow, counts), &time);
            }
        }
    }

    fn lost(&mut self, lost: &crate::proto::flow::LostEvent, time: &prost_types::Timestamp) {
        if !self.ended {
            self.log.lost(lost, time);
        }
    }

    fn end_batch(&mut self) -> Result<(), OutputError> {
        self.log.end_batch()
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.log.flush()
    }

    fn close(&mut self) {
        self.log.close();
    }
}

/// The logs of one config file, re-read when it changes: a log whose
/// config did not change keeps writing as before (nothing of it is lost);
/// changed and new ones are opened, removed ones closed. A file that does
/// not check out leaves the previous logs in force.
pub struct FlowLogs {
    path: PathBuf,
    node_name: String,
    metrics: Arc<Metrics>,
    /// The file's text last applied.
    applied: Option<String>,
    logs: Vec<(FlowLogConfig, FlowLog)>,
}

impl FlowLogs {
    /// Reads the file and opens every log; any error stops here.
    pub fn open(path: &Path, node_name: &str, metrics: Arc<Metrics>) -> Result<FlowLogs, ConfigError> {
        let mut logs = FlowLogs {
            path: path.to_owned(),
            node_name: node_name.to_owned(),
            metrics,
            applied: None,
            logs: Vec::new(),
        };
        logs.reload()?;
        Ok(logs)
    }

    /// Applies the file if it changed since the last time; true if it did.
    pub fn reload(&mut self) -> Result<bool, ConfigError> {
        let text = read_text(&self.path)?;
        if self.applied.as_ref() == Some(&text) {
            return Ok(false);
        }
        let configs = parse_config(&self.path, &text)?;
        let mut previous = std::mem::take(&mut self.logs);
        let mut next = Vec::with_capacity(configs.len());
        for config in configs {
            match previous.iter().position(|(c, _)| *c == config) {
                Some(i) => next.push(previous.swap_remove(i)),
                None => match FlowLog::open(&config, &self.node_name, Arc::clone(&self.metrics)) {
                    Ok(log) => next.push((config, log)),
                    Err(e) => {
                        // All or nothing: the previous logs stay as they were.
                        next.append(&mut previous);
                        self.logs = next;
                        return Err(e);
                    }
                },
            }
        }
        for (_, mut gone) in previous {
            let _ = gone.end_batch();
            let _ = gone.flush();
            gone.close();
        }
        self.logs = next;
        self.applied = Some(text);
        Ok(true)
    }

    pub fn names(&self) -> Vec<&str> {
        self.logs.iter().map(|(c, _)| c.name.as_str()).collect()
    }

    fn each(&mut self, mut f: impl FnMut(&mut FlowLog) -> Result<(), OutputError>) -> Result<(), OutputError> {
        let mut first_error = Ok(());
        for (_, log) in &mut self.logs {
            let result = f(log);
            if first_error.is_ok() {
                first_error = result;
            }
        }
        first_error
    }
}

/// The set of logs as one output, shared with the timer that reloads it.
pub struct SharedFlowLogs(pub Arc<std::sync::Mutex<FlowLogs>>);

impl SharedFlowLogs {
    fn logs(&self) -> std::sync::MutexGuard<'_, FlowLogs> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Output for SharedFlowLogs {
    fn flow(&mut self, source: &RecordSource, record: &FlowRecord) {
        for (_, log) in &mut self.logs().logs {
            log.flow(source, record);
        }
    }

    fn lost(&mut self, lost: &crate::proto::flow::LostEvent, time: &prost_types::Timestamp) {
        for (_, log) in &mut self.logs().logs {
            log.lost(lost, time);
        }
    }

    fn end_batch(&mut self) -> Result<(), OutputError> {
        self.logs().each(|log| log.end_batch())
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.logs().each(|log| log.flush())
    }

    fn close(&mut self) {
        for (_, log) in &mut self.logs().logs {
            log.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile_path::Temp {
        tempfile_path::Temp::with(text)
    }

    /// A file in the test's temporary directory, removed on drop.
    mod tempfile_path {
        pub struct Temp(pub std::path::PathBuf);
        impl Temp {
            pub fn with(text: &str) -> Temp {
                let path = std::env::temp_dir().join(format!("hubcap-flowlogs-{}.yaml", fastrand::u64(..)));
                std::fs::write(&path, text).unwrap();
                Temp(path)
            }
        }
        impl Drop for Temp {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn cilium_shaped_config_is_read() {
        let f = write(
            "flowLogs:\n  - name: a\n    filePath: /tmp/a.log\n    fieldMask: [time, IP]\n    includeFilters:\n      - source_pod: [default/]\n        verdict: [DROPPED]\n    fileMaxSizeMb: 3\n",
        );
        let logs = read_config(&f.0).unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!((logs[0].file_max_size_mb, logs[0].file_max_backups), (3, 5));
        let filter = flow_filter("a", &logs[0].include_filters[0]).unwrap();
        assert_eq!(filter.source_pod, vec!["default/".to_owned()]);
        assert_eq!(filter.verdict, vec![crate::proto::flow::Verdict::Dropped as i32]);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let err = |text: &str| read_config(&write(text).0).unwrap_err().to_string();
        assert!(err("flowLogs:\n  - name: a\n    filePath: x\n    colour: red\n").contains("colour"));
        assert!(err("flowLogs:\n  - name: a\n    filePath: x\n  - name: a\n    filePath: y\n").contains("twice"));
        assert!(err("flowLogs:\n  - name: a\n    filePath: \"\"\n").contains("filePath"));
        assert!(err("flowLogs:\n  - name: a\n    filePath: x\n    end: tomorrow\n").contains("RFC 3339"));
        let bad_filter = serde_json::json!({"source_pood": ["x"]});
        assert!(
            flow_filter("a", &bad_filter)
                .unwrap_err()
                .to_string()
                .contains("source_pood")
        );
    }

    #[test]
    fn a_bad_change_leaves_the_previous_logs_in_force() {
        let dir = std::env::temp_dir().join(format!("hubcap-flowlogs-reload-{}", fastrand::u64(..)));
        let log = |name: &str| format!("  - name: {name}\n    filePath: {}/{name}.log\n", dir.display());
        let f = write(&format!("flowLogs:\n{}", log("a")));
        let metrics = Arc::new(Metrics::new());
        let mut logs = FlowLogs::open(&f.0, "node", metrics).unwrap();
        assert_eq!(logs.names(), ["a"]);
        assert!(!logs.reload().unwrap(), "unchanged file, nothing to do");
        std::fs::write(&f.0, format!("flowLogs:\n{}    fieldMask: [sauce]\n", log("b"))).unwrap();
        assert!(logs.reload().unwrap_err().to_string().contains("sauce"));
        assert_eq!(logs.names(), ["a"], "the previous config stays");
        std::fs::write(&f.0, format!("flowLogs:\n{}{}", log("a"), log("b"))).unwrap();
        assert!(logs.reload().unwrap());
        assert_eq!(logs.names(), ["a", "b"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
