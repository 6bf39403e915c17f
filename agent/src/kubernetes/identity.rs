//! Hubble's endpoint vocabulary for Kubernetes: labels as Cilium writes
//! them, numeric identities, workloads, and the reserved identities.

use std::collections::BTreeMap;

use crate::proto::flow::{Endpoint, Workload};

/// Cilium's reserved identities (`reserved:*` labels).
pub const IDENTITY_HOST: u32 = 1;
pub const IDENTITY_WORLD: u32 = 2;
pub const IDENTITY_REMOTE_NODE: u32 = 6;

/// Identities of labelled endpoints start here (below are the reserved).
const FIRST_LABELED: u32 = 256;
/// One cluster's identity space in Cilium: 24 bits.
const IDENTITY_SPACE: u32 = 1 << 24;

/// Whether a pod label says who the pod is, as Cilium's default label
/// filter has it: not the per-pod or per-revision labels controllers add
/// (`pod-template-hash`, `statefulset.kubernetes.io/pod-name`, ...), which
/// would give every pod or rollout an identity of its own.
fn is_identity_label(key: &str) -> bool {
    const PER_REVISION: [&str; 3] = [
        "pod-template-hash",
        "controller-revision-hash",
        "pod-template-generation",
    ];
    let domain = key.split_once('/').map(|(d, _)| d);
    !PER_REVISION.contains(&key)
        && !domain.is_some_and(|d| {
            d == "kubernetes.io" || d.ends_with(".kubernetes.io") || d == "k8s.io" || d.ends_with(".k8s.io")
        })
}

/// A pod's labels as Cilium writes them: `k8s:KEY=VALUE` for those that
/// say who it is, plus the namespace label Cilium adds, sorted.
pub fn hubble_labels(namespace: &str, labels: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = labels
        .iter()
        .filter(|(k, _)| is_identity_label(k))
        .map(|(k, v)| format!("k8s:{k}={v}"))
        .collect();
    out.push(format!("k8s:io.kubernetes.pod.namespace={namespace}"));
    out.sort();
    out
}

/// The numeric identity of a set of labels: the same labels give the same
/// number on every node and after every restart, with no allocator to
/// agree with (FNV-1a, folded into Cilium's 24-bit cluster space above the
/// reserved range). Distinct label sets can collide, rarely: about one pair
/// in 4,000 label sets.
pub fn identity_of(labels: &[String]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for label in labels {
        for byte in label.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    FIRST_LABELED + (hash % u64::from(IDENTITY_SPACE - FIRST_LABELED)) as u32
}

/// An endpoint known only by a reserved identity.
pub fn reserved(identity: u32, label: &str, cluster: &str) -> Endpoint {
    Endpoint {
        identity,
        labels: vec![format!("reserved:{label}")],
        cluster_name: cluster.to_owned(),
        ..Default::default()
    }
}

/// What a pod is, as a flow's endpoint.
pub struct PodIdentity<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub workload: Workload,
    pub cluster: &'a str,
}

impl PodIdentity<'_> {
    pub fn endpoint(&self) -> Endpoint {
        let labels = hubble_labels(self.namespace, self.labels);
        Endpoint {
            identity: identity_of(&labels),
            cluster_name: self.cluster.to_owned(),
            namespace: self.namespace.to_owned(),
            labels,
            pod_name: self.name.to_owned(),
            workloads: vec![self.workload.clone()],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn labels_are_cilium_style_with_the_namespace() {
        assert_eq!(
            hubble_labels("shop", &labels(&[("tier", "db"), ("app", "cart")])),
            ["k8s:app=cart", "k8s:io.kubernetes.pod.namespace=shop", "k8s:tier=db"]
        );
    }

    #[test]
    fn per_pod_and_per_revision_labels_are_left_out() {
        let pod = labels(&[
            ("app", "db"),
            ("pod-template-hash", "f85d64866"),
            ("controller-revision-hash", "db-7d466964f9"),
            ("statefulset.kubernetes.io/pod-name", "db-0"),
            ("apps.kubernetes.io/pod-index", "0"),
            ("example.com/team", "data"),
        ]);
        assert_eq!(
            hubble_labels("data", &pod),
            [
                "k8s:app=db",
                "k8s:example.com/team=data",
                "k8s:io.kubernetes.pod.namespace=data"
            ]
        );
    }

    #[test]
    fn identities_are_stable_distinct_and_above_the_reserved() {
        let a = hubble_labels("shop", &labels(&[("app", "cart")]));
        let b = hubble_labels("shop", &labels(&[("app", "web")]));
        let c = hubble_labels("other", &labels(&[("app", "cart")]));
        // A value fixed here: the same on every node, in every version.
        assert_eq!(identity_of(&a), identity_of(&a.clone()));
        assert_eq!(identity_of(&a), 5_087_746);
        let ids = [identity_of(&a), identity_of(&b), identity_of(&c)];
        assert!(ids.iter().all(|id| (256..1 << 24).contains(id)));
        assert!(ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2]);
    }
}
