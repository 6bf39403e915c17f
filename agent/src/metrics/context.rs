//! Hubble's metric context options: `source` and `destination` labels on
//! the flow, drop and TCP-flag metrics naming each side (its namespace, pod,
//! workload or app), and Hubble's `query` option of the DNS metrics (the
//! name asked). Off by default. Each label takes at most `limit` distinct
//! values; later ones count as `other`, so a busy cluster cannot grow the
//! metrics without bound.

use std::{collections::HashSet, sync::Mutex};

use crate::proto::flow::{Endpoint, Flow};

/// What a context label says of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ContextKind {
    /// `shop`
    Namespace,
    /// `shop/web-7d9f8c6b5-x2x4z`
    Pod,
    /// `shop/web` (the top of the owner chain)
    Workload,
    /// The `app` label's value
    App,
}

/// The value standing for every value past the limit.
pub const OVERFLOW: &str = "other";

#[derive(Debug, Default)]
pub struct Contexts {
    source: Option<ContextKind>,
    destination: Option<ContextKind>,
    /// The DNS metrics' `query` label.
    dns_query: bool,
    limit: usize,
    /// Values seen per label: source, destination, query.
    seen: Mutex<[HashSet<String>; 3]>,
}

impl Contexts {
    pub fn new(source: Option<ContextKind>, destination: Option<ContextKind>, limit: usize) -> Self {
        Contexts {
            source,
            destination,
            dns_query: false,
            limit,
            seen: Mutex::default(),
        }
    }

    /// With the DNS metrics' `query` label (`--metrics-dns-query`).
    pub fn with_dns_query(mut self, on: bool) -> Self {
        self.dns_query = on;
        self
    }

    /// Whether the DNS metrics carry a `query` label.
    pub fn dns_query(&self) -> bool {
        self.dns_query
    }

    /// The `query` label's value for `name`, bounded like the others.
    pub fn dns_query_value(&self, name: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        bounded(&mut seen[2], self.limit, name.to_owned())
    }

    /// The extra label names, in order.
    pub fn label_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.source.is_some() {
            names.push("source");
        }
        if self.destination.is_some() {
            names.push("destination");
        }
        names
    }

    /// The extra labels' values for a flow, in the order of
    /// [`label_names`](Self::label_names).
    pub fn values(&self, flow: &Flow) -> Vec<String> {
        // Off (the default): nothing to lock or allocate on the per-record path.
        if self.source.is_none() && self.destination.is_none() {
            return Vec::new();
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut values = Vec::new();
        for (i, (kind, endpoint)) in [
            (self.source, flow.source.as_ref()),
            (self.destination, flow.destination.as_ref()),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(kind) = kind else { continue };
            values.push(bounded(&mut seen[i], self.limit, value(kind, endpoint)));
        }
        values
    }

    /// Empty values for the series made at start.
    pub fn empty(&self) -> Vec<String> {
        vec![String::new(); self.label_names().len()]
    }
}

/// `value` while the label has seen fewer than `limit` values (or this
/// one before), else [`OVERFLOW`].
fn bounded(seen: &mut HashSet<String>, limit: usize, value: String) -> String {
    if seen.contains(&value) || seen.len() < limit {
        seen.insert(value.clone());
        value
    } else {
        OVERFLOW.to_owned()
    }
}

fn value(kind: ContextKind, endpoint: Option<&Endpoint>) -> String {
    let Some(e) = endpoint else { return String::new() };
    match kind {
        ContextKind::Namespace => e.namespace.clone(),
        ContextKind::Pod if e.pod_name.is_empty() => String::new(),
        ContextKind::Pod => format!("{}/{}", e.namespace, e.pod_name),
        ContextKind::Workload => e
            .workloads
            .first()
            .map(|w| format!("{}/{}", e.namespace, w.name))
            .unwrap_or_default(),
        ContextKind::App => e
            .labels
            .iter()
            .find_map(|l| l.strip_prefix("k8s:app="))
            .unwrap_or_default()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::flow::Workload;

    fn flow(pod: &str) -> Flow {
        let endpoint = |pod: &str| Endpoint {
            namespace: "shop".into(),
            pod_name: pod.into(),
            labels: vec!["k8s:app=web".into()],
            workloads: vec![Workload {
                name: "web".into(),
                kind: "Deployment".into(),
            }],
            ..Default::default()
        };
        Flow {
            source: Some(endpoint(pod)),
            destination: None,
            ..Default::default()
        }
    }

    #[test]
    fn each_kind_names_the_endpoint() {
        let f = flow("web-1");
        for (kind, expected) in [
            (ContextKind::Namespace, "shop"),
            (ContextKind::Pod, "shop/web-1"),
            (ContextKind::Workload, "shop/web"),
            (ContextKind::App, "web"),
        ] {
            let c = Contexts::new(Some(kind), Some(kind), 10);
            assert_eq!(c.label_names(), ["source", "destination"]);
            // No destination endpoint: an empty value.
            assert_eq!(c.values(&f), [expected, ""], "{kind:?}");
        }
    }

    #[test]
    fn values_past_the_limit_are_other() {
        let c = Contexts::new(Some(ContextKind::Pod), None, 2);
        let values: Vec<String> = ["a", "b", "c", "a"]
            .iter()
            .map(|p| c.values(&flow(p)).remove(0))
            .collect();
        assert_eq!(values, ["shop/a", "shop/b", OVERFLOW, "shop/a"]);
    }
}
