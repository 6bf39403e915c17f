//! When a ring buffer record wakes the reader.
//!
//! Waking is an irq_work on the packet's CPU, raised by a self-IPI: an APIC
//! register write, which in a VM traps to the hypervisor (measured here:
//! half of a new flow's cost in the tc program while the reader was behind,
//! when every record past the threshold woke it again). So a record wakes
//! the reader only when it carries the ring's pending bytes across a
//! multiple of the threshold: once per `every` bytes however far behind the
//! reader is. Below the first multiple the reader's own timer collects the
//! records.

/// Bytes a record of `len` bytes takes in a BPF ring buffer: its 8-byte
/// header, and the record rounded up to 8 bytes.
#[inline(always)]
pub const fn ring_record_bytes(len: u64) -> u64 {
    8 + len.div_ceil(8) * 8
}

/// Whether a record of `record_bytes` (as [`ring_record_bytes`]) added to a
/// ring holding `pending_before` unread bytes should wake the reader.
#[inline(always)]
pub const fn wakes_reader(pending_before: u64, record_bytes: u64, every: u64) -> bool {
    (pending_before + record_bytes) / every != pending_before / every
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_wakes_only_when_it_crosses_a_multiple_of_the_threshold() {
        let record = ring_record_bytes(100);
        assert_eq!(record, 112);
        let every = 1024;
        // Writing records into a ring nobody reads: one wake per 1024 bytes.
        let wakes = (0..1000u64).filter(|i| wakes_reader(i * record, record, every)).count() as u64;
        assert_eq!(wakes, 1000 * record / every);
        assert!(!wakes_reader(0, record, every));
        assert!(wakes_reader(1000, record, every));
        assert!(!wakes_reader(1024, record, every));
        assert!(wakes_reader(2047, 1, every));
    }
}
