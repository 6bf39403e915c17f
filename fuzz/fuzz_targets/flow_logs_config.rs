//! Flow-log config files (`--flow-logs-config`, Cilium's dynamic exporter
//! shape): any text is accepted or refused with an error, never a panic.
#![no_main]

use hubcap::output::flow_logs::parse_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(logs) = parse_config(std::path::Path::new("fuzz.yaml"), text) {
        for log in &logs {
            let _ = log.aggregation_options.as_ref().map(|a| a.window());
        }
    }
});
