//! QEMU's MADT (host bytes) given the TDX wakeup structure: raw bytes, and bytes behind a valid
//! MADT header so that the structure walk is reached. An accepted table keeps a valid length
//! and checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::tdx::wakeup;

fuzz_target!(|data: &[u8]| {
    let _ = wakeup::madt_with_wakeup(data, 0x1000);
    let mut t = b"APIC".to_vec();
    t.extend(((44 + data.len()) as u32).to_le_bytes());
    t.extend([0u8; 36]);
    t.extend_from_slice(data);
    if let Ok(out) = wakeup::madt_with_wakeup(&t, 0x1000) {
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize, out.len());
        assert_eq!(out.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }
});
