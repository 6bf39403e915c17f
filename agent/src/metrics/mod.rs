//! Prometheus metrics: Hubble's names and labels, so existing dashboards
//! and alerts work, plus hubcap's own `hubcap_*` ones.
//!
//! Hubble counts flow *events*; hubcap counts forwarded flow *records* (one
//! per flow direction per report, never an empty one), so
//! `hubble_flows_processed_total` grows with flows, not with packets; dropped
//! packets are counted one by one, as Hubble's drop events are. Packet and
//! byte totals are in
//! `hubcap_flow_packets_total` and `hubcap_flow_bytes_total`.
//!
//! Written in the classic Prometheus text format, which every scraper and
//! `promtool check metrics` read.

mod context;
mod family;

use agent_common::{Counter, hook, ip_proto, tcp_flags};
pub use context::{ContextKind, Contexts};
use family::Families;
pub use family::Family;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::{
    datapath::CounterValues,
    drop_reasons::HUBBLE_REASONS,
    flow_table::FlowUpdate,
    hubble::trace_point,
    proto::flow::{LostEvent, LostEventSource},
    record::FlowRecord,
};

/// The `counter` labels of `hubcap_kernel_packets_total`, with their
/// counters (named in `agent_common::Counter` only).
fn kernel_packet_counters() -> impl Iterator<Item = (&'static str, Counter)> {
    Counter::ALL
        .into_iter()
        .filter_map(|c| c.packet_label().map(|label| (label, c)))
}

/// Every source a loss can be reported from (Hubble's enum).
const LOST_EVENT_SOURCES: [LostEventSource; 4] = [
    LostEventSource::UnknownLostEventSource,
    LostEventSource::PerfEventRingBuffer,
    LostEventSource::ObserverEventsQueue,
    LostEventSource::HubbleRingBuffer,
];

/// A metric's own label values followed by the context labels' values.
pub fn labels<'a>(own: &[&'a str], context: &'a [String]) -> Vec<&'a str> {
    own.iter().copied().chain(context.iter().map(String::as_str)).collect()
}

/// The `protocol` label of `hubble_flows_processed_total`: Hubble's L4
/// name, or what Hubble writes for a flow without one.
fn metric_protocol(l4_protocol: &'static str) -> &'static str {
    if l4_protocol.is_empty() {
        crate::hubble::protocol::UNKNOWN_L4
    } else {
        l4_protocol
    }
}

/// The `source` label of `hubble_lost_events_total`, as Hubble writes it.
fn lost_source_label(source: LostEventSource) -> String {
    source.as_str_name().to_lowercase()
}

pub struct Metrics {
    registry: Registry,
    /// Extra `source`/`destination` labels on the flow, drop and TCP-flag
    /// metrics (Hubble's context options), when asked for.
    contexts: Contexts,
    /// Labels `protocol`, `type`, `subtype`, `verdict`, as Hubble's flow
    /// metric.
    pub flows_processed: IntCounterVec,
    /// Packets and bytes of written records by observation point, verdict,
    /// protocol and the context labels: what the dashboards rank pods,
    /// workloads and namespaces by.
    pub traffic_packets: IntCounterVec,
    pub traffic_bytes: IntCounterVec,
    /// Labels `reason`, `protocol`.
    pub drops: IntCounterVec,
    /// Labels `flag` (SYN, SYN-ACK, FIN, RST), `family` (IPv4, IPv6).
    pub tcp_flags: IntCounterVec,
    /// Label `source` (lower-case LostEventSource name).
    pub lost_events: IntCounterVec,

    pub ring_records_read: IntCounter,
    pub ring_records_lost: IntCounter,
    pub kernel_flow_entries: IntGauge,
    pub kernel_flow_capacity: IntGauge,
    /// Label `counter`: non_ip, truncated, malformed, fragments, map_full.
    pub kernel_packets: IntCounterVec,
    pub flow_table_directions: IntGauge,
    pub flows_adopted_from_map: IntCounter,
    pub flow_events_left_to_sweep: IntCounter,
    pub attached_interfaces: IntGauge,
    /// Programs attached, labels `interface`, `hook` (ingress, egress),
    /// `mode` (tcx, tc): how a user sees hubcap is attached where bpftool
    /// cannot show tcx links.
    pub attachments: IntGaugeVec,
    /// Labels `interface`, `hook` (ingress, egress).
    pub flow_packets: IntCounterVec,
    pub flow_bytes: IntCounterVec,
    pub drops_filtered: IntCounter,
    pub build_info: IntGaugeVec,
    /// The families the other modules own (see [`Family`]).
    families: Families,
}

impl Metrics {
    pub fn new() -> Metrics {
        Self::with_contexts(Contexts::default())
    }

    pub fn with_contexts(contexts: Contexts) -> Metrics {
        let extra = contexts.label_names();
        let with_context = |labels: &[&'static str]| -> Vec<&'static str> {
            labels.iter().copied().chain(extra.iter().copied()).collect()
        };
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let build_info =
            IntGaugeVec::new(Opts::new("hubcap_build_info", "hubcap's version"), &["version"]).expect("valid metric");
        registry.register(Box::new(build_info.clone())).expect("unique metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let metrics = Metrics {
            traffic_packets: counter_vec(
                "hubcap_traffic_packets_total",
                "Packets in written records, by subtype (observation point), verdict and protocol",
                &with_context(&["subtype", "verdict", "protocol"]),
            ),
            traffic_bytes: counter_vec(
                "hubcap_traffic_bytes_total",
                "Bytes in written records, by subtype (observation point), verdict and protocol",
                &with_context(&["subtype", "verdict", "protocol"]),
            ),
            flows_processed: counter_vec(
                "hubble_flows_processed_total",
                "Flow records processed (dropped packets: each one), by protocol, type, subtype and verdict",
                &with_context(&["protocol", "type", "subtype", "verdict"]),
            ),
            drops: counter_vec(
                "hubble_drop_total",
                "Dropped flow records, by reason and protocol",
                &with_context(&["reason", "protocol"]),
            ),
            tcp_flags: counter_vec(
                "hubble_tcp_flags_total",
                "TCP flags in flow records, by flag and IP family",
                &with_context(&["flag", "family"]),
            ),
            lost_events: counter_vec(
                "hubble_lost_events_total",
                "Events lost, by where they were lost",
                &["source"],
            ),
            ring_records_read: counter(
                "hubcap_ringbuf_records_read_total",
                "Records read from the kernel ring buffer",
            ),
            ring_records_lost: counter(
                "hubcap_ringbuf_records_lost_total",
                "Records the kernel ring buffer had no room for (their counts stay in the flow map)",
            ),
            kernel_flow_entries: gauge(
                "hubcap_kernel_flow_entries",
                "Entries in the kernel flow map at the last sweep",
            ),
            kernel_flow_capacity: gauge(
                "hubcap_kernel_flow_capacity",
                "Capacity of each kernel flow map (IPv4 and IPv6 have one each)",
            ),
            kernel_packets: counter_vec(
                "hubcap_kernel_packets_total",
                "Packets the kernel counted specially: non_ip, truncated, malformed and map_full are in no flow; \
                 fragments are in flows, without ports",
                &["counter"],
            ),
            flow_table_directions: gauge("hubcap_flow_table_directions", "Open flow directions in the flow table"),
            flows_adopted_from_map: counter(
                "hubcap_flows_adopted_from_map_total",
                "Flow directions first found by the map sweep, their NEW record lost (their counts were not)",
            ),
            flow_events_left_to_sweep: counter(
                "hubcap_flow_events_left_to_sweep_total",
                "Ring records for a flow direction not in the table (ended, or its NEW record lost) or from an \
                 older kernel entry: their counts are in its records or the sweep adopts them",
            ),
            attached_interfaces: gauge(
                "hubcap_attached_interfaces",
                "Interfaces hubcap's programs are attached to",
            ),
            attachments: gauge_vec(
                "hubcap_attachments",
                "Programs hubcap attached, by interface, hook and mode (1 while attached)",
                &["interface", "hook", "mode"],
            ),
            flow_packets: counter_vec(
                "hubcap_flow_packets_total",
                "Packets in written flow records, by interface and tc hook",
                &["interface", "hook"],
            ),
            flow_bytes: counter_vec(
                "hubcap_flow_bytes_total",
                "Bytes in written flow records, by interface and tc hook",
                &["interface", "hook"],
            ),
            drops_filtered: counter(
                "hubcap_drops_filtered_total",
                "Packets freed as NO_SOCKET that are not drops: ICMP echo replies a raw socket (ping) already received",
            ),
            build_info,
            registry,
            contexts,
            families: Families::default(),
        };
        metrics.start_at_zero();
        metrics
    }

    /// Makes the series that alerts watch exist at 0 from the start, so
    /// that "nothing lost" and "metric missing" differ.
    fn start_at_zero(&self) {
        for source in LOST_EVENT_SOURCES {
            self.lost_events.with_label_values(&[&lost_source_label(source)]);
        }
        let empty = self.contexts.empty();
        for reason in HUBBLE_REASONS {
            for protocol in crate::hubble::protocol::RECORDED {
                self.drops
                    .with_label_values(&labels(&[reason.as_str_name(), protocol], &empty));
            }
        }
        for (name, _) in kernel_packet_counters() {
            self.kernel_packets.with_label_values(&[name]);
        }
    }

    /// Counts a record of `update` in Hubble's and hubcap's flow metrics.
    pub fn count_record(&self, update: &FlowUpdate, record: &FlowRecord) {
        let context = self.contexts.values(&record.flow);
        if update.key.hook == hook::DROP {
            // Hubble counts each dropped packet once, by its reason.
            let reason = record.flow.drop_reason_desc().as_str_name();
            let protocol = record.flow.l4_parts().protocol;
            // Hubble has an event per dropped packet; so does this count.
            self.flows_processed
                .with_label_values(&labels(&[metric_protocol(protocol), "Drop", "", "DROPPED"], &context))
                .inc_by(update.packets);
            self.drops
                .with_label_values(&labels(&[reason, protocol], &context))
                .inc_by(update.packets);
            self.count_traffic(&["", "DROPPED", protocol], &context, update);
            return;
        }
        let point = record.flow.trace_observation_point();
        self.count_traffic(
            &[trace_point(point).1, "FORWARDED", record.flow.l4_parts().protocol],
            &context,
            update,
        );
        let protocol = metric_protocol(record.flow.l4_parts().protocol);
        self.flows_processed
            .with_label_values(&labels(
                &[protocol, "Trace", trace_point(point).1, "FORWARDED"],
                &context,
            ))
            .inc();
        let family = if update.key.ip_version == 6 { "IPv6" } else { "IPv4" };
        let flags = update.tcp_flags;
        if update.key.protocol == ip_proto::TCP {
            let syn = flags & tcp_flags::SYN != 0;
            let ack = flags & tcp_flags::ACK != 0;
            for (set, name) in [
                (syn && !ack, "SYN"),
                (syn && ack, "SYN-ACK"),
                (flags & tcp_flags::FIN != 0, "FIN"),
                (flags & tcp_flags::RST != 0, "RST"),
            ] {
                if set {
                    self.tcp_flags
                        .with_label_values(&labels(&[name, family], &context))
                        .inc();
                }
            }
        }
        let interface = record.flow.interface.as_ref().map_or("", |i| i.name.as_str());
        let hook_name = if update.key.hook == hook::INGRESS {
            "ingress"
        } else {
            "egress"
        };
        self.flow_packets
            .with_label_values(&[interface, hook_name])
            .inc_by(update.packets);
        self.flow_bytes
            .with_label_values(&[interface, hook_name])
            .inc_by(update.bytes);
    }

    fn count_traffic(&self, base: &[&str], context: &[String], update: &FlowUpdate) {
        let labels = labels(base, context);
        self.traffic_packets.with_label_values(&labels).inc_by(update.packets);
        self.traffic_bytes.with_label_values(&labels).inc_by(update.bytes);
    }

    /// Counts a loss report by its source.
    pub fn count_lost(&self, lost: &LostEvent) {
        let source = LostEventSource::try_from(lost.source).unwrap_or(LostEventSource::UnknownLostEventSource);
        self.lost_events
            .with_label_values(&[&lost_source_label(source)])
            .inc_by(lost.num_events_lost);
    }

    /// Counts what the kernel counted since the last call (`delta`).
    pub fn count_kernel(&self, delta: &CounterValues) {
        self.ring_records_lost.inc_by(delta.get(Counter::RingBufFull));
        for (name, counter) in kernel_packet_counters() {
            self.kernel_packets
                .with_label_values(&[name])
                .inc_by(delta.get(counter));
        }
        self.drops_filtered.inc_by(delta.get(Counter::EchoRepliesDelivered));
    }

    /// The counter family `family` with Hubble's context labels after its
    /// own (`--metrics-context`), registered on first use; a series'
    /// values are its own then [`Metrics::context_values`].
    pub fn context_counters(&self, family: &Family) -> IntCounterVec {
        self.families
            .counters_with(&self.registry, family, &self.contexts.label_names())
    }

    /// The context labels' values for `flow`.
    pub fn context_values(&self, flow: &crate::proto::flow::Flow) -> Vec<String> {
        self.contexts.values(flow)
    }

    /// The context options (for the DNS metrics' `query`).
    pub fn contexts(&self) -> &Contexts {
        &self.contexts
    }

    /// Counts an L7 record in Hubble's flow metric, as Hubble does: the
    /// protocol and subtype are the L7 protocol's (`DNS`).
    pub fn count_l7(&self, flow: &crate::proto::flow::Flow) {
        let context = self.contexts.values(flow);
        self.flows_processed
            .with_label_values(&labels(&["DNS", "L7", "DNS", "FORWARDED"], &context))
            .inc();
    }

    /// The counter family `family`, registered on first use.
    pub fn counters(&self, family: &Family) -> IntCounterVec {
        self.families.counters(&self.registry, family)
    }

    /// The gauge family `family`, registered on first use.
    pub fn gauges(&self, family: &Family) -> IntGaugeVec {
        self.families.gauges(&self.registry, family)
    }

    /// The one series of an unlabelled counter family (at 0 from now).
    pub fn counter(&self, family: &Family) -> IntCounter {
        self.counters(family).with_label_values::<&str>(&[])
    }

    /// The one series of an unlabelled gauge family.
    pub fn gauge(&self, family: &Family) -> IntGauge {
        self.gauges(family).with_label_values::<&str>(&[])
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("encoding metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
