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
//!
//! The logs manage themselves, as Cilium's dynamic exporter does: on every
//! tick they re-read the file, and take the stored log that Azure's custom
//! resources ask for from their watch (`resource_watch`, a task that only
//! sends), so nothing outside this module holds or changes them.

mod aggregate;
mod config;
mod log;
mod log_metrics;
mod resource_watch;
pub mod resources;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
pub use config::{AggregationOptions, ConfigError, FlowLogConfig, parse_config, read_config};
pub use log::FlowLog;
use prometheus::IntCounter;
use resource_watch::ResourceLogs;
pub use resource_watch::StoredLogOptions;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Output, OutputError};
use crate::{
    metrics::Metrics,
    proto::flow::LostEvent,
    record::{FlowRecord, RecordSource},
};

/// What `hubcap run`'s flow-log flags ask for.
#[derive(Clone, Debug, Default)]
pub struct FlowLogSettings {
    /// `--flow-logs-config`.
    pub config_file: Option<PathBuf>,
    /// `--flow-log-crds`: the custom resources' stored log.
    pub resources: Option<StoredLogOptions>,
    /// How the resources' watch reaches the API server.
    pub kubeconfig: Option<PathBuf>,
}

impl FlowLogSettings {
    pub fn any(&self) -> bool {
        self.config_file.is_some() || self.resources.is_some()
    }
}

/// The flow logs in force: those of the config file and those the custom
/// resources make. When either changes, a log whose config did not change
/// keeps writing as before (nothing of it is lost); changed and new ones
/// are opened, removed ones closed. A change that does not check out leaves
/// the previous logs in force.
pub struct FlowLogs {
    path: Option<PathBuf>,
    node_name: String,
    metrics: Arc<Metrics>,
    /// Changes (file or resources) that were refused.
    config_errors: IntCounter,
    /// The file's text last applied, and the last one refused (not
    /// reported again until it changes).
    applied_text: Option<String>,
    refused_text: Option<String>,
    /// Why the file could not be read last time.
    unreadable: Option<String>,
    file_configs: Vec<FlowLogConfig>,
    resource_configs: Vec<FlowLogConfig>,
    logs: Vec<(FlowLogConfig, FlowLog)>,
    /// What the custom resources' watch asks for, and the watch itself.
    resource_changes: Option<mpsc::Receiver<ResourceLogs>>,
    resource_watch: Option<tokio::task::JoinHandle<()>>,
}

impl FlowLogs {
    /// Opens the logs the settings ask for, if any, and starts the custom
    /// resources' watch (an unreachable API server is an error here).
    pub async fn start(
        settings: &FlowLogSettings,
        node_name: &str,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<FlowLogs>> {
        if !settings.any() {
            return Ok(None);
        }
        let path = settings.config_file.as_deref();
        let mut logs = FlowLogs::open(path, node_name, Arc::clone(metrics))?;
        if let Some(path) = path {
            info!(logs = ?logs.names(), config = %path.display(), "flow logs configured");
        }
        if let Some(options) = &settings.resources {
            let (client, server) = crate::kubernetes::connect(settings.kubeconfig.clone())
                .await
                .context("--flow-log-crds needs the Kubernetes API")?;
            info!(%server, path = %options.file_path, "flow-log custom resources watched");
            // One change at a time: the watch waits for each answer anyway.
            let (changes, received) = mpsc::channel(1);
            logs.resource_changes = Some(received);
            logs.resource_watch = Some(tokio::spawn(resource_watch::run(
                client,
                changes,
                options.clone(),
                Arc::clone(metrics),
            )));
        }
        Ok(Some(logs))
    }

    /// Reads the file (if any) and opens every log; any error stops here.
    pub fn open(path: Option<&Path>, node_name: &str, metrics: Arc<Metrics>) -> Result<FlowLogs, ConfigError> {
        let mut logs = FlowLogs {
            path: path.map(Path::to_owned),
            node_name: node_name.to_owned(),
            config_errors: log_metrics::config_errors(&metrics),
            metrics,
            applied_text: None,
            refused_text: None,
            unreadable: None,
            file_configs: Vec::new(),
            resource_configs: Vec::new(),
            logs: Vec::new(),
            resource_changes: None,
            resource_watch: None,
        };
        logs.reload()?;
        Ok(logs)
    }

    /// Applies the config file if it changed since the last time; true if
    /// it did.
    pub fn reload(&mut self) -> Result<bool, ConfigError> {
        let Some(path) = &self.path else { return Ok(false) };
        let text = match config::read_text(path) {
            Ok(text) => text,
            // A file that stays unreadable is reported once.
            Err(e) if self.unreadable.as_ref() == Some(&e.to_string()) => return Ok(false),
            Err(e) => {
                self.unreadable = Some(e.to_string());
                return Err(e);
            }
        };
        self.unreadable = None;
        if self.applied_text.as_ref() == Some(&text) || self.refused_text.as_ref() == Some(&text) {
            return Ok(false);
        }
        let result = config::parse_config(path, &text).and_then(|configs| {
            let all = configs.iter().chain(&self.resource_configs).cloned().collect();
            self.apply(all)?;
            Ok(configs)
        });
        match result {
            Ok(configs) => {
                self.file_configs = configs;
                self.applied_text = Some(text);
                self.refused_text = None;
                Ok(true)
            }
            Err(e) => {
                self.refused_text = Some(text);
                Err(e)
            }
        }
    }

    /// Replaces the logs the custom resources make.
    pub fn set_resource_logs(&mut self, configs: Vec<FlowLogConfig>) -> Result<(), ConfigError> {
        if configs == self.resource_configs {
            return Ok(());
        }
        let all = self.file_configs.iter().chain(&configs).cloned().collect();
        self.apply(all)?;
        self.resource_configs = configs;
        Ok(())
    }

    /// All or nothing: on error the previous logs stay as they were.
    fn apply(&mut self, configs: Vec<FlowLogConfig>) -> Result<(), ConfigError> {
        config::check(&configs)?;
        // Open what is new first, so that an error changes nothing.
        let mut opened = Vec::new();
        for config in &configs {
            if !self.logs.iter().any(|(c, _)| c == config) {
                opened.push((config.clone(), FlowLog::open(config, &self.node_name, &self.metrics)?));
            }
        }
        let mut previous = std::mem::take(&mut self.logs);
        for config in configs {
            let entry = match previous.iter().position(|(c, _)| *c == config) {
                Some(i) => previous.swap_remove(i),
                None => {
                    let i = opened.iter().position(|(c, _)| *c == config).expect("opened above");
                    opened.swap_remove(i)
                }
            };
            self.logs.push(entry);
        }
        for (_, mut gone) in previous {
            gone.finish();
            gone.forget_metrics();
        }
        Ok(())
    }

    pub fn names(&self) -> Vec<&str> {
        self.logs.iter().map(|(c, _)| c.name.as_str()).collect()
    }

    /// Writes the aggregated lines whose window is over, even when no
    /// record came to push them out.
    fn write_due_aggregates(&mut self) -> Result<(), OutputError> {
        self.each(|log| {
            log.write_due_aggregates(false);
            log.end_batch()
        })
    }

    /// Applies a changed config file; a bad one leaves the previous logs
    /// in force and is logged and counted.
    fn reload_logged(&mut self) {
        match self.reload() {
            Ok(true) => info!(logs = ?self.names(), "flow logs reloaded"),
            Ok(false) => {}
            Err(e) => {
                self.config_errors.inc();
                warn!(error = %e, "flow logs config not applied: the previous one stays in force");
            }
        }
    }

    /// Applies what the resources' watch sent, answering each change.
    fn apply_resource_changes(&mut self) {
        while let Some(change) = self.resource_changes.as_mut().and_then(|r| r.try_recv().ok()) {
            let result = self.set_resource_logs(change.configs).map_err(|e| e.to_string());
            if result.is_err() {
                self.config_errors.inc();
            }
            // The watch may be gone (it is aborted at close).
            let _ = change.applied.send(result);
        }
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

/// The set of logs is one output.
impl Output for FlowLogs {
    fn flow(&mut self, source: &RecordSource, record: &FlowRecord) {
        let empty = source.update.is_empty();
        for (_, log) in &mut self.logs {
            if !empty || log.tracks_flow_state() {
                log.flow(source, record);
            }
        }
    }

    fn tracks_flow_state(&self) -> bool {
        self.logs.iter().any(|(_, log)| log.tracks_flow_state())
    }

    fn l7(&mut self, source: &RecordSource, flow: &Arc<crate::proto::flow::Flow>) {
        for (_, log) in &mut self.logs {
            log.l7(source, flow);
        }
    }

    fn lost(&mut self, lost: &LostEvent, time: &prost_types::Timestamp) {
        for (_, log) in &mut self.logs {
            log.lost(lost, time);
        }
    }

    fn end_batch(&mut self) -> Result<(), OutputError> {
        self.each(|log| log.end_batch())
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.each(|log| log.flush())
    }

    fn tick(&mut self) {
        self.reload_logged();
        self.apply_resource_changes();
        if let Err(e) = self.write_due_aggregates() {
            warn!(error = %e, "writing aggregated flow-log lines");
        }
    }

    fn close(&mut self) {
        // No change to the logs while they are closed.
        if let Some(watch) = self.resource_watch.take() {
            watch.abort();
        }
        for (_, log) in &mut self.logs {
            log.finish();
        }
    }
}

impl Drop for FlowLogs {
    fn drop(&mut self) {
        if let Some(watch) = &self.resource_watch {
            watch.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{config::flow_filter, *};

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
        assert!(
            err("flowLogs:\n  - name: a\n    filePath: x\n    format: vnet\n    fieldMask: [IP]\n")
                .contains("hubble format only")
        );
        assert!(err("flowLogs:\n  - name: a\n    filePath: x\n    format: ipfix\n").contains("ipfix"));
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
        let mut logs = FlowLogs::open(Some(&f.0), "node", metrics).unwrap();
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

    #[test]
    fn a_removed_log_leaves_no_metric_series() {
        let dir = std::env::temp_dir().join(format!("hubcap-flowlogs-series-{}", fastrand::u64(..)));
        let log = |name: &str| format!("  - name: {name}\n    filePath: {}/{name}.log\n", dir.display());
        let f = write(&format!("flowLogs:\n{}{}", log("kept"), log("gone")));
        let metrics = Arc::new(Metrics::new());
        let mut logs = FlowLogs::open(Some(&f.0), "node", Arc::clone(&metrics)).unwrap();
        assert!(metrics.render().contains(r#"log="gone""#));
        std::fs::write(&f.0, format!("flowLogs:\n{}", log("kept"))).unwrap();
        assert!(logs.reload().unwrap());
        let text = metrics.render();
        assert!(!text.contains(r#"log="gone""#), "{text}");
        assert!(
            text.contains(r#"hubcap_flow_log_records_total{log="kept"} 0"#),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
