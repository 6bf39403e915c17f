//! Hubble's flow filters: which flows a client (GetFlows) or a flow log
//! (allow and deny lists) wants.
//!
//! Semantics, as Hubble's: every field set in one filter must match (within
//! a field, any listed value may); a list of filters matches when any of its
//! filters does; the result is the whitelist (everything when empty) minus
//! the blacklist. IPs take CIDRs; pods and services take `namespace/` or
//! `namespace/name-prefix`; labels take Hubble's selectors (`endpoint`).
//!
//! Filters are compiled once (CIDRs, ports, globs and FQDN patterns
//! parsed) and then applied to every flow. Fields hubcap cannot evaluate
//! (HTTP, DNS queries, translated IPs, node labels, trace ids) are refused
//! with an error naming them, rather than silently matching nothing.

use std::net::IpAddr;

mod endpoint;
mod names;

use endpoint::{LabelSelector, NameMatch, workload_matches};
use names::FqdnPattern;

use crate::{
    hubble::ProtocolFilter,
    proto::flow::{EventTypeFilter, Flow, FlowFilter, NetworkInterface, TcpFlags, Workload},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("invalid IP or CIDR {0:?}")]
    Ip(String),
    #[error("invalid port {0:?}")]
    Port(String),
    #[error("invalid node name pattern {0:?}")]
    NodeName(String),
    #[error("unknown protocol {0:?} ({names})", names = ProtocolFilter::names())]
    Protocol(String),
    #[error("invalid FQDN pattern {0:?} (letters, digits, \"-\", \"_\", \".\" and \"*\")")]
    Fqdn(String),
    #[error("invalid label selector {0:?} (key=value, key!=value, key, !key; comma-separated)")]
    Label(String),
    #[error("invalid DNS query pattern {0:?} (a regular expression): {1}")]
    DnsQuery(String, String),
    #[error("hubcap cannot filter on {0} yet")]
    Unsupported(&'static str),
}

/// An IP address or a CIDR block.
#[derive(Debug, Clone, Copy)]
struct IpMatch {
    net: IpAddr,
    prefix: u8,
}

impl IpMatch {
    fn parse(s: &str) -> Result<Self, FilterError> {
        let err = || FilterError::Ip(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| err())?)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(err());
        }
        Ok(IpMatch { net, prefix })
    }

    fn contains(&self, ip: &str) -> bool {
        let Ok(ip) = ip.parse::<IpAddr>() else { return false };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One compiled filter; empty lists match everything.
#[derive(Debug, Default)]
struct Compiled {
    uuid: Vec<String>,
    source_ip: Vec<IpMatch>,
    destination_ip: Vec<IpMatch>,
    source_pod: Vec<NameMatch>,
    destination_pod: Vec<NameMatch>,
    source_service: Vec<NameMatch>,
    destination_service: Vec<NameMatch>,
    source_label: Vec<LabelSelector>,
    destination_label: Vec<LabelSelector>,
    source_workload: Vec<Workload>,
    destination_workload: Vec<Workload>,
    source_identity: Vec<u32>,
    destination_identity: Vec<u32>,
    source_cluster_name: Vec<String>,
    destination_cluster_name: Vec<String>,
    traffic_direction: Vec<i32>,
    verdict: Vec<i32>,
    drop_reason_desc: Vec<i32>,
    interface: Vec<NetworkInterface>,
    event_type: Vec<EventTypeFilter>,
    protocol: Vec<ProtocolFilter>,
    source_fqdn: Vec<FqdnPattern>,
    destination_fqdn: Vec<FqdnPattern>,
    /// Hubble's `dns_query`: unanchored regular expressions on
    /// `l7.dns.query`; flows without DNS never match.
    dns_query: Vec<regex::Regex>,
    source_port: Vec<u32>,
    destination_port: Vec<u32>,
    reply: Vec<bool>,
    tcp_flags: Vec<TcpFlags>,
    node_name: Vec<glob::Pattern>,
    ip_version: Vec<i32>,
}

fn ports(list: &[String]) -> Result<Vec<u32>, FilterError> {
    list.iter()
        .map(|p| {
            p.parse::<u16>()
                .map(u32::from)
                .map_err(|_| FilterError::Port(p.clone()))
        })
        .collect()
}

impl Compiled {
    fn new(f: &FlowFilter) -> Result<Self, FilterError> {
        let unsupported = [
            ("source_ip_xlated", f.source_ip_xlated.is_empty()),
            ("http_status_code", f.http_status_code.is_empty()),
            ("http_method", f.http_method.is_empty()),
            ("http_path", f.http_path.is_empty()),
            ("http_url", f.http_url.is_empty()),
            ("http_header", f.http_header.is_empty()),
            ("node_labels", f.node_labels.is_empty()),
            ("trace_id", f.trace_id.is_empty()),
            ("experimental", f.experimental.is_none()),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, empty)| !empty) {
            return Err(FilterError::Unsupported(name));
        }
        let ips = |list: &[String]| list.iter().map(|s| IpMatch::parse(s)).collect::<Result<Vec<_>, _>>();
        let names = |list: &[String]| list.iter().map(|s| NameMatch::parse(s)).collect::<Vec<_>>();
        let labels = |list: &[String]| {
            list.iter()
                .map(|s| LabelSelector::parse(s))
                .collect::<Result<Vec<_>, _>>()
        };
        let protocol = f
            .protocol
            .iter()
            .map(|p| ProtocolFilter::parse(p).ok_or_else(|| FilterError::Protocol(p.clone())))
            .collect::<Result<_, _>>()?;
        let fqdns = |list: &[String]| {
            list.iter()
                .map(|s| FqdnPattern::parse(s))
                .collect::<Result<Vec<_>, _>>()
        };
        let node_name = f
            .node_name
            .iter()
            .map(|n| glob::Pattern::new(n).map_err(|_| FilterError::NodeName(n.clone())))
            .collect::<Result<_, _>>()?;
        Ok(Compiled {
            uuid: f.uuid.clone(),
            source_ip: ips(&f.source_ip)?,
            destination_ip: ips(&f.destination_ip)?,
            source_pod: names(&f.source_pod),
            destination_pod: names(&f.destination_pod),
            source_service: names(&f.source_service),
            destination_service: names(&f.destination_service),
            source_label: labels(&f.source_label)?,
            destination_label: labels(&f.destination_label)?,
            source_workload: f.source_workload.clone(),
            destination_workload: f.destination_workload.clone(),
            source_identity: f.source_identity.clone(),
            destination_identity: f.destination_identity.clone(),
            source_cluster_name: f.source_cluster_name.clone(),
            destination_cluster_name: f.destination_cluster_name.clone(),
            traffic_direction: f.traffic_direction.clone(),
            verdict: f.verdict.clone(),
            drop_reason_desc: f.drop_reason_desc.clone(),
            interface: f.interface.clone(),
            event_type: f.event_type.clone(),
            protocol,
            source_fqdn: fqdns(&f.source_fqdn)?,
            destination_fqdn: fqdns(&f.destination_fqdn)?,
            dns_query: f
                .dns_query
                .iter()
                .map(|q| regex::Regex::new(q).map_err(|e| FilterError::DnsQuery(q.clone(), e.to_string())))
                .collect::<Result<_, _>>()?,
            source_port: ports(&f.source_port)?,
            destination_port: ports(&f.destination_port)?,
            reply: f.reply.clone(),
            tcp_flags: f.tcp_flags.clone(),
            node_name,
            ip_version: f.ip_version.clone(),
        })
    }

    fn matches(&self, flow: &Flow) -> bool {
        fn any<T>(list: &[T], pred: impl Fn(&T) -> bool) -> bool {
            list.is_empty() || list.iter().any(pred)
        }
        let ip = flow.ip.as_ref();
        let (source, destination) = (flow.source.as_ref(), flow.destination.as_ref());
        let l4 = flow.l4_parts();
        let (sport, dport) = (l4.ports.map(|p| p.0), l4.ports.map(|p| p.1));
        any(&self.uuid, |u| *u == flow.uuid)
            && any(&self.source_ip, |m| ip.is_some_and(|ip| m.contains(&ip.source)))
            && any(&self.destination_ip, |m| {
                ip.is_some_and(|ip| m.contains(&ip.destination))
            })
            && any(&self.source_pod, |m| m.pod(source))
            && any(&self.destination_pod, |m| m.pod(destination))
            && any(&self.source_service, |m| m.service(flow.source_service.as_ref()))
            && any(&self.destination_service, |m| {
                m.service(flow.destination_service.as_ref())
            })
            && any(&self.source_label, |s| s.matches(source))
            && any(&self.destination_label, |s| s.matches(destination))
            && any(&self.source_workload, |w| workload_matches(w, source))
            && any(&self.destination_workload, |w| workload_matches(w, destination))
            && any(&self.source_identity, |i| source.is_some_and(|e| e.identity == *i))
            && any(&self.destination_identity, |i| {
                destination.is_some_and(|e| e.identity == *i)
            })
            && any(&self.source_cluster_name, |c| {
                source.is_some_and(|e| e.cluster_name == *c)
            })
            && any(&self.destination_cluster_name, |c| {
                destination.is_some_and(|e| e.cluster_name == *c)
            })
            && any(&self.traffic_direction, |d| *d == flow.traffic_direction)
            && any(&self.verdict, |v| *v == flow.verdict)
            && any(&self.drop_reason_desc, |r| *r == flow.drop_reason_desc)
            && any(&self.interface, |i| {
                flow.interface
                    .as_ref()
                    .is_some_and(|fi| (i.index == 0 || i.index == fi.index) && (i.name.is_empty() || i.name == fi.name))
            })
            && any(&self.event_type, |e| {
                flow.event_type
                    .as_ref()
                    .is_some_and(|fe| fe.r#type == e.r#type && (!e.match_sub_type || fe.sub_type == e.sub_type))
            })
            && any(&self.protocol, |p| p.matches(l4.protocol, flow.l7.as_ref()))
            && any(&self.dns_query, |q| {
                dns_query(flow).is_some_and(|query| q.is_match(query))
            })
            && any(&self.source_fqdn, |p| p.matches_any(&flow.source_names))
            && any(&self.destination_fqdn, |p| p.matches_any(&flow.destination_names))
            && any(&self.source_port, |p| Some(*p) == sport)
            && any(&self.destination_port, |p| Some(*p) == dport)
            && any(&self.reply, |r| flow.is_reply == Some(*r))
            && any(&self.tcp_flags, |want| {
                l4.tcp_flags.is_some_and(|have| contains_flags(have, want))
            })
            && any(&self.node_name, |p| p.matches(&flow.node_name))
            && any(&self.ip_version, |v| ip.is_some_and(|ip| ip.ip_version == *v))
    }
}

fn dns_query(flow: &Flow) -> Option<&str> {
    match flow.l7.as_ref()?.record.as_ref()? {
        crate::proto::flow::layer7::Record::Dns(dns) => Some(&dns.query),
    }
}

/// Every flag set in `want` is set in `have`.
fn contains_flags(have: &TcpFlags, want: &TcpFlags) -> bool {
    let pairs = [
        (want.fin, have.fin),
        (want.syn, have.syn),
        (want.rst, have.rst),
        (want.psh, have.psh),
        (want.ack, have.ack),
        (want.urg, have.urg),
        (want.ece, have.ece),
        (want.cwr, have.cwr),
        (want.ns, have.ns),
    ];
    pairs.iter().all(|(w, h)| !w || *h)
}

/// A whitelist and a blacklist of filters, compiled.
#[derive(Debug, Default)]
pub struct FlowSelector {
    whitelist: Vec<Compiled>,
    blacklist: Vec<Compiled>,
}

impl FlowSelector {
    pub fn new(whitelist: &[FlowFilter], blacklist: &[FlowFilter]) -> Result<Self, FilterError> {
        Ok(FlowSelector {
            whitelist: whitelist.iter().map(Compiled::new).collect::<Result<_, _>>()?,
            blacklist: blacklist.iter().map(Compiled::new).collect::<Result<_, _>>()?,
        })
    }

    /// Whitelisted (or no whitelist) and not blacklisted.
    pub fn selects(&self, flow: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|f| f.matches(flow)))
            && !self.blacklist.iter().any(|f| f.matches(flow))
    }
}

#[cfg(test)]
mod tests;
