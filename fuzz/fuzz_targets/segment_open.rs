//! Fuzz target: arbitrary bytes through `trovedb::fuzzing::segment_open_any` — an error is fine, a
//! panic, hang or huge allocation is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = trovedb::fuzzing::segment_open_any(data);
});
