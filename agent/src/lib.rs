//! hubcap's user space, one module per stage of the data path:
//!
//! `datapath` (load and attach the eBPF programs, kernel counters) ->
//! `ringbuf` (flow events from the kernel) -> `flow_table` (pair directions,
//! decide when a flow is begun, continued or ended) -> `enrich` (who the
//! endpoints are: `kubernetes` is one source) -> `output` (build each Hubble
//! record once and hand it to every output: the JSON flow log through
//! `json` and `sink`, the flow logs, VNet/NSG tuples, IPFIX, the metrics,
//! the Observer API's feed). `pipeline` holds the data path as one value.
//! DNS has a second, shorter path: its own ring buffer -> `dns` (messages,
//! copies at other hooks dropped, latency) -> the same outputs, as Hubble
//! L7 records.
//!
//! Beside the data path: `record` builds Hubble flow records, `hubble` holds
//! Hubble's vocabulary and field masks, `filter` Hubble's flow-filter
//! semantics, `metrics` the Prometheus metrics; `hubble_api` serves Hubble's
//! Observer gRPC API from a ring of recent flows, and `observe` is the
//! `hubcap observe` client. `cli` turns flags into `settings`; `agent`
//! starts the stages and the `side_services` and runs the capture loop.
//!
//! Dependencies point one way: sources (`kubernetes`) know nothing of the
//! outputs or the API; outputs know nothing of the API, which brings its
//! own output (`hubble_api::ObserverFeed`).

pub mod agent;
pub mod cli;
pub mod clock;
pub mod datapath;
pub mod dns;
pub mod drop_reasons;
pub mod drop_scope;
pub mod enrich;
pub mod filter;
pub mod flow_table;
pub mod health;
pub mod hubble;
pub mod hubble_api;
pub mod interfaces;
pub mod json;
pub mod kubernetes;
pub mod listen;
pub mod metrics;
pub mod metrics_server;
pub mod netns;
pub mod noop;
pub mod observe;
pub mod output;
pub mod pipeline;
pub mod privileges;
pub mod proto;
pub mod record;
pub mod ringbuf;

pub mod settings;
pub mod side_services;
pub mod sink;
