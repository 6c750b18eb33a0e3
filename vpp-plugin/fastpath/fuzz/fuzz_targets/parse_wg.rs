#![no_main]
//! cargo fuzz run parse_wg — body shared with the corpus replay test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cvlan_fastpath::fuzzing::wg(data));
