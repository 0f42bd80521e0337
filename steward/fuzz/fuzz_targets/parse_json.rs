//! The message parser must never panic, whatever the text: it returns messages or errors.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(batch) = steward::parse_json(text) {
            for (_, m) in &batch.messages {
                // Every accepted message is valid and has a well-formed subject.
                assert!(m.validate(None).is_ok());
                assert_eq!(m.subject().split('.').count(), 3);
            }
        }
    }
});
