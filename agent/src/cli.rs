//! The command line. Users and tests script against it: keep it stable.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    datapath::AttachMode,
    flow_table::TableConfig,
    hubble_api::server::{GrpcConfig, TlsFiles},
    kubernetes::{KubeOptions, KubernetesMode},
    metrics::ContextKind,
    observe::ObserveArgs,
    output::{
        OutputSettings,
        azure::OutputFormat,
        flow_logs::{FlowLogSettings, StoredLogOptions},
    },
    settings::{CaptureSettings, MetricsSettings, Settings},
    sink::RotationConfig,
};

/// Closed TCP connections wait this long for their last ACKs.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

#[derive(Parser, Debug)]
#[command(
    name = "hubcap",
    version,
    about = "eBPF network-flow capture agent writing Hubble flow logs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Capture flows on this node's interfaces and write them as Hubble JSON.
    Run(Box<RunArgs>),
    /// Print flows from a running agent's Observer API (or from Hubble JSON
    /// lines), like `hubble observe`.
    Observe(Box<ObserveArgs>),
    /// Attach a classifier that does nothing, until SIGINT/SIGTERM: the
    /// benchmark's measure of the tc hook's own cost.
    #[command(hide = true)]
    AttachNoop(NoopArgs),
}

#[derive(Args, Debug, Clone)]
pub struct NoopArgs {
    #[arg(short, long = "interface", value_name = "PATTERN", required = true)]
    pub interfaces: Vec<String>,
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Interface name or glob pattern (`eth0`, `veth*`); repeat for more.
    /// Matching interfaces that appear later are attached within a second.
    /// Default: every up, non-loopback interface.
    #[arg(short, long = "interface", value_name = "PATTERN")]
    pub interfaces: Vec<String>,

    /// Where to write every flow: a file path, `-` for stdout, or `none`
    /// (only the flow logs of `--flow-logs-config` and `--flow-log-crds`).
    #[arg(short, long, value_name = "PATH|-|none", default_value = "-")]
    pub output: String,

    /// Node name written in every record. Default: $NODE_NAME, else the host name.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// An active flow direction gets a record at least this often.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = positive_seconds)]
    pub report_interval: Duration,

    /// A flow direction with no packets for this long ends.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = positive_seconds)]
    pub idle_timeout: Duration,

    /// How to attach to interfaces.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,

    /// The format of `--output`: Hubble's JSON flows, or Azure's VNet (v4)
    /// or NSG (v2) flow tuples.
    #[arg(long, value_enum, default_value_t = OutputFormat::Hubble)]
    pub output_format: OutputFormat,

    /// Rotate the output file when it reaches this size.
    #[arg(long, value_name = "MB", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub output_max_size_mb: u64,

    /// Rotated files to keep (`PATH.1` is the newest).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub output_max_backups: u32,

    /// Gzip rotated output files (`PATH.1.gz`), as Cilium's `fileCompress`.
    #[arg(long)]
    pub output_compress: bool,

    /// Further flow logs, each with its own filters, field mask, file and
    /// rotation, from a file in the shape of Cilium's dynamic exporter
    /// config (`flowLogs:`). They come on top of `--output`.
    #[arg(long, value_name = "PATH")]
    pub flow_logs_config: Option<std::path::PathBuf>,

    /// Export every record as IPFIX (RFC 7011) to this collector:
    /// `udp://HOST:PORT` or `tcp://HOST:PORT`. Repeatable.
    #[arg(long = "ipfix-collector", value_name = "URL")]
    pub ipfix_collectors: Vec<String>,

    /// The IPFIX observation domain. Default: a hash of the node name, so
    /// each node is a domain of its own.
    #[arg(long, value_name = "N")]
    pub ipfix_observation_domain: Option<u32>,

    /// The stored log of Azure Container Network Logs' custom resources
    /// (`RetinaNetworkFlowLog`, `ContainerNetworkLog`): their filters
    /// together select what it gets; with none, nothing is stored. Uses
    /// the Kubernetes connection (`--kubeconfig`); an unreachable API
    /// server at start is an error.
    #[arg(long)]
    pub flow_log_crds: bool,

    /// Where the custom resources' stored log goes.
    #[arg(long, value_name = "PATH", default_value = "/var/log/acns/hubble/events.log")]
    pub flow_log_crds_path: String,

    /// Rotate the custom resources' stored log at this size.
    #[arg(long, value_name = "MB", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub flow_log_crds_max_size_mb: u64,

    /// Rotated files of the custom resources' stored log to keep.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub flow_log_crds_max_backups: u32,

    /// Capacity of each kernel flow map (IPv4 flows and IPv6 flows have one
    /// each), in flow directions. Packets of new flows beyond it are counted
    /// as lost and reported.
    #[arg(long, value_name = "N", default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(1024..))]
    pub flow_map_size: u32,

    /// Drop reasons to capture: `default` (all but NOT_SPECIFIED,
    /// SOCKET_CLOSE, QUEUE_PURGE, PACKET_SOCK_ERROR, TCP_OLD_DATA,
    /// TCP_OLD_ACK and TCP_OLD_SEQUENCE: frees that are no network problem),
    /// `all`, `none`, or a comma-separated list of the kernel's reason names
    /// (e.g. `NETFILTER_DROP,NO_SOCKET`).
    #[arg(long, value_name = "LIST", default_value = "default")]
    pub drop_reasons: String,

    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9965,
    /// or :9965 for every address; Hubble's metrics port). Off by default.
    #[arg(long, value_name = "ADDR", value_parser = listen_address)]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Serve Hubble's Observer API (what `hubble observe` and `hubcap
    /// observe` read) on this unix socket; `none` turns it off.
    #[arg(long, value_name = "PATH|none", default_value = "/var/run/hubcap/hubble.sock")]
    pub grpc_socket: String,

    /// Also serve the Observer API on TCP (e.g. 127.0.0.1:4244, or :4244 for
    /// every address). Anything but loopback needs TLS or --grpc-insecure.
    #[arg(long, value_name = "ADDR", value_parser = checked_listen_address)]
    pub grpc_listen: Option<String>,

    /// TLS certificate (PEM) for --grpc-listen.
    #[arg(long, value_name = "PEM", requires_all = ["grpc_tls_key", "grpc_listen"])]
    pub grpc_tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for --grpc-listen.
    #[arg(long, value_name = "PEM", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM) on --grpc-listen.
    #[arg(long, value_name = "PEM", requires = "grpc_tls_cert")]
    pub grpc_tls_client_ca: Option<PathBuf>,

    /// Serve --grpc-listen on a non-loopback address without TLS.
    #[arg(long, requires = "grpc_listen", conflicts_with = "grpc_tls_cert")]
    pub grpc_insecure: bool,

    /// The node's IP, which the Peer service announces to Hubble Relay when
    /// --grpc-listen binds every address. Default: $NODE_IP.
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<std::net::IpAddr>,

    /// The name Hubble Relay checks the TLS certificate of --grpc-listen
    /// against. Default: NODE.default.hubble-grpc.cilium.io, as Cilium's.
    #[arg(long, value_name = "NAME", requires = "grpc_tls_cert")]
    pub grpc_tls_server_name: Option<String>,

    /// Add a `source` label naming each flow's source (namespace, pod,
    /// workload or app) to the flow, drop and TCP-flag metrics, as Hubble's
    /// `sourceContext` does. Off by default.
    #[arg(long, value_enum, value_name = "KIND")]
    pub metrics_source_context: Option<ContextKind>,

    /// The same for each flow's destination (`destinationContext`).
    #[arg(long, value_enum, value_name = "KIND")]
    pub metrics_destination_context: Option<ContextKind>,

    /// Distinct values each context label takes at most; later ones count
    /// as `other`.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub metrics_context_limit: usize,

    /// A `query` label (the name asked) on Hubble's DNS metrics, as
    /// Hubble's `dns:query` option; bounded by --metrics-context-limit.
    #[arg(long)]
    pub metrics_dns_query: bool,

    /// Kubernetes identities on flows: `auto` when a cluster is configured
    /// and reachable, `on` (unreachable at start is an error), or `off`.
    #[arg(long, value_enum, default_value_t = KubernetesMode::Auto)]
    pub kubernetes: KubernetesMode,

    /// Kubeconfig to reach the API server. Default: $KUBECONFIG,
    /// ~/.kube/config, or the in-cluster config in a pod.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The cluster's name in records (`cluster_name`).
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub cluster_name: String,

    /// Recent flows the Observer API keeps for GetFlows (Hubble's default).
    #[arg(long, value_name = "N", default_value_t = 4095, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub event_buffer_capacity: u32,

    /// Size of the kernel-to-user ring buffer: a power of two from 1 to
    /// 1024 (the kernel's rule for BPF ring buffers).
    #[arg(long, value_name = "MB", default_value_t = 8, value_parser = ring_buffer_mb)]
    pub ring_buffer_mb: u32,

    /// DNS records: the tc programs hand every TCP and UDP packet to or
    /// from port 53 to user space, which writes each query and answer as
    /// a Hubble L7 record. Other traffic is not looked at.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub dns: bool,

    /// Size of the DNS ring buffer (a power of two from 1 to 1024, as for
    /// --ring-buffer-mb). 4 MB hold about 20,000 typical DNS packets.
    #[arg(long, value_name = "MB", default_value_t = 4, value_parser = ring_buffer_mb)]
    pub dns_ring_buffer_mb: u32,
}

impl RunArgs {
    /// The flags as typed settings, grouped by who uses them.
    pub fn settings(&self) -> Settings {
        let node_name = self.node_name();
        Settings {
            capture: CaptureSettings {
                interfaces: self.interfaces.clone(),
                attach_mode: self.attach_mode,
                drop_reasons: self.drop_reasons.clone(),
                report_interval: self.report_interval,
                flow_map_entries: self.flow_map_size,
                ring_buffer_bytes: self.ring_buffer_mb * 1024 * 1024,
                dns: self.dns,
                dns_ring_bytes: self.dns_ring_buffer_mb * 1024 * 1024,
            },
            table: TableConfig {
                report_interval_ns: self.report_interval.as_nanos() as u64,
                idle_timeout_ns: self.idle_timeout.as_nanos() as u64,
                close_linger_ns: CLOSE_LINGER.as_nanos() as u64,
            },
            outputs: self.output_settings(&node_name),
            kubernetes: KubeOptions {
                mode: self.kubernetes,
                kubeconfig: self.kubeconfig.clone(),
                cluster_name: self.cluster_name.clone(),
                node_name: node_name.clone(),
                own_pod: own_pod(),
            },
            grpc: self.grpc(),
            metrics: MetricsSettings {
                listen: self.metrics_listen,
                source_context: self.metrics_source_context,
                destination_context: self.metrics_destination_context,
                context_limit: self.metrics_context_limit,
                dns_query: self.metrics_dns_query,
            },
            node_name,
        }
    }

    /// `--node-name`, else `$NODE_NAME`, else the host name.
    fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            std::env::var("NODE_NAME")
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| {
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .map(|h| h.trim().to_owned())
                        .unwrap_or_else(|_| "unknown".into())
                })
        })
    }

    fn output_settings(&self, node_name: &str) -> OutputSettings {
        OutputSettings {
            output: self.output.clone(),
            format: self.output_format,
            rotation: RotationConfig {
                max_bytes: self.output_max_size_mb * 1024 * 1024,
                max_backups: self.output_max_backups,
                compress: self.output_compress,
            },
            node_name: node_name.to_owned(),
            ipfix_collectors: self.ipfix_collectors.clone(),
            ipfix_observation_domain: self.ipfix_observation_domain,
            flow_logs: FlowLogSettings {
                config_file: self.flow_logs_config.clone(),
                resources: self.flow_log_crds.then(|| StoredLogOptions {
                    file_path: self.flow_log_crds_path.clone(),
                    max_size_mb: self.flow_log_crds_max_size_mb,
                    max_backups: self.flow_log_crds_max_backups,
                }),
                kubeconfig: self.kubeconfig.clone(),
            },
        }
    }

    fn grpc(&self) -> GrpcConfig {
        let socket = self.grpc_socket.trim();
        GrpcConfig {
            socket: (!socket.is_empty() && socket != "none").then(|| PathBuf::from(socket)),
            listen: self.grpc_listen.clone(),
            tls: self.grpc_tls_cert.clone().map(|cert| TlsFiles {
                cert,
                key: self.grpc_tls_key.clone().unwrap_or_default(),
                client_ca: self.grpc_tls_client_ca.clone(),
            }),
            insecure: self.grpc_insecure,
            node_ip: self
                .node_ip
                .or_else(|| std::env::var("NODE_IP").ok().and_then(|ip| ip.parse().ok())),
            tls_server_name: self.grpc_tls_server_name.clone(),
            ring_capacity: self.event_buffer_capacity as usize,
        }
    }
}

/// The pod hubcap runs in, from `$POD_NAMESPACE` and `$POD_NAME` (the
/// chart sets both from the downward API).
fn own_pod() -> Option<(String, String)> {
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some((var("POD_NAMESPACE")?, var("POD_NAME")?))
}

/// An error and its causes on one line, `outer: cause: root`, leaving out
/// a cause whose text the line already ends with (an error that both shows
/// its source in its message and hands it on as its source would otherwise
/// print it twice).
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn positive_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite() && secs <= 86_400.0) {
        return Err(format!("{s} must be more than 0 and at most 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn listen_address(s: &str) -> Result<std::net::SocketAddr, String> {
    crate::listen::parse_listen(s).map_err(|e| e.to_string())
}

/// Checked at parse time, kept as written (the server announces it).
fn checked_listen_address(s: &str) -> Result<String, String> {
    listen_address(s).map(|_| s.to_owned())
}

/// `on` or `off`, the way the chart's values and Cilium's flags say it.
fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: say on or off")),
    }
}

fn ring_buffer_mb(s: &str) -> Result<u32, String> {
    let mb: u32 = s.parse().map_err(|_| format!("{s:?} is not a whole number"))?;
    if !(1..=1024).contains(&mb) || !mb.is_power_of_two() {
        return Err(format!("{s} must be a power of two from 1 to 1024"));
    }
    Ok(mb)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn dns_flag(args: &[&str]) -> Result<bool, clap::Error> {
        let cli = Cli::try_parse_from([&["hubcap", "run", "--interface", "eth0"], args].concat())?;
        match cli.command {
            Command::Run(run) => Ok(run.dns),
            _ => unreachable!("a run command"),
        }
    }

    #[test]
    fn dns_is_on_unless_turned_off() {
        assert!(dns_flag(&[]).unwrap());
        assert!(dns_flag(&["--dns", "on"]).unwrap());
        assert!(!dns_flag(&["--dns", "off"]).unwrap());
        assert!(!dns_flag(&["--dns=off"]).unwrap());
        let error = dns_flag(&["--dns", "yes"]).unwrap_err().to_string();
        assert!(error.contains("say on or off"), "{error}");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct ShowsItsSource {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn an_error_that_shows_its_source_is_printed_once() {
        let inner = ShowsItsSource {
            path: "/etc/kubeconfig",
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let error = anyhow::Error::new(inner).context("Kubernetes");
        assert_eq!(
            error_text(&error),
            "Kubernetes: reading /etc/kubeconfig: entity not found"
        );
        let plain = anyhow::anyhow!("root").context("middle").context("outer");
        assert_eq!(error_text(&plain), "outer: middle: root");
    }

    #[test]
    fn the_drop_reasons_help_names_every_reason_left_out_by_default() {
        let mut command = Cli::command();
        let run = command.find_subcommand_mut("run").expect("run");
        let help = run.render_long_help().to_string();
        for reason in crate::drop_reasons::NOISE {
            assert!(help.contains(reason), "{reason} missing from --drop-reasons' help");
        }
        assert!(help.contains("power of two"), "--ring-buffer-mb says what it takes");
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            &["hubcap", "run", "--report-interval", "0"][..],
            &["hubcap", "run", "--idle-timeout", "abc"],
            &["hubcap", "run", "--attach-mode", "xdp"],
            &["hubcap", "run", "--ring-buffer-mb", "3"],
            &["hubcap", "run", "--output-max-size-mb", "0"],
            &["hubcap", "run", "--grpc-tls-cert", "c.pem"],
            &["hubcap", "run", "--grpc-listen", ":4244", "--grpc-tls-key", "k.pem"],
            &["hubcap", "run", "--grpc-insecure"],
            &["hubcap", "run", "--event-buffer-capacity", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let ok =
            Cli::try_parse_from(["hubcap", "run", "-i", "veth*", "-i", "eth0", "--report-interval", "0.5"]).unwrap();
        let Command::Run(args) = ok.command else { panic!("run") };
        assert_eq!(args.interfaces, ["veth*", "eth0"]);
        assert_eq!(args.report_interval, Duration::from_millis(500));
        assert_eq!(args.output, "-");
    }
}
