//! The bodies of the libFuzzer targets in `fuzz/` (run by `cargo xtask
//! fuzz`): each takes any bytes and must not panic. Built on stable too, so
//! `tests/seeds.rs` replays `fuzz/seeds/` (every crash libFuzzer found is
//! kept there) in every test run.

mod filters;
mod ringbuf;

pub use filters::flow_filters;
pub use ringbuf::ringbuf_records;

/// Lines `hubcap observe` reads (Hubble JSON from a file or stdin): decoded
/// and printed in every output format. Bad lines are errors, never panics.
pub fn hubble_json_lines(data: &[u8]) {
    use hubcap::observe::{args::OutputFormat, print::Printer, source::decode_line};
    let Ok(text) = std::str::from_utf8(data) else { return };
    for line in text.lines() {
        let Ok(Some(response)) = decode_line(line) else {
            continue;
        };
        for format in [OutputFormat::Compact, OutputFormat::Json, OutputFormat::Table] {
            let mut printer = Printer::new(Vec::new(), format, true, false);
            let _ = printer.print(&response);
            let _ = printer.finish();
        }
    }
}

/// Flow-log config files (`--flow-logs-config`, Cilium's dynamic exporter
/// shape): any text is accepted or refused with an error, never a panic.
pub fn flow_logs_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(logs) = hubcap::output::flow_logs::parse_config(std::path::Path::new("fuzz.yaml"), text) {
        for log in &logs {
            let _ = log.aggregation_options.as_ref().map(|a| a.window());
        }
    }
}

/// DNS as the kernel hands it over: the bytes as one ring record, then as
/// a run of packets (each a length byte, in units of 8 bytes, then its
/// payload; the first payload byte's low bit picks TCP or UDP) through the
/// framing, decoding and tracking, and every message recorded built into
/// a Hubble record and written as JSON. Malformed messages are counted,
/// never a panic.
pub fn dns_packets(data: &[u8]) {
    use agent_common::{DNS_PORT, FlowKey, ip_proto};
    use hubcap::{
        dns::{DnsDecoder, DnsPacket, SharedNames, decode_packet},
        enrich::Identities,
        json::{ExportPayload, write_export_event},
        record::{RecordBuilder, Stamper},
    };
    let _ = decode_packet(data);
    let mut decoder = DnsDecoder::new(SharedNames::default());
    let mut observations = Vec::new();
    let mut rest = data;
    let mut time_ns = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let (payload, next) = tail.split_at((usize::from(len) * 8).min(tail.len()));
        rest = next;
        time_ns += 1_000_000;
        let tcp = payload.first().is_some_and(|b| b & 1 == 1);
        let answer = payload.get(2).is_some_and(|b| b & 0x80 != 0);
        let (src_port, dst_port) = if answer { (DNS_PORT, 40000) } else { (40000, DNS_PORT) };
        let packet = DnsPacket {
            key: FlowKey {
                protocol: if tcp { ip_proto::TCP } else { ip_proto::UDP },
                src_port,
                dst_port,
                ip_version: 4,
                ..Default::default()
            },
            time_ns,
            // A payload longer on the wire than captured, now and then.
            payload_len: payload.len() as u32 + u32::from(len & 3) * 600,
            bytes: payload.to_vec(),
        };
        decoder.packet(&packet, &mut observations);
    }
    let builder = RecordBuilder::default();
    let mut stamper = Stamper::default();
    let mut out = Vec::new();
    for observation in observations {
        let source = stamper.stamp(&observation.flow_update(), Identities::default());
        let flow = builder.build_dns(&source, observation);
        write_export_event(
            &mut out,
            ExportPayload::Flow(&flow, None),
            "fuzz",
            &flow.time.unwrap_or_default(),
        );
    }
    decoder.expire(u64::MAX);
    decoder.finish();
}

/// A target: any bytes in, a panic on failure.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/Cargo.toml` and `fuzz/seeds/` name them.
pub const TARGETS: [(&str, Target); 5] = [
    ("ringbuf_records", ringbuf_records),
    ("hubble_json_lines", hubble_json_lines),
    ("flow_logs_config", flow_logs_config),
    ("flow_filters", flow_filters),
    ("dns_packets", dns_packets),
];
