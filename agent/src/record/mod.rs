//! Hubble flow records: a Hubble flow plus hubcap's per-record counts.
//!
//! `source` fixes what a record is built from (uuid, times, interface,
//! identities) and `build` builds it.
//!
//! Hubble's `Flow` has no byte or packet counters, so, like Retina, hubcap
//! carries them in `extensions` as a `google.protobuf.Struct`, which every
//! Hubble reader can decode. They are kept typed here (cheap to build and to
//! write as JSON) and turned into the `Any` only for protobuf consumers.

use prost::Message as _;
use prost_types::{Any, Struct, Timestamp, Value, value::Kind};

mod build;
mod dns;
mod source;

pub use build::RecordBuilder;
pub use source::{InterfaceInfo, RecordSource, Stamper, uuid_string};

use crate::{flow_table::FlowState, hubble, proto::flow::Flow};

/// An address as Hubble writes it (`10.0.0.1`, `fd00::1`). IPv4 by hand:
/// `Ipv4Addr`'s `Display` goes through the formatter's padding machinery
/// and was a tenth of a DNS record's cost.
pub fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(digits.format(octet));
            }
            text
        }
        std::net::IpAddr::V6(v6) => v6.to_string(),
    }
}

/// Counts since the previous record of the same flow direction, so that
/// summing every record of a flow gives its totals.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordCounts {
    pub packets: u64,
    pub bytes: u64,
    pub state: FlowState,
    /// When the flow direction's first packet was seen.
    pub flow_start_time: Timestamp,
    /// For drops: the kernel's own reason (`NETFILTER_DROP`).
    pub kernel_drop_reason: Option<String>,
}

/// The sums of records an aggregated flow log merged into one line.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateCounts {
    pub packets: u64,
    pub bytes: u64,
    /// The earliest `flow_start_time` of the merged records.
    pub flow_start_time: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FlowRecord {
    /// The Hubble flow, `extensions` left empty (see [`FlowRecord::to_proto`]).
    pub flow: Flow,
    pub counts: RecordCounts,
}

pub const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";

impl RecordCounts {
    /// Keys and values in the order the JSON writer uses too.
    pub fn to_struct(&self) -> Struct {
        let number = |n: u64| Value {
            kind: Some(Kind::NumberValue(n as f64)),
        };
        let string = |s: String| Value {
            kind: Some(Kind::StringValue(s)),
        };
        let mut fields = vec![
            ("bytes".to_owned(), number(self.bytes)),
            (
                "flow_start_time".to_owned(),
                string(hubble::rfc3339(&self.flow_start_time)),
            ),
            ("flow_state".to_owned(), string(self.state.letter().to_owned())),
            ("packets".to_owned(), number(self.packets)),
        ];
        if let Some(reason) = &self.kernel_drop_reason {
            fields.push(("kernel_drop_reason".to_owned(), string(reason.clone())));
        }
        Struct {
            fields: fields.into_iter().collect(),
        }
    }
}

impl RecordCounts {
    /// Reads counts back from a flow's `extensions`, as [`to_struct`](Self::to_struct)
    /// wrote them; `None` when they are not hubcap's (another producer, or a
    /// field mask that left them out).
    pub fn from_extensions(any: &Any) -> Option<RecordCounts> {
        if any.type_url != STRUCT_TYPE_URL {
            return None;
        }
        let fields = Struct::decode(any.value.as_slice()).ok()?.fields;
        let number = |key: &str| match fields.get(key)?.kind {
            Some(Kind::NumberValue(n)) if n >= 0.0 => Some(n as u64),
            _ => None,
        };
        let string = |key: &str| match &fields.get(key)?.kind {
            Some(Kind::StringValue(s)) => Some(s.as_str()),
            _ => None,
        };
        let state = match string("flow_state")? {
            "B" => FlowState::Begin,
            "C" => FlowState::Continuing,
            "E" => FlowState::End,
            _ => return None,
        };
        let start = humantime::parse_rfc3339(string("flow_start_time")?).ok()?;
        let start = start.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(RecordCounts {
            packets: number("packets")?,
            bytes: number("bytes")?,
            state,
            flow_start_time: Timestamp {
                seconds: start.as_secs() as i64,
                nanos: start.subsec_nanos() as i32,
            },
            kernel_drop_reason: string("kernel_drop_reason").map(str::to_owned),
        })
    }
}

impl FlowRecord {
    /// The flow as Hubble's gRPC API carries it, counts in `extensions`.
    pub fn to_proto(&self) -> Flow {
        self.clone().into_proto()
    }

    /// [`to_proto`](Self::to_proto) without the copy.
    pub fn into_proto(self) -> Flow {
        let mut flow = self.flow;
        flow.extensions = Some(Any {
            type_url: STRUCT_TYPE_URL.to_owned(),
            value: self.counts.to_struct().encode_to_vec(),
        });
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "255.255.255.255",
            "192.0.2.10",
            "::",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn counts_survive_the_round_trip_through_extensions() {
        for kernel_drop_reason in [None, Some("NETFILTER_DROP".to_owned())] {
            let counts = RecordCounts {
                packets: 3,
                bytes: 1_234_567_890_123,
                state: FlowState::Continuing,
                flow_start_time: Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 123_456_789,
                },
                kernel_drop_reason,
            };
            let record = FlowRecord {
                flow: Flow::default(),
                counts: counts.clone(),
            };
            let any = record.to_proto().extensions.unwrap();
            assert_eq!(RecordCounts::from_extensions(&any), Some(counts));
        }
        let other = Any {
            type_url: "type.googleapis.com/other.Thing".into(),
            value: vec![],
        };
        assert_eq!(RecordCounts::from_extensions(&other), None);
    }
}
