//! SEV-SNP structures the host writes: the SEV hash table (in guest memory, checked before a
//! direct boot) and an OVMF-style ROM's footer table and SEV metadata (what the launch digest
//! is computed from). Raw inputs, and inputs behind a valid table header so that the entry
//! parser is reached.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::snp::{hashes, ovmf};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = hashes::KernelHashes::parse(data) {
        let _ = h.verify(b"k", b"i", b"c");
    }
    let mut table = hashes::TABLE_GUID.to_vec();
    table.extend_from_slice(data);
    let _ = hashes::KernelHashes::parse(&table);
    // A ROM tail: the input at the end of a 4 KiB page, the footer GUID forced into place.
    let mut rom = vec![0u8; 4096];
    let n = data.len().min(4096 - 0x30);
    rom[4096 - 0x30 - n..4096 - 0x30].copy_from_slice(&data[..n]);
    rom[4096 - 0x30..4096 - 0x20].copy_from_slice(&ovmf::FOOTER_GUID);
    let _ = ovmf::parse(&rom);
});
