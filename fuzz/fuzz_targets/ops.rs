//! Fuzz target: arbitrary bytes as an operation sequence checked against an in-memory
//! model (`trovedb::fuzzing::ops`); a panic is a disagreement or an unexpected error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trovedb::fuzzing::ops(data);
});
