//! Kernel against model: flows, events and counters must be equal, apart
//! from clock readings (the model's clock is always 0).

use std::collections::HashMap;

use agent_common::{Counter, FlowEvent, FlowKey, FlowStats};
use agent_ebpf::aggregate::host::HostMaps;
use hubcap::{datapath::CounterValues, dns::DnsPacket};

/// `stats` without its timestamps.
fn timeless(stats: &FlowStats) -> FlowStats {
    FlowStats {
        first_seen_ns: 0,
        last_seen_ns: 0,
        last_report_ns: 0,
        ..*stats
    }
}

/// The first difference found, in words; `None` when they agree.
pub fn flows(kernel: &HashMap<FlowKey, FlowStats>, model: &HostMaps) -> Option<String> {
    if kernel.len() != model.flows.len() {
        return Some(format!(
            "the kernel holds {} flows, the model {}",
            kernel.len(),
            model.flows.len()
        ));
    }
    for (key, expected) in &model.flows {
        match kernel.get(key) {
            None => return Some(format!("flow missing in the kernel: {key:?}")),
            Some(got) if timeless(got) != timeless(expected) => {
                return Some(format!(
                    "flow {key:?}: kernel {:?}, model {:?}",
                    timeless(got),
                    timeless(expected)
                ));
            }
            Some(_) => {}
        }
    }
    None
}

pub fn events(kernel: &[FlowEvent], model: &[FlowEvent]) -> Option<String> {
    if kernel.len() != model.len() {
        return Some(format!(
            "the kernel sent {} events, the model {}",
            kernel.len(),
            model.len()
        ));
    }
    kernel.iter().zip(model).enumerate().find_map(|(i, (got, expected))| {
        let same = got.key == expected.key
            && got.reason == expected.reason
            && timeless(&got.stats) == timeless(&expected.stats);
        (!same).then(|| format!("event {i}: kernel {got:?}, model {expected:?}"))
    })
}

/// The DNS packets handed over, in order, apart from their clock reading.
pub fn dns(kernel: &[DnsPacket], model: &[DnsPacket]) -> Option<String> {
    if kernel.len() != model.len() {
        return Some(format!(
            "the kernel handed over {} DNS packets, the model {}",
            kernel.len(),
            model.len()
        ));
    }
    kernel.iter().zip(model).enumerate().find_map(|(i, (got, expected))| {
        let got = DnsPacket {
            time_ns: 0,
            ..got.clone()
        };
        (got != *expected).then(|| format!("DNS packet {i}: kernel {got:?}, model {expected:?}"))
    })
}

/// `kernel` is what the counters grew by over the same packets.
pub fn counters(kernel: &CounterValues, model: &HostMaps) -> Option<String> {
    Counter::ALL.iter().find_map(|&counter| {
        let (got, expected) = (kernel.get(counter), model.counter(counter));
        (got != expected).then(|| format!("counter {counter:?}: kernel {got}, model {expected}"))
    })
}
