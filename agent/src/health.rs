//! What the kubelet's probes ask, served beside `/metrics`: `/readyz`
//! (capturing: programs attached, the first Kubernetes list waited for,
//! the capture loop running) and `/healthz` (the capture loop still comes
//! round: a loop stuck for [`STALLED_AFTER`] makes the kubelet restart
//! the container rather than leave a node silently unobserved).

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How long the capture loop may go without a tick before hubcap is not
/// live. Its tick is every 500 ms; a sweep of a million flows takes well
/// under a second.
pub const STALLED_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Health {
    started: Instant,
    capturing: AtomicBool,
    /// Milliseconds after `started` of the capture loop's last tick.
    last_tick_ms: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            capturing: AtomicBool::new(false),
            last_tick_ms: AtomicU64::new(0),
        }
    }
}

impl Health {
    /// Capture has started: from now on the loop must keep ticking.
    pub fn capturing(&self) {
        self.tick();
        self.capturing.store(true, Ordering::Release);
    }

    /// The capture loop came round.
    pub fn tick(&self) {
        self.last_tick_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Live unless capture started and its loop has stalled; why not.
    pub fn live(&self) -> Result<(), String> {
        self.live_at(self.now_ms())
    }

    /// Ready once capturing, and as long as live.
    pub fn ready(&self) -> Result<(), String> {
        if !self.capturing.load(Ordering::Acquire) {
            return Err("starting: not capturing yet".to_owned());
        }
        self.live()
    }

    fn live_at(&self, now_ms: u64) -> Result<(), String> {
        if !self.capturing.load(Ordering::Acquire) {
            return Ok(());
        }
        let idle = Duration::from_millis(now_ms.saturating_sub(self.last_tick_ms.load(Ordering::Acquire)));
        if idle > STALLED_AFTER {
            return Err(format!("the capture loop has not run for {} s", idle.as_secs()));
        }
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_is_live_but_not_ready() {
        let health = Health::default();
        assert_eq!(health.live(), Ok(()));
        assert!(health.ready().unwrap_err().contains("not capturing"));
    }

    #[test]
    fn capturing_is_ready_and_live() {
        let health = Health::default();
        health.capturing();
        assert_eq!((health.live(), health.ready()), (Ok(()), Ok(())));
    }

    #[test]
    fn a_stalled_loop_is_neither_live_nor_ready() {
        let health = Health::default();
        health.capturing();
        let later = health.now_ms() + STALLED_AFTER.as_millis() as u64 + 1_000;
        let error = health.live_at(later).unwrap_err();
        assert!(error.contains("has not run for 31 s"), "{error}");
    }
}
