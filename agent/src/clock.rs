//! Converts the kernel's `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to wall time.

use nix::time::{ClockId, clock_gettime};

/// Offset between CLOCK_REALTIME and CLOCK_MONOTONIC, re-read on every
/// [`WallClock::refresh`] so that NTP steps show up in later records.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    realtime_minus_monotonic_ns: i128,
}

fn now_ns(clock: ClockId) -> i128 {
    let ts = clock_gettime(clock).expect("clock_gettime never fails for these clocks");
    i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec())
}

impl WallClock {
    pub fn new() -> Self {
        let mut clock = WallClock {
            realtime_minus_monotonic_ns: 0,
        };
        clock.refresh();
        clock
    }

    pub fn refresh(&mut self) {
        let mono = now_ns(ClockId::CLOCK_MONOTONIC);
        let real = now_ns(ClockId::CLOCK_REALTIME);
        self.realtime_minus_monotonic_ns = real - mono;
    }

    /// Monotonic now, in the kernel's time base.
    pub fn monotonic_ns() -> u64 {
        now_ns(ClockId::CLOCK_MONOTONIC) as u64
    }

    /// Wall-clock nanoseconds since the Unix epoch for a monotonic time.
    pub fn to_unix_ns(&self, monotonic_ns: u64) -> i128 {
        i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns
    }

    pub fn timestamp(&self, monotonic_ns: u64) -> prost_types::Timestamp {
        unix_ns_to_timestamp(self.to_unix_ns(monotonic_ns))
    }

    pub fn now(&self) -> prost_types::Timestamp {
        Self::now_timestamp()
    }

    /// Wall-clock now.
    pub fn now_timestamp() -> prost_types::Timestamp {
        unix_ns_to_timestamp(now_ns(ClockId::CLOCK_REALTIME))
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

pub fn unix_ns_to_timestamp(ns: i128) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ns.div_euclid(1_000_000_000) as i64,
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}
