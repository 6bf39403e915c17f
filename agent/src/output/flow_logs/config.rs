//! The flow-logs config file: Cilium's dynamic exporter shape, read and
//! checked before anything is opened.

use std::{collections::HashSet, path::Path, time::Duration};

use prost_reflect::{DeserializeOptions, DynamicMessage};
use serde::Deserialize;

use crate::{
    filter::FilterError,
    hubble::field_mask::FieldMaskError,
    output::azure::OutputFormat,
    proto::{descriptor_pool, flow::FlowFilter},
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
    #[serde(default)]
    pub aggregation_options: Option<AggregationOptions>,
    /// `hubble` (the default), or Azure's `vnet` or `nsg` flow tuples.
    #[serde(default)]
    pub format: OutputFormat,
}

/// Cilium's exporter aggregation: over each window, the records that agree
/// on `aggregationFields` become one line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AggregationOptions {
    /// `30s`, `1m`, `500ms`.
    pub window_interval: String,
    /// Flow fields, as in a field mask (`IP.source`, `l4.TCP.destination_port`).
    pub aggregation_fields: Vec<String>,
}

impl AggregationOptions {
    pub fn window(&self) -> Option<Duration> {
        humantime::parse_duration(&self.window_interval)
            .ok()
            .filter(|w| !w.is_zero())
    }
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

pub(super) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.display().to_string(),
        error,
    })
}

pub fn parse_config(path: &Path, text: &str) -> Result<Vec<FlowLogConfig>, ConfigError> {
    let file: ConfigFile = serde_norway::from_str(text).map_err(|error| ConfigError::Parse {
        path: path.display().to_string(),
        error,
    })?;
    check(&file.flow_logs)?;
    Ok(file.flow_logs)
}

/// What can be checked without opening anything: names and paths unique,
/// times and windows readable.
pub fn check(logs: &[FlowLogConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for log in logs {
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
        if !paths.insert(log.file_path.as_str()) {
            return Err(invalid("its filePath is another log's too"));
        }
        if log.end.as_ref().is_some_and(|end| end_time(end).is_none()) {
            return Err(invalid("end is not an RFC 3339 time"));
        }
        if log.format != OutputFormat::Hubble && (!log.field_mask.is_empty() || log.aggregation_options.is_some()) {
            return Err(invalid(
                "fieldMask and aggregationOptions apply to the hubble format only",
            ));
        }
        if let Some(aggregation) = &log.aggregation_options {
            if aggregation.window().is_none() {
                return Err(invalid(
                    "aggregationOptions.windowInterval is not a duration above 0 (30s, 1m)",
                ));
            }
            if aggregation.aggregation_fields.is_empty() {
                return Err(invalid("aggregationOptions.aggregationFields is empty"));
            }
        }
    }
    Ok(())
}

pub(super) fn end_time(text: &str) -> Option<prost_types::Timestamp> {
    text.parse().ok()
}

/// A `FlowFilter` written in YAML with Hubble's field names.
pub(super) fn flow_filter(name: &str, value: &serde_json::Value) -> Result<FlowFilter, ConfigError> {
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
