//! Ring-buffer records: see `hubcap_fuzz_decoders::ringbuf_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcap_fuzz_decoders::ringbuf_records(data));
