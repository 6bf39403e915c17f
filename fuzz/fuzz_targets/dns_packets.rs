//! DNS packets as the kernel hands them over: see `hubcap_fuzz_decoders::dns_packets`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcap_fuzz_decoders::dns_packets(data));
