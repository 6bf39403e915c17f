//! The enrich stage: who a flow's endpoints are, before filters and outputs
//! see its record.
//!
//! An [`Enricher`] looks at a flow update and fills in the part of its
//! [`Identities`] it knows (pods, namespaces, labels, workloads, services,
//! later names learned from DNS). [`Enrichers`] runs the sources in turn,
//! each seeing what the earlier ones filled. What they say is fixed into
//! the record's source, so a record rebuilt later for an Observer API
//! client names the same endpoints as the one written at the time. Without
//! a source, records carry addresses only; with a cluster,
//! `kubernetes::KubernetesIdentities` names pods, nodes and the world.

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
    /// Names DNS gave the other side for these addresses (Hubble's
    /// `source_names`, `destination_names`).
    pub source_names: Option<Arc<Vec<String>>>,
    pub destination_names: Option<Arc<Vec<String>>>,
}

/// A source of endpoint identities: fills in what it knows, leaves the
/// rest as it found it.
pub trait Enricher: Send {
    fn enrich(&mut self, update: &FlowUpdate, identities: &mut Identities);
}

/// The enrich stage: every source, in order.
#[derive(Default)]
pub struct Enrichers(Vec<Box<dyn Enricher>>);

impl Enrichers {
    /// No source: records carry addresses only.
    pub fn none() -> Self {
        Enrichers::default()
    }

    pub fn push(&mut self, source: impl Enricher + 'static) {
        self.0.push(Box::new(source));
    }

    pub fn identify(&mut self, update: &FlowUpdate) -> Identities {
        let mut identities = Identities::default();
        for source in &mut self.0 {
            source.enrich(update, &mut identities);
        }
        identities
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names(&'static str);

    impl Enricher for Names {
        fn enrich(&mut self, _: &FlowUpdate, identities: &mut Identities) {
            let pod = Endpoint {
                pod_name: self.0.into(),
                ..Default::default()
            };
            match identities.source {
                None => identities.source = Some(Arc::new(pod)),
                Some(_) => identities.destination = Some(Arc::new(pod)),
            }
        }
    }

    #[test]
    fn sources_fill_their_part_in_order_and_none_leaves_addresses_only() {
        let update = FlowUpdate {
            key: Default::default(),
            stats: Default::default(),
            packets: 1,
            bytes: 1,
            tcp_flags: 0,
            state: crate::flow_table::FlowState::Begin,
            is_reply: None,
        };
        assert_eq!(Enrichers::none().identify(&update), Identities::default());
        let mut both = Enrichers::none();
        both.push(Names("first"));
        both.push(Names("second"));
        let identities = both.identify(&update);
        assert_eq!(identities.source.unwrap().pod_name, "first");
        assert_eq!(identities.destination.unwrap().pod_name, "second");
    }
}
