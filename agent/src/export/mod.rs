//! Hubble flow records and their JSON form.

pub mod build;
pub mod json;
pub mod record;

pub use build::{InterfaceInfo, RecordBuilder, RecordContext, RecordSource};
pub use record::{FlowRecord, FlowState, RecordCounts};
