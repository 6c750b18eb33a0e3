#![no_main]
//! cargo fuzz run parse_outer — body shared with the corpus replay test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cvlan_fastpath::fuzzing::outer(data));
