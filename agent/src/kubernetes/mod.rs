//! Kubernetes identities for the enrich stage: pods (namespace, name,
//! labels, workload, identity), this node and the others, and the world.
//!
//! One watch per kind (Pods, Nodes, and the metadata of ReplicaSets and
//! Jobs, which name workloads) runs on a thread and runtime of its own and
//! keeps a [`ClusterState`]; the capture thread only reads it, once per
//! record, and never waits for the API server. A watch that breaks is
//! retried with backoff while records keep the last known identities; a
//! history the server no longer has (410) is listed again.

mod identity;
mod state;
mod watch;

use std::{
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

pub use state::{ClusterState, NodeInfo, PodInfo};
use tokio::sync::watch as signal;
use tracing::{info, warn};
pub use watch::{connect, watch_errors};

use crate::{
    enrich::{Enricher, Identities},
    flow_table::FlowUpdate,
    metrics::Metrics,
    side_services::{self, Service, StartError},
};

/// `--kubernetes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KubernetesMode {
    /// Enrich when a cluster is configured and reachable; otherwise say so
    /// once and capture without identities.
    Auto,
    /// A cluster must be reachable at start, or hubcap exits.
    On,
    Off,
}

#[derive(Clone, Debug)]
pub struct KubeOptions {
    pub mode: KubernetesMode,
    /// Else `$KUBECONFIG`, `~/.kube/config`, or the in-cluster config.
    pub kubeconfig: Option<PathBuf>,
    pub cluster_name: String,
    /// This node's name in the cluster (for `reserved:host`, node labels).
    pub node_name: String,
    /// The agent's own pod (namespace, name), when it runs in one.
    pub own_pod: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "no Kubernetes cluster is configured (give --kubeconfig, set $KUBECONFIG, or run in a pod); \
         --kubernetes on needs one"
    )]
    NotConfigured(#[source] kube::config::InferConfigError),
    #[error("reading the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("the Kubernetes API server {server} is not reachable: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("cannot start the Kubernetes watchers' thread: {0}")]
    Thread(std::io::Error),
}

/// Which kinds have been listed once.
#[derive(Default)]
struct Synced(AtomicU8);

impl Synced {
    fn mark(&self, kind: watch::Kind) {
        self.0.fetch_or(kind.bit(), Ordering::Relaxed);
    }

    fn all(&self) -> bool {
        self.0.load(Ordering::Relaxed) == watch::Kind::ALL_BITS
    }
}

pub struct Kubernetes {
    state: Arc<RwLock<ClusterState>>,
    synced: Arc<Synced>,
    stop: signal::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    server: String,
}

impl Kubernetes {
    /// Connects and starts the watches. `Ok(None)`: enrichment is off
    /// (by choice, or in `auto` mode without a reachable cluster, which is
    /// logged once).
    pub fn start(options: &KubeOptions, metrics: &Metrics) -> Result<Option<Kubernetes>, KubeError> {
        if options.mode == KubernetesMode::Off {
            return Ok(None);
        }
        match Self::connect(options, metrics) {
            Ok(k) => {
                info!(server = %k.server, "Kubernetes enrichment on");
                Ok(Some(k))
            }
            Err(e) if options.mode == KubernetesMode::Auto => {
                match &e {
                    KubeError::NotConfigured(_) => info!("no Kubernetes cluster configured: flows without identities"),
                    _ => warn!(error = %e, "Kubernetes enrichment off: flows without identities"),
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn connect(options: &KubeOptions, metrics: &Metrics) -> Result<Kubernetes, KubeError> {
        let state = Arc::new(RwLock::new(
            ClusterState::new(&options.cluster_name, &options.node_name).with_own_pod(options.own_pod.clone()),
        ));
        let synced = Arc::new(Synced::default());
        let (stop, stopping) = signal::channel(false);
        let thread_state = Arc::clone(&state);
        let thread_synced = Arc::clone(&synced);
        let kubeconfig = options.kubeconfig.clone();
        let metrics = watch::WatchMetrics::register(metrics);
        let started = side_services::start("hubcap-k8s", move |ready| async move {
            let client = match watch::connect(kubeconfig).await {
                Ok((client, server)) => {
                    ready.started(server);
                    client
                }
                Err(e) => return ready.failed(e),
            };
            watch::run(client, thread_state, thread_synced, metrics, stopping).await;
        });
        let (thread, server) = started.map_err(|e| match e {
            StartError::Thread(e) => KubeError::Thread(e),
            StartError::Ended => KubeError::Thread(std::io::Error::other("the watchers' thread ended")),
            StartError::Failed(e) => e,
        })?;
        Ok(Kubernetes {
            state,
            synced,
            stop,
            thread: Some(thread),
            server,
        })
    }

    /// Tells when every kind has been listed once.
    pub fn first_list(&self) -> FirstList {
        FirstList(Arc::clone(&self.synced))
    }

    pub fn enricher(&self) -> KubernetesIdentities {
        KubernetesIdentities {
            state: Arc::clone(&self.state),
        }
    }

    /// The nodes where hubcap runs and their addresses as they are when
    /// called (for the Peer service).
    pub fn agent_nodes(&self) -> impl Fn() -> Vec<(String, std::net::IpAddr)> + Send + Sync + 'static {
        let state = Arc::clone(&self.state);
        move || state.read().unwrap_or_else(|e| e.into_inner()).agent_nodes()
    }
}

impl Service for Kubernetes {
    fn stop(mut self: Box<Self>) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether the watches have listed every kind once.
pub struct FirstList(Arc<Synced>);

impl FirstList {
    /// Waits (at most `timeout`) until every kind has been listed once, so
    /// that the first records are not anonymous. Capture goes on meanwhile.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.0.all() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

/// The enrich stage with Kubernetes: each side of a flow is the pod that
/// held its address when the packets were seen, a node, or the world.
pub struct KubernetesIdentities {
    state: Arc<RwLock<ClusterState>>,
}

impl Enricher for KubernetesIdentities {
    /// Endpoints, this node's labels and Services: one read of the cluster
    /// state for all of them (a record's hot path).
    fn enrich(&mut self, update: &FlowUpdate, identities: &mut Identities) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let key = &update.key;
        let at = update.stats.last_seen_ns;
        let ports = key.ports();
        let (src, dst) = (key.src_ip(), key.dst_ip());
        identities.source = Some(state.endpoint_at(src, at));
        identities.destination = Some(state.endpoint_at(dst, at));
        identities.node_labels = Some(state.own_node_labels());
        identities.source_service = ports.and_then(|(sport, _)| state.service_at(src, sport));
        identities.destination_service = ports.and_then(|(_, dport)| state.service_at(dst, dport));
    }
}
