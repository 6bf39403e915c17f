//! Hubble's `peer.Peer` service: how Hubble Relay (and the UI behind it)
//! finds this node's Observer API.
//!
//! `Notify` announces this node (PEER_ADDED: its name, where its API
//! listens, and the TLS server name when it serves TLS) and then stays open
//! until hubcap stops: Relay treats an ended stream as a lost peer service
//! and asks again only after its retry timeout. Other nodes join the list
//! once hubcap knows the cluster's nodes.

use std::pin::Pin;

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

pub struct PeerService {
    node: ChangeNotification,
    stopping: watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(node: ChangeNotification, stopping: watch::Receiver<bool>) -> Self {
        PeerService { node, stopping }
    }
}

type NotifyStream = Pin<Box<dyn Stream<Item = Result<ChangeNotification, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    type NotifyStream = NotifyStream;

    async fn notify(&self, _: Request<NotifyRequest>) -> Result<Response<NotifyStream>, Status> {
        let (tx, rx) = mpsc::channel(1);
        let node = self.node.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            if tx.send(Ok(node)).await.is_err() {
                return;
            }
            // Open until hubcap stops or the client goes.
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => {}
                _ = tx.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
