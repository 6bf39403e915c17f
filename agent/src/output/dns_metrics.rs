//! Hubble's DNS metrics, counted from the L7 DNS records as Cilium's
//! `dns` metrics handler counts them: queries and responses by rcode,
//! question types and number of addresses returned, and each answer
//! record's type. Registered with the first DNS record.

use prometheus::IntCounterVec;

use crate::{
    metrics::{Family, Metrics, labels},
    proto::flow::{Flow, layer7},
};

const QUERIES: Family = Family {
    name: "hubble_dns_queries_total",
    help: "Number of DNS queries observed",
    labels: &["rcode", "qtypes", "ips_returned"],
};
const RESPONSES: Family = Family {
    name: "hubble_dns_responses_total",
    help: "Number of DNS responses observed",
    labels: &["rcode", "qtypes", "ips_returned"],
};
const RESPONSE_TYPES: Family = Family {
    name: "hubble_dns_response_types_total",
    help: "Number of DNS answer records observed, by type",
    labels: &["type", "qtypes"],
};

pub struct DnsMetrics {
    queries: IntCounterVec,
    responses: IntCounterVec,
    response_types: IntCounterVec,
}

impl DnsMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        DnsMetrics {
            queries: metrics.context_counters(&QUERIES),
            responses: metrics.context_counters(&RESPONSES),
            response_types: metrics.context_counters(&RESPONSE_TYPES),
        }
    }

    pub fn count(&self, metrics: &Metrics, flow: &Flow) {
        let Some(layer7::Record::Dns(dns)) = flow.l7.as_ref().and_then(|l7| l7.record.as_ref()) else {
            return;
        };
        let context = metrics.context_values(flow);
        let qtypes = dns.qtypes.join(",");
        let ips = dns.ips.len().to_string();
        if flow.is_reply != Some(true) {
            // A query has no rcode: Hubble leaves the label empty.
            self.queries
                .with_label_values(&labels(&["", &qtypes, &ips], &context))
                .inc();
            return;
        }
        let rcode = metric_rcode_name(dns.rcode);
        self.responses
            .with_label_values(&labels(&[rcode, &qtypes, &ips], &context))
            .inc();
        for rrtype in &dns.rrtypes {
            self.response_types
                .with_label_values(&labels(&[rrtype, &qtypes], &context))
                .inc();
        }
    }
}

/// The `rcode` label, with the names of Hubble's metrics (which differ
/// from its summaries' for 9 and beyond).
fn metric_rcode_name(rcode: u32) -> &'static str {
    match rcode {
        0 => "No Error",
        1 => "Format Error",
        2 => "Server Failure",
        3 => "Non-Existent Domain",
        4 => "Not Implemented",
        5 => "Query Refused",
        6 => "Name Exists when it should not",
        7 => "RR Set Exists when it should not",
        8 => "RR Set that should exist does not",
        9 => "Not Authorized",
        10 => "Name not contained in zone",
        11 => "DSO-TYPE Not Implemented",
        _ => "",
    }
}
