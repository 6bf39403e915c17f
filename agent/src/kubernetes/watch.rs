//! The watches that keep [`ClusterState`]: one per kind, each listing once
//! and then following changes (with bookmarks); a history the server no
//! longer has (410 Gone) is listed again, and a broken watch is retried
//! with backoff while the state keeps what it knew.

use std::{
    collections::HashSet,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::{StreamExt as _, pin_mut};
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    batch::v1::Job,
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Config, Resource, ResourceExt,
    api::PartialObjectMeta,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt as _, metadata_watcher, watcher, watcher::Event},
};
use prometheus::{IntCounterVec, IntGauge};
use tokio::sync::watch as signal;
use tracing::warn;

use super::{ClusterState, KubeError, NodeInfo, PodInfo, Synced};
use crate::{
    clock::WallClock,
    metrics::{Family, Metrics},
};

/// How long the first call to the API server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often released IPs' old holders are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Pods,
    Nodes,
    ReplicaSets,
    Jobs,
    Services,
    EndpointSlices,
}

impl Kind {
    pub const ALL_BITS: u8 = 0b11_1111;
    const ALL: [Kind; 6] = [
        Kind::Pods,
        Kind::Nodes,
        Kind::ReplicaSets,
        Kind::Jobs,
        Kind::Services,
        Kind::EndpointSlices,
    ];

    pub fn bit(self) -> u8 {
        1 << self as u8
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Pods => "pods",
            Kind::Nodes => "nodes",
            Kind::ReplicaSets => "replicasets",
            Kind::Jobs => "jobs",
            Kind::Services => "services",
            Kind::EndpointSlices => "endpointslices",
        }
    }
}

const PODS: Family = Family {
    name: "hubcap_kubernetes_pods",
    help: "Pods in hubcap's Kubernetes cache",
    labels: &[],
};
const WATCH_ERRORS: Family = Family {
    name: "hubcap_kubernetes_watch_errors_total",
    help: "Kubernetes watch failures, by kind; each is retried, and identities may be stale meanwhile",
    labels: &["kind"],
};

/// Watch failures by kind (the flow-log resources' watch counts here too).
pub fn watch_errors(metrics: &Metrics) -> IntCounterVec {
    metrics.counters(&WATCH_ERRORS)
}

/// The watches' metrics: pods known, and failures by kind (at 0 from the
/// start for every kind, for alerts).
pub struct WatchMetrics {
    pods: IntGauge,
    errors: IntCounterVec,
}

impl WatchMetrics {
    pub fn register(metrics: &Metrics) -> WatchMetrics {
        let errors = watch_errors(metrics);
        for kind in Kind::ALL {
            errors.with_label_values(&[kind.name()]);
        }
        WatchMetrics {
            pods: metrics.gauge(&PODS),
            errors,
        }
    }
}

/// A client for `kubeconfig` (else the usual places), checked by asking
/// the server its version. Returns the client and the server's address.
pub async fn connect(kubeconfig: Option<PathBuf>) -> Result<(Client, String), KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(&path).map_err(|source| KubeError::Kubeconfig {
                path: path.clone(),
                source,
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeError::Kubeconfig { path, source })?
        }
        None => Config::infer().await.map_err(KubeError::NotConfigured)?,
    };
    let server = config.cluster_url.to_string();
    let unreachable = |reason: String| KubeError::Unreachable {
        server: server.clone(),
        reason,
    };
    let client = Client::try_from(config).map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok((client, server)),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

/// Runs every watch until `stopping`.
pub async fn run(
    client: Client,
    state: Arc<RwLock<ClusterState>>,
    synced: Arc<Synced>,
    metrics: WatchMetrics,
    mut stopping: signal::Receiver<bool>,
) {
    let watches = async {
        tokio::join!(
            watch_pods(client.clone(), &state, &synced, &metrics),
            watch_nodes(client.clone(), &state, &synced, &metrics),
            watch_owners::<ReplicaSet>(client.clone(), Kind::ReplicaSets, &state, &synced, &metrics),
            watch_owners::<Job>(client.clone(), Kind::Jobs, &state, &synced, &metrics),
            watch_services(client.clone(), &state, &synced, &metrics),
            watch_endpoint_slices(client.clone(), &state, &synced, &metrics),
            expire(&state),
            local_addresses(&state),
        )
    };
    tokio::select! {
        _ = watches => {}
        _ = stopping.wait_for(|s| *s) => {}
    }
}

fn write(state: &RwLock<ClusterState>) -> std::sync::RwLockWriteGuard<'_, ClusterState> {
    state.write().unwrap_or_else(|e| e.into_inner())
}

fn watch_error(metrics: &WatchMetrics, kind: Kind, error: &watcher::Error) {
    warn!(kind = kind.name(), %error, "Kubernetes watch failed; retrying, identities may be stale");
    metrics.errors.with_label_values(&[kind.name()]).inc();
}

async fn expire(state: &RwLock<ClusterState>) {
    loop {
        tokio::time::sleep(EXPIRE_EVERY).await;
        write(state).expire(WallClock::monotonic_ns());
    }
}

/// How often this node's own addresses are read again: a bridge CNI gives
/// its bridge an address when the node's first pod starts.
const LOCAL_ADDRESSES_EVERY: Duration = Duration::from_secs(5);

/// The addresses of the interfaces in hubcap's network namespace (the
/// node's, with hostNetwork). The node reaches its own pods from its
/// bridge's address, which the Node object does not list; those packets
/// are the host's, not the world's.
async fn local_addresses(state: &RwLock<ClusterState>) {
    loop {
        match nix::ifaddrs::getifaddrs() {
            Ok(interfaces) => {
                let ips = interfaces
                    .filter_map(|i| i.address)
                    .filter_map(|a| {
                        a.as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                    })
                    .collect();
                write(state).set_local_addresses(ips);
            }
            Err(e) => warn!(error = %e, "cannot read this node's addresses"),
        }
        tokio::time::sleep(LOCAL_ADDRESSES_EVERY).await;
    }
}

/// The fields of a pod that flows need; `None` for a pod that holds no
/// address any more (finished).
fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let status = pod.status.as_ref();
    if status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
    {
        return None;
    }
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().filter_map(|ip| ip.ip.parse().ok()).collect())
        .unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.clone(), o.name.clone()));
    Some(PodInfo {
        uid: pod.uid()?,
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        labels: pod.labels().clone(),
        owner,
        host_network: pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false),
        ips,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
    })
}

async fn watch_pods(client: Client, state: &RwLock<ClusterState>, synced: &Synced, metrics: &WatchMetrics) {
    let stream = watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
    pin_mut!(stream);
    // Pods listed by the current (re)list: the rest are gone.
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        let now = WallClock::monotonic_ns();
        match event {
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) | Ok(Event::Apply(pod)) => {
                let Some(uid) = pod.uid() else { continue };
                if let Some(listed) = &mut listed {
                    listed.insert(uid.clone());
                }
                let mut state = write(state);
                match pod_info(&pod) {
                    Some(info) => state.apply_pod(info, now),
                    None => state.delete_pod(&uid, now),
                }
                metrics.pods.set(state.pod_count() as i64);
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.uid() {
                    write(state).delete_pod(&uid, now);
                }
            }
            Ok(Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    write(state).retain_pods(&listed, now);
                }
                synced.mark(Kind::Pods);
            }
            Err(e) => watch_error(metrics, Kind::Pods, &e),
        }
    }
}

fn node_info(node: &Node) -> NodeInfo {
    let ips = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|addresses| {
            addresses
                .iter()
                // InternalIPs first: the Peer service announces the first.
                .filter(|a| a.type_ == "InternalIP")
                .chain(addresses.iter().filter(|a| a.type_ == "ExternalIP"))
                .filter_map(|a| a.address.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    NodeInfo {
        ips,
        labels: node.labels().clone(),
    }
}

async fn watch_nodes(client: Client, state: &RwLock<ClusterState>, synced: &Synced, metrics: &WatchMetrics) {
    let stream = watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::InitApply(node)) | Ok(Event::Apply(node)) => {
                write(state).apply_node(&node.name_any(), node_info(&node))
            }
            Ok(Event::Delete(node)) => write(state).delete_node(&node.name_any()),
            Ok(Event::InitDone) => synced.mark(Kind::Nodes),
            Ok(Event::Init) => {}
            Err(e) => watch_error(metrics, Kind::Nodes, &e),
        }
    }
}

/// ReplicaSets and Jobs, by metadata only: who controls them.
async fn watch_owners<K>(
    client: Client,
    kind: Kind,
    state: &RwLock<ClusterState>,
    synced: &Synced,
    metrics: &WatchMetrics,
) where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    let kind_name = K::kind(&()).to_string();
    let stream = metadata_watcher(Api::<K>::all(client), watcher::Config::default()).default_backoff();
    pin_mut!(stream);
    let controller = |meta: &PartialObjectMeta<K>| {
        meta.owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| (o.kind.clone(), o.name.clone()))
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::InitApply(meta)) | Ok(Event::Apply(meta)) => {
                let namespace = meta.namespace().unwrap_or_default();
                write(state).apply_owner(&kind_name, &namespace, &meta.name_any(), controller(&meta));
            }
            Ok(Event::Delete(meta)) => {
                let namespace = meta.namespace().unwrap_or_default();
                write(state).delete_owner(&kind_name, &namespace, &meta.name_any());
            }
            Ok(Event::InitDone) => synced.mark(kind),
            Ok(Event::Init) => {}
            Err(e) => watch_error(metrics, kind, &e),
        }
    }
}

/// A Service's cluster IPs (none for a headless one) and ports.
fn service_info(service: &Service) -> (Vec<IpAddr>, Vec<u16>) {
    let Some(spec) = &service.spec else {
        return (Vec::new(), Vec::new());
    };
    let ips = spec
        .cluster_ips
        .clone()
        .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect();
    (ips, ports)
}

async fn watch_services(client: Client, state: &RwLock<ClusterState>, synced: &Synced, metrics: &WatchMetrics) {
    let stream = watcher(Api::<Service>::all(client), watcher::Config::default()).default_backoff();
    pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::InitApply(service)) | Ok(Event::Apply(service)) => {
                let (ips, ports) = service_info(&service);
                let namespace = service.namespace().unwrap_or_default();
                write(state).apply_service(&namespace, &service.name_any(), ips, ports);
            }
            Ok(Event::Delete(service)) => {
                let namespace = service.namespace().unwrap_or_default();
                write(state).delete_service(&namespace, &service.name_any());
            }
            Ok(Event::InitDone) => synced.mark(Kind::Services),
            Ok(Event::Init) => {}
            Err(e) => watch_error(metrics, Kind::Services, &e),
        }
    }
}

/// The service an EndpointSlice belongs to, and its backends (address and
/// port) that are not known to be unready.
fn slice_info(slice: &EndpointSlice) -> Option<(String, Vec<(IpAddr, u16)>)> {
    let service = slice.labels().get("kubernetes.io/service-name")?.clone();
    let ports: Vec<u16> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
        .collect();
    let backends = slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()))
        .flat_map(|ip| ports.iter().map(move |port| (ip, *port)))
        .collect();
    Some((service, backends))
}

async fn watch_endpoint_slices(client: Client, state: &RwLock<ClusterState>, synced: &Synced, metrics: &WatchMetrics) {
    let stream = watcher(Api::<EndpointSlice>::all(client), watcher::Config::default()).default_backoff();
    pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::InitApply(slice)) | Ok(Event::Apply(slice)) => {
                let namespace = slice.namespace().unwrap_or_default();
                let mut state = write(state);
                match slice_info(&slice) {
                    Some((service, backends)) => {
                        state.apply_endpoint_slice(&namespace, &slice.name_any(), &service, backends)
                    }
                    None => state.delete_endpoint_slice(&namespace, &slice.name_any()),
                }
            }
            Ok(Event::Delete(slice)) => {
                let namespace = slice.namespace().unwrap_or_default();
                write(state).delete_endpoint_slice(&namespace, &slice.name_any());
            }
            Ok(Event::InitDone) => synced.mark(Kind::EndpointSlices),
            Ok(Event::Init) => {}
            Err(e) => watch_error(metrics, Kind::EndpointSlices, &e),
        }
    }
}
