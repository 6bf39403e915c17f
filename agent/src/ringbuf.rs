//! Reads flow events from the kernel's BPF ring buffer without polling: the
//! ring buffer's fd becomes readable when the kernel has submitted records.

use std::io;

use agent_common::FlowEvent;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

/// At most this many records per wake-up, so timers and signals are not
/// starved under a flood (the rest are read on the next turn of the loop).
const MAX_BATCH: usize = 8192;

pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Records whose size was not a `FlowEvent` (a kernel/user mismatch).
    pub malformed: u64,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd, which stays open and the same
        // for as long as the RingBuf lives, and the AsyncFd owns the RingBuf.
        let fd =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(EventReader { fd, malformed: 0 })
    }

    /// Waits until records are there, then hands up to [`MAX_BATCH`] of them
    /// to `handle`. Returns how many were read.
    pub async fn read_batch(&mut self, mut handle: impl FnMut(&FlowEvent)) -> io::Result<usize> {
        let mut guard = self.fd.readable_mut().await?;
        let (n, more) = drain(guard.get_inner_mut(), &mut self.malformed, MAX_BATCH, &mut handle);
        if !more {
            guard.clear_ready();
        }
        Ok(n)
    }

    /// Reads everything that is there now (used at shutdown).
    pub fn read_all_now(&mut self, mut handle: impl FnMut(&FlowEvent)) -> usize {
        drain(self.fd.get_mut(), &mut self.malformed, usize::MAX, &mut handle).0
    }
}

/// Hands up to `limit` records that are in `ring` now to `handle`, without
/// waiting. Returns the number read and whether the limit stopped it.
pub fn drain(
    ring: &mut RingBuf<MapData>,
    malformed: &mut u64,
    limit: usize,
    handle: &mut impl FnMut(&FlowEvent),
) -> (usize, bool) {
    let mut n = 0;
    while n < limit {
        let Some(item) = ring.next() else { return (n, false) };
        match decode_record(&item) {
            Some(event) => handle(&event),
            None => *malformed += 1,
        }
        n += 1;
    }
    (n, true)
}

/// One ring-buffer record as the kernel wrote it: exactly one
/// [`FlowEvent`], or `None` for a record of any other size (a kernel/user
/// mismatch, counted by the reader).
pub fn decode_record(item: &[u8]) -> Option<FlowEvent> {
    (item.len() == size_of::<FlowEvent>()).then(|| {
        // SAFETY: the record holds exactly one FlowEvent, which is plain
        // integers (any bit pattern is valid); the read is unaligned-safe.
        unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) }
    })
}
