//! Flow-log config files: see `hubcap_fuzz_decoders::flow_logs_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcap_fuzz_decoders::flow_logs_config(data));
