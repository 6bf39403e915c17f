//! Scenario 5: Hubble JSON records serialised per second on one core,
//! hubcap's writer against a generic reflection-based protojson serializer
//! (prost-reflect, the same approach as Go's protojson) on the same records.

use std::time::{Duration, Instant};

use hubcap::{
    flow_table::FlowState,
    json,
    proto::{
        flow::{self, Layer4, layer4::Protocol},
        observer::{ExportEvent, export_event},
    },
    record::{FlowRecord, RecordCounts},
};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use prost_types::Timestamp;

use crate::report::{Report, num};

pub const OUTPUT: &str = "5. output: Hubble JSON records/s on one core";

/// Records like the agent writes: TCP and UDP, v4, varied ports.
fn records(n: u32) -> Vec<FlowRecord> {
    (0..n)
        .map(|i| {
            let tcp = i % 2 == 0;
            let l4 = if tcp {
                Protocol::Tcp(flow::Tcp {
                    source_port: 30_000 + i % 30_000,
                    destination_port: 443,
                    flags: Some(flow::TcpFlags {
                        syn: i % 4 == 0,
                        ack: true,
                        ..Default::default()
                    }),
                })
            } else {
                Protocol::Udp(flow::Udp {
                    source_port: 40_000 + i % 20_000,
                    destination_port: 53,
                })
            };
            #[allow(deprecated)]
            let f = flow::Flow {
                time: Some(Timestamp {
                    seconds: 1_790_000_000 + i64::from(i),
                    nanos: 123_456_789,
                }),
                verdict: flow::Verdict::Forwarded as i32,
                ethernet: Some(flow::Ethernet {
                    source: "02:42:ac:11:00:02".into(),
                    destination: "02:42:ac:11:00:03".into(),
                }),
                ip: Some(flow::Ip {
                    source: format!("10.244.{}.{}", i % 200, i % 250),
                    destination: "10.96.0.10".into(),
                    ip_version: flow::IpVersion::IPv4 as i32,
                    ..Default::default()
                }),
                l4: Some(Layer4 { protocol: Some(l4) }),
                r#type: flow::FlowType::L3L4 as i32,
                node_name: "aks-nodepool1-12345678-vmss000000".into(),
                event_type: Some(flow::CiliumEventType { r#type: 4, sub_type: 5 }),
                traffic_direction: flow::TrafficDirection::Egress as i32,
                trace_observation_point: flow::TraceObservationPoint::FromEndpoint as i32,
                is_reply: Some(i % 3 == 0),
                interface: Some(flow::NetworkInterface {
                    index: 17,
                    name: "lxc8e2f1a3b4c5d".into(),
                }),
                summary: if tcp { "TCP Flags: ACK".into() } else { "UDP".into() },
                ..Default::default()
            };
            FlowRecord {
                flow: f,
                counts: RecordCounts {
                    packets: u64::from(i % 1000) + 1,
                    bytes: u64::from(i) * 1500 + 60,
                    state: FlowState::Continuing,
                    flow_start_time: Timestamp {
                        seconds: 1_790_000_000,
                        nanos: 0,
                    },
                    kernel_drop_reason: None,
                },
            }
        })
        .collect()
}

/// Runs `write` over the records in trials of a tenth of `budget` each,
/// and returns the best trial's records per second: on a shared machine the
/// fastest trial is the one least disturbed by others.
fn rate(n: usize, budget: Duration, mut write: impl FnMut(usize) -> usize) -> f64 {
    let mut best: f64 = 0.0;
    let mut bytes = 0usize;
    for _ in 0..10 {
        let start = Instant::now();
        let mut done = 0u64;
        while start.elapsed() < budget / 10 {
            for i in 0..n {
                bytes += write(i);
            }
            done += n as u64;
        }
        best = best.max(done as f64 / start.elapsed().as_secs_f64());
    }
    std::hint::black_box(bytes);
    best
}

pub fn run(budget: Duration, report: &mut Report) {
    let records = records(4096);
    let now = Timestamp {
        seconds: 1_790_000_100,
        nanos: 0,
    };
    let mut out = Vec::with_capacity(1 << 20);
    let hubcap_rate = rate(records.len(), budget, |i| {
        out.clear();
        json::write_export_event(&mut out, json::ExportPayload::record(&records[i]), "node", &now);
        out.len()
    });

    let pool = DescriptorPool::decode(hubcap::proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let desc = pool.get_message_by_name("observer.ExportEvent").expect("ExportEvent");
    let messages: Vec<DynamicMessage> = records
        .iter()
        .map(|r| {
            let event = ExportEvent {
                response_types: Some(export_event::ResponseTypes::Flow(r.to_proto())),
                node_name: "node".into(),
                time: Some(now),
            };
            DynamicMessage::decode(desc.clone(), event.encode_to_vec().as_slice()).expect("decode")
        })
        .collect();
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true);
    let mut buf = Vec::with_capacity(1 << 20);
    let generic_rate = rate(messages.len(), budget, |i| {
        buf.clear();
        let mut ser = serde_json::Serializer::new(&mut buf);
        messages[i]
            .serialize_with_options(&mut ser, &options)
            .expect("serialize");
        buf.push(b'\n');
        buf.len()
    });

    report.add(
        OUTPUT,
        "generic protojson (prost-reflect)",
        vec![("records/s", num(generic_rate, 0)), ("ratio to baseline", num(1.0, 3))],
    );
    report.add(
        OUTPUT,
        "hubcap",
        vec![
            ("records/s", num(hubcap_rate, 0)),
            ("ratio to baseline", num(hubcap_rate / generic_rate, 3)),
        ],
    );
}
