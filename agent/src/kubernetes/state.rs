//! What hubcap keeps of the cluster: per pod only the fields flows need,
//! which pod held which IP when, the owners that name workloads, and the
//! nodes' addresses and labels. Written by the watchers, read per record by
//! the enrich stage.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

use super::identity::{IDENTITY_HOST, IDENTITY_REMOTE_NODE, IDENTITY_WORLD, PodIdentity, reserved};
use crate::proto::flow::{Endpoint, Service, Workload};

/// A pod, reduced to what flows need.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The controlling owner (`kind`, `name`), if any.
    pub owner: Option<(String, String)>,
    /// hostNetwork pods share the node's address: never indexed by IP.
    pub host_network: bool,
    pub ips: Vec<IpAddr>,
    /// The node it is scheduled on (empty until it is).
    pub node: String,
    /// Its Ready condition is true.
    pub ready: bool,
}

/// A node's addresses and labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeInfo {
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
}

/// Who held an IP from `from_ns` until `until_ns` (monotonic time; open
/// while it still holds it).
#[derive(Clone, Debug)]
struct Holding {
    uid: String,
    endpoint: Arc<Endpoint>,
    from_ns: u64,
    until_ns: Option<u64>,
}

/// How long a released IP's last holder is remembered: long enough for the
/// records of its last packets (report interval, idle timeout, a sweep).
const HOLDING_KEPT_NS: u64 = 10 * 60 * 1_000_000_000;

pub struct ClusterState {
    cluster: String,
    own_node: String,
    pods: HashMap<String, PodInfo>,
    holdings: HashMap<IpAddr, Vec<Holding>>,
    /// (namespace, name) of a ReplicaSet or Job -> its own controlling
    /// owner (`kind`, `name`): a Deployment, a CronJob.
    owners: HashMap<(String, String, String), (String, String)>,
    nodes: HashMap<String, NodeInfo>,
    /// Services by cluster IP, with their ports (none: any port).
    cluster_ips: HashMap<IpAddr, (Vec<u16>, Arc<Service>)>,
    /// Each service's cluster IPs, to forget them.
    service_ips: HashMap<(String, String), Vec<IpAddr>>,
    /// The service a backend address and port serve (EndpointSlices).
    backends: HashMap<(IpAddr, u16), Arc<Service>>,
    /// Each EndpointSlice's backends, to forget them.
    slice_backends: HashMap<(String, String), Vec<(IpAddr, u16)>>,
    host: Arc<Endpoint>,
    remote_node: Arc<Endpoint>,
    world: Arc<Endpoint>,
    own_node_labels: Arc<Vec<String>>,
    /// The agent's own pod (namespace, name) when it runs in one: its
    /// siblings (same controller) are the nodes the Peer service announces.
    own_pod: Option<(String, String)>,
    /// The addresses of this node's own interfaces (its bridge's among
    /// them): the host, like the node's listed addresses.
    local_ips: std::collections::HashSet<IpAddr>,
}

impl ClusterState {
    pub fn new(cluster: &str, own_node: &str) -> Self {
        ClusterState {
            cluster: cluster.to_owned(),
            own_node: own_node.to_owned(),
            pods: HashMap::new(),
            holdings: HashMap::new(),
            owners: HashMap::new(),
            nodes: HashMap::new(),
            cluster_ips: HashMap::new(),
            service_ips: HashMap::new(),
            backends: HashMap::new(),
            slice_backends: HashMap::new(),
            host: Arc::new(reserved(IDENTITY_HOST, "host", cluster)),
            remote_node: Arc::new(reserved(IDENTITY_REMOTE_NODE, "remote-node", cluster)),
            world: Arc::new(reserved(IDENTITY_WORLD, "world", cluster)),
            own_node_labels: Arc::default(),
            own_pod: None,
            local_ips: Default::default(),
        }
    }

    /// The addresses of this node's interfaces, as read now.
    pub fn set_local_addresses(&mut self, ips: std::collections::HashSet<IpAddr>) {
        self.local_ips = ips;
    }

    /// The agent runs in pod `namespace/name` (from the downward API).
    pub fn with_own_pod(mut self, own_pod: Option<(String, String)>) -> Self {
        self.own_pod = own_pod;
        self
    }

    /// A pod was added or changed, seen at `now_ns`.
    pub fn apply_pod(&mut self, pod: PodInfo, now_ns: u64) {
        let endpoint = Arc::new(self.endpoint_of(&pod));
        let ips: Vec<IpAddr> = if pod.host_network { Vec::new() } else { pod.ips.clone() };
        // IPs it no longer has are released.
        if let Some(old) = self.pods.get(&pod.uid) {
            let released: Vec<IpAddr> = old.ips.iter().filter(|ip| !ips.contains(ip)).copied().collect();
            for ip in released {
                self.release(ip, &pod.uid, now_ns);
            }
        }
        for ip in ips {
            let holdings = self.holdings.entry(ip).or_default();
            match holdings.iter_mut().find(|h| h.uid == pod.uid && h.until_ns.is_none()) {
                Some(current) => current.endpoint = Arc::clone(&endpoint),
                None => {
                    // A new holder: whoever held the IP before no longer does.
                    for h in holdings.iter_mut().filter(|h| h.until_ns.is_none()) {
                        h.until_ns = Some(now_ns);
                    }
                    holdings.push(Holding {
                        uid: pod.uid.clone(),
                        endpoint: Arc::clone(&endpoint),
                        from_ns: now_ns,
                        until_ns: None,
                    });
                }
            }
        }
        let mut pod = pod;
        if pod.host_network {
            pod.ips.clear();
        }
        self.pods.insert(pod.uid.clone(), pod);
    }

    /// After a (re)list: pods not in `listed` are gone.
    pub fn retain_pods(&mut self, listed: &std::collections::HashSet<String>, now_ns: u64) {
        let gone: Vec<String> = self.pods.keys().filter(|uid| !listed.contains(*uid)).cloned().collect();
        for uid in gone {
            self.delete_pod(&uid, now_ns);
        }
    }

    /// A pod was deleted (or finished), seen at `now_ns`.
    pub fn delete_pod(&mut self, uid: &str, now_ns: u64) {
        if let Some(pod) = self.pods.remove(uid) {
            for ip in pod.ips {
                self.release(ip, uid, now_ns);
            }
        }
    }

    fn release(&mut self, ip: IpAddr, uid: &str, now_ns: u64) {
        if let Some(holdings) = self.holdings.get_mut(&ip) {
            for h in holdings.iter_mut().filter(|h| h.uid == uid && h.until_ns.is_none()) {
                h.until_ns = Some(now_ns);
            }
        }
    }

    /// Forgets holdings released long ago.
    pub fn expire(&mut self, now_ns: u64) {
        self.holdings.retain(|_, holdings| {
            holdings.retain(|h| {
                h.until_ns
                    .is_none_or(|until| now_ns.saturating_sub(until) < HOLDING_KEPT_NS)
            });
            !holdings.is_empty()
        });
    }

    /// A ReplicaSet's or Job's controlling owner (`None`: it has none).
    pub fn apply_owner(&mut self, kind: &str, namespace: &str, name: &str, owner: Option<(String, String)>) {
        let key = (kind.to_owned(), namespace.to_owned(), name.to_owned());
        let changed = match owner {
            Some(owner) => self.owners.insert(key, owner.clone()) != Some(owner),
            None => self.owners.remove(&key).is_some(),
        };
        if changed {
            self.refresh_owned_by(kind, namespace, name);
        }
    }

    pub fn delete_owner(&mut self, kind: &str, namespace: &str, name: &str) {
        self.apply_owner(kind, namespace, name, None);
    }

    /// Rebuilds the endpoints of the pods `kind/name` controls.
    fn refresh_owned_by(&mut self, kind: &str, namespace: &str, name: &str) {
        let owned: Vec<PodInfo> = self
            .pods
            .values()
            .filter(|p| p.namespace == namespace && p.owner.as_ref().is_some_and(|(k, n)| k == kind && n == name))
            .cloned()
            .collect();
        for pod in owned {
            let endpoint = Arc::new(self.endpoint_of(&pod));
            for ip in &pod.ips {
                for h in self.holdings.entry(*ip).or_default() {
                    if h.uid == pod.uid {
                        h.endpoint = Arc::clone(&endpoint);
                    }
                }
            }
        }
    }

    pub fn apply_node(&mut self, name: &str, node: NodeInfo) {
        if name == self.own_node {
            let labels: Vec<String> = node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            self.own_node_labels = Arc::new(labels);
        }
        self.nodes.insert(name.to_owned(), node);
    }

    pub fn delete_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// The workload at the top of a pod's owner chain: a Deployment through
    /// its ReplicaSet, a CronJob through its Job, a StatefulSet or
    /// DaemonSet, or the pod itself.
    fn workload_of(&self, pod: &PodInfo) -> Workload {
        let Some((kind, name)) = &pod.owner else {
            return Workload {
                name: pod.name.clone(),
                kind: "Pod".into(),
            };
        };
        let (kind, name) = self
            .owners
            .get(&(kind.clone(), pod.namespace.clone(), name.clone()))
            .map_or((kind, name), |(k, n)| (k, n));
        Workload {
            name: name.clone(),
            kind: kind.clone(),
        }
    }

    fn endpoint_of(&self, pod: &PodInfo) -> Endpoint {
        PodIdentity {
            namespace: &pod.namespace,
            name: &pod.name,
            labels: &pod.labels,
            workload: self.workload_of(pod),
            cluster: &self.cluster,
        }
        .endpoint()
    }

    /// Who `ip` was at monotonic time `at_ns`: the pod that held it then, a
    /// node (this one: `reserved:host`, another: `reserved:remote-node`), or
    /// `reserved:world`.
    pub fn endpoint_at(&self, ip: IpAddr, at_ns: u64) -> Arc<Endpoint> {
        if let Some(holdings) = self.holdings.get(&ip) {
            // The latest holding that had begun by then, if it had not ended.
            let held = holdings
                .iter()
                .filter(|h| h.from_ns <= at_ns)
                .max_by_key(|h| h.from_ns)
                .filter(|h| h.until_ns.is_none_or(|until| at_ns < until));
            // Packets seen just before hubcap heard of the IP's new holder
            // belong to it when nobody held the IP then.
            let held = held.or_else(|| {
                let nobody_before = holdings
                    .iter()
                    .all(|h| h.from_ns > at_ns || h.until_ns.is_some_and(|u| u <= at_ns));
                nobody_before
                    .then(|| holdings.iter().filter(|h| h.from_ns > at_ns).min_by_key(|h| h.from_ns))
                    .flatten()
            });
            if let Some(h) = held {
                return Arc::clone(&h.endpoint);
            }
        }
        if self.local_ips.contains(&ip) {
            return Arc::clone(&self.host);
        }
        for (name, node) in &self.nodes {
            if node.ips.contains(&ip) {
                return if *name == self.own_node {
                    Arc::clone(&self.host)
                } else {
                    Arc::clone(&self.remote_node)
                };
            }
        }
        Arc::clone(&self.world)
    }

    /// A Service and its cluster IPs and ports.
    pub fn apply_service(&mut self, namespace: &str, name: &str, cluster_ips: Vec<IpAddr>, ports: Vec<u16>) {
        self.delete_service(namespace, name);
        let service = Arc::new(Service {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        });
        for ip in &cluster_ips {
            self.cluster_ips.insert(*ip, (ports.clone(), Arc::clone(&service)));
        }
        self.service_ips
            .insert((namespace.to_owned(), name.to_owned()), cluster_ips);
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        for ip in self
            .service_ips
            .remove(&(namespace.to_owned(), name.to_owned()))
            .unwrap_or_default()
        {
            self.cluster_ips.remove(&ip);
        }
    }

    /// An EndpointSlice of service `service`: the backends' addresses and
    /// ports.
    pub fn apply_endpoint_slice(&mut self, namespace: &str, slice: &str, service: &str, backends: Vec<(IpAddr, u16)>) {
        self.delete_endpoint_slice(namespace, slice);
        let service = Arc::new(Service {
            name: service.to_owned(),
            namespace: namespace.to_owned(),
        });
        for backend in &backends {
            self.backends.insert(*backend, Arc::clone(&service));
        }
        self.slice_backends
            .insert((namespace.to_owned(), slice.to_owned()), backends);
    }

    pub fn delete_endpoint_slice(&mut self, namespace: &str, slice: &str) {
        for backend in self
            .slice_backends
            .remove(&(namespace.to_owned(), slice.to_owned()))
            .unwrap_or_default()
        {
            self.backends.remove(&backend);
        }
    }

    /// The service that `ip:port` is: a cluster IP on one of its ports, or
    /// a backend serving it on that port.
    pub fn service_at(&self, ip: IpAddr, port: u16) -> Option<Arc<Service>> {
        if let Some((ports, service)) = self.cluster_ips.get(&ip)
            && (ports.is_empty() || ports.contains(&port))
        {
            return Some(Arc::clone(service));
        }
        self.backends.get(&(ip, port)).cloned()
    }

    /// This node's labels as `key=value` (Hubble's `node_labels`).
    /// The nodes where this agent's siblings run, by name with the node's
    /// first address (InternalIP first), in name order: the nodes whose
    /// Ready pod has the same controller (the DaemonSet) as the agent's own
    /// pod. Outside a pod, every node of the cluster.
    pub fn agent_nodes(&self) -> Vec<(String, IpAddr)> {
        let address = |name: &str| self.nodes.get(name).and_then(|n| n.ips.first().copied());
        let mut nodes: Vec<(String, IpAddr)> = match &self.own_pod {
            None => self
                .nodes
                .keys()
                .filter_map(|name| address(name).map(|ip| (name.clone(), ip)))
                .collect(),
            Some((namespace, name)) => {
                let Some(owner) = self
                    .pods
                    .values()
                    .find(|p| p.namespace == *namespace && p.name == *name)
                    .and_then(|p| p.owner.as_ref())
                else {
                    return Vec::new();
                };
                let siblings = self
                    .pods
                    .values()
                    .filter(|p| p.ready && p.namespace == *namespace && p.owner.as_ref() == Some(owner));
                let mut names: Vec<&str> = siblings.map(|p| p.node.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                names
                    .into_iter()
                    .filter_map(|name| address(name).map(|ip| (name.to_owned(), ip)))
                    .collect()
            }
        };
        nodes.sort();
        nodes
    }

    pub fn own_node_labels(&self) -> Arc<Vec<String>> {
        Arc::clone(&self.own_node_labels)
    }

    /// Pods known (for the metrics).
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

#[cfg(test)]
mod tests;
