//! The LUKS2 JSON area rules (NUL padding, parse, repair, cryptsetup validation, typed view).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = veil_agent::luks2::check_metadata_area(data);
});
