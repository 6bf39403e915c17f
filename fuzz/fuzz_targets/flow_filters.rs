//! GetFlows requests and their filters: see `hubcap_fuzz_decoders::flow_filters`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcap_fuzz_decoders::flow_filters(data));
