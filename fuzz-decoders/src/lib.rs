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

/// A target: any bytes in, a panic on failure.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/Cargo.toml` and `fuzz/seeds/` name them.
pub const TARGETS: [(&str, Target); 4] = [
    ("ringbuf_records", ringbuf_records),
    ("hubble_json_lines", hubble_json_lines),
    ("flow_logs_config", flow_logs_config),
    ("flow_filters", flow_filters),
];
