//! GPT headers and entry arrays from an untrusted disk. The input becomes the primary header
//! (signature forced, CRCs made right so the fuzzer gets past them) and the entry array;
//! raw inputs are also tried as a whole disk.
#![no_main]
use libfuzzer_sys::fuzz_target;

fn crc32(data: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the crate under test.
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn exercise(disk: &[u8]) {
    if let Ok(gpt) = veil_agent::gpt::Gpt::read(&mut &disk[..]) {
        for p in &gpt.partitions {
            let _ = (p.offset(), p.size());
        }
        let _ = gpt.by_name("veil-boot");
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    let mut disk = vec![0u8; 64 * 1024];
    let n = data.len().min(92);
    disk[512..512 + n].copy_from_slice(&data[..n]);
    disk[512..520].copy_from_slice(b"EFI PART");
    let rest = &data[n..];
    let m = rest.len().min(disk.len() - 1024);
    disk[1024..1024 + m].copy_from_slice(&rest[..m]);
    // Entry array CRC over what the header says the array is, when that is in range.
    let count = u32::from_le_bytes(disk[512 + 80..512 + 84].try_into().unwrap()) as u64;
    let size = u32::from_le_bytes(disk[512 + 84..512 + 88].try_into().unwrap()) as u64;
    let lba = u64::from_le_bytes(disk[512 + 72..512 + 80].try_into().unwrap());
    if let Some(end) = lba.checked_mul(512).and_then(|s| s.checked_add(count.checked_mul(size)?)) {
        if end <= disk.len() as u64 {
            let crc = crc32(&disk[(lba * 512) as usize..end as usize]);
            disk[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let hs = (u32::from_le_bytes(disk[512 + 12..512 + 16].try_into().unwrap()) as usize).clamp(92, 512);
    disk[512 + 16..512 + 20].fill(0);
    let crc = crc32(&disk[512..512 + hs]);
    disk[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
    exercise(&disk);
});
