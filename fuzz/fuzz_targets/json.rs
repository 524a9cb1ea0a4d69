//! The firmware's JSON parser (agent::json) on any bytes: never panics, and what it accepts
//! it writes back as text that parses to the same value, which it writes identically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::json;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = json::from_slice(data) {
        let text = json::to_vec(&v);
        let again = json::from_slice(&text).expect("our own text parses");
        assert_eq!(again, v);
        assert_eq!(json::to_vec(&again), text);
    }
    let _ = json::from_slice_prefix(data);
});
