//! The enrich stage: who a flow's endpoints are, before filters and outputs
//! see its record.
//!
//! An [`Enricher`] looks at a flow update's addresses and says what it
//! knows about each side (pod, namespace, labels, workload). What it says is
//! fixed into the record's source, so a record rebuilt later for an
//! Observer API client names the same endpoints as the one written at the
//! time. Without a cluster, [`NoIdentities`] passes every flow through
//! unchanged; with one, `kubernetes::KubernetesIdentities` names pods,
//! nodes and the world.

use std::sync::Arc;

use crate::{
    flow_table::FlowUpdate,
    proto::flow::{Endpoint, Service},
};

/// What is known about the two sides of a flow: Hubble's `source` and
/// `destination` endpoints. Shared (`Arc`): many flows name the same pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identities {
    pub source: Option<Arc<Endpoint>>,
    pub destination: Option<Arc<Endpoint>>,
    /// This node's labels (`key=value`), Hubble's `node_labels`.
    pub node_labels: Option<Arc<Vec<String>>>,
    /// The Services the two sides are (a cluster IP, or a backend on the
    /// port it serves).
    pub source_service: Option<Arc<Service>>,
    pub destination_service: Option<Arc<Service>>,
}

/// A source of endpoint identities.
pub trait Enricher: Send {
    fn identify(&mut self, update: &FlowUpdate) -> Identities;
}

/// No identity source: records carry addresses only.
pub struct NoIdentities;

impl Enricher for NoIdentities {
    fn identify(&mut self, _: &FlowUpdate) -> Identities {
        Identities::default()
    }
}
