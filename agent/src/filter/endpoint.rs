//! Matching a flow's endpoints and services, as Hubble's filters do: pods
//! and services by `namespace/name-prefix`, labels by Hubble's label
//! selector syntax, workloads, identities and cluster names.

use super::FilterError;
use crate::proto::flow::{Endpoint, Service, Workload};

/// `namespace/` (anything there) or `namespace/name-prefix`; without a `/`,
/// a name prefix in any namespace.
#[derive(Debug, Clone)]
pub struct NameMatch {
    namespace: Option<String>,
    prefix: String,
}

impl NameMatch {
    pub fn parse(s: &str) -> Self {
        match s.split_once('/') {
            Some((ns, name)) => NameMatch {
                namespace: Some(ns.to_owned()),
                prefix: name.to_owned(),
            },
            None => NameMatch {
                namespace: None,
                prefix: s.to_owned(),
            },
        }
    }

    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        !name.is_empty() && self.namespace.as_deref().is_none_or(|ns| ns == namespace) && name.starts_with(&self.prefix)
    }

    pub fn pod(&self, e: Option<&Endpoint>) -> bool {
        e.is_some_and(|e| self.matches(&e.namespace, &e.pod_name))
    }

    pub fn service(&self, s: Option<&Service>) -> bool {
        s.is_some_and(|s| self.matches(&s.namespace, &s.name))
    }
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Hubble's label selector: comma-separated requirements that must all
/// hold: `key=value` (or `==`), `key!=value`, `key`, `!key`, and the
/// set-based `key in (a,b)` and `key notin (a,b)` of Kubernetes selectors.
/// A key may name its source (`k8s:app`, `reserved:world`); without one it
/// matches the label from any source.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        let bad = || FilterError::Label(s.to_owned());
        let mut requirements = Vec::new();
        for part in split_requirements(s).ok_or_else(bad)? {
            let requirement = if let Some(r) = set_requirement(part) {
                r.ok_or_else(bad)?
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_owned())
            } else {
                Requirement::Exists(part.to_owned())
            };
            let key = match &requirement {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _) => k,
            };
            if key.is_empty() || key.contains(' ') {
                return Err(bad());
            }
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether an endpoint's labels (`source:key=value`) satisfy it.
    pub fn matches(&self, e: Option<&Endpoint>) -> bool {
        let Some(e) = e else { return false };
        // The value of `key` (with or without its source) among the labels.
        let value = |key: &str| {
            e.labels.iter().find_map(|label| {
                let (k, v) = label.split_once('=').unwrap_or((label.as_str(), ""));
                let bare = k.split_once(':').map_or(k, |(_, bare)| bare);
                (k == key || bare == key).then_some(v)
            })
        };
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => value(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => value(k) != Some(v.as_str()),
            Requirement::Exists(k) => value(k).is_some(),
            Requirement::NotExists(k) => value(k).is_none(),
            Requirement::In(k, values) => value(k).is_some_and(|v| values.iter().any(|w| w == v)),
            Requirement::NotIn(k, values) => !value(k).is_some_and(|v| values.iter().any(|w| w == v)),
        })
    }
}

/// The selector's requirements: split at commas outside parentheses.
/// `None` for unbalanced parentheses.
fn split_requirements(s: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0).then(|| {
        parts.push(s[start..].trim());
        parts
    })
}

/// `key in (a,b)` or `key notin (a,b)`: `None` if `part` is neither,
/// `Some(None)` if it is one but malformed.
fn set_requirement(part: &str) -> Option<Option<Requirement>> {
    let open = part.find('(')?;
    let (head, list) = (part[..open].trim(), &part[open..]);
    let (key, operator) = head.rsplit_once(char::is_whitespace)?;
    let values = || -> Option<Vec<String>> {
        let inner = list.strip_prefix('(')?.strip_suffix(')')?;
        let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
        values
            .iter()
            .all(|v| !v.is_empty() && !v.contains(' '))
            .then_some(values)
    };
    let key = key.trim().to_owned();
    Some(match operator {
        "in" => values().map(|v| Requirement::In(key, v)),
        "notin" => values().map(|v| Requirement::NotIn(key, v)),
        _ => None,
    })
}

/// A workload filter: every field given must match one of the endpoint's
/// workloads.
pub fn workload_matches(want: &Workload, e: Option<&Endpoint>) -> bool {
    e.is_some_and(|e| {
        e.workloads
            .iter()
            .any(|w| (want.name.is_empty() || w.name == want.name) && (want.kind.is_empty() || w.kind == want.kind))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(labels: &[&str]) -> Endpoint {
        Endpoint {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn label_selectors_like_hubble() {
        let web = endpoint(&["k8s:app=web", "k8s:tier=front", "k8s:io.kubernetes.pod.namespace=shop"]);
        let world = endpoint(&["reserved:world"]);
        for (selector, on_web, on_world) in [
            ("app=web", true, false),
            ("k8s:app=web", true, false),
            ("k8s:app==web,tier=front", true, false),
            ("app=web,tier=back", false, false),
            ("app!=db", true, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("reserved:world", false, true),
            ("world", false, true),
            ("app in (db, web)", true, false),
            ("app in (db),tier", false, false),
            ("k8s:tier notin (back,side),app=web", true, false),
            ("tier notin (front)", false, true),
        ] {
            let s = LabelSelector::parse(selector).unwrap();
            assert_eq!(s.matches(Some(&web)), on_web, "{selector} on web");
            assert_eq!(s.matches(Some(&world)), on_world, "{selector} on world");
            assert!(!s.matches(None) || selector.starts_with('!') || selector.contains("!="));
        }
        for bad in ["app=web,", "app in (web", "app in ()", "app in (a b)", "app within (a)"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn services_and_workloads() {
        let svc = Service {
            name: "web".into(),
            namespace: "shop".into(),
        };
        assert!(NameMatch::parse("shop/").service(Some(&svc)));
        assert!(NameMatch::parse("shop/we").service(Some(&svc)));
        assert!(!NameMatch::parse("data/web").service(Some(&svc)));
        assert!(!NameMatch::parse("shop/web").service(None));
        let e = Endpoint {
            workloads: vec![Workload {
                name: "web".into(),
                kind: "Deployment".into(),
            }],
            ..Default::default()
        };
        let want = |name: &str, kind: &str| Workload {
            name: name.into(),
            kind: kind.into(),
        };
        assert!(workload_matches(&want("web", ""), Some(&e)));
        assert!(workload_matches(&want("web", "Deployment"), Some(&e)));
        assert!(!workload_matches(&want("web", "StatefulSet"), Some(&e)));
    }
}
