//! The inmsg.txt reader must never panic on any bytes (invalid UTF-8, nesting, garbage).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = steward::fuzzing::inmsg(data);
});
