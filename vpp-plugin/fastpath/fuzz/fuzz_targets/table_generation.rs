#![no_main]
//! cargo fuzz run table_generation — body shared with the corpus replay test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cvlan_fastpath::fuzzing::generation(data));
