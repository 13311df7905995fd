//! Fuzz target: `trovedb::fuzzing::checksummed` — the first byte picks a file kind (log,
//! segment, manifest, deletion file), the rest becomes a file of that kind whose checksums
//! are recomputed, so the fuzzer reaches the parsers behind the checksums. An error is
//! fine; a panic, hang or huge allocation is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = trovedb::fuzzing::checksummed(data);
});
