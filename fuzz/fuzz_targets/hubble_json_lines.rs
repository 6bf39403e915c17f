//! Lines `hubcap observe` reads (Hubble JSON from a file or stdin): decoded
//! and printed in every output format. Bad lines are errors, never panics.
#![no_main]

use hubcap::observe::{args::OutputFormat, print::Printer, source::decode_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for line in text.lines() {
        let Ok(Some(response)) = decode_line(line) else { continue };
        for format in [OutputFormat::Compact, OutputFormat::Json, OutputFormat::Table] {
            let mut printer = Printer::new(Vec::new(), format, true, false);
            let _ = printer.print(&response);
            let _ = printer.finish();
        }
    }
});
