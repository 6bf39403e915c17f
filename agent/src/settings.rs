//! `hubcap run`'s configuration, typed and grouped by the part of the agent
//! that uses it. `cli` turns the flags into [`Settings`] once (clap has
//! checked each value by then); each stage or service then starts from its
//! own group and never sees a flag.

use std::{net::SocketAddr, time::Duration};

use crate::{
    datapath::AttachMode,
    flow_table::TableConfig,
    hubble_api::server::GrpcConfig,
    kubernetes::KubeOptions,
    metrics::{ContextKind, Contexts},
    output::OutputSettings,
};

#[derive(Clone, Debug)]
pub struct Settings {
    /// This node's name in records, the Peer service and the cluster.
    pub node_name: String,
    pub capture: CaptureSettings,
    pub table: TableConfig,
    pub outputs: OutputSettings,
    pub kubernetes: KubeOptions,
    pub grpc: GrpcConfig,
    pub metrics: MetricsSettings,
}

/// Where and how the kernel side captures.
#[derive(Clone, Debug)]
pub struct CaptureSettings {
    /// Interface names or glob patterns; empty: every up, non-loopback one.
    pub interfaces: Vec<String>,
    pub attach_mode: AttachMode,
    /// `--drop-reasons` as written (resolved against the kernel's BTF).
    pub drop_reasons: String,
    /// How often an active flow direction is reported.
    pub report_interval: Duration,
    /// Capacity of the kernel flow map, in flow directions.
    pub flow_map_entries: u32,
    /// Size of the kernel-to-user ring buffer.
    pub ring_buffer_bytes: u32,
    /// Whether DNS messages are handed over and recorded (`--dns`).
    pub dns: bool,
    /// Size of the DNS ring buffer.
    pub dns_ring_bytes: u32,
}

/// The Prometheus endpoint and the context labels of the flow metrics.
#[derive(Clone, Debug)]
pub struct MetricsSettings {
    pub listen: Option<SocketAddr>,
    pub source_context: Option<ContextKind>,
    pub destination_context: Option<ContextKind>,
    /// Distinct values each context label takes at most.
    pub context_limit: usize,
    /// The DNS metrics' `query` label.
    pub dns_query: bool,
}

impl MetricsSettings {
    pub fn contexts(&self) -> Contexts {
        Contexts::new(self.source_context, self.destination_context, self.context_limit).with_dns_query(self.dns_query)
    }
}
