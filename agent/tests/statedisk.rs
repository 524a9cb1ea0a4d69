//! The state disk's decisions against what a real format writes: every way a power cut can
//! leave the firmware's own format (any subset of its three writes, each whole or torn) is
//! formatted again; anything else a disk can hold is left alone; a volume is handed over only
//! when its keyslot opens.

use veil_agent::luks2::format::{HeaderWriter, KdfParams};
use veil_agent::luks2::{KdfLimits, Volume};
use veil_agent::statedisk::{Footprint, Found, Keyslots, MIN_SIZE, check_keyslots, classify, format_options, probes};
use zeroize::Zeroizing;

const MIB: usize = 1 << 20;
const SIZE: usize = MIN_SIZE as usize;

/// Deterministic "randomness" (a counter through SHA-256).
fn test_rng() -> impl FnMut(&mut [u8]) {
    use sha2::{Digest, Sha256};
    let mut n = 0u64;
    move |buf: &mut [u8]| {
        for chunk in buf.chunks_mut(32) {
            n += 1;
            let h = Sha256::digest(n.to_le_bytes());
            chunk.copy_from_slice(&h[..chunk.len()]);
        }
    }
}

/// The firmware's format of a disk, as its writes in order (and the volume key).
fn format_writes(passphrase: &[u8]) -> (Vec<(u64, Zeroizing<Vec<u8>>)>, Vec<u8>) {
    let mut rng = test_rng();
    let opts = format_options("0b6c3a3e-6f2e-4d8a-9a53-1c2d3e4f5a6b".into());
    let mut key = vec![0u8; opts.key_size];
    rng(&mut key);
    let writer = HeaderWriter::format(&opts, &key, passphrase, &mut rng).unwrap();
    (writer.commit(&mut rng).unwrap(), key)
}

fn decide(disk: &[u8]) -> Found {
    let [h, d, t] = probes(disk.len() as u64).map(|(o, l)| &disk[o as usize..(o + l) as usize]);
    classify(disk.len() as u64, h, d, t)
}

#[test]
fn the_footprint_holds_every_write_of_a_format() {
    let (writes, _) = format_writes(b"k");
    let fp = Footprint::of_format();
    // Keyslot area, primary, secondary: the order the firmware writes (and flushes) them in.
    let ranges: Vec<(u64, u64)> = writes.iter().map(|(o, b)| (*o, b.len() as u64)).collect();
    assert_eq!(ranges, vec![fp.keyslot_area, (0, fp.metadata), (fp.metadata, fp.metadata)]);
    assert!(fp.end() <= veil_agent::statedisk::PROBE && fp.end() <= fp.data_offset);
}

#[test]
fn a_blank_disk_is_formatted_unless_too_small() {
    assert_eq!(decide(&vec![0u8; SIZE]), Found::Blank);
    match decide(&vec![0u8; MIN_SIZE as usize - 4096]) {
        Found::Foreign(why) => assert!(why.contains("too small"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// Every state a power cut can leave the format in: each of its three writes absent, whole,
/// or torn (its first or its second half, or only its first sector), in every combination.
/// Those that do not load as a volume are the firmware's own interrupted format.
#[test]
fn every_interrupted_format_is_recognised() {
    let (writes, _) = format_writes(b"k");
    let parts = |len: usize| [None, Some(0..len), Some(0..len / 2), Some(len / 2..len), Some(0..512)];
    let mut recognised = 0;
    for a in parts(writes[0].1.len()) {
        for p in parts(writes[1].1.len()) {
            for s in parts(writes[2].1.len()) {
                let mut disk = vec![0u8; SIZE];
                for ((off, bytes), part) in writes.iter().zip([&a, &p, &s]) {
                    if let Some(r) = part {
                        let at = *off as usize + r.start;
                        disk[at..at + r.len()].copy_from_slice(&bytes[r.clone()]);
                    }
                }
                let found = decide(&disk);
                // (A torn half of a header copy can be all zero padding.)
                if disk[..MIB].iter().all(|b| *b == 0) {
                    assert_eq!(found, Found::Blank);
                } else if Volume::load(&mut disk.as_slice()).is_err() {
                    assert!(
                        matches!(found, Found::InterruptedFormat(_)),
                        "area {a:?} primary {p:?} secondary {s:?}: {found:?}"
                    );
                    recognised += 1;
                }
            }
        }
    }
    assert!(recognised >= 40, "{recognised}");
    // What the log says: how much of the area, and each copy.
    let mut only_area = vec![0u8; SIZE];
    let (off, bytes) = &writes[0];
    only_area[*off as usize..*off as usize + bytes.len()].copy_from_slice(bytes);
    assert_eq!(
        decide(&only_area),
        Found::InterruptedFormat(
            "keyslot area 504 of 504 sectors written, primary header copy absent, secondary absent".into()
        )
    );
}

fn foreign(disk: &[u8]) -> String {
    match decide(disk) {
        Found::Foreign(why) => why,
        other => panic!("expected a foreign disk, got {other:?}"),
    }
}

/// What is not the firmware's format, even inside the ranges it writes, is never formatted.
#[test]
fn anything_else_is_left_alone() {
    let (writes, _) = format_writes(b"k");
    let fp = Footprint::of_format();
    let mut interrupted = vec![0u8; SIZE];
    let (off, bytes) = &writes[0];
    interrupted[*off as usize..*off as usize + bytes.len()].copy_from_slice(bytes);
    assert!(matches!(decide(&interrupted), Found::InterruptedFormat(_)));

    // One byte past what a format writes.
    let mut d = interrupted.clone();
    d[fp.end() as usize] = 1;
    assert!(foreign(&d).contains("first MiB"));
    // Data where the volume's data starts (a volume in use whose headers are both gone).
    let mut d = interrupted.clone();
    d[fp.data_offset as usize + 5000] = 1;
    assert!(foreign(&d).contains("MiB at 16 MiB"));
    // The last MiB.
    let mut d = interrupted.clone();
    d[SIZE - 1] = 1;
    assert!(foreign(&d).contains("last MiB"));
    // Text (or any structured data) in the keyslot area's range.
    let mut d = vec![0u8; SIZE];
    let text = b"#!/bin/sh\necho this is somebody's data, not a keyslot\n".repeat(20);
    d[fp.keyslot_area.0 as usize..fp.keyslot_area.0 as usize + text.len()].copy_from_slice(&text);
    assert!(foreign(&d).contains("first MiB"));
    // A filesystem signature.
    let mut d = vec![0u8; SIZE];
    d[1080..1082].copy_from_slice(&[0x53, 0xEF]);
    assert_eq!(foreign(&d), "it carries an ext2/3/4 superblock");
    // A LUKS2 header of another geometry (32 KiB copies), torn: not what the firmware writes.
    let mut rng = test_rng();
    let opts = veil_agent::luks2::format::FormatOptions { metadata_size: 0x8000, ..format_options("x".into()) };
    let opts = veil_agent::luks2::format::FormatOptions { uuid: None, keyslots_size: (16 << 20) - 0x10000, ..opts };
    let mut key = vec![0u8; 64];
    rng(&mut key);
    let other = HeaderWriter::format(&opts, &key, b"k", &mut rng).unwrap().commit(&mut rng).unwrap();
    let mut d = vec![0u8; SIZE];
    let (off, primary) = &other[1];
    assert_eq!(*off, 0);
    d[..4096].copy_from_slice(&primary[..4096]);
    assert_eq!(foreign(&d), "it carries a LUKS header");
    // Binary-header padding that is not zero.
    let mut d = interrupted.clone();
    d[..4096].copy_from_slice(&writes[1].1[..4096]);
    assert!(matches!(decide(&d), Found::InterruptedFormat(_)));
    d[2000] = 1;
    assert_eq!(foreign(&d), "it carries a LUKS header");
}

#[test]
fn a_volume_is_handed_over_only_when_its_keyslot_opens() {
    let limits = KdfLimits::default();
    let (writes, _) = format_writes(b"disk key");
    let mut disk = vec![0u8; SIZE];
    for (off, bytes) in &writes {
        disk[*off as usize..*off as usize + bytes.len()].copy_from_slice(bytes);
    }
    let volume = Volume::load(&mut disk.as_slice()).unwrap();
    assert_eq!(check_keyslots(&volume, &mut disk.as_slice(), b"disk key", &limits), Ok(Keyslots::Open(0)));
    // Another cluster's volume: its keyslot does not open with this key.
    match check_keyslots(&volume, &mut disk.as_slice(), b"another key", &limits).unwrap() {
        Keyslots::Refused(why) => assert_eq!(why, "no keyslot opens with this cluster's disk key for it"),
        other => panic!("{other:?}"),
    }
    // Both headers reached the disk, the keyslot area did not (the host reordered the writes).
    let (area_at, area_len) = Footprint::of_format().keyslot_area;
    let mut reordered = disk.clone();
    reordered[area_at as usize..(area_at + area_len) as usize].fill(0);
    match check_keyslots(&volume, &mut reordered.as_slice(), b"disk key", &limits).unwrap() {
        Keyslots::Refused(why) => assert!(why.contains("area of keyslot 0 holds only zeros"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A keyslot the firmware cannot run: not refused, left for Linux to try.
    let mut rng = test_rng();
    let (_, key) = format_writes(b"disk key");
    let mut w = HeaderWriter::edit(&volume).unwrap();
    w.remove_keyslot(0).unwrap();
    let argon = KdfParams::Argon2 { id: true, time: 1, memory_kib: 1 << 20, cpus: 1 };
    w.add_keyslot(&key, b"disk key", &argon, Some(0), &mut rng).unwrap();
    let mut costly = disk.clone();
    for (off, bytes) in w.commit(&mut rng).unwrap() {
        costly[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
    }
    let volume = Volume::load(&mut costly.as_slice()).unwrap();
    let small = KdfLimits { max_memory_kib: 64 * 1024, ..KdfLimits::default() };
    assert!(matches!(
        check_keyslots(&volume, &mut costly.as_slice(), b"disk key", &small).unwrap(),
        Keyslots::Unchecked(_)
    ));
}
