//! The hand-written writer against prost-reflect's protojson serializer
//! (proto field names, defaults skipped), on the same messages.

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use prost_types::Timestamp;

use super::*;
use crate::{
    flow_table::FlowState,
    proto::{
        flow::{self, Layer4},
        observer::{ExportEvent, export_event},
    },
    record::RecordCounts,
};

fn pool() -> DescriptorPool {
    DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).expect("descriptor set")
}

fn reference_json(event: &ExportEvent) -> serde_json::Value {
    let desc = pool().get_message_by_name("observer.ExportEvent").expect("ExportEvent");
    let msg = DynamicMessage::decode(desc, event.encode_to_vec().as_slice()).expect("decode");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true);
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut ser, &options).expect("serialize");
    numbers_as_f64(serde_json::from_slice(&ser.into_inner()).unwrap())
}

/// prost-reflect prints Struct numbers as `3.0`; Go's protojson, which
/// Hubble uses (and so do we), as `3`. Compare numbers by value.
fn numbers_as_f64(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => Value::from(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect()),
        other => other,
    }
}

fn ours(payload: ExportPayload<'_>, time: &Timestamp) -> (Vec<u8>, serde_json::Value) {
    let mut out = Vec::new();
    write_export_event(&mut out, payload, "node-1", time);
    let value = serde_json::from_slice(&out).expect("our line is JSON");
    (out, numbers_as_f64(value))
}

/// Writes `record` as a line and checks it against the reference
/// serializer; returns the line.
fn assert_flow_matches_protojson(record: &FlowRecord, time: &Timestamp) -> Vec<u8> {
    let (line, value) = ours(ExportPayload::record(record), time);
    let event = ExportEvent {
        response_types: Some(export_event::ResponseTypes::Flow(record.to_proto())),
        node_name: "node-1".into(),
        time: Some(*time),
    };
    assert_eq!(value, reference_json(&event));
    line
}

fn sample_record() -> FlowRecord {
    FlowRecord {
        flow: flow::Flow {
            time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789,
            }),
            verdict: flow::Verdict::Forwarded as i32,
            ethernet: Some(flow::Ethernet {
                source: "02:00:00:00:00:01".into(),
                destination: "02:00:00:00:00:02".into(),
            }),
            ip: Some(flow::Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                ip_version: flow::IpVersion::IPv4 as i32,
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(flow::layer4::Protocol::Tcp(flow::Tcp {
                    source_port: 40000,
                    destination_port: 80,
                    flags: Some(flow::TcpFlags {
                        syn: true,
                        ack: true,
                        ..Default::default()
                    }),
                })),
            }),
            r#type: flow::FlowType::L3L4 as i32,
            node_name: "node-1".into(),
            event_type: Some(flow::CiliumEventType { r#type: 4, sub_type: 0 }),
            traffic_direction: flow::TrafficDirection::Egress as i32,
            trace_observation_point: flow::TraceObservationPoint::FromEndpoint as i32,
            is_reply: Some(false),
            interface: Some(flow::NetworkInterface {
                index: 7,
                name: "veth\"x\"\n".into(),
            }),
            socket_cookie: u64::MAX,
            summary: "TCP Flags: SYN, ACK".into(),
            ..Default::default()
        },
        counts: RecordCounts {
            packets: 3,
            bytes: 1_000_000,
            state: FlowState::Begin,
            flow_start_time: Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000_000,
            },
            kernel_drop_reason: None,
        },
    }
}

#[test]
fn flow_line_matches_protojson() {
    let record = sample_record();
    let time = Timestamp {
        seconds: 1_700_000_001,
        nanos: 0,
    };
    let line = assert_flow_matches_protojson(&record, &time);
    assert_eq!(*line.last().unwrap(), b'\n');
    assert!(!line[..line.len() - 1].contains(&b'\n'), "one line per event");
    let text = String::from_utf8(line).unwrap();
    // The details Hubble readers depend on, spelled out.
    assert!(text.contains(r#""is_reply":false"#), "{text}");
    assert!(text.contains(r#""event_type":{"type":4}"#), "{text}");
    assert!(text.contains(r#""socket_cookie":"18446744073709551615""#), "{text}");
    assert!(text.contains(r#""time":"2023-11-14T22:13:20.123456789Z""#), "{text}");
    assert!(text.contains(r#""ipVersion":"IPv4""#), "{text}");
    assert!(
        text.contains(r#""extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"bytes":1000000,"flow_start_time":"2023-11-14T22:13:20.005Z","flow_state":"B","packets":3}}"#),
        "{text}"
    );
}

#[test]
fn lost_events_line_matches_protojson() {
    let lost = flow::LostEvent {
        source: flow::LostEventSource::PerfEventRingBuffer as i32,
        num_events_lost: 42,
        cpu: Some(1),
        first: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000_000,
        }),
        last: Some(Timestamp {
            seconds: 1_700_000_001,
            nanos: 0,
        }),
    };
    let time = Timestamp {
        seconds: 0,
        nanos: 1_000,
    };
    let (_, value) = ours(ExportPayload::LostEvents(&lost), &time);
    let event = ExportEvent {
        response_types: Some(export_event::ResponseTypes::LostEvents(lost)),
        node_name: "node-1".into(),
        time: Some(time),
    };
    assert_eq!(value, reference_json(&event));
    assert_eq!(value["lost_events"]["num_events_lost"], "42");
    assert_eq!(value["time"], "1970-01-01T00:00:00.000001Z");
}

#[test]
fn every_l4_kind_and_endpoint_fields_match_protojson() {
    use flow::layer4::Protocol;
    let kinds = [
        Protocol::Udp(flow::Udp {
            source_port: 53,
            destination_port: 5353,
        }),
        Protocol::Sctp(flow::Sctp {
            source_port: 1,
            destination_port: 2,
            chunk_type: 0,
        }),
        Protocol::IcmPv4(flow::IcmPv4 { r#type: 8, code: 0 }),
        Protocol::IcmPv6(flow::IcmPv6 { r#type: 129, code: 0 }),
        Protocol::Tcp(flow::Tcp {
            source_port: 1,
            destination_port: 2,
            flags: Some(Default::default()),
        }),
    ];
    for kind in kinds {
        let mut record = sample_record();
        record.flow.l4 = Some(Layer4 { protocol: Some(kind) });
        record.flow.source = Some(flow::Endpoint {
            namespace: "default".into(),
            pod_name: "client".into(),
            labels: vec!["k8s:app=client".into()],
            workloads: vec![flow::Workload {
                name: "client".into(),
                kind: "Deployment".into(),
            }],
            ..Default::default()
        });
        record.flow.is_reply = Some(true);
        record.flow.drop_reason_desc = flow::DropReason::PolicyDenied as i32;
        let time = Timestamp {
            seconds: 253_402_300_799,
            nanos: 999_999_000,
        }; // 9999-12-31T23:59:59.999999Z
        let line = String::from_utf8(assert_flow_matches_protojson(&record, &time)).unwrap();
        assert!(line.contains(r#""time":"9999-12-31T23:59:59.999999Z""#), "{line}");
    }
}

#[test]
fn drop_record_matches_protojson() {
    let mut record = sample_record();
    record.flow.verdict = flow::Verdict::Dropped as i32;
    record.flow.event_type = Some(flow::CiliumEventType {
        r#type: 1,
        sub_type: 133,
    });
    record.flow.drop_reason_desc = flow::DropReason::PolicyDenied as i32;
    record.flow.is_reply = None;
    record.counts.kernel_drop_reason = Some("NETFILTER_DROP".into());
    let time = Timestamp {
        seconds: 1_700_000_002,
        nanos: 0,
    };
    let line = assert_flow_matches_protojson(&record, &time);
    let text = String::from_utf8(line).unwrap();
    assert!(text.contains(r#""kernel_drop_reason":"NETFILTER_DROP""#), "{text}");
    assert!(text.contains(r#""drop_reason_desc":"POLICY_DENIED""#), "{text}");
    assert!(!text.contains("is_reply"), "{text}");
}

#[test]
fn strings_escape_quotes_backslashes_and_control_characters() {
    let mut out = Vec::new();
    write_str(&mut out, "a\u{1}b\u{7f}\\\"\n");
    assert_eq!(String::from_utf8(out).unwrap(), "\"a\\u0001b\u{7f}\\\\\\\"\\n\"");
}

#[test]
fn dns_records_match_protojson() {
    let l7 = |r#type: flow::L7FlowType, latency_ns, dns: flow::Dns| flow::Layer7 {
        r#type: r#type as i32,
        latency_ns,
        record: Some(flow::layer7::Record::Dns(dns)),
    };
    let time = Timestamp {
        seconds: 1_700_000_002,
        nanos: 5,
    };
    let request = l7(
        flow::L7FlowType::Request,
        0,
        flow::Dns {
            query: "example.com.".into(),
            observation_source: "ebpf".into(),
            qtypes: vec!["A".into()],
            ..Default::default()
        },
    );
    let response = l7(
        flow::L7FlowType::Response,
        1_234_567,
        flow::Dns {
            query: "example.com.".into(),
            ips: vec!["192.0.2.1".into(), "2001:db8::1".into()],
            ttl: 300,
            cnames: vec!["web.example.net.".into()],
            observation_source: "ebpf".into(),
            rcode: 3,
            qtypes: vec!["A".into(), "AAAA".into()],
            rrtypes: vec!["CNAME".into(), "A".into()],
        },
    );
    for l7 in [request, response] {
        let flow = flow::Flow {
            l7: Some(l7),
            r#type: flow::FlowType::L7 as i32,
            ..sample_record().flow
        };
        let (line, value) = ours(ExportPayload::Flow(&flow, None), &time);
        let event = ExportEvent {
            response_types: Some(export_event::ResponseTypes::Flow(flow.clone())),
            node_name: "node-1".into(),
            time: Some(time),
        };
        assert_eq!(value, reference_json(&event));
        let text = String::from_utf8(line).unwrap();
        assert!(text.contains(r#""Type":"L7""#), "{text}");
        assert!(!text.contains("extensions"), "an L7 record carries no counts: {text}");
    }
}
