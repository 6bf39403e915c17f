//! A Hubble flow plus hubcap's per-record counts.
//!
//! Hubble's `Flow` has no byte or packet counters, so, like Retina, hubcap
//! carries them in `extensions` as a `google.protobuf.Struct`, which every
//! Hubble reader can decode. They are kept typed here (cheap to build and to
//! write as JSON) and turned into the `Any` only for protobuf consumers.

use prost::Message as _;
use prost_types::{Any, Struct, Timestamp, Value, value::Kind};

use crate::proto::flow::Flow;

/// Where a record sits in its flow's life, as in NSG/VNet flow logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// First record of a flow direction.
    Begin,
    /// A periodic record of a flow direction that goes on.
    Continuing,
    /// Last record: FIN from both sides, RST, idle timeout or shutdown.
    End,
}

impl FlowState {
    pub fn letter(self) -> &'static str {
        match self {
            FlowState::Begin => "B",
            FlowState::Continuing => "C",
            FlowState::End => "E",
        }
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
                string(crate::export::json::timestamp_string(&self.flow_start_time)),
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

impl FlowRecord {
    /// The flow as Hubble's gRPC API carries it, counts in `extensions`.
    pub fn to_proto(&self) -> Flow {
        let mut flow = self.flow.clone();
        flow.extensions = Some(Any {
            type_url: STRUCT_TYPE_URL.to_owned(),
            value: self.counts.to_struct().encode_to_vec(),
        });
        flow
    }
}
