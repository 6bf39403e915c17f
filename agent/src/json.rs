//! Hubble's JSON: protojson with `UseProtoNames`, as Hubble's exporter and
//! `hubble observe -o jsonpb` write it.
//!
//! The rules: proto field names as keys; enums by name; fields at their zero
//! value left out (but a present message is written, even if empty, and a
//! `BoolValue` prints `false` too); 64-bit integers as strings; timestamps in
//! RFC 3339 UTC with 0, 3, 6 or 9 fractional digits; compact, one object per
//! line. Written by hand because it is the agent's hottest output path; the
//! tests check it against prost-reflect's protojson serializer.

// `Summary`, `reply` and `drop_reason` are deprecated in Hubble's proto but still
// written by Hubble, so hubcap writes them too.
#![allow(deprecated)]

use std::io::Write as _;

use prost_types::Timestamp;

use crate::proto::flow::{
    DropReason, Endpoint, Flow, FlowType, IpVersion, L7FlowType, Layer7, LostEvent, LostEventSource,
    TraceObservationPoint, TraceReason, TrafficDirection, Verdict, layer4, layer7,
};
use crate::{
    hubble::write_rfc3339,
    record::{AggregateCounts, FlowRecord, RecordCounts, STRUCT_TYPE_URL},
};

/// What one exporter line carries.
pub enum ExportPayload<'a> {
    /// A flow with hubcap's counts, when it has them (a flow read back from
    /// elsewhere may not).
    Flow(&'a Flow, Option<Counts<'a>>),
    LostEvents(&'a LostEvent),
}

/// The counts written in a flow's `extensions`.
#[derive(Clone, Copy)]
pub enum Counts<'a> {
    /// One record's.
    Record(&'a RecordCounts),
    /// The sums of an aggregated flow log's line.
    Aggregate(&'a AggregateCounts),
}

impl<'a> ExportPayload<'a> {
    pub fn record(record: &'a FlowRecord) -> Self {
        ExportPayload::Flow(&record.flow, Some(Counts::Record(&record.counts)))
    }
}

/// Appends one `ExportEvent` line, `\n` included.
pub fn write_export_event(out: &mut Vec<u8>, payload: ExportPayload<'_>, node_name: &str, time: &Timestamp) {
    let mut o = Obj::open(out);
    match payload {
        ExportPayload::Flow(flow, counts) => {
            o.key("flow");
            write_flow(o.out, flow, counts);
        }
        ExportPayload::LostEvents(lost) => {
            o.key("lost_events");
            write_lost_event(o.out, lost);
        }
    }
    o.string("node_name", node_name);
    o.key("time");
    write_timestamp(o.out, time);
    o.close();
    out.push(b'\n');
}

pub fn write_lost_event(out: &mut Vec<u8>, lost: &LostEvent) {
    let mut o = Obj::open(out);
    if lost.source != 0 {
        o.enum_name(
            "source",
            LostEventSource::try_from(lost.source).map(|s| s.as_str_name()),
            lost.source,
        );
    }
    o.u64_string("num_events_lost", lost.num_events_lost);
    if let Some(cpu) = lost.cpu {
        o.key("cpu");
        write_i64(o.out, i64::from(cpu));
    }
    for (key, time) in [("first", &lost.first), ("last", &lost.last)] {
        if let Some(time) = time {
            o.key(key);
            write_timestamp(o.out, time);
        }
    }
    o.close();
}

/// Writes a flow. `counts`, when given, become `extensions` (a Struct).
pub fn write_flow(out: &mut Vec<u8>, f: &Flow, counts: Option<Counts<'_>>) {
    let mut o = Obj::open(out);
    if let Some(t) = &f.time {
        o.key("time");
        write_timestamp(o.out, t);
    }
    o.string("uuid", &f.uuid);
    if let Some(e) = &f.emitter {
        o.key("emitter");
        let mut e_obj = Obj::open(o.out);
        e_obj.string("name", &e.name);
        e_obj.string("version", &e.version);
        e_obj.close();
    }
    o.enum_name(
        "verdict",
        Verdict::try_from(f.verdict).map(|v| v.as_str_name()),
        f.verdict,
    );
    o.u32("drop_reason", f.drop_reason);
    if let Some(eth) = &f.ethernet {
        o.key("ethernet");
        let mut e = Obj::open(o.out);
        e.string("source", &eth.source);
        e.string("destination", &eth.destination);
        e.close();
    }
    if let Some(ip) = &f.ip {
        o.key("IP");
        let mut i = Obj::open(o.out);
        i.string("source", &ip.source);
        i.string("source_xlated", &ip.source_xlated);
        i.string("destination", &ip.destination);
        i.enum_name(
            "ipVersion",
            IpVersion::try_from(ip.ip_version).map(|v| v.as_str_name()),
            ip.ip_version,
        );
        i.bool("encrypted", ip.encrypted);
        i.close();
    }
    if let Some(l4) = &f.l4 {
        o.key("l4");
        write_l4(o.out, l4);
    }
    if let Some(ep) = &f.source {
        o.key("source");
        write_endpoint(o.out, ep);
    }
    if let Some(ep) = &f.destination {
        o.key("destination");
        write_endpoint(o.out, ep);
    }
    o.enum_name("Type", FlowType::try_from(f.r#type).map(|v| v.as_str_name()), f.r#type);
    o.string("node_name", &f.node_name);
    o.strings("node_labels", &f.node_labels);
    o.strings("source_names", &f.source_names);
    o.strings("destination_names", &f.destination_names);
    if let Some(l7) = &f.l7 {
        o.key("l7");
        write_l7(o.out, l7);
    }
    o.bool("reply", f.reply);
    if let Some(et) = &f.event_type {
        o.key("event_type");
        let mut e = Obj::open(o.out);
        e.i32("type", et.r#type);
        e.i32("sub_type", et.sub_type);
        e.close();
    }
    for (name, svc) in [
        ("source_service", &f.source_service),
        ("destination_service", &f.destination_service),
    ] {
        if let Some(svc) = svc {
            o.key(name);
            let mut s = Obj::open(o.out);
            s.string("name", &svc.name);
            s.string("namespace", &svc.namespace);
            s.close();
        }
    }
    o.enum_name(
        "traffic_direction",
        TrafficDirection::try_from(f.traffic_direction).map(|v| v.as_str_name()),
        f.traffic_direction,
    );
    o.u32("policy_match_type", f.policy_match_type);
    o.enum_name(
        "trace_observation_point",
        TraceObservationPoint::try_from(f.trace_observation_point).map(|v| v.as_str_name()),
        f.trace_observation_point,
    );
    o.enum_name(
        "trace_reason",
        TraceReason::try_from(f.trace_reason).map(|v| v.as_str_name()),
        f.trace_reason,
    );
    o.enum_name(
        "drop_reason_desc",
        DropReason::try_from(f.drop_reason_desc).map(|v| v.as_str_name()),
        f.drop_reason_desc,
    );
    if let Some(reply) = f.is_reply {
        o.key("is_reply");
        o.out.extend_from_slice(if reply { b"true" } else { b"false" });
    }
    if let Some(iface) = &f.interface {
        o.key("interface");
        let mut i = Obj::open(o.out);
        i.u32("index", iface.index);
        i.string("name", &iface.name);
        i.close();
    }
    o.u32("proxy_port", f.proxy_port);
    o.u64_string("socket_cookie", f.socket_cookie);
    o.u64_string("cgroup_id", f.cgroup_id);
    o.string("Summary", &f.summary);
    if let Some(counts) = counts {
        o.key("extensions");
        write_counts(o.out, counts);
    }
    if let Some(a) = &f.aggregate {
        // Declared after `extensions` in Hubble's flow.proto.
        o.key("aggregate");
        let mut agg = Obj::open(o.out);
        agg.u32("ingress_flow_count", a.ingress_flow_count);
        agg.u32("egress_flow_count", a.egress_flow_count);
        agg.u32("unknown_direction_flow_count", a.unknown_direction_flow_count);
        agg.close();
    }
    o.close();
}

/// `{"@type":"...Struct","value":{...}}`: Struct keys sorted, as Go's
/// protojson writes a map.
fn write_counts(out: &mut Vec<u8>, counts: Counts<'_>) {
    let (bytes, packets, start) = match counts {
        Counts::Record(c) => (c.bytes, c.packets, &c.flow_start_time),
        Counts::Aggregate(c) => (c.bytes, c.packets, &c.flow_start_time),
    };
    let mut any = Obj::open(out);
    any.string("@type", STRUCT_TYPE_URL);
    any.key("value");
    let mut v = Obj::open(any.out);
    v.key("bytes");
    write_u64(v.out, bytes);
    v.key("flow_start_time");
    v.out.push(b'"');
    write_rfc3339(v.out, start);
    v.out.push(b'"');
    if let Counts::Record(c) = counts {
        v.key("flow_state");
        write_str(v.out, c.state.letter());
        if let Some(reason) = &c.kernel_drop_reason {
            v.key("kernel_drop_reason");
            write_str(v.out, reason);
        }
    }
    v.key("packets");
    write_u64(v.out, packets);
    v.close();
    any.close();
}

fn write_l7(out: &mut Vec<u8>, l7: &Layer7) {
    let mut o = Obj::open(out);
    o.enum_name(
        "type",
        L7FlowType::try_from(l7.r#type).map(|t| t.as_str_name()),
        l7.r#type,
    );
    o.u64_string("latency_ns", l7.latency_ns);
    if let Some(layer7::Record::Dns(dns)) = &l7.record {
        o.key("dns");
        let mut d = Obj::open(o.out);
        d.string("query", &dns.query);
        d.strings("ips", &dns.ips);
        d.u32("ttl", dns.ttl);
        d.strings("cnames", &dns.cnames);
        d.string("observation_source", &dns.observation_source);
        d.u32("rcode", dns.rcode);
        d.strings("qtypes", &dns.qtypes);
        d.strings("rrtypes", &dns.rrtypes);
        d.close();
    }
    o.close();
}

fn write_l4(out: &mut Vec<u8>, l4: &crate::proto::flow::Layer4) {
    let mut o = Obj::open(out);
    match &l4.protocol {
        Some(layer4::Protocol::Tcp(tcp)) => {
            o.key("TCP");
            let mut t = Obj::open(o.out);
            t.u32("source_port", tcp.source_port);
            t.u32("destination_port", tcp.destination_port);
            if let Some(fl) = &tcp.flags {
                t.key("flags");
                let mut f = Obj::open(t.out);
                for (name, set) in [
                    ("FIN", fl.fin),
                    ("SYN", fl.syn),
                    ("RST", fl.rst),
                    ("PSH", fl.psh),
                    ("ACK", fl.ack),
                    ("URG", fl.urg),
                    ("ECE", fl.ece),
                    ("CWR", fl.cwr),
                    ("NS", fl.ns),
                ] {
                    f.bool(name, set);
                }
                f.close();
            }
            t.close();
        }
        Some(layer4::Protocol::Udp(udp)) => {
            o.key("UDP");
            write_ports(o.out, udp.source_port, udp.destination_port, 0);
        }
        Some(layer4::Protocol::Sctp(sctp)) => {
            o.key("SCTP");
            write_ports(o.out, sctp.source_port, sctp.destination_port, sctp.chunk_type);
        }
        Some(layer4::Protocol::IcmPv4(icmp)) => {
            o.key("ICMPv4");
            write_type_code(o.out, icmp.r#type, icmp.code);
        }
        Some(layer4::Protocol::IcmPv6(icmp)) => {
            o.key("ICMPv6");
            write_type_code(o.out, icmp.r#type, icmp.code);
        }
        Some(layer4::Protocol::Vrrp(v)) => {
            o.key("VRRP");
            let mut x = Obj::open(o.out);
            x.u32("type", v.r#type);
            x.u32("vrid", v.vrid);
            x.u32("priority", v.priority);
            x.close();
        }
        Some(layer4::Protocol::Igmp(g)) => {
            o.key("IGMP");
            let mut x = Obj::open(o.out);
            x.u32("type", g.r#type);
            x.string("group_address", &g.group_address);
            x.close();
        }
        None => {}
    }
    o.close();
}

fn write_ports(out: &mut Vec<u8>, source: u32, destination: u32, chunk_type: u32) {
    let mut p = Obj::open(out);
    p.u32("source_port", source);
    p.u32("destination_port", destination);
    p.u32("chunk_type", chunk_type);
    p.close();
}

fn write_type_code(out: &mut Vec<u8>, ty: u32, code: u32) {
    let mut p = Obj::open(out);
    p.u32("type", ty);
    p.u32("code", code);
    p.close();
}

fn write_endpoint(out: &mut Vec<u8>, ep: &Endpoint) {
    let mut o = Obj::open(out);
    o.u32("ID", ep.id);
    o.u32("identity", ep.identity);
    o.string("cluster_name", &ep.cluster_name);
    o.string("namespace", &ep.namespace);
    o.strings("labels", &ep.labels);
    o.string("pod_name", &ep.pod_name);
    if !ep.workloads.is_empty() {
        o.key("workloads");
        o.out.push(b'[');
        for (i, w) in ep.workloads.iter().enumerate() {
            if i > 0 {
                o.out.push(b',');
            }
            let mut wo = Obj::open(o.out);
            wo.string("name", &w.name);
            wo.string("kind", &w.kind);
            wo.close();
        }
        o.out.push(b']');
    }
    o.close();
}

/// A JSON object being written: tracks whether a comma is due.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, empty: true }
    }
    fn close(self) {
        self.out.push(b'}');
    }
    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
    fn string(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.key(key);
            write_str(self.out, value);
        }
    }
    fn strings(&mut self, key: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        self.key(key);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_str(self.out, v);
        }
        self.out.push(b']');
    }
    fn u32(&mut self, key: &str, value: u32) {
        if value != 0 {
            self.key(key);
            write_u64(self.out, u64::from(value));
        }
    }
    fn i32(&mut self, key: &str, value: i32) {
        if value != 0 {
            self.key(key);
            write_i64(self.out, i64::from(value));
        }
    }
    fn u64_string(&mut self, key: &str, value: u64) {
        if value != 0 {
            self.key(key);
            self.out.push(b'"');
            write_u64(self.out, value);
            self.out.push(b'"');
        }
    }
    fn bool(&mut self, key: &str, value: bool) {
        if value {
            self.key(key);
            self.out.extend_from_slice(b"true");
        }
    }
    /// An enum by name; a value this build does not know prints as its
    /// number, as protojson does.
    fn enum_name<E>(&mut self, key: &str, name: Result<&str, E>, value: i32) {
        if value == 0 {
            return;
        }
        self.key(key);
        match name {
            Ok(name) => write_str(self.out, name),
            Err(_) => write_i64(self.out, i64::from(value)),
        }
    }
}

fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A JSON string: `"` and `\` escaped, control characters as `\uXXXX` (or
/// their short forms), everything else as is.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Names, labels and addresses almost never need escaping: one pass to
    // check, one copy. A fold without early exit, so the check vectorises.
    let plain = !bytes
        .iter()
        .fold(false, |any, &b| any | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => {
                out.extend_from_slice(&bytes[start..i]);
                let _ = write!(out, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

pub fn write_timestamp(out: &mut Vec<u8>, t: &Timestamp) {
    out.push(b'"');
    write_rfc3339(out, t);
    out.push(b'"');
}

#[cfg(test)]
mod tests;
