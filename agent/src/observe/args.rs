//! `hubcap observe`'s flags, and how they become a GetFlows request. The
//! names and meanings follow `hubble observe`, so its users need nothing new.

use std::{path::PathBuf, time::SystemTime};

use clap::{Args, ValueEnum};
use prost_types::Timestamp;

use crate::proto::{
    flow::{FlowFilter, IpVersion, NetworkInterface, TcpFlags, TrafficDirection, Verdict},
    observer::GetFlowsRequest,
};

/// What `hubble observe` asks for when given no count: the last 20.
const DEFAULT_LAST: u64 = 20;

#[derive(Args, Debug, Clone, Default)]
pub struct ObserveArgs {
    /// The agent's Observer API: `unix://PATH` or `HOST:PORT`.
    #[arg(long, value_name = "ADDR", default_value = "unix:///var/run/hubcap/hubble.sock")]
    pub server: String,

    /// Read Hubble JSON lines (hubcap's or Hubble's exporter files) from
    /// this file, or `-` for stdin, instead of a server.
    #[arg(long, value_name = "PATH|-", conflicts_with_all = ["server", "tls"])]
    pub input_file: Option<PathBuf>,

    /// Connect to the server with TLS.
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) to trust for the server's certificate.
    #[arg(long, value_name = "PEM", requires = "tls")]
    pub tls_ca_cert_files: Vec<PathBuf>,
    /// Client certificate (PEM), for servers that require one.
    #[arg(long, value_name = "PEM", requires_all = ["tls", "tls_client_key_file"])]
    pub tls_client_cert_file: Option<PathBuf>,
    #[arg(long, value_name = "PEM", requires = "tls_client_cert_file")]
    pub tls_client_key_file: Option<PathBuf>,
    /// Name to check the server's certificate against (default: its host).
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_server_name: Option<String>,

    /// The last N flows (default: from a server the last 20 when neither a
    /// count, --since nor --follow is given; from a file all of them).
    #[arg(long, value_name = "N", conflicts_with_all = ["first", "all"])]
    pub last: Option<u64>,
    /// The first N flows.
    #[arg(long, value_name = "N", conflicts_with_all = ["follow", "all"])]
    pub first: Option<u64>,
    /// Every flow the server still has.
    #[arg(long)]
    pub all: bool,
    /// Keep printing new flows as they come.
    #[arg(short, long)]
    pub follow: bool,
    /// Flows since this time: RFC 3339 (`2026-11-22T10:00:00Z`) or a duration
    /// ago (`5m`, `1h30m`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<Timestamp>,
    /// Flows until this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<Timestamp>,

    /// Flows from this IP or CIDR (repeat for more).
    #[arg(long, value_name = "IP|CIDR")]
    pub from_ip: Vec<String>,
    /// Flows to this IP or CIDR.
    #[arg(long, value_name = "IP|CIDR")]
    pub to_ip: Vec<String>,
    /// Flows from or to this IP or CIDR.
    #[arg(long, value_name = "IP|CIDR")]
    pub ip: Vec<String>,
    /// Flows from this pod (`[namespace/]name-prefix`; default namespace
    /// `default`, as Hubble).
    #[arg(long, value_name = "POD")]
    pub from_pod: Vec<String>,
    #[arg(long, value_name = "POD")]
    pub to_pod: Vec<String>,
    /// Flows from or to this pod.
    #[arg(long, value_name = "POD")]
    pub pod: Vec<String>,
    /// Flows from or to pods in this namespace; also the namespace of
    /// --pod/--from-pod/--to-pod names given without one.
    #[arg(short, long, value_name = "NS")]
    pub namespace: Vec<String>,
    #[arg(long, value_name = "NS")]
    pub from_namespace: Vec<String>,
    #[arg(long, value_name = "NS")]
    pub to_namespace: Vec<String>,
    /// Flows from or to endpoints with these labels (Hubble's selector:
    /// `app=web`, `k8s:app=web,tier!=db`, `reserved:world`).
    #[arg(long, value_name = "SELECTOR")]
    pub label: Vec<String>,
    #[arg(long, value_name = "SELECTOR")]
    pub from_label: Vec<String>,
    #[arg(long, value_name = "SELECTOR")]
    pub to_label: Vec<String>,
    /// Flows from or to this Service (`[namespace/]name-prefix`).
    #[arg(long, value_name = "SERVICE")]
    pub service: Vec<String>,
    #[arg(long, value_name = "SERVICE")]
    pub from_service: Vec<String>,
    #[arg(long, value_name = "SERVICE")]
    pub to_service: Vec<String>,
    /// Flows from or to this port.
    #[arg(long, value_name = "PORT")]
    pub port: Vec<String>,
    #[arg(long, value_name = "PORT")]
    pub from_port: Vec<String>,
    #[arg(long, value_name = "PORT")]
    pub to_port: Vec<String>,
    /// tcp, udp, sctp, icmpv4, icmpv6.
    #[arg(long, value_name = "PROTO")]
    pub protocol: Vec<String>,
    #[arg(long, value_enum)]
    pub verdict: Vec<VerdictArg>,
    #[arg(long, value_enum)]
    pub traffic_direction: Vec<DirectionArg>,
    /// Flows with all of these TCP flags (comma-separated: SYN,ACK).
    #[arg(long, value_name = "FLAGS")]
    pub tcp_flags: Vec<String>,
    /// Flows seen on this interface (name).
    #[arg(long, value_name = "NAME")]
    pub interface: Vec<String>,
    /// Flows from this node (name or glob).
    #[arg(long, value_name = "NAME")]
    pub node_name: Vec<String>,
    #[arg(short = '4', long = "ipv4")]
    pub ipv4: bool,
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// IPv4 or IPv6 flows (`v4`, `v6`), as hubble observe spells it.
    #[arg(long, value_name = "v4|v6", value_parser = ["v4", "v6"])]
    pub ip_version: Vec<String>,

    /// compact (one readable line per flow), json (Hubble JSON lines, as
    /// `hubble observe -o jsonpb` and exporter files), or table.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Compact)]
    pub output: OutputFormat,
    /// Print the node name in compact and table output.
    #[arg(long)]
    pub print_node_name: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Compact,
    #[value(alias = "jsonpb")]
    Json,
    Table,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[value(rename_all = "UPPER")]
pub enum VerdictArg {
    Forwarded,
    Dropped,
    Error,
    Audit,
    Redirected,
    Traced,
    Translated,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectionArg {
    Ingress,
    Egress,
}

/// RFC 3339, or a duration before now.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let t = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => {
            let ago = humantime::parse_duration(s)
                .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 5m"))?;
            SystemTime::now()
                .checked_sub(ago)
                .ok_or_else(|| format!("{s} ago is before the epoch"))?
        }
    };
    let since_epoch = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| format!("{s} is before the epoch"))?;
    Ok(Timestamp {
        seconds: since_epoch.as_secs() as i64,
        nanos: since_epoch.subsec_nanos() as i32,
    })
}

fn tcp_flags(list: &str) -> Result<TcpFlags, String> {
    let mut flags = TcpFlags::default();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let flag = match name.to_ascii_uppercase().as_str() {
            "FIN" => &mut flags.fin,
            "SYN" => &mut flags.syn,
            "RST" => &mut flags.rst,
            "PSH" => &mut flags.psh,
            "ACK" => &mut flags.ack,
            "URG" => &mut flags.urg,
            "ECE" => &mut flags.ece,
            "CWR" => &mut flags.cwr,
            "NS" => &mut flags.ns,
            _ => {
                return Err(format!(
                    "unknown TCP flag {name:?} (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS)"
                ));
            }
        };
        *flag = true;
    }
    Ok(flags)
}

impl ObserveArgs {
    /// The request these flags describe.
    pub fn request(&self) -> Result<GetFlowsRequest, String> {
        // A file is read whole unless told otherwise; a server is asked
        // for what `hubble observe` asks.
        let number = match (self.last, self.first) {
            (Some(n), _) | (_, Some(n)) => n,
            _ if self.all || self.follow || self.since.is_some() || self.until.is_some() => 0,
            _ if self.input_file.is_some() => 0,
            _ => DEFAULT_LAST,
        };
        Ok(GetFlowsRequest {
            number,
            first: self.first.is_some(),
            follow: self.follow,
            whitelist: self.whitelist()?,
            since: self.since,
            until: self.until,
            ..Default::default()
        })
    }

    /// As `hubble observe` builds them: a "from" filter and, when a flag
    /// names either side (--ip, --pod, --namespace, --port), a "to" filter
    /// with that side swapped; every other flag is in both. The flow list
    /// matches either filter.
    fn whitelist(&self) -> Result<Vec<FlowFilter>, String> {
        let mut common = FlowFilter {
            protocol: self.protocol.clone(),
            verdict: self.verdict.iter().map(|v| verdict(*v) as i32).collect(),
            traffic_direction: self
                .traffic_direction
                .iter()
                .map(|d| match d {
                    DirectionArg::Ingress => TrafficDirection::Ingress,
                    DirectionArg::Egress => TrafficDirection::Egress,
                } as i32)
                .collect(),
            tcp_flags: self.tcp_flags.iter().map(|f| tcp_flags(f)).collect::<Result<_, _>>()?,
            interface: self
                .interface
                .iter()
                .map(|name| NetworkInterface {
                    index: 0,
                    name: name.clone(),
                })
                .collect(),
            node_name: self.node_name.clone(),
            source_ip: self.from_ip.clone(),
            destination_ip: self.to_ip.clone(),
            source_port: self.from_port.clone(),
            destination_port: self.to_port.clone(),
            ..Default::default()
        };
        if self.ipv4 || self.ip_version.iter().any(|v| v == "v4") {
            common.ip_version.push(IpVersion::IPv4 as i32);
        }
        if self.ipv6 || self.ip_version.iter().any(|v| v == "v6") {
            common.ip_version.push(IpVersion::IPv6 as i32);
        }
        // A pod name without a namespace is in --namespace's (or "default").
        let default_ns = self.namespace.first().map_or("default", String::as_str);
        let qualify = |pods: &[String], ns: &[String]| -> Vec<String> {
            let ns = ns.first().map_or(default_ns, String::as_str);
            pods.iter()
                .map(|p| {
                    if p.contains('/') {
                        p.clone()
                    } else {
                        format!("{ns}/{p}")
                    }
                })
                .collect()
        };
        let prefixes = |ns: &[String]| ns.iter().map(|n| format!("{n}/")).collect::<Vec<_>>();
        common.source_pod = qualify(&self.from_pod, &self.from_namespace);
        if common.source_pod.is_empty() {
            common.source_pod = prefixes(&self.from_namespace);
        }
        common.destination_pod = qualify(&self.to_pod, &self.to_namespace);
        if common.destination_pod.is_empty() {
            common.destination_pod = prefixes(&self.to_namespace);
        }

        common.source_label = self.from_label.clone();
        common.destination_label = self.to_label.clone();
        common.source_service = qualify(&self.from_service, &[]);
        common.destination_service = qualify(&self.to_service, &[]);
        let either_services = qualify(&self.service, &[]);

        let either_pods = if self.pod.is_empty() {
            // --namespace alone: every pod of it, on either side.
            if self.from_pod.is_empty() && self.to_pod.is_empty() {
                prefixes(&self.namespace)
            } else {
                Vec::new()
            }
        } else {
            qualify(&self.pod, &[])
        };
        if self.ip.is_empty()
            && either_pods.is_empty()
            && self.port.is_empty()
            && self.label.is_empty()
            && either_services.is_empty()
        {
            return Ok(if common == FlowFilter::default() {
                Vec::new()
            } else {
                vec![common]
            });
        }
        let mut from = common.clone();
        from.source_ip.extend(self.ip.iter().cloned());
        from.source_pod.extend(either_pods.iter().cloned());
        from.source_port.extend(self.port.iter().cloned());
        from.source_label.extend(self.label.iter().cloned());
        from.source_service.extend(either_services.iter().cloned());
        let mut to = common;
        to.destination_ip.extend(self.ip.iter().cloned());
        to.destination_pod.extend(either_pods);
        to.destination_port.extend(self.port.iter().cloned());
        to.destination_label.extend(self.label.iter().cloned());
        to.destination_service.extend(either_services);
        Ok(vec![from, to])
    }
}

fn verdict(v: VerdictArg) -> Verdict {
    match v {
        VerdictArg::Forwarded => Verdict::Forwarded,
        VerdictArg::Dropped => Verdict::Dropped,
        VerdictArg::Error => Verdict::Error,
        VerdictArg::Audit => Verdict::Audit,
        VerdictArg::Redirected => Verdict::Redirected,
        VerdictArg::Traced => Verdict::Traced,
        VerdictArg::Translated => Verdict::Translated,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ObserveArgs,
    }

    fn request(flags: &[&str]) -> GetFlowsRequest {
        let argv = std::iter::once("observe").chain(flags.iter().copied());
        Wrap::try_parse_from(argv).unwrap().args.request().unwrap()
    }

    #[test]
    fn counts_like_hubble_observe() {
        assert_eq!((request(&[]).number, request(&[]).follow), (20, false));
        assert_eq!(request(&["--last", "5"]).number, 5);
        let first = request(&["--first", "7"]);
        assert_eq!((first.number, first.first), (7, true));
        assert_eq!(request(&["--all"]).number, 0);
        let follow = request(&["-f"]);
        assert_eq!((follow.number, follow.follow), (0, true));
        assert_eq!(request(&["--since", "5m"]).number, 0);
        assert_eq!(request(&["--input-file", "events.log"]).number, 0);
        assert_eq!(request(&["--input-file", "-", "--last", "3"]).number, 3);
        assert!(Wrap::try_parse_from(["observe", "--first", "1", "-f"]).is_err());
        assert!(Wrap::try_parse_from(["observe", "--since", "yesterday-ish"]).is_err());
    }

    #[test]
    fn filters_like_hubble_observe() {
        assert!(request(&[]).whitelist.is_empty());
        let one = request(&["--from-ip", "10.0.0.0/8", "--to-port", "80", "--protocol", "tcp"]).whitelist;
        assert_eq!(one.len(), 1);
        assert_eq!(
            (
                &one[0].source_ip[..],
                &one[0].destination_port[..],
                &one[0].protocol[..]
            ),
            (
                &["10.0.0.0/8".to_string()][..],
                &["80".to_string()][..],
                &["tcp".to_string()][..]
            )
        );
        // Either side: one filter per side, the other flags in both.
        let either = request(&["--ip", "10.0.0.1", "--verdict", "DROPPED"]).whitelist;
        assert_eq!(either.len(), 2);
        assert_eq!((either[0].source_ip.len(), either[0].destination_ip.len()), (1, 0));
        assert_eq!((either[1].source_ip.len(), either[1].destination_ip.len()), (0, 1));
        assert!(either.iter().all(|f| f.verdict == [Verdict::Dropped as i32]));
        // Pods: default namespace, --namespace, and a namespace alone.
        let pods = request(&["--from-pod", "web", "--to-pod", "kube-system/dns"]).whitelist;
        assert_eq!(pods[0].source_pod, ["default/web"]);
        assert_eq!(pods[0].destination_pod, ["kube-system/dns"]);
        let ns = request(&["-n", "shop"]).whitelist;
        assert_eq!(
            (&ns[0].source_pod[..], &ns[1].destination_pod[..]),
            (&["shop/".to_string()][..], &["shop/".to_string()][..])
        );
        let pod_in_ns = request(&["-n", "shop", "--pod", "cart"]).whitelist;
        assert_eq!(pod_in_ns[0].source_pod, ["shop/cart"]);
        let flags = request(&["--tcp-flags", "SYN,ACK", "--traffic-direction", "ingress", "-4"]).whitelist;
        assert!(flags[0].tcp_flags[0].syn && flags[0].tcp_flags[0].ack && !flags[0].tcp_flags[0].fin);
        assert_eq!(flags[0].traffic_direction, [TrafficDirection::Ingress as i32]);
        assert_eq!(flags[0].ip_version, [IpVersion::IPv4 as i32]);
        let argv = ["observe", "--tcp-flags", "SYNN"];
        assert!(Wrap::try_parse_from(argv).unwrap().args.request().is_err());
    }
}
