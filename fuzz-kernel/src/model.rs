//! The same parser and aggregation rules, built for the host: what the
//! kernel must have done with each input.

use agent_common::{Counter, hook};
use agent_ebpf::{
    aggregate::{self, Hook, host::HostMaps},
    dns_payload::dns_payload,
    parse::{self, Note, ParseError, ParsedPacket},
};
use hubcap::dns::DnsPacket;

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
    /// The DNS packets the programs must have handed over, in order.
    pub dns: Vec<DnsPacket>,
    ifindex: u32,
}

impl Model {
    /// `ifindex`: the device test runs use (the loopback of the caller's
    /// network namespace).
    pub fn new(flow_map_entries: u32, ifindex: u32) -> Self {
        Model {
            maps: HostMaps::new(flow_map_entries as usize),
            dns: Vec::new(),
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
        // SAFETY: `account` zeroes the slot first.
        let packet = unsafe { slot.assume_init_ref() };
        self.hand_over_dns(&at, packet, bytes);
    }

    /// What the tc programs hand over as DNS (the same rule,
    /// `agent_ebpf::dns_payload`): the captured bytes, or unreadable when
    /// the IP header claims more than the packet holds.
    fn hand_over_dns(&mut self, at: &Hook, packet: &ParsedPacket, bytes: &[u8]) {
        let Some(payload) = dns_payload(packet) else {
            return;
        };
        let start = usize::from(payload.offset);
        let Some(captured) = bytes.get(start..start + payload.captured as usize) else {
            self.maps.counters[Counter::DnsUnreadable as usize] += 1;
            return;
        };
        self.maps.counters[Counter::DnsMessages as usize] += 1;
        self.dns.push(DnsPacket {
            key: aggregate::flow_key(packet, at),
            time_ns: 0,
            payload_len: payload.len,
            bytes: captured.to_vec(),
        });
    }

    pub fn reset(&mut self) {
        self.maps = HostMaps::new(self.maps.capacity);
        self.dns.clear();
    }
}
