//! The real programs, loaded into this kernel and run through
//! `BPF_PROG_TEST_RUN`: no interface, the real maps.

use std::collections::HashMap;

use agent_common::{FlowEvent, FlowKey, FlowStats};
use anyhow::{Context, Result, bail};
use aya::maps::{MapData, RingBuf};
use hubcap::{
    datapath::{CounterValues, Datapath, DatapathConfig},
    dns::{DnsPacket, decode_packet},
    flow_table::KernelFlows as _,
};

/// What tc's "continue" (`TC_ACT_UNSPEC`, -1) reads as in the test run's
/// unsigned return value.
const TC_ACT_UNSPEC: u32 = u32::MAX;

pub struct Kernel {
    datapath: Datapath,
    events: RingBuf<MapData>,
    dns_events: RingBuf<MapData>,
    /// DNS ring records that were not a DNS packet (none expected).
    pub malformed_dns: u64,
    out: Vec<u8>,
    /// Ring records of the wrong size (none expected).
    pub malformed_events: u64,
}

/// Why a single run failed: the program must let every packet through
/// unchanged.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    #[error("the test run failed: {0}")]
    Syscall(String),
    #[error("the program returned {0:#x}, not TC_ACT_UNSPEC")]
    Verdict(u32),
    #[error("the program changed the packet")]
    Changed,
}

impl Kernel {
    /// Loads hubcap's programs as the agent does (the verifier sees exactly
    /// what production loads), with periodic reports off so runs do not
    /// depend on the clock.
    pub fn load(flow_map_entries: u32, ring_buffer_bytes: u32, dns_ring_bytes: u32) -> Result<Self> {
        let mut datapath = Datapath::load(DatapathConfig {
            report_interval_ns: u64::MAX,
            flow_map_entries,
            ring_buffer_bytes,
            drops: None,
            dns_ring_bytes: Some(dns_ring_bytes),
        })
        .context("loading hubcap's eBPF programs")?;
        let events = datapath.take_events().context("the ring buffer was taken")?;
        let dns_events = datapath.take_dns_events().context("the DNS ring buffer was taken")?;
        Ok(Kernel {
            datapath,
            events,
            dns_events,
            malformed_dns: 0,
            out: vec![0; 4096],
            malformed_events: 0,
        })
    }

    /// Runs `program` on `packet`. `Ok(false)`: the kernel's test harness
    /// refused the packet before any program ran (see [`refused`]).
    pub fn run(&mut self, program: &'static str, packet: &[u8]) -> Result<bool, RunFailure> {
        let result = match self.datapath.test_run(program, packet, &mut self.out) {
            Ok(result) => result,
            Err(e) if refused(packet) && invalid_argument(&e) => return Ok(false),
            Err(e) => return Err(RunFailure::Syscall(format!("{:#}", anyhow::Error::from(e)))),
        };
        if result.return_value != TC_ACT_UNSPEC {
            return Err(RunFailure::Verdict(result.return_value));
        }
        let out_len = result.data_size_out as usize;
        if out_len != packet.len() || self.out[..out_len] != *packet {
            return Err(RunFailure::Changed);
        }
        Ok(true)
    }

    pub fn counters(&self) -> Result<CounterValues> {
        self.datapath.counters.read().context("reading the kernel's counters")
    }

    /// Every flow entry.
    pub fn flows(&mut self) -> Result<HashMap<FlowKey, FlowStats>> {
        let mut flows = HashMap::new();
        if !self
            .datapath
            .flows
            .visit_entries(&mut |entries| flows.extend(entries.iter().copied()))
        {
            bail!("reading the flow map failed");
        }
        Ok(flows)
    }

    /// Every flow entry, then an empty map for the next round.
    pub fn take_flows(&mut self) -> Result<HashMap<FlowKey, FlowStats>> {
        let flows = self.flows()?;
        let map = &mut self.datapath.flows;
        for key in flows.keys() {
            map.remove(key);
        }
        map.flush();
        let mut left = 0;
        map.visit_entries(&mut |entries| left += entries.len());
        if left != 0 {
            bail!("{left} flow entries survived deletion");
        }
        Ok(flows)
    }

    /// The events the programs sent since the last call, in order.
    pub fn take_events(&mut self) -> Vec<FlowEvent> {
        let mut events = Vec::new();
        hubcap::ringbuf::drain(&mut self.events, &mut self.malformed_events, usize::MAX, &mut |e| {
            events.push(*e)
        });
        events
    }
}

impl Kernel {
    /// The DNS packets the programs handed over since the last call.
    pub fn take_dns(&mut self) -> Vec<DnsPacket> {
        let mut packets = Vec::new();
        hubcap::ringbuf::drain_with(
            &mut self.dns_events,
            decode_packet,
            &mut self.malformed_dns,
            usize::MAX,
            &mut |p: &DnsPacket| packets.push(p.clone()),
        );
        packets
    }
}

/// Packets `BPF_PROG_TEST_RUN` refuses (`EINVAL`) for skb programs: an
/// Ethernet type of IPv4 or IPv6 with less than that header after it (the
/// harness reads the addresses for its socket). On a real interface tc sees
/// such frames; the parser's handling of them is covered by its unit tests.
pub fn refused(packet: &[u8]) -> bool {
    const ETH_HLEN: usize = 14;
    match u16::from_be_bytes([packet[12], packet[13]]) {
        0x0800 => packet.len() < ETH_HLEN + 20,
        0x86dd => packet.len() < ETH_HLEN + 40,
        _ => false,
    }
}

fn invalid_argument(e: &aya::programs::ProgramError) -> bool {
    matches!(e, aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(nix::libc::EINVAL))
}
