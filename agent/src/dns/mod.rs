//! The DNS stage: DNS messages the tc programs handed over (their own ring
//! buffer) become one observation per message, with the answer's latency,
//! for the output stage to write as Hubble L7 records.
//!
//! ring buffer -> [`framing`] (messages in a packet) -> [`message`]
//! (decoded) -> [`tracker`] (copies at other hooks dropped, latency) ->
//! outputs. Answers also teach [`names`] which names a client was given
//! for which addresses, for the enrich stage to put on later flows. Every packet and message that does not make it to a record is
//! counted ([`DnsCounts`]).

pub mod framing;
pub mod message;
pub mod names;
mod stage_metrics;
pub mod tracker;

use std::io;

use agent_common::{DNS_CAPTURE_BYTES, DnsEventHeader, FlowKey};
use aya::maps::{MapData, RingBuf};

pub use message::DnsMessage;
pub use names::{DnsNames, SharedNames};
use tracker::{Tracker, TrackerCounts, Verdict};

use stage_metrics::StageMetrics;

use crate::{datapath::CounterValues, metrics::Metrics, ringbuf::RingReader};

/// One DNS packet as the kernel handed it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPacket {
    pub key: FlowKey,
    /// The kernel's monotonic clock when the packet was seen.
    pub time_ns: u64,
    /// The L4 payload's length on the wire (`bytes` may be less).
    pub payload_len: u32,
    pub bytes: Vec<u8>,
}

/// A ring-buffer record: the header, then exactly `captured` bytes.
pub fn decode_packet(item: &[u8]) -> Option<DnsPacket> {
    let header_len = size_of::<DnsEventHeader>();
    if item.len() < header_len {
        return None;
    }
    // SAFETY: at least a header's bytes; plain integers, any bit pattern is
    // valid; the read is unaligned-safe.
    let header = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DnsEventHeader>()) };
    let captured = header.captured as usize;
    if captured != item.len() - header_len || captured > DNS_CAPTURE_BYTES || header.captured > header.payload_len {
        return None;
    }
    Some(DnsPacket {
        key: header.key,
        time_ns: header.time_ns,
        payload_len: header.payload_len,
        bytes: item[header_len..].to_vec(),
    })
}

/// A message to record: where and when it was first seen, what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsObservation {
    pub key: FlowKey,
    pub time_ns: u64,
    pub message: DnsMessage,
    /// For an answer whose query was seen: the time between the two.
    pub latency_ns: Option<u64>,
}

impl DnsObservation {
    /// The flow update its record is stamped and identified from: its
    /// packet's key and time.
    pub fn flow_update(&self) -> crate::flow_table::FlowUpdate {
        crate::flow_table::FlowUpdate {
            key: self.key,
            stats: agent_common::FlowStats {
                first_seen_ns: self.time_ns,
                last_seen_ns: self.time_ns,
                ..Default::default()
            },
            packets: 0,
            bytes: 0,
            tcp_flags: 0,
            state: crate::flow_table::FlowState::Begin,
            is_reply: Some(self.message.is_response),
        }
    }
}

/// What the DNS stage counted (the kernel counts what never reached it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DnsCounts {
    pub packets: u64,
    /// Ring records that were not a DNS packet (a kernel/user mismatch).
    pub bad_records: u64,
    /// Messages that did not decode: no record.
    pub malformed: u64,
    /// Messages recorded (queries and answers).
    pub recorded: u64,
    pub tracker: TrackerCounts,
    /// Answers' addresses not remembered for names (the cache was full).
    pub names_full: u64,
}

impl DnsCounts {
    /// Every count as `name=value`, for the stop summary.
    pub fn summary(&self) -> String {
        let t = &self.tracker;
        format!(
            "packets={} recorded={} malformed={} bad_records={} copies={} unanswered={} answers_without_query={} untracked={} names_not_learned={}",
            self.packets,
            self.recorded,
            self.malformed,
            self.bad_records,
            t.copies,
            t.unanswered,
            t.answers_without_query,
            t.untracked,
            self.names_full
        )
    }
}

/// From DNS packets to observations, without the ring: framing, decoding,
/// tracking, and learning names from every answer seen.
pub struct DnsDecoder {
    framing: framing::Framing,
    tracker: Tracker,
    names: SharedNames,
    packets: u64,
    malformed: u64,
    recorded: u64,
}

impl DnsDecoder {
    pub fn new(names: SharedNames) -> Self {
        DnsDecoder {
            framing: framing::Framing::default(),
            tracker: Tracker::default(),
            names,
            packets: 0,
            malformed: 0,
            recorded: 0,
        }
    }

    /// Adds what `packet` says to `out`: each message it holds that is the
    /// first sighting of its kind.
    pub fn packet(&mut self, packet: &DnsPacket, out: &mut Vec<DnsObservation>) {
        self.packets += 1;
        for message in self.framing.messages(packet) {
            let Ok(message) = message else {
                self.malformed += 1;
                continue;
            };
            if message.is_response && message.rcode == 0 && !message.ips.is_empty() {
                // Every sighting teaches: behind a masquerade, the pod's
                // own veth sees the answer addressed to the pod, the
                // uplink to the node.
                let client = packet.key.dst_ip();
                let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
                names.learn(client, &message.query, &message.ips, message.ttl, packet.time_ns);
            }
            if let Verdict::Record { latency_ns } = self.tracker.observe(&packet.key, packet.time_ns, &message) {
                self.recorded += 1;
                out.push(DnsObservation {
                    key: packet.key,
                    time_ns: packet.time_ns,
                    message,
                    latency_ns,
                });
            }
        }
    }

    /// The timer's work: old sightings, idle streams and expired names
    /// forgotten, queries that waited too long counted as unanswered.
    pub fn expire(&mut self, now_ns: u64) {
        self.tracker.expire(now_ns);
        self.framing.expire(now_ns);
        self.names.lock().unwrap_or_else(|e| e.into_inner()).expire(now_ns);
    }

    /// At exit: queries still waiting are unanswered.
    pub fn finish(&mut self) {
        self.tracker.finish();
    }

    pub fn counts(&self) -> DnsCounts {
        DnsCounts {
            packets: self.packets,
            bad_records: 0,
            malformed: self.malformed,
            recorded: self.recorded,
            tracker: self.tracker.counts,
            names_full: self.names.lock().unwrap_or_else(|e| e.into_inner()).full,
        }
    }

    /// Queries waiting for an answer now.
    pub fn waiting(&self) -> usize {
        self.tracker.waiting()
    }
}

/// The DNS ring buffer, its decoder and its metrics.
pub struct DnsStage {
    reader: RingReader<DnsPacket>,
    pub decoder: DnsDecoder,
    metrics: StageMetrics,
}

impl DnsStage {
    pub fn new(ring: RingBuf<MapData>, names: SharedNames, metrics: &Metrics) -> io::Result<Self> {
        Ok(DnsStage {
            reader: RingReader::with_decoder(ring, decode_packet)?,
            decoder: DnsDecoder::new(names),
            metrics: StageMetrics::new(metrics),
        })
    }

    /// Publishes the stage's counts, and the kernel's DNS losses in
    /// `kernel_delta`, in the metrics.
    pub fn publish(&mut self, kernel_delta: &CounterValues) {
        let names = self.decoder.names.lock().unwrap_or_else(|e| e.into_inner()).len();
        self.metrics.publish(&self.counts(), self.decoder.waiting(), names);
        self.metrics.count_kernel(kernel_delta);
    }

    /// Waits for DNS packets, then adds what they say to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<DnsObservation>) -> io::Result<()> {
        let decoder = &mut self.decoder;
        self.reader.read_batch(|p| decoder.packet(p, out)).await?;
        Ok(())
    }

    /// Adds what the ring holds now to `out`, without waiting.
    pub fn drain(&mut self, out: &mut Vec<DnsObservation>) {
        let decoder = &mut self.decoder;
        self.reader.read_all_now(|p| decoder.packet(p, out));
    }

    pub fn counts(&self) -> DnsCounts {
        DnsCounts {
            bad_records: self.reader.malformed,
            ..self.decoder.counts()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(header: DnsEventHeader, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; size_of::<DnsEventHeader>()];
        // SAFETY: writes the header's bytes into a buffer of its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<DnsEventHeader>(), header) };
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn a_record_is_its_header_and_exactly_the_bytes_it_announces() {
        let header = DnsEventHeader {
            time_ns: 42,
            payload_len: 5,
            captured: 3,
            ..Default::default()
        };
        let packet = decode_packet(&record(header, b"abc")).unwrap();
        assert_eq!(
            (packet.time_ns, packet.payload_len, packet.bytes.as_slice()),
            (42, 5, &b"abc"[..])
        );
        assert_eq!(
            decode_packet(&record(header, b"ab")),
            None,
            "fewer bytes than announced"
        );
        assert_eq!(
            decode_packet(&record(header, b"abcd")),
            None,
            "more bytes than announced"
        );
        let more_than_sent = DnsEventHeader {
            payload_len: 2,
            ..header
        };
        assert_eq!(decode_packet(&record(more_than_sent, b"abc")), None);
        assert_eq!(decode_packet(&[0; 10]), None, "shorter than a header");
    }
}
