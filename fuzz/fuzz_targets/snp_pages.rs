//! The SEV-SNP pages the firmware reads at bring-up: the CPUID page (every CPUID answer, and
//! the C-bit, come from it) and the secrets page (VMPCKs, the OS area's sequence numbers).
//! The AMD-SP fills both, but they are parsed as untrusted input all the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::snp::pages;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = pages::CpuidPage::parse(data) {
        let _ = p.cbit();
        for leaf in [0, 1, 7, 0xD, 0x8000_0000, 0x8000_001F] {
            let _ = p.lookup(leaf, 0);
            let _ = p.lookup(leaf, 1);
        }
    }
    let mut page = [0u8; 4096];
    let n = data.len().min(4096);
    page[..n].copy_from_slice(&data[..n]);
    for k in 0..5 {
        let _ = pages::vmpck(&page, k);
        let _ = pages::os_seqno(&page, k);
    }
    pages::wipe_vmpck(&mut page, 0);
    assert_eq!(page[0x20..0x40], [0u8; 32]);
});
