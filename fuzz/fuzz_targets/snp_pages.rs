//! SEV-SNP inputs the firmware reads from the host or the AMD-SP: the CPUID page (every CPUID
//! answer, and the C-bit, come from it) and the secrets page (VMPCKs, the OS area's sequence
//! numbers), the host's certificate table, a disk's `veil-snp` token and init-data. All are
//! parsed as untrusted input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::snp::{attest, pages, seal};

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
    let _ = attest::parse_cert_table(data);
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = veil_agent::initdata::digest(text);
        let _ = veil_agent::initdata::manifest_sha384(text);
    }
    if let Ok(v) = veil_agent::json::from_slice(data) {
        for t in seal::find(&v).into_iter().flatten() {
            let _ = t.open(&[0u8; 32], &[0u8; 32]);
        }
    }
});
