//! What the drop program reports: drops on what hubcap was asked to watch.
//!
//! That is every interface it captures on (in its own network namespace),
//! and every device in the network namespaces behind the pod veths among
//! them, where a pod's own drops happen (a closed port, a pod's firewall).
//! Drops anywhere else on the node (other containers, hubcap's own
//! loopback, interfaces left out with `--interface`) are counted in
//! `hubcap_kernel_packets_total{counter="drops_unwatched"}` and not written.

use std::{
    collections::{HashMap, HashSet},
    io,
    time::{Duration, Instant},
};

use agent_common::drop_scope_key;
use tracing::debug;

use crate::{
    interfaces::InterfaceKind,
    netns::{Rtnetlink, peer_namespaces},
};

/// How often to look again for pod namespaces not found yet.
const RETRY: Duration = Duration::from_secs(10);

pub struct DropScope {
    own_netns: u32,
    netlink: Rtnetlink,
    /// The namespace (inode) behind each captured pod interface.
    peers: HashMap<u32, u32>,
    /// Pod interfaces whose namespace was not found, and when we looked.
    unresolved: HashSet<u32>,
    last_lookup: Option<Instant>,
}

impl DropScope {
    /// `own_netns`: the inode of hubcap's network namespace.
    pub fn new(own_netns: u32) -> io::Result<Self> {
        Ok(DropScope {
            own_netns,
            netlink: Rtnetlink::open()?,
            peers: HashMap::new(),
            unresolved: HashSet::new(),
            last_lookup: None,
        })
    }

    /// The scope's keys (`agent_common::drop_scope_key`) for the captured
    /// interfaces (ifindex and kind).
    pub fn keys(&mut self, captured: &[(u32, InterfaceKind)]) -> io::Result<HashSet<u64>> {
        let pods: Vec<u32> = captured
            .iter()
            .filter(|(_, kind)| *kind == InterfaceKind::Endpoint)
            .map(|(ifindex, _)| *ifindex)
            .collect();
        self.peers.retain(|ifindex, _| pods.contains(ifindex));
        self.unresolved.retain(|ifindex| pods.contains(ifindex));
        let new: Vec<u32> = pods
            .iter()
            .copied()
            .filter(|i| !self.peers.contains_key(i) && !self.unresolved.contains(i))
            .collect();
        let retry = !self.unresolved.is_empty() && self.last_lookup.is_none_or(|t| t.elapsed() >= RETRY);
        if !new.is_empty() || retry {
            let lookup: Vec<u32> = new.iter().chain(self.unresolved.iter()).copied().collect();
            let found = peer_namespaces(&mut self.netlink, &lookup)?;
            self.last_lookup = Some(Instant::now());
            for ifindex in lookup {
                match found.get(&ifindex) {
                    Some(netns) => {
                        self.unresolved.remove(&ifindex);
                        self.peers.insert(ifindex, *netns);
                    }
                    None => {
                        debug!(ifindex, "pod interface's network namespace not found (yet)");
                        self.unresolved.insert(ifindex);
                    }
                }
            }
        }
        let own = captured
            .iter()
            .map(|(ifindex, _)| drop_scope_key(self.own_netns, *ifindex));
        let pods = self.peers.values().map(|netns| drop_scope_key(*netns, 0));
        Ok(own.chain(pods).collect())
    }
}
