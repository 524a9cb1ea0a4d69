//! cryptsetup's LUKS2 images and validation corpus (shared/testdata/luks2): the same
//! load/reject verdict as cryptsetup 2.6.1 for all 85 mutated headers, and every upstream
//! image unlocks with its published passphrases to the published volume key.
mod common;

use std::fs::File;

use common::images::{find, unpack};
use common::testdata;
use veil_agent::luks2::format::HeaderWriter;
use veil_agent::luks2::{KdfLimits, Luks2Error, Luks2ErrorKind, Volume};

#[test]
fn validation_corpus_verdicts_match_cryptsetup() {
    let Some(dir) = testdata("luks2/cryptsetup-validation-corpus") else { return };
    let images = unpack(&dir.join("luks2-validation-images.tar.xz"));
    let expected = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    let mut mismatches = Vec::new();
    let mut count = 0;
    for line in expected.lines().filter(|l| !l.trim().is_empty()) {
        let mut cols = line.split('\t');
        let (name, verdict, why) = (cols.next().unwrap(), cols.next().unwrap(), cols.next().unwrap_or(""));
        let path = find(&images, name).unwrap_or_else(|| panic!("{name} missing from the corpus"));
        let result = Volume::load(&mut File::open(&path).unwrap());
        count += 1;
        let ok = match verdict {
            "R" => result.is_ok(),
            // cryptsetup's T cases: remove token 0, rewrite, and the result must load again.
            "T" => result.as_ref().is_ok_and(|volume| {
                let mut dev = std::fs::read(&path).unwrap();
                let mut w = HeaderWriter::edit(volume).unwrap();
                w.remove_token(0).unwrap();
                let mut counter = 0u8;
                let mut rng = |b: &mut [u8]| {
                    b.iter_mut().for_each(|x| {
                        counter = counter.wrapping_add(1);
                        *x = counter
                    })
                };
                for (off, bytes) in w.commit(&mut rng).unwrap() {
                    dev[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
                }
                Volume::load(&mut dev.as_slice()).is_ok_and(|v| v.metadata().tokens.is_empty())
            }),
            "F" => result.is_err(),
            other => panic!("unknown verdict {other}"),
        };
        if !ok {
            mismatches.push(format!(
                "{name}: cryptsetup says {verdict} ({why}); veilboot: {:?}",
                result.as_ref().map(|_| "loaded").map_err(|e| e.to_string())
            ));
        }
    }
    assert_eq!(count, 85);
    assert!(mismatches.is_empty(), "{} of 85 verdicts differ:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn upstream_images_unlock_to_published_keys() {
    let Some(dir) = testdata("luks2/cryptsetup-upstream") else { return };
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut opened = 0;
    for (name, case) in expected.as_object().unwrap() {
        let Some(passphrases) = case["passphrases_by_keyslot"].as_object() else { continue };
        let container = case["container"].as_str().unwrap();
        let unpacked = unpack(&dir.join(container));
        let path = find(&unpacked, name)
            .or_else(|| find(&unpacked, &format!("{name}.img")))
            .unwrap_or_else(|| panic!("{name} not in {container}"));
        let mut dev = File::open(&path).unwrap();
        let volume = Volume::load(&mut dev).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(volume.uuid(), case["uuid"].as_str().unwrap(), "{name}: uuid");
        let seg = &case["segment0"];
        let (_, data) = volume.metadata().data_segment().unwrap();
        assert_eq!(data.offset, seg["offset_bytes"].as_u64().unwrap(), "{name}: data offset");
        assert_eq!(data.encryption, seg["encryption"].as_str().unwrap(), "{name}: cipher");
        assert_eq!(data.sector_size as u64, seg["sector_size"].as_u64().unwrap(), "{name}: sector size");
        for (slot, pass) in passphrases {
            let n: u32 = slot.split_whitespace().next().unwrap().parse().unwrap();
            let start = std::time::Instant::now();
            let key = volume
                .unlock_keyslot(&mut dev, n, pass.as_str().unwrap().as_bytes(), &KdfLimits::default())
                .unwrap_or_else(|e| panic!("{name} keyslot {n}: {e}"));
            let want =
                if slot.contains("unbound") { &case["unbound_keyslot1_key_hex"] } else { &case["volume_key_hex"] };
            assert_eq!(hex::encode(&*key), want.as_str().unwrap(), "{name} keyslot {n}");
            eprintln!(
                "{name}: keyslot {n} ({:?}) opened in {:?}",
                case["keyslot_kdfs"][slot.split_whitespace().next().unwrap()],
                start.elapsed()
            );
            // The wrong passphrase is its own error.
            assert_eq!(
                volume
                    .unlock_keyslot(&mut dev, n, b"not the passphrase", &KdfLimits::default())
                    .unwrap_err()
                    .into_kind(),
                Luks2ErrorKind::WrongPassphrase
            );
            opened += 1;
        }
        // What the volume key may be used for: unknown requirements and ciphers are refused.
        let key = hex::decode(case["volume_key_hex"].as_str().unwrap()).unwrap();
        match volume.data_cipher(&key).map_err(Luks2Error::into_kind) {
            Ok(_) => assert_eq!(seg["encryption"], "aes-xts-plain64", "{name}"),
            Err(Luks2ErrorKind::UnmetRequirements(r)) => {
                assert_eq!(case["config"]["requirements"]["mandatory"], serde_json::json!(r), "{name}")
            }
            Err(Luks2ErrorKind::Unsupported(what)) => {
                assert_ne!(seg["encryption"], "aes-xts-plain64", "{name}: {what}")
            }
            Err(e) => panic!("{name}: {e}"),
        }
        if !slot_is_only_unbound(passphrases) {
            let first = passphrases.values().next().unwrap().as_str().unwrap();
            let result = volume.unlock(&mut dev, first.as_bytes(), &KdfLimits::default());
            assert!(result.is_ok(), "{name}: unlock any slot: {result:?}");
        }
    }
    assert!(opened >= 10, "only {opened} keyslots opened");
}

fn slot_is_only_unbound(p: &serde_json::Map<String, serde_json::Value>) -> bool {
    p.keys().all(|k| k.contains("unbound"))
}

/// Real data written by cryptsetup: the aes-xts-plain64 LUKS1 images' payloads (a FAT12
/// filesystem) decrypt with veilboot's sector cipher to the digests their SOURCE.txt lists.
#[test]
fn luks1_xts_payloads_decrypt_with_our_sector_cipher() {
    use sha2::{Digest, Sha256};
    let Some(dir) = testdata("luks2/luks1-aes-xts-images") else { return };
    let images = unpack(&dir.join("luks1-images.tar.xz"));
    let cases = [
        (
            "luks1_aes-xts-plain64-sha256.img",
            "b1c4a7c0f69cbfd1ef32ec65ada15a0aa41fa940ade5289911a64d31bcd07b30",
            "b42c93fc807d8c40cc05c932ae5c27fc56af96a0a3d5f53d215f63e4c59e7577",
        ),
        (
            "luks1_aes-xts-plain64-sha1.img",
            "8a30e57f29d9d0165e2964e68e12ca17e3b6703b48faee3acc9922388b5b019a",
            "f1c9268181840ccff69d719b9c592fc1e97c59d707e14cc12cc7288dca37e751",
        ),
    ];
    for (name, vk, digest) in cases {
        let path = find(&images, name).unwrap_or_else(|| panic!("{name} missing"));
        let mut payload = std::fs::read(&path).unwrap().split_off(4096 * 512);
        let cipher = veil_agent::xts::SectorCipher::new(&hex::decode(vk).unwrap(), 512).unwrap();
        cipher.decrypt_sectors(0, &mut payload).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&payload)), digest, "{name}");
        assert_eq!(&payload[0x27..0x2b], &[0xbe, 0xba, 0xad, 0xde], "{name}: FAT volume id DEAD-BABE");
    }
}
