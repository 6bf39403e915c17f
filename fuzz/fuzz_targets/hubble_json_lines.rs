//! Hubble JSON lines for `hubcap observe`: see `hubcap_fuzz_decoders::hubble_json_lines`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcap_fuzz_decoders::hubble_json_lines(data));
