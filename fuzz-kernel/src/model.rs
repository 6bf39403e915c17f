//! The same parser and aggregation rules, built for the host: what the
//! kernel must have done with each input.

use agent_common::hook;
use agent_ebpf::{
    aggregate::{self, Hook, host::HostMaps},
    parse::{self, Note, ParseError, ParsedPacket},
};

/// Where a packet ended up, judged by the host parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Flow,
    /// In a flow, without ports.
    FlowFragment,
    FlowL4Truncated,
    NonIp,
    Truncated,
    Malformed,
}

pub fn outcome(bytes: &[u8]) -> Outcome {
    let mut slot = core::mem::MaybeUninit::uninit();
    let packet = ParsedPacket::zero_in(&mut slot);
    match parse::parse(bytes, packet) {
        Err(ParseError::NonIp) => Outcome::NonIp,
        Err(ParseError::Truncated) => Outcome::Truncated,
        Err(ParseError::Malformed) => Outcome::Malformed,
        Ok(()) => match packet.note {
            Note::None => Outcome::Flow,
            Note::Fragment => Outcome::FlowFragment,
            Note::L4Truncated => Outcome::FlowL4Truncated,
        },
    }
}

pub struct Model {
    pub maps: HostMaps,
    ifindex: u32,
}

impl Model {
    /// `ifindex`: the device test runs use (the loopback of the caller's
    /// network namespace).
    pub fn new(flow_map_entries: u32, ifindex: u32) -> Self {
        Model {
            maps: HostMaps::new(flow_map_entries as usize),
            ifindex,
        }
    }

    /// Exactly what the tc program on `hook_point` does with `bytes`
    /// (periodic reports off, the clock at 0).
    pub fn account(&mut self, hook_point: u8, bytes: &[u8]) {
        debug_assert!(hook_point == hook::INGRESS || hook_point == hook::EGRESS);
        let mut slot = core::mem::MaybeUninit::uninit();
        let at = Hook {
            ifindex: self.ifindex,
            hook: hook_point,
            len: bytes.len() as u64,
        };
        aggregate::account(&mut self.maps, bytes, &mut slot, at, || 0, u64::MAX);
    }

    pub fn reset(&mut self) {
        self.maps = HostMaps::new(self.maps.capacity);
    }
}
