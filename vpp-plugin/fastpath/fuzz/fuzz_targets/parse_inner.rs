#![no_main]
//! cargo fuzz run parse_inner — body shared with the corpus replay test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cvlan_fastpath::fuzzing::inner(data));
