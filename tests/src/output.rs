//! Reading hubcap's output the way Hubble's tools do: every line must decode
//! strictly (unknown fields rejected) as an `observer.ExportEvent`.

use std::collections::BTreeMap;

use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value;

/// One flow record, with the fields the tests look at.
#[derive(Clone, Debug)]
pub struct Record {
    pub interface: String,
    pub point: String,
    pub direction: String,
    pub verdict: String,
    pub protocol: String,
    pub src: String,
    pub dst: String,
    /// Ports for TCP/UDP/SCTP; ICMP type and code.
    pub src_port: u64,
    pub dst_port: u64,
    pub flags: Vec<String>,
    pub is_reply: Option<bool>,
    pub state: String,
    pub packets: u64,
    pub bytes: u64,
    pub json: Value,
}

pub struct Output {
    /// L3/L4 records, which carry packets and bytes.
    pub records: Vec<Record>,
    pub lost_events: Vec<Value>,
    /// L7 records (DNS), as written (their `flow`).
    pub l7: Vec<Value>,
}

/// The records' uuids, in order.
pub fn uuids<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<String> {
    records
        .into_iter()
        .map(|r| r.json["uuid"].as_str().expect("uuid").to_owned())
        .collect()
}

/// A record's own time, in nanoseconds since the Unix epoch.
pub fn time_ns(r: &Record) -> i128 {
    let t: prost_types::Timestamp = r.json["time"].as_str().expect("time").parse().expect("RFC 3339");
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

/// Decodes every line; panics naming the first line that is not Hubble JSON.
pub fn parse(stdout: &str) -> Output {
    let pool = DescriptorPool::decode(hubcap::proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let export_event = pool.get_message_by_name("observer.ExportEvent").expect("ExportEvent");
    let mut records = Vec::new();
    let mut lost_events = Vec::new();
    let mut l7 = Vec::new();
    for (n, line) in stdout.lines().enumerate() {
        let mut de = serde_json::Deserializer::from_str(line);
        DynamicMessage::deserialize(export_event.clone(), &mut de)
            .unwrap_or_else(|e| panic!("line {} is not a Hubble ExportEvent ({e}): {line}", n + 1));
        let v: Value = serde_json::from_str(line).expect("JSON");
        assert!(
            v["node_name"].is_string() && v["time"].is_string(),
            "envelope fields: {line}"
        );
        if v.get("lost_events").is_some() {
            lost_events.push(v["lost_events"].clone());
        } else if v["flow"]["Type"] == "L7" {
            l7.push(v["flow"].clone());
        } else {
            records.push(record(&v["flow"]));
        }
    }
    Output {
        records,
        lost_events,
        l7,
    }
}

fn record(f: &Value) -> Record {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let (protocol, l4) = f["l4"]
        .as_object()
        .and_then(|o| o.iter().next())
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap_or_default();
    let (src_port, dst_port) = if protocol.starts_with("ICMP") {
        (l4["type"].as_u64().unwrap_or(0), l4["code"].as_u64().unwrap_or(0))
    } else {
        (
            l4["source_port"].as_u64().unwrap_or(0),
            l4["destination_port"].as_u64().unwrap_or(0),
        )
    };
    let flags = l4["flags"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let ext = &f["extensions"]["value"];
    let (packets, bytes) = (
        ext["packets"].as_u64().expect("packets"),
        ext["bytes"].as_u64().expect("bytes"),
    );
    // Every record a reader sees carries traffic: an end with nothing new
    // to count goes only to the formats that track flow state.
    assert!(packets > 0 || bytes > 0, "a record without traffic: {f}");
    Record {
        interface: s(&f["interface"]["name"]),
        point: s(&f["trace_observation_point"]),
        direction: s(&f["traffic_direction"]),
        verdict: s(&f["verdict"]),
        protocol,
        src: s(&f["IP"]["source"]),
        dst: s(&f["IP"]["destination"]),
        src_port,
        dst_port,
        flags,
        is_reply: f["is_reply"].as_bool(),
        state: s(&ext["flow_state"]),
        packets,
        bytes,
        json: f.clone(),
    }
}

/// Packets and bytes of forwarded records summed per (interface,
/// observation point): what the interface counters count.
pub fn sums(records: &[Record]) -> BTreeMap<(String, String), (u64, u64)> {
    let mut out = BTreeMap::new();
    for r in forwarded(records) {
        let e = out.entry((r.interface.clone(), r.point.clone())).or_insert((0, 0));
        e.0 += r.packets;
        e.1 += r.bytes;
    }
    out
}

/// Checks that the forwarded records on each pod's host-side veth add up
/// to the kernel's counters of that veth, exactly: received packets come
/// from the pod (FROM_ENDPOINT), sent ones go to it (TO_ENDPOINT).
pub fn assert_records_match_counters(records: &[Record], veths: &[(&str, crate::topology::Counters)]) {
    let sums = sums(records);
    for (ifname, c) in veths {
        let get = |point: &str| {
            sums.get(&(ifname.to_string(), point.to_owned()))
                .copied()
                .unwrap_or_default()
        };
        assert_eq!(get("FROM_ENDPOINT"), (c.rx_packets, c.rx_bytes), "{ifname} rx");
        assert_eq!(get("TO_ENDPOINT"), (c.tx_packets, c.tx_bytes), "{ifname} tx");
    }
}

/// The forwarded records (drops are reported where the kernel frees the
/// packet, not on an interface hook).
pub fn forwarded(records: &[Record]) -> impl Iterator<Item = &Record> {
    records.iter().filter(|r| r.verdict == "FORWARDED")
}

/// The records of one flow direction on one interface, in output order.
pub fn flow<'a>(
    records: &'a [Record],
    interface: &str,
    protocol: &str,
    (src, src_port): (&str, u64),
    (dst, dst_port): (&str, u64),
) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| {
            r.interface == interface
                && r.protocol == protocol
                && r.src == src
                && r.dst == dst
                && r.src_port == src_port
                && r.dst_port == dst_port
        })
        .collect()
}

/// Checks the life cycle of one flow direction: B first, C after it, and
/// E last when the end brought counts (an end without new counts is in no
/// Hubble record); one `is_reply` throughout. Returns (packets, bytes,
/// union of flags).
pub fn check_lifecycle(records: &[&Record], is_reply: Option<bool>) -> (u64, u64, Vec<String>) {
    assert!(!records.is_empty(), "flow missing");
    let states: Vec<&str> = records.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states.first(), Some(&"B"), "{states:?}");
    let middle = &states[1..states.len().saturating_sub(1).max(1)];
    assert!(middle.iter().all(|s| *s == "C"), "{states:?}");
    assert!(
        states.len() == 1 || matches!(states.last(), Some(&"C" | &"E")),
        "{states:?}"
    );
    let mut flags: Vec<String> = Vec::new();
    for r in records {
        assert_eq!(r.is_reply, is_reply, "is_reply of {:?}", r.json);
        assert_eq!(r.verdict, "FORWARDED");
        for f in &r.flags {
            if !flags.contains(f) {
                flags.push(f.clone());
            }
        }
    }
    let packets = records.iter().map(|r| r.packets).sum();
    let bytes = records.iter().map(|r| r.bytes).sum();
    (packets, bytes, flags)
}
