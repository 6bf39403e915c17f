//! Azure Container Network Logs' custom resources (`RetinaNetworkFlowLog`,
//! and its newer name `ContainerNetworkLog`, group `acn.azure.com`) as
//! Hubble flow filters. Every accepted resource's filters together select
//! what goes to the one stored log; with none accepted, nothing is stored.
//!
//! ```yaml
//! spec:
//!   includefilters:
//!     - name: web-to-db
//!       from: {namespacedPod: [shop/web-], ip: [10.0.0.0/8], labelSelector: {matchLabels: {app: web}}}
//!       to: {namespacedPod: [data/db-]}
//!       protocol: [tcp, dns]
//!       verdict: [forwarded, dropped]
//! ```
//!
//! Within an endpoint, `ip`, `namespacedPod` and `labelSelector` are ways
//! to name it: any of them matches. `dns` (hubcap sees no L7) selects
//! traffic to or from port 53.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::config::{FlowLogConfig, flow_filter};
use crate::{filter::FlowSelector, hubble::ProtocolFilter};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    #[serde(default)]
    pub includefilters: Vec<IncludeFilter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IncludeFilter {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub from: Option<EndpointSpec>,
    #[serde(default)]
    pub to: Option<EndpointSpec>,
    #[serde(default)]
    pub protocol: Vec<String>,
    #[serde(default)]
    pub verdict: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSpec {
    #[serde(default)]
    pub ip: Vec<String>,
    #[serde(default)]
    pub namespaced_pod: Vec<String>,
    #[serde(default)]
    pub label_selector: Option<LabelSelectorSpec>,
}

/// A Kubernetes label selector.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorSpec {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelExpression>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelExpression {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// Which end of the flow an endpoint is.
#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

impl Side {
    fn field(self, what: &str) -> String {
        match self {
            Side::Source => format!("source_{what}"),
            Side::Destination => format!("destination_{what}"),
        }
    }
}

/// The Hubble filters of one resource's spec (any of them selects a
/// flow), checked as the flow-log config checks its own; the error says
/// what is wrong, for the resource's status.
pub fn resource_filters(spec: &Value) -> Result<Vec<Value>, String> {
    let spec: ResourceSpec = serde_json::from_value(spec.clone()).map_err(|e| format!("spec: {e}"))?;
    if spec.includefilters.is_empty() {
        return Err("includefilters is empty: there is nothing to log".into());
    }
    let mut filters = Vec::new();
    for (i, filter) in spec.includefilters.iter().enumerate() {
        let label = filter.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
        let expanded = include_filter(filter).map_err(|e| format!("filter {label}: {e}"))?;
        // The filters must hold up as Hubble filters (addresses, CIDRs,
        // label selectors), exactly as the API would take them.
        let parsed = expanded
            .iter()
            .map(|v| flow_filter(&label, v).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        FlowSelector::new(&parsed, &[]).map_err(|e| format!("filter {label}: {e}"))?;
        filters.extend(expanded);
    }
    Ok(filters)
}

/// One include filter as Hubble filters: every way to name the source,
/// times every way to name the destination, times the protocol choices.
fn include_filter(f: &IncludeFilter) -> Result<Vec<Value>, String> {
    let verdicts = f.verdict.iter().map(|v| verdict(v)).collect::<Result<Vec<_>, _>>()?;
    let mut base = Map::new();
    if !verdicts.is_empty() {
        base.insert("verdict".into(), json!(verdicts));
    }
    let mut out = vec![base];
    out = product(out, endpoint(f.from.as_ref(), Side::Source)?);
    out = product(out, endpoint(f.to.as_ref(), Side::Destination)?);
    out = product(out, protocols(&f.protocol)?);
    Ok(out.into_iter().map(Value::Object).collect())
}

fn verdict(v: &str) -> Result<&'static str, String> {
    match v.to_ascii_lowercase().as_str() {
        "forwarded" => Ok("FORWARDED"),
        "dropped" => Ok("DROPPED"),
        _ => Err(format!("verdict {v:?}: forwarded or dropped")),
    }
}

/// The alternatives one endpoint allows (one empty one when it has none).
fn endpoint(e: Option<&EndpointSpec>, side: Side) -> Result<Vec<Map<String, Value>>, String> {
    let Some(e) = e else { return Ok(vec![Map::new()]) };
    let mut alternatives = Vec::new();
    let single = |field: String, values: Vec<String>| Map::from_iter([(field, json!(values))]);
    if !e.ip.is_empty() {
        alternatives.push(single(side.field("ip"), e.ip.clone()));
    }
    if !e.namespaced_pod.is_empty() {
        alternatives.push(single(side.field("pod"), e.namespaced_pod.clone()));
    }
    if let Some(selector) = &e.label_selector {
        alternatives.push(single(side.field("label"), vec![label_selector(selector)?]));
    }
    if alternatives.is_empty() {
        alternatives.push(Map::new());
    }
    Ok(alternatives)
}

/// A Kubernetes label selector in Hubble's selector syntax. An empty one
/// matches every labelled endpoint, as in Kubernetes.
fn label_selector(s: &LabelSelectorSpec) -> Result<String, String> {
    let mut requirements: Vec<String> = s.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in &s.match_expressions {
        let values = || {
            if e.values.is_empty() {
                Err(format!("labelSelector {}: {} needs values", e.key, e.operator))
            } else {
                Ok(e.values.join(","))
            }
        };
        requirements.push(match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, values()?),
            "NotIn" => format!("{} notin ({})", e.key, values()?),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => {
                return Err(format!(
                    "labelSelector operator {other:?}: In, NotIn, Exists or DoesNotExist"
                ));
            }
        });
    }
    if requirements.is_empty() {
        // Hubble's selectors need a requirement: any label at all.
        return Err("an empty labelSelector: leave it out to match every endpoint".into());
    }
    Ok(requirements.join(","))
}

/// The protocol choice, every name as Hubble's protocol filter takes it:
/// `dns` selects the DNS records (Hubble L7), `udp` and `tcp` their L4.
fn protocols(list: &[String]) -> Result<Vec<Map<String, Value>>, String> {
    if list.is_empty() {
        return Ok(vec![Map::new()]);
    }
    let mut by_name = Vec::new();
    for p in list {
        if ProtocolFilter::parse(p).is_none() {
            return Err(format!("protocol {p:?}: {}", ProtocolFilter::names()));
        }
        by_name.push(p.to_ascii_lowercase());
    }
    Ok(vec![Map::from_iter([("protocol".to_owned(), json!(by_name))])])
}

fn product(left: Vec<Map<String, Value>>, right: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
    left.iter()
        .flat_map(|l| {
            right.iter().map(move |r| {
                let mut both = l.clone();
                both.extend(r.clone());
                both
            })
        })
        .collect()
}

/// The stored log of the accepted resources' filters; `None` when there
/// are none (nothing is stored, as in ACNS).
pub fn stored_log(filters: Vec<Value>, file_path: &str, max_size_mb: u64, max_backups: u32) -> Option<FlowLogConfig> {
    (!filters.is_empty()).then(|| FlowLogConfig {
        name: "container-network-logs".into(),
        file_path: file_path.to_owned(),
        field_mask: Vec::new(),
        include_filters: filters,
        exclude_filters: Vec::new(),
        file_max_size_mb: max_size_mb,
        file_max_backups: max_backups,
        file_compress: false,
        end: None,
        aggregation_options: None,
        format: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_azure_sample_becomes_hubble_filters() {
        let spec = json!({"includefilters": [{
            "name": "sample-filter",
            "from": {"namespacedPod": ["default/kapinger-"]},
            "to": {"namespacedPod": ["default/kapinger-"]},
            "protocol": ["tcp", "dns", "udp"],
            "verdict": ["forwarded", "dropped"],
        }]});
        let filters = resource_filters(&spec).unwrap();
        let base = json!({"verdict": ["FORWARDED", "DROPPED"], "source_pod": ["default/kapinger-"], "destination_pod": ["default/kapinger-"]});
        let with = |extra: Value| {
            let mut f = base.as_object().unwrap().clone();
            f.extend(extra.as_object().unwrap().clone());
            Value::Object(f)
        };
        assert_eq!(filters, [with(json!({"protocol": ["tcp", "dns", "udp"]}))]);
    }

    #[test]
    fn hubbles_protocol_names_are_taken_as_hubble_takes_them() {
        let spec = json!({"includefilters": [{"protocol": ["ICMP", "icmpv6"]}]});
        assert_eq!(
            resource_filters(&spec).unwrap(),
            [json!({"protocol": ["icmp", "icmpv6"]})]
        );
    }

    #[test]
    fn each_way_of_naming_an_endpoint_is_an_alternative() {
        let spec = json!({"includefilters": [{"from": {
            "ip": ["10.0.0.0/8"],
            "labelSelector": {"matchLabels": {"app": "web"}, "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ]},
        }}]});
        assert_eq!(
            resource_filters(&spec).unwrap(),
            [
                json!({"source_ip": ["10.0.0.0/8"]}),
                json!({"source_label": ["app=web,env in (prod,staging),!canary"]}),
            ]
        );
    }

    #[test]
    fn bad_resources_say_why() {
        let err = |spec: Value| resource_filters(&spec).unwrap_err();
        assert!(err(json!({"includefilters": []})).contains("empty"));
        assert!(err(json!({"includefilters": [{"protocol": ["gre"]}]})).contains("gre"));
        assert!(err(json!({"includefilters": [{"verdict": ["allowed"]}]})).contains("allowed"));
        assert!(err(json!({"includefilters": [{"name": "x", "from": {"ip": ["10.0.0.300"]}}]})).contains("10.0.0.300"));
        assert!(err(json!({"includefilters": [{"to": {"labelSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}]})).contains("Near"));
        assert!(err(json!({"includefilters": [{"form": {}}]})).contains("form"));
    }
}
