//! hubcap's user space, one module per stage of the data path:
//!
//! `datapath` (load and attach the eBPF programs, kernel counters) ->
//! `ringbuf` (flow events from the kernel) -> `flow_table` (pair directions,
//! decide when a flow is begun, continued or ended) -> `export` (Hubble flow
//! records and their JSON) -> `sink` (stdout, rotating files); `metrics`
//! counts what passes. `filter` holds Hubble's flow-filter semantics, for
//! the Observer API and flow-log allow/deny lists; `observer` serves Hubble's
//! Observer gRPC API from a ring of recent flows, and `observe` is its client.
//! `agent` wires the stages together.

pub mod agent;
pub mod cli;
pub mod clock;
pub mod datapath;
pub mod drop_reasons;
pub mod export;
pub mod filter;
pub mod flow_table;
pub mod interfaces;
pub mod metrics;
pub mod metrics_server;
pub mod noop;
pub mod observe;
pub mod observer;
pub mod privileges;
pub mod proto;
pub mod ringbuf;
pub mod sink;
