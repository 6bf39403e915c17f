//! Reads records from the kernel's BPF ring buffers without polling: a ring
//! buffer's fd becomes readable when the kernel has submitted records.
//! Flow events come through one ring, DNS messages through another.

use std::io;

use agent_common::FlowEvent;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

/// At most this many records per wake-up, so timers and signals are not
/// starved under a flood (the rest are read on the next turn of the loop).
const MAX_BATCH: usize = 8192;

/// Turns one record's bytes into a `T`; `None` for a record that cannot
/// be one (a kernel/user mismatch, counted by the reader).
pub type Decode<T> = fn(&[u8]) -> Option<T>;

pub struct RingReader<T> {
    fd: AsyncFd<RingBuf<MapData>>,
    decode: Decode<T>,
    /// Records that did not decode.
    pub malformed: u64,
}

/// The flow events' reader.
pub type EventReader = RingReader<FlowEvent>;

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        RingReader::with_decoder(ring, decode_record)
    }
}

impl<T> RingReader<T> {
    pub fn with_decoder(ring: RingBuf<MapData>, decode: Decode<T>) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd, which stays open and the same
        // for as long as the RingBuf lives, and the AsyncFd owns the RingBuf.
        let fd =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(RingReader {
            fd,
            decode,
            malformed: 0,
        })
    }

    /// Waits until records are there, then hands up to [`MAX_BATCH`] of them
    /// to `handle`. Returns how many were read.
    pub async fn read_batch(&mut self, mut handle: impl FnMut(&T)) -> io::Result<usize> {
        let mut guard = self.fd.readable_mut().await?;
        let (n, more) = drain_with(
            guard.get_inner_mut(),
            self.decode,
            &mut self.malformed,
            MAX_BATCH,
            &mut handle,
        );
        if !more {
            guard.clear_ready();
        }
        Ok(n)
    }

    /// Reads everything that is there now (used at shutdown).
    pub fn read_all_now(&mut self, mut handle: impl FnMut(&T)) -> usize {
        drain_with(
            self.fd.get_mut(),
            self.decode,
            &mut self.malformed,
            usize::MAX,
            &mut handle,
        )
        .0
    }
}

/// Hands up to `limit` flow events that are in `ring` now to `handle`,
/// without waiting. Returns the number read and whether the limit stopped it.
pub fn drain(
    ring: &mut RingBuf<MapData>,
    malformed: &mut u64,
    limit: usize,
    handle: &mut impl FnMut(&FlowEvent),
) -> (usize, bool) {
    drain_with(ring, decode_record, malformed, limit, handle)
}

/// Hands up to `limit` records in `ring` now, decoded by `decode`, to
/// `handle`, without waiting. Returns the number read and whether the limit
/// stopped it.
pub fn drain_with<T>(
    ring: &mut RingBuf<MapData>,
    decode: Decode<T>,
    malformed: &mut u64,
    limit: usize,
    handle: &mut impl FnMut(&T),
) -> (usize, bool) {
    let mut n = 0;
    while n < limit {
        let Some(item) = ring.next() else { return (n, false) };
        match decode(&item) {
            Some(record) => handle(&record),
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
