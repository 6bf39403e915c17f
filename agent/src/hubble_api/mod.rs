//! Hubble's Observer API, server side: the ring of recent flows and its
//! live feed (`ring`), the `observer.Observer` service over it (`service`),
//! the `peer.Peer` service through which Hubble
//! Relay finds this node (`peer`), and the listeners (`server`).

mod api_metrics;
mod observer_feed;
pub use observer_feed::ObserverFeed;
pub mod peer;
pub mod ring;
pub mod server;
pub mod service;
