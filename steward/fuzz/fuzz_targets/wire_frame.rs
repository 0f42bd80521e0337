//! The binary frame decoder must never panic, whatever the bytes: it returns a frame or an
//! error, and every frame it returns encodes back to the same values.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    steward::fuzz_frame(data);
});
