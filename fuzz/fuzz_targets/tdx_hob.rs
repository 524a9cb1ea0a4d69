//! The TD HOB the VMM writes: the firmware's memory map on TDX. Raw bytes, and bytes behind a
//! valid hand-off table so that the resource parser is reached.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::tdx::hob;

fuzz_target!(|data: &[u8]| {
    let _ = hob::parse(data);
    let mut list = hob::build(&[]);
    list.truncate(56);
    list.extend_from_slice(data);
    if let Ok(resources) = hob::parse(&list) {
        for r in resources {
            assert!(r.start.checked_add(r.len).is_some());
        }
    }
});
