//! Builds a Hubble L7 DNS record, the way Cilium writes the records of its
//! DNS proxy: `Type: L7`, event type 129, `l7.type` REQUEST or RESPONSE,
//! `l7.dns` with the question and, for an answer, rcode, addresses, TTL,
//! CNAMEs and answer types; the answer's latency; `is_reply` on answers;
//! Hubble's summary text. Source and destination are the packet's own: an
//! answer's source is the server, as on Hubble.

#![allow(deprecated)] // `Summary` and `reply`: deprecated, still written by Hubble.

use super::{RecordBuilder, RecordSource, ip_text};
use crate::{
    dns::{DnsMessage, DnsObservation},
    hubble::{DNS_OBSERVATION_SOURCE, EVENT_TYPE_L7, dns_rcode_name},
    proto::flow::{CiliumEventType, Dns, Flow, FlowType, L7FlowType, Layer7, layer7},
};

impl RecordBuilder {
    /// `source` is what the message's packet was stamped with (its uuid,
    /// time, interface and identities).
    pub fn build_dns(&self, source: &RecordSource, observation: DnsObservation) -> Flow {
        let mut flow = self.build(source).flow;
        flow.r#type = FlowType::L7 as i32;
        flow.event_type = Some(CiliumEventType {
            r#type: EVENT_TYPE_L7,
            sub_type: 0,
        });
        // An L7 record has no link layer and no trace point.
        flow.ethernet = None;
        flow.trace_observation_point = 0;
        let is_response = observation.message.is_response;
        flow.is_reply = Some(is_response);
        flow.reply = is_response;
        // Written once, for the summary and the record.
        let ips: Vec<String> = if is_response {
            observation.message.ips.iter().map(|ip| ip_text(*ip)).collect()
        } else {
            Vec::new()
        };
        flow.summary = summary(&observation.message, &ips);
        // The message is this record's alone: its strings move in.
        let m = observation.message;
        let dns = Dns {
            query: m.query,
            ips,
            ttl: if is_response { m.ttl } else { 0 },
            cnames: if is_response { m.cnames } else { Vec::new() },
            observation_source: DNS_OBSERVATION_SOURCE.to_owned(),
            rcode: if is_response { u32::from(m.rcode) } else { 0 },
            qtypes: m.qtypes,
            rrtypes: if is_response { m.rrtypes } else { Vec::new() },
        };
        flow.l7 = Some(Layer7 {
            r#type: if is_response {
                L7FlowType::Response
            } else {
                L7FlowType::Request
            } as i32,
            latency_ns: observation.latency_ns.unwrap_or(0),
            record: Some(layer7::Record::Dns(dns)),
        });
        flow
    }
}

/// Hubble's summary: `DNS Query <name> <types>`, or `DNS Answer <answer>
/// TTL: <ttl> (Query <name> <types>)`; `ips` are the answer's addresses
/// as written.
fn summary(m: &DnsMessage, ips: &[String]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(64 + m.query.len());
    if m.is_response {
        text.push_str("DNS Answer ");
        push_answer_text(&mut text, m, ips);
        let _ = write!(text, " TTL: {} (Query {} ", m.ttl, m.query);
        push_joined(&mut text, &m.qtypes);
        text.push(')');
    } else {
        text.push_str("DNS Query ");
        text.push_str(&m.query);
        text.push(' ');
        push_joined(&mut text, &m.qtypes);
    }
    text
}

fn push_joined(text: &mut String, parts: &[String]) {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(part);
    }
}

/// The answer part of Hubble's summary: the RCODE when it is an error,
/// otherwise the addresses and CNAMEs, each list quoted as Go's `%q`
/// quotes it (addresses need no escaping).
fn push_answer_text(text: &mut String, m: &DnsMessage, ips: &[String]) {
    if m.rcode != 0 {
        text.push_str("RCode: ");
        text.push_str(dns_rcode_name(m.rcode));
        return;
    }
    if !ips.is_empty() {
        text.push('"');
        push_joined(text, ips);
        text.push('"');
    }
    if !m.cnames.is_empty() {
        if !ips.is_empty() {
            text.push(' ');
        }
        // Rare, and a name may hold characters `%q` escapes.
        use std::fmt::Write as _;
        let _ = write!(text, "CNAMEs: {:?}", m.cnames.join(","));
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{FlowKey, hook, ip_proto};

    use super::*;
    use crate::{
        dns::DnsMessage,
        enrich::Identities,
        flow_table::{FlowState, FlowUpdate},
        proto::flow::{Verdict, layer4::Protocol},
        record::Stamper,
    };

    fn observation(is_response: bool, rcode: u16, latency_ns: Option<u64>) -> DnsObservation {
        let (src_port, dst_port) = if is_response { (53, 40000) } else { (40000, 53) };
        DnsObservation {
            key: FlowKey {
                src_addr: [
                    10,
                    0,
                    0,
                    if is_response { 53 } else { 5 },
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
                dst_addr: [
                    10,
                    0,
                    0,
                    if is_response { 5 } else { 53 },
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
                src_port,
                dst_port,
                ifindex: 7,
                protocol: ip_proto::UDP,
                ip_version: 4,
                hook: hook::INGRESS,
                ..Default::default()
            },
            time_ns: 1_000,
            message: DnsMessage {
                id: 1,
                is_response,
                rcode,
                query: "www.example.com.".into(),
                qtypes: vec!["A".into()],
                ips: if is_response && rcode == 0 {
                    vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()]
                } else {
                    vec![]
                },
                cnames: if is_response && rcode == 0 {
                    vec!["web.example.net.".into()]
                } else {
                    vec![]
                },
                rrtypes: if is_response && rcode == 0 {
                    vec!["CNAME".into(), "A".into(), "A".into()]
                } else {
                    vec![]
                },
                ttl: if is_response && rcode == 0 { 60 } else { 0 },
                answers_missing: 0,
            },
            latency_ns,
        }
    }

    fn build(o: &DnsObservation) -> Flow {
        let update = FlowUpdate {
            key: o.key,
            stats: Default::default(),
            packets: 0,
            bytes: 0,
            tcp_flags: 0,
            state: FlowState::Begin,
            is_reply: Some(o.message.is_response),
        };
        let source = Stamper::default().stamp(&update, Identities::default());
        RecordBuilder {
            node_name: "node-1".into(),
            ..Default::default()
        }
        .build_dns(&source, o.clone())
    }

    fn dns(flow: &Flow) -> &Dns {
        match flow.l7.as_ref().unwrap().record.as_ref().unwrap() {
            layer7::Record::Dns(d) => d,
        }
    }

    #[test]
    fn a_query_is_an_l7_request_with_the_question_only() {
        let flow = build(&observation(false, 0, None));
        assert_eq!(flow.r#type, FlowType::L7 as i32);
        assert_eq!(flow.event_type.unwrap().r#type, 129);
        assert_eq!(flow.verdict, Verdict::Forwarded as i32);
        assert_eq!(flow.is_reply, Some(false));
        assert_eq!(flow.l7.as_ref().unwrap().r#type, L7FlowType::Request as i32);
        assert_eq!(flow.summary, "DNS Query www.example.com. A");
        let d = dns(&flow);
        assert_eq!(
            (d.query.as_str(), d.qtypes.as_slice()),
            ("www.example.com.", &["A".to_owned()][..])
        );
        assert!(d.ips.is_empty() && d.rrtypes.is_empty() && d.rcode == 0);
        assert_eq!(flow.ip.as_ref().unwrap().source, "10.0.0.5");
        assert!(matches!(flow.l4.unwrap().protocol, Some(Protocol::Udp(u)) if u.destination_port == 53));
        assert!(flow.ethernet.is_none());
    }

    #[test]
    fn an_answer_is_an_l7_response_from_the_server_with_its_latency() {
        let flow = build(&observation(true, 0, Some(2_500_000)));
        assert_eq!(flow.is_reply, Some(true));
        let l7 = flow.l7.as_ref().unwrap();
        assert_eq!((l7.r#type, l7.latency_ns), (L7FlowType::Response as i32, 2_500_000));
        assert_eq!(flow.ip.as_ref().unwrap().source, "10.0.0.53");
        assert_eq!(
            flow.summary,
            r#"DNS Answer "192.0.2.1,192.0.2.2" CNAMEs: "web.example.net." TTL: 60 (Query www.example.com. A)"#
        );
        let d = dns(&flow);
        assert_eq!(d.ips, ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(d.rrtypes, ["CNAME", "A", "A"]);
        assert_eq!(d.ttl, 60);
    }

    #[test]
    fn an_error_answer_names_its_rcode() {
        let flow = build(&observation(true, 3, None));
        assert_eq!(
            flow.summary,
            "DNS Answer RCode: Non-Existent Domain TTL: 0 (Query www.example.com. A)"
        );
        assert_eq!(dns(&flow).rcode, 3);
        assert_eq!(flow.l7.unwrap().latency_ns, 0);
    }
}
