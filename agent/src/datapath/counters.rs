//! The kernel's per-CPU counters of packets it could not put in a flow and
//! events it could not send.

use agent_common::Counter;
use aya::maps::{MapData, PerCpuArray};

use crate::proto::flow::LostEventSource;

pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
}

/// Totals over all CPUs, indexed by `Counter as usize`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValues(pub [u64; Counter::LEN as usize]);

impl CounterValues {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    /// What each counter grew by since `before`.
    pub fn since(&self, before: &CounterValues) -> CounterValues {
        CounterValues(core::array::from_fn(|i| self.0[i].saturating_sub(before.0[i])))
    }

    /// Every counter as `name=value`, space-separated, for the stop summary.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = Counter::ALL
            .iter()
            .map(|c| format!("{}={}", c.name(), self.get(*c)))
            .collect();
        parts.join(" ")
    }

    /// The losses among these counts, as Hubble's loss reports name them.
    pub fn losses(&self) -> [(LostEventSource, u64); 3] {
        [
            // Events that did not fit a ring buffer: flow events (the counts
            // stay in the map), DNS messages (no L7 record).
            (
                LostEventSource::PerfEventRingBuffer,
                self.get(Counter::RingBufFull) + self.get(Counter::DnsRingFull) + self.get(Counter::DnsUnreadable),
            ),
            // Packets of flows, and drops, that did not fit the flow map:
            // not in any record.
            (
                LostEventSource::UnknownLostEventSource,
                self.get(Counter::MapFullPackets),
            ),
            (LostEventSource::UnknownLostEventSource, self.get(Counter::DropsMapFull)),
        ]
    }
}

impl KernelCounters {
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        KernelCounters { map }
    }

    pub fn read(&self) -> Result<CounterValues, aya::maps::MapError> {
        let mut values = CounterValues::default();
        for counter in Counter::ALL {
            let per_cpu = self.map.get(&(counter as u32), 0)?;
            values.0[counter as usize] = per_cpu.iter().sum();
        }
        Ok(values)
    }
}
