//! Which outputs a run has, built from their settings: the main log
//! (`--output`: Hubble JSON lines, or VNet/NSG tuples as lines or as the
//! storage account's hourly blobs), the flow metrics and the IPFIX
//! exporter, and the flow logs (their files and the custom resources'
//! watch). Everything is opened here, before anything is loaded or
//! attached, so an unwritable path, a bad collector or an unreachable API
//! server fails first. The Observer API's feed joins later (it comes with
//! the API's server).

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use tracing::warn;

use super::{
    FlowMetrics, JsonLog, Output,
    azure::{AzureFlowLog, Destination, HourlyBlobs, OutputFormat},
    flow_logs::{FlowLogSettings, FlowLogs},
    ipfix::{self, IpfixExporter},
};
use crate::{
    metrics::Metrics,
    sink::{RotationConfig, Sink},
};

/// What `hubcap run`'s output flags ask for.
#[derive(Clone, Debug)]
pub struct OutputSettings {
    /// `-` (stdout), a file, a directory (VNet/NSG blobs) or `none`.
    pub output: String,
    pub format: OutputFormat,
    pub rotation: RotationConfig,
    pub node_name: String,
    pub ipfix_collectors: Vec<String>,
    /// Default: derived from the node name.
    pub ipfix_observation_domain: Option<u32>,
    /// The flow logs (with them, `--output none` is normal).
    pub flow_logs: FlowLogSettings,
}

impl OutputSettings {
    /// Opens every output these settings name, in the order records reach
    /// them: the main log, the metrics, IPFIX, the flow logs.
    pub async fn open(&self, metrics: &Arc<Metrics>) -> Result<Vec<Box<dyn Output>>> {
        let mut outputs: Vec<Box<dyn Output>> = Vec::new();
        if let Some(main) = self.open_main(metrics)? {
            outputs.push(main);
        }
        outputs.push(Box::new(FlowMetrics::new(Arc::clone(metrics))));
        if !self.ipfix_collectors.is_empty() {
            let domain = self
                .ipfix_observation_domain
                .unwrap_or_else(|| ipfix::observation_domain(&self.node_name));
            outputs.push(Box::new(IpfixExporter::open(&self.ipfix_collectors, domain, metrics)?));
        }
        if let Some(logs) = FlowLogs::start(&self.flow_logs, &self.node_name, metrics).await? {
            outputs.push(Box::new(logs));
        }
        Ok(outputs)
    }

    fn open_main(&self, metrics: &Arc<Metrics>) -> Result<Option<Box<dyn Output>>> {
        let path = self.output.as_str();
        if path == "none" {
            if !self.flow_logs.any() {
                warn!(
                    "--output none and no flow logs configured: no record is stored (only the Observer API, metrics and IPFIX, where enabled, see flows)"
                );
            }
            return Ok(None);
        }
        let cannot = || format!("cannot write to {path}");
        let node = self.node_name.clone();
        // Azure's formats to a directory: the storage account's hourly blobs.
        let blobs = self.format != OutputFormat::Hubble && (path.ends_with('/') || Path::new(path).is_dir());
        let output: Box<dyn Output> = if blobs {
            let blobs = HourlyBlobs::open(path.into(), &self.node_name).with_context(cannot)?;
            Box::new(AzureFlowLog::new(self.format, Destination::Blobs(blobs), node, metrics))
        } else {
            let sink = Sink::open(path, self.rotation).with_context(cannot)?;
            match self.format {
                OutputFormat::Hubble => Box::new(JsonLog::new(sink, node, metrics)),
                format => Box::new(AzureFlowLog::new(format, Destination::Lines(sink), node, metrics)),
            }
        };
        Ok(Some(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(output: &str, format: OutputFormat) -> OutputSettings {
        OutputSettings {
            output: output.to_owned(),
            format,
            rotation: RotationConfig {
                max_bytes: 1 << 20,
                max_backups: 1,
                compress: false,
            },
            node_name: "node-a".into(),
            ipfix_collectors: Vec::new(),
            ipfix_observation_domain: None,
            flow_logs: FlowLogSettings::default(),
        }
    }

    /// `OutputSettings::open` on a runtime of its own.
    fn open(settings: &OutputSettings, metrics: &Arc<Metrics>) -> Result<Vec<Box<dyn Output>>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(settings.open(metrics))
    }

    fn scratch() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hubcap-output-setup-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn none_leaves_only_the_metrics() {
        let outputs = open(&settings("none", OutputFormat::Hubble), &Arc::new(Metrics::new())).unwrap();
        assert_eq!(outputs.len(), 1);
        assert!(!outputs[0].tracks_flow_state());
    }

    #[test]
    fn a_file_gets_the_log_of_its_format_and_a_directory_the_blobs() {
        let dir = scratch();
        let metrics = Arc::new(Metrics::new());
        let file = dir.join("flows.json");
        let hubble = open(&settings(file.to_str().unwrap(), OutputFormat::Hubble), &metrics).unwrap();
        assert_eq!(hubble.len(), 2);
        assert!(file.exists(), "opened now, before capture");
        assert!(!hubble[0].tracks_flow_state(), "Hubble JSON");
        let tuples = open(
            &settings(dir.join("vnet.json").to_str().unwrap(), OutputFormat::Vnet),
            &metrics,
        )
        .unwrap();
        assert!(tuples[0].tracks_flow_state(), "VNet tuples as lines");
        let blobs_dir = dir.join("blobs/");
        let blobs = open(&settings(blobs_dir.to_str().unwrap(), OutputFormat::Nsg), &metrics).unwrap();
        assert!(blobs[0].tracks_flow_state() && blobs_dir.is_dir(), "NSG blobs");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flow_logs_open_with_the_other_outputs() {
        let dir = scratch();
        let config = dir.join("flowlogs.yaml");
        let log = dir.join("dropped.log");
        std::fs::write(
            &config,
            format!("flowLogs:\n  - name: dropped\n    filePath: {}\n", log.display()),
        )
        .unwrap();
        let mut only_logs = settings("none", OutputFormat::Hubble);
        only_logs.flow_logs.config_file = Some(config);
        let metrics = Arc::new(Metrics::new());
        let outputs = open(&only_logs, &metrics).unwrap();
        assert_eq!(outputs.len(), 2, "metrics and the flow logs");
        assert!(log.exists(), "the log's file is opened before capture");
        assert!(
            metrics
                .render()
                .contains("hubcap_flow_log_records_total{log=\"dropped\"} 0")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_path_and_a_bad_collector_fail_at_once() {
        let metrics = Arc::new(Metrics::new());
        let err = open(&settings("/proc/hubcap/flows.json", OutputFormat::Hubble), &metrics)
            .err()
            .expect("unwritable");
        assert!(
            err.to_string().contains("cannot write to /proc/hubcap/flows.json"),
            "{err}"
        );
        let mut ipfix = settings("none", OutputFormat::Hubble);
        ipfix.ipfix_collectors = vec!["sctp://127.0.0.1:4739".into()];
        assert!(open(&ipfix, &metrics).is_err());
        ipfix.ipfix_collectors = vec!["udp://127.0.0.1:4739".into()];
        assert_eq!(open(&ipfix, &metrics).unwrap().len(), 2, "metrics and IPFIX");
    }
}
