//! What the host hands over fw_cfg: the file directory and the e820 map.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = veil_agent::fwcfg::parse_directory(data);
    if let Ok(map) = veil_agent::fwcfg::parse_e820(data) {
        for e in &map {
            assert!(e.end() > e.addr);
        }
    }
});
