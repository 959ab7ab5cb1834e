#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| scrim_fuzz::server_request(data));
