//! Hubble's Observer API, server side: the ring of recent flows and its
//! live feed (`ring`), the `observer.Observer` service over it (`service`),
//! field masks (`field_mask`), and the listeners (`server`).

pub mod field_mask;
pub mod ring;
pub mod server;
pub mod service;
