//! Hubble's `peer.Peer` service: how Hubble Relay (and the UI behind it)
//! finds this node's Observer API.
//!
//! `Notify` announces this node (PEER_ADDED: its name, where its API
//! listens, and the TLS server name when it serves TLS) and then stays open
//! until hubcap stops: Relay treats an ended stream as a lost peer service
//! and asks again only after its retry timeout. With Kubernetes, the other
//! nodes of the cluster follow (a DaemonSet runs hubcap on each, at the
//! same port), and the stream says when nodes come, change or go, so that
//! Relay serves every node's flows from one Peer service.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::service::ObserverState;
use crate::proto::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest, Tls, peer_server::Peer};

/// This node as Relay sees it. Its TLS server name is `tls_server_name`,
/// else Cilium's form, `NODE.default.hubble-grpc.cilium.io`, so that
/// certificates made for Cilium's agents fit.
pub fn this_node(state: &ObserverState, tls_server_name: Option<&str>) -> ChangeNotification {
    let name = state.node_name().to_owned();
    ChangeNotification {
        tls: state.tls.then(|| Tls {
            server_name: tls_server_name
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{name}.default.hubble-grpc.cilium.io")),
        }),
        name,
        address: state.address.clone(),
        r#type: ChangeNotificationType::PeerAdded as i32,
    }
}

/// The cluster's nodes by name, each with the address its hubcap serves
/// on (from the Kubernetes node list).
pub type ClusterNodes = Arc<dyn Fn() -> Vec<(String, IpAddr)> + Send + Sync>;

/// The other nodes a Peer service announces: where to find them, and on
/// which port and with what TLS their hubcap serves (this node's own).
#[derive(Clone)]
pub struct OtherNodes {
    pub nodes: ClusterNodes,
    pub port: u16,
    pub tls: bool,
}

/// How often the node list is compared with what a stream was told.
const NODES_EVERY: Duration = Duration::from_secs(1);

pub struct PeerService {
    node: ChangeNotification,
    others: Option<OtherNodes>,
    stopping: watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(node: ChangeNotification, others: Option<OtherNodes>, stopping: watch::Receiver<bool>) -> Self {
        PeerService { node, others, stopping }
    }
}

/// The notification of another node: Cilium's TLS server name form.
fn other_node(name: &str, address: SocketAddr, tls: bool, kind: ChangeNotificationType) -> ChangeNotification {
    ChangeNotification {
        name: name.to_owned(),
        address: address.to_string(),
        r#type: kind as i32,
        tls: tls.then(|| Tls {
            server_name: format!("{name}.default.hubble-grpc.cilium.io"),
        }),
    }
}

/// The changes that take a client from `told` to `now`, in name order.
fn changes(
    told: &BTreeMap<String, SocketAddr>,
    now: &BTreeMap<String, SocketAddr>,
    tls: bool,
) -> Vec<ChangeNotification> {
    let mut out = Vec::new();
    for (name, address) in told {
        if !now.contains_key(name) {
            out.push(other_node(name, *address, tls, ChangeNotificationType::PeerDeleted));
        }
    }
    for (name, address) in now {
        match told.get(name) {
            None => out.push(other_node(name, *address, tls, ChangeNotificationType::PeerAdded)),
            Some(before) if before != address => {
                out.push(other_node(name, *address, tls, ChangeNotificationType::PeerUpdated))
            }
            Some(_) => {}
        }
    }
    out
}

type NotifyStream = Pin<Box<dyn Stream<Item = Result<ChangeNotification, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    type NotifyStream = NotifyStream;

    async fn notify(&self, _: Request<NotifyRequest>) -> Result<Response<NotifyStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let node = self.node.clone();
        let others = self.others.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let own_name = node.name.clone();
            if tx.send(Ok(node)).await.is_err() {
                return;
            }
            let mut told = BTreeMap::new();
            let mut every = tokio::time::interval(NODES_EVERY);
            // Open until hubcap stops or the client goes.
            loop {
                tokio::select! {
                    // The guard `wait_for` returns must not live across the
                    // sends below: dropped inside this block.
                    _ = async { drop(stopping.wait_for(|s| *s).await) } => return,
                    _ = tx.closed() => return,
                    _ = every.tick(), if others.is_some() => {
                        let others = others.as_ref().expect("ticks only with other nodes");
                        let now: BTreeMap<String, SocketAddr> = (others.nodes)()
                            .into_iter()
                            .filter(|(name, _)| *name != own_name)
                            .map(|(name, ip)| (name, SocketAddr::new(ip, others.port)))
                            .collect();
                        for change in changes(&told, &now, others.tls) {
                            if tx.send(Ok(change)).await.is_err() {
                                return;
                            }
                        }
                        told = now;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(list: &[(&str, &str)]) -> BTreeMap<String, SocketAddr> {
        list.iter().map(|(n, a)| (n.to_string(), a.parse().unwrap())).collect()
    }

    #[test]
    fn nodes_that_come_change_and_go_are_told() {
        let before = nodes(&[("a", "10.0.0.1:4244"), ("b", "10.0.0.2:4244")]);
        let after = nodes(&[("b", "10.0.0.9:4244"), ("c", "10.0.0.3:4244")]);
        let told: Vec<(String, i32, String)> = changes(&before, &after, true)
            .into_iter()
            .map(|c| (c.name, c.r#type, c.tls.unwrap().server_name))
            .collect();
        assert_eq!(
            told,
            [
                (
                    "a".into(),
                    ChangeNotificationType::PeerDeleted as i32,
                    "a.default.hubble-grpc.cilium.io".into()
                ),
                (
                    "b".into(),
                    ChangeNotificationType::PeerUpdated as i32,
                    "b.default.hubble-grpc.cilium.io".into()
                ),
                (
                    "c".into(),
                    ChangeNotificationType::PeerAdded as i32,
                    "c.default.hubble-grpc.cilium.io".into()
                ),
            ]
        );
        assert!(changes(&after, &after, false).is_empty());
    }
}
