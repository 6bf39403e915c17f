//! Hubble's DNS metrics, counted from the L7 DNS records as Cilium's
//! `dns` metrics handler counts them: queries and responses by rcode,
//! question types and number of addresses returned, and each answer
//! record's type. Registered with the first DNS record.

use prometheus::IntCounterVec;

use crate::{
    hubble::dns_rcode_metric_label,
    metrics::{Family, Metrics},
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
/// The same with Hubble's `query` option (`--metrics-dns-query`).
const QUERIES_BY_NAME: Family = Family {
    labels: &["rcode", "qtypes", "ips_returned", "query"],
    ..QUERIES
};
const RESPONSES_BY_NAME: Family = Family {
    labels: &["rcode", "qtypes", "ips_returned", "query"],
    ..RESPONSES
};
const RESPONSE_TYPES_BY_NAME: Family = Family {
    labels: &["type", "qtypes", "query"],
    ..RESPONSE_TYPES
};

pub struct DnsMetrics {
    queries: IntCounterVec,
    responses: IntCounterVec,
    response_types: IntCounterVec,
    by_name: bool,
}

impl DnsMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let by_name = metrics.contexts().dns_query();
        let [queries, responses, response_types] = if by_name {
            [QUERIES_BY_NAME, RESPONSES_BY_NAME, RESPONSE_TYPES_BY_NAME]
        } else {
            [QUERIES, RESPONSES, RESPONSE_TYPES]
        }
        .map(|family| metrics.context_counters(&family));
        DnsMetrics {
            queries,
            responses,
            response_types,
            by_name,
        }
    }

    pub fn count(&self, metrics: &Metrics, flow: &Flow) {
        let Some(layer7::Record::Dns(dns)) = flow.l7.as_ref().and_then(|l7| l7.record.as_ref()) else {
            return;
        };
        let context = metrics.context_values(flow);
        let qtypes = dns.qtypes.join(",");
        let ips = dns.ips.len().to_string();
        let query = self.by_name.then(|| metrics.contexts().dns_query_value(&dns.query));
        let query = query.as_deref();
        if flow.is_reply != Some(true) {
            // A query has no rcode: Hubble leaves the label empty.
            self.queries
                .with_label_values(&series(&["", &qtypes, &ips], query, &context))
                .inc();
            return;
        }
        let rcode = dns_rcode_metric_label(dns.rcode);
        self.responses
            .with_label_values(&series(&[rcode, &qtypes, &ips], query, &context))
            .inc();
        for rrtype in &dns.rrtypes {
            self.response_types
                .with_label_values(&series(&[rrtype, &qtypes], query, &context))
                .inc();
        }
    }
}

/// A series' label values: its own, the query's when asked for, then the
/// context labels' (one vector, no copies of the strings).
fn series<'a>(own: &[&'a str], query: Option<&'a str>, context: &'a [String]) -> Vec<&'a str> {
    let mut values = Vec::with_capacity(own.len() + 1 + context.len());
    values.extend_from_slice(own);
    values.extend(query);
    values.extend(context.iter().map(String::as_str));
    values
}
