//! GPT headers and entry arrays from an untrusted disk.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(gpt) = veil_agent::gpt::Gpt::read(&mut &data[..]) {
        for p in &gpt.partitions {
            let _ = (p.offset(), p.size());
        }
        let _ = gpt.by_name("veil-boot");
    }
});
