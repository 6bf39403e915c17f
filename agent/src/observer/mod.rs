//! Hubble's Observer API, server side. For now the store it serves from:
//! the ring of recent flows and the live feed for `follow`.

pub mod ring;
