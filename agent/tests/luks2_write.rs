//! The write side against the read side, damage and hostile metadata, and cryptsetup itself
//! (Debian's cryptsetup 2.6 must accept what we write, and we must open what it writes).
mod common;

use std::process::{Command, Stdio};

use veil_agent::luks2::format::{FormatOptions, HeaderWriter, KdfParams};
use veil_agent::luks2::{KdfLimits, Luks2Error, Luks2ErrorKind, SegmentSize, Volume};

/// Deterministic "randomness" for tests (a counter through SHA-256).
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

fn apply(dev: &mut Vec<u8>, writes: Vec<(u64, zeroize::Zeroizing<Vec<u8>>)>) {
    for (off, bytes) in writes {
        let off = off as usize;
        if dev.len() < off + bytes.len() {
            dev.resize(off + bytes.len(), 0);
        }
        dev[off..off + bytes.len()].copy_from_slice(&bytes);
    }
}

const MIB: usize = 1 << 20;

fn new_volume(opts: &FormatOptions, passphrase: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut rng = test_rng();
    let mut key = vec![0u8; opts.key_size];
    rng(&mut key);
    let writer = HeaderWriter::format(opts, &key, passphrase, &mut rng).unwrap();
    let mut dev = vec![0u8; 17 * MIB];
    apply(&mut dev, writer.commit(&mut rng).unwrap());
    (dev, key)
}

#[test]
fn formatted_volume_opens_and_encrypts() {
    for sector_size in [512u32, 4096] {
        let opts = FormatOptions { sector_size, ..FormatOptions::default() };
        let (mut dev, key) = new_volume(&opts, b"correct horse");
        let volume = Volume::load(&mut dev.as_slice()).unwrap();
        assert!(!volume.other_copy_stale);
        let (slot, got) = volume.unlock(&mut dev.as_slice(), b"correct horse", &KdfLimits::default()).unwrap();
        assert_eq!((slot, &got[..]), (0, &key[..]));
        assert_eq!(
            volume.unlock(&mut dev.as_slice(), b"wrong", &KdfLimits::default()).unwrap_err().into_kind(),
            Luks2ErrorKind::WrongPassphrase
        );
        let (seg, cipher) = volume.data_cipher(&got).unwrap();
        assert_eq!((seg.offset, seg.size, seg.sector_size), (16 * MIB as u64, SegmentSize::Dynamic, sector_size));
        let data = &mut dev[seg.offset as usize..];
        let plain = data.to_vec();
        cipher.encrypt_sectors(seg.iv_sector(0), data).unwrap();
        assert_ne!(data, &plain[..]);
        cipher.decrypt_sectors(seg.iv_sector(0), data).unwrap();
        assert_eq!(data, &plain[..]);
    }
}

#[test]
fn keyslots_and_tokens_can_be_added_replaced_removed() {
    let (mut dev, key) = new_volume(&FormatOptions::default(), b"first");
    let mut rng = test_rng();
    let volume = Volume::load(&mut dev.as_slice()).unwrap();
    let seq = volume.header().seqid;
    let mut w = HeaderWriter::edit(&volume).unwrap();
    let argon = KdfParams::Argon2 { id: true, time: 1, memory_kib: 1024, cpus: 1 };
    assert_eq!(w.add_keyslot(&key, b"second", &argon, None, &mut rng).unwrap(), 1);
    let argon_i = KdfParams::Argon2 { id: false, time: 2, memory_kib: 1024, cpus: 2 };
    assert_eq!(w.add_keyslot(&key, b"legacy", &argon_i, Some(5), &mut rng).unwrap(), 5);
    // A wrong volume key is never bound to a keyslot.
    assert!(matches!(
        w.add_keyslot(&[7u8; 64][..], b"x", &KdfParams::default(), None, &mut rng).map_err(Luks2Error::into_kind),
        Err(Luks2ErrorKind::Format(_))
    ));
    let token = veil_agent::json!({"type": "veil-test", "blob": "aGVsbG8="});
    assert_eq!(w.add_token(token, &[1], None).unwrap(), 0);
    apply(&mut dev, w.commit(&mut rng).unwrap());

    let volume = Volume::load(&mut dev.as_slice()).unwrap();
    assert_eq!(volume.header().seqid, seq + 1);
    let limits = KdfLimits::default();
    assert_eq!(&volume.unlock_keyslot(&mut dev.as_slice(), 1, b"second", &limits).unwrap()[..], &key[..]);
    assert_eq!(&volume.unlock_keyslot(&mut dev.as_slice(), 0, b"first", &limits).unwrap()[..], &key[..]);
    assert_eq!(&volume.unlock(&mut dev.as_slice(), b"legacy", &limits).unwrap().1[..], &key[..]);
    assert!(matches!(volume.metadata().keyslots[&5].kdf, Some(veil_agent::luks2::Kdf::Argon2 { id: false, .. })));
    let token = &volume.metadata().tokens[&0];
    assert_eq!((token.kind.as_str(), token.keyslots.as_slice()), ("veil-test", &[1u32][..]));
    assert_eq!(token.json["blob"], "aGVsbG8=");

    // Replace slot 0, remove slot 1 (its token drops the reference), remove the token.
    let mut w = HeaderWriter::edit(&volume).unwrap();
    w.replace_keyslot(0, &key, b"third", &KdfParams::default(), &mut rng).unwrap();
    w.remove_keyslot(1).unwrap();
    w.remove_token(0).unwrap();
    apply(&mut dev, w.commit(&mut rng).unwrap());
    let volume = Volume::load(&mut dev.as_slice()).unwrap();
    assert_eq!(
        volume.unlock_keyslot(&mut dev.as_slice(), 0, b"first", &limits).unwrap_err().into_kind(),
        Luks2ErrorKind::WrongPassphrase
    );
    assert_eq!(&volume.unlock(&mut dev.as_slice(), b"third", &limits).unwrap().1[..], &key[..]);
    assert_eq!(
        volume.unlock_keyslot(&mut dev.as_slice(), 1, b"second", &limits).unwrap_err().into_kind(),
        Luks2ErrorKind::NoSuchKeyslot(1)
    );
    assert!(volume.metadata().tokens.is_empty());
}

#[test]
fn damaged_headers() {
    let (dev, _) = new_volume(&FormatOptions::default(), b"pw");
    // Truncated device: the header is there but the keyslots area is not.
    let short = &dev[..64 * 1024];
    assert!(matches!(
        Volume::load(&mut &short[..]).map_err(Luks2Error::into_kind),
        Err(Luks2ErrorKind::DeviceTooSmall { .. })
    ));
    // Truncated below the header: both copies unreadable.
    assert!(matches!(
        Volume::load(&mut &dev[..1000]).map_err(Luks2Error::into_kind),
        Err(Luks2ErrorKind::NoValidHeader { .. })
    ));

    // One flipped JSON byte in the primary: checksum error, the secondary is used.
    let mut d = dev.clone();
    d[4096 + 10] ^= 1;
    let v = Volume::load(&mut d.as_slice()).unwrap();
    assert!(v.header().secondary && v.other_copy_stale);
    // Both flipped: precise error for each copy.
    d[0x4000 + 4096 + 10] ^= 1;
    match Volume::load(&mut d.as_slice()).map_err(Luks2Error::into_kind) {
        Err(Luks2ErrorKind::NoValidHeader { primary, secondary }) => {
            assert!(primary.contains("checksum"), "{primary}");
            assert!(secondary.contains("checksum"), "{secondary}");
        }
        other => panic!("{other:?}"),
    }
    // Wrong magic.
    let mut d = dev.clone();
    d[0] = b'X';
    d[0x4000] = b'X';
    let e = Volume::load(&mut d.as_slice()).unwrap_err().to_string();
    assert!(e.contains("no LUKS2 magic"), "{e}");
}

/// Rewrite the primary copy's JSON (recomputing its checksum) and wipe the secondary, so
/// that only the hostile metadata is left.
fn with_json(dev: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let mut d = dev.to_vec();
    let end = d[4096..0x4000].iter().position(|b| *b == 0).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&d[4096..4096 + end]).unwrap();
    edit(&mut json);
    let text = serde_json::to_vec(&json).unwrap();
    d[4096..0x4000].fill(0);
    d[4096..4096 + text.len()].copy_from_slice(&text);
    d[448..512].fill(0);
    use sha2::{Digest, Sha256};
    let sum = Sha256::digest(&d[..0x4000]);
    d[448..480].copy_from_slice(&sum);
    d[0x4000..0x8000].fill(0);
    d
}

#[test]
fn hostile_metadata_is_refused_precisely() {
    let (dev, _) = new_volume(&FormatOptions::default(), b"pw");
    assert!(Volume::load(&mut with_json(&dev, |_| {}).as_slice()).is_ok(), "the helper itself keeps a valid header");
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>)> = vec![
        ("inside the metadata", Box::new(|j| j["keyslots"]["0"]["area"]["offset"] = "4096".into())),
        ("runs past the keyslots area", Box::new(|j| j["keyslots"]["0"]["area"]["size"] = "999999999".into())),
        ("overflows", Box::new(|j| j["keyslots"]["0"]["area"]["size"] = "18446744073709551615".into())),
        ("does not fit between", Box::new(|j| j["segments"]["0"]["offset"] = "4096".into())),
        ("not 512-byte aligned", Box::new(|j| j["segments"]["0"]["offset"] = "16777217".into())),
        ("missing keyslot", Box::new(|j| j["digests"]["0"]["keyslots"] = serde_json::json!(["7"]))),
        ("illegal sector size", Box::new(|j| j["segments"]["0"]["sector_size"] = 1000.into())),
        // An integer field must be a JSON integer (json-c's json_type_int), not a float, and a
        // negative integer is one, refused for its range (validate_json_uint32).
        ("keyslot \"0\": missing \"key_size\" integer", Box::new(|j| j["keyslots"]["0"]["key_size"] = 64.0.into())),
        ("keyslot \"0\": key_size out of range", Box::new(|j| j["keyslots"]["0"]["key_size"] = (-1).into())),
        // The keyslots area is at most 128 MiB (cryptsetup's LUKS2_MAX_KEYSLOTS_SIZE), whatever the
        // data offset.
        ("unsupported keyslots_size 134221824", Box::new(|j| j["config"]["keyslots_size"] = "134221824".into())),
        // config flags (activation flags such as "allow-discards") are strings.
        (
            "config: a flag is not a string",
            Box::new(|j| j["config"]["flags"] = serde_json::json!(["allow-discards", 1])),
        ),
        // iv_tweak: decimal digits only (cryptsetup's numbered()) and within 64 bits.
        ("illegal iv_tweak \"+0\"", Box::new(|j| j["segments"]["0"]["iv_tweak"] = "+0".into())),
        (
            "illegal iv_tweak \"18446744073709551616\"",
            Box::new(|j| j["segments"]["0"]["iv_tweak"] = "18446744073709551616".into()),
        ),
        // A 1 MiB data segment and a linear one starting inside it.
        (
            "segments 1 and 0 overlap",
            Box::new(|j| {
                j["segments"]["0"]["size"] = "1048576".into();
                j["segments"]["1"] = serde_json::json!({"type": "linear", "offset": "17301504", "size": "dynamic"});
            }),
        ),
    ];
    for (want, edit) in cases {
        match Volume::load(&mut with_json(&dev, edit).as_slice()) {
            Err(e) => assert!(e.to_string().contains(want), "expected `{want}`, got `{e}`"),
            Ok(_) => panic!("accepted metadata that should fail with `{want}`"),
        }
    }
}

/// A keyslot area may end exactly where the keyslots area ends (the keyslots area is the
/// half-open [2 * header size, 2 * header size + keyslots_size)): shrinking `keyslots_size` to
/// the slot's end is accepted and the slot still opens; one 4 KiB step less is refused; and
/// cryptsetup itself agrees on both.
#[test]
fn a_keyslot_area_may_end_at_the_keyslots_area_end() {
    let (dev, key) = new_volume(&FormatOptions::default(), b"pw");
    let end_of_slot = |j: &serde_json::Value| {
        let field = |v: &serde_json::Value| v.as_str().unwrap().parse::<u64>().unwrap();
        let metadata = j["config"]["json_size"].as_str().unwrap().parse::<u64>().unwrap() + 4096;
        field(&j["keyslots"]["0"]["area"]["offset"]) + field(&j["keyslots"]["0"]["area"]["size"]) - 2 * metadata
    };
    let exact = with_json(&dev, |j| j["config"]["keyslots_size"] = end_of_slot(j).to_string().into());
    let volume = Volume::load(&mut exact.as_slice()).expect("a keyslot area ending at the keyslots-area end");
    let (_, got) = volume.unlock(&mut exact.as_slice(), b"pw", &KdfLimits::default()).unwrap();
    assert_eq!(&got[..], &key[..]);
    let short = with_json(&dev, |j| j["config"]["keyslots_size"] = (end_of_slot(j) - 4096).to_string().into());
    let Err(e) = Volume::load(&mut short.as_slice()) else {
        panic!("a keyslot area past the keyslots-area end loaded")
    };
    let e = e.to_string();
    assert!(e.contains("runs past the keyslots area"), "{e}");
    // cryptsetup draws the same line.
    if let Some(cs) = cryptsetup() {
        for (name, image, accepted) in [("exact", &exact, true), ("short", &short, false)] {
            let dump = luks_dump(&cs, image, &[]);
            assert_eq!(dump.status.success(), accepted, "cryptsetup luksDump {name}: {dump:?}");
        }
    }
}

/// cryptsetup reads config's json_size with strtoull (json_str_to_uint64): a sign is
/// accepted and a minus wraps modulo 2^64, so "+12288" and "-18446744073709539328" are both
/// the 12288-byte JSON area of a 16 KiB header and the volume loads and opens; "-12288" is
/// 2^64 - 12288, not a metadata size LUKS2 allows, and is refused. cryptsetup draws the same
/// lines.
#[test]
fn config_json_size_is_read_as_strtoull_reads_it() {
    let (dev, key) = new_volume(&FormatOptions::default(), b"pw");
    for (text, refusal) in
        [("+12288", None), ("-18446744073709539328", None), ("-12288", Some("unsupported metadata size"))]
    {
        let accepted = refusal.is_none();
        let image = with_json(&dev, |j| {
            assert_eq!(j["config"]["json_size"], "12288");
            j["config"]["json_size"] = text.into()
        });
        match Volume::load(&mut image.as_slice()) {
            Ok(volume) => {
                assert!(accepted, "json_size {text} loaded");
                let (_, got) = volume.unlock(&mut image.as_slice(), b"pw", &KdfLimits::default()).unwrap();
                assert_eq!(&got[..], &key[..], "json_size {text}");
            }
            Err(e) => {
                assert!(e.to_string().contains(refusal.unwrap_or("(loads)")), "json_size {text}: {e}");
            }
        }
        if let Some(cs) = cryptsetup() {
            let dump = luks_dump(&cs, &image, &[]);
            assert_eq!(dump.status.success(), accepted, "cryptsetup luksDump with json_size {text}: {dump:?}");
        }
    }
}

/// A segment flagged `backup-*` (what cryptsetup's reencryption keeps, here a decryption's
/// linear `backup-final` over the same data) is not part of the regular segments' layout: it
/// may overlap the dynamic data segment, and the volume loads with segment 0 as its data.
/// cryptsetup agrees.
#[test]
fn a_backup_segment_stays_outside_the_regular_layout() {
    let (dev, key) = new_volume(&FormatOptions::default(), b"pw");
    let image = with_json(&dev, |j| {
        j["segments"]["1"] = serde_json::json!({
            "type": "linear", "offset": "16777216", "size": "dynamic", "flags": ["backup-final"]
        });
    });
    let volume = Volume::load(&mut image.as_slice()).expect("a backup segment over the data segment");
    let (n, data) = volume.metadata().data_segment().unwrap();
    assert_eq!((n, data.offset), (0, 16 << 20));
    let (_, got) = volume.unlock(&mut image.as_slice(), b"pw", &KdfLimits::default()).unwrap();
    assert_eq!(&got[..], &key[..]);
    if let Some(cs) = cryptsetup() {
        let dump = luks_dump(&cs, &image, &[]);
        assert!(dump.status.success(), "cryptsetup luksDump: {dump:?}");
        assert!(String::from_utf8_lossy(&dump.stdout).contains("backup-final"), "{dump:?}");
    }
}

/// At most one mandatory requirement may ask for online reencryption: "online-reencrypt" or
/// "online-reencrypt-v" followed by digits (cryptsetup 2.6's reencrypt_candidate_flag and
/// hdr_validate_requirements); "online-reencrypt-v" alone or with a non-digit is just another
/// requirement. cryptsetup's debug log says when it counts more than one (it also refuses the
/// other two headers, for a rule veilboot does not have: a known reencryption requirement
/// needs reencryption's backup segments).
#[test]
fn online_reencrypt_requirements_are_counted_as_cryptsetup_counts_them() {
    let (dev, _) = new_volume(&FormatOptions::default(), b"pw");
    for (mandatory, accepted) in [
        (["online-reencrypt-v2", "online-reencrypt"], false),
        (["online-reencrypt-v2", "online-reencrypt-v3"], false),
        (["online-reencrypt-v2", "online-reencrypt-vX"], true),
        (["online-reencrypt-v2", "online-reencrypt-v"], true),
    ] {
        let image = with_json(&dev, |j| j["config"]["requirements"] = serde_json::json!({"mandatory": mandatory}));
        match Volume::load(&mut image.as_slice()) {
            Ok(volume) => {
                assert!(accepted, "{mandatory:?} loaded");
                assert_eq!(volume.unmet_requirements(), mandatory, "{mandatory:?}");
            }
            Err(e) => {
                assert!(!accepted, "{mandatory:?}: {e}");
                assert!(e.to_string().contains("several online-reencrypt requirements"), "{mandatory:?}: {e}");
            }
        }
        if let Some(cs) = cryptsetup() {
            let dump = luks_dump(&cs, &image, &["--debug"]);
            let log = String::from_utf8_lossy(&dump.stdout);
            assert_eq!(
                log.contains("Multiple online reencryption requirement flags detected"),
                !accepted,
                "cryptsetup luksDump with {mandatory:?}: {log}"
            );
        }
    }
}

/// The largest keyslots area LUKS2 allows, exactly 128 MiB, with a string activation flag in
/// config: the volume loads and opens (cryptsetup agrees).
#[test]
fn a_128_mib_keyslots_area_and_config_flags_load() {
    let opts = FormatOptions { keyslots_size: 128 << 20, ..FormatOptions::default() };
    let mut rng = test_rng();
    let mut key = vec![0u8; opts.key_size];
    rng(&mut key);
    let writer = HeaderWriter::format(&opts, &key, b"pw", &mut rng).unwrap();
    let mut dev = vec![0u8; (129 << 20) + 2 * 0x4000];
    apply(&mut dev, writer.commit(&mut rng).unwrap());
    let dev = with_json(&dev, |j| {
        assert_eq!(j["config"]["keyslots_size"], "134217728");
        j["config"]["flags"] = serde_json::json!(["allow-discards"]);
    });
    let volume = Volume::load(&mut dev.as_slice()).expect("a 128 MiB keyslots area");
    assert_eq!(volume.metadata().config.keyslots_size, 128 << 20);
    let (_, got) = volume.unlock(&mut dev.as_slice(), b"pw", &KdfLimits::default()).unwrap();
    assert_eq!(&got[..], &key[..]);
    if let Some(cs) = cryptsetup() {
        let dump = luks_dump(&cs, &dev, &[]);
        assert!(dump.status.success(), "cryptsetup luksDump: {dump:?}");
    }
}

/// A keyslot's KDF object holds exactly its type's parameters (cryptsetup's
/// luks2_keyslot_validate): a PBKDF2 one without its hash, or an Argon2 one without its lane
/// count, is refused for that reason.
#[test]
fn each_kdf_type_needs_all_its_parameters() {
    let argon2 = FormatOptions {
        kdf: KdfParams::Argon2 { id: true, time: 2, memory_kib: 8192, cpus: 1 },
        ..FormatOptions::default()
    };
    for (opts, field, want) in [
        (FormatOptions::default(), "hash", "pbkdf2 takes exactly type, salt, hash, iterations"),
        (argon2, "cpus", "argon2 takes exactly type, salt, time, memory, cpus"),
    ] {
        let (dev, _) = new_volume(&opts, b"pw");
        assert!(Volume::load(&mut dev.as_slice()).is_ok());
        let hostile = with_json(&dev, |j| {
            j["keyslots"]["0"]["kdf"].as_object_mut().unwrap().remove(field).unwrap();
        });
        let e = Volume::load(&mut hostile.as_slice()).err().unwrap_or_else(|| panic!("a KDF without {field} loaded"));
        assert!(e.to_string().contains(&format!("keyslot \"0\": {want}")), "{e}");
    }
}

#[test]
fn kdf_costs_are_bounded_by_the_caller() {
    let opts = FormatOptions {
        kdf: KdfParams::Argon2 { id: true, time: 2, memory_kib: 8192, cpus: 1 },
        ..FormatOptions::default()
    };
    let (dev, key) = new_volume(&opts, b"pw");
    let volume = Volume::load(&mut dev.as_slice()).unwrap();
    let tight = KdfLimits { max_memory_kib: 4096, ..KdfLimits::default() };
    match volume.unlock_keyslot(&mut dev.as_slice(), 0, b"pw", &tight).map_err(Luks2Error::into_kind) {
        Err(Luks2ErrorKind::KdfTooCostly(why)) => assert!(why.contains("8192 KiB"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(&volume.unlock_keyslot(&mut dev.as_slice(), 0, b"pw", &KdfLimits::default()).unwrap()[..], &key[..]);
    // An absurd cost in hostile metadata is refused before any work is done.
    let hostile = with_json(&dev, |j| j["keyslots"]["0"]["kdf"]["memory"] = 4_000_000_000u64.into());
    let v = Volume::load(&mut hostile.as_slice()).unwrap();
    assert!(matches!(
        v.unlock_keyslot(&mut hostile.as_slice(), 0, b"pw", &KdfLimits::default()).map_err(Luks2Error::into_kind),
        Err(Luks2ErrorKind::KdfTooCostly(_))
    ));
}

fn cryptsetup() -> Option<std::path::PathBuf> {
    veil_testkit::tool("cryptsetup", "apt-get install cryptsetup-bin")
}

/// cryptsetup's `luksDump` (with `extra` arguments) of `image`, written to a file of its own:
/// what cryptsetup makes of a header, for a test to compare with ours.
fn luks_dump(cs: &std::path::Path, image: &[u8], extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("header.img");
    std::fs::write(&img, image).unwrap();
    Command::new(cs).arg("luksDump").args(extra).arg(&img).output().unwrap()
}

#[test]
fn cryptsetup_accepts_what_we_write() {
    let Some(cs) = cryptsetup() else { return };
    let dir = tempfile::tempdir().unwrap();
    for sector_size in [512u32, 4096] {
        let opts = FormatOptions { sector_size, label: "veil-test".into(), ..FormatOptions::default() };
        let (dev, key) = new_volume(&opts, b"interop passphrase");
        let img = dir.path().join(format!("veil-{sector_size}.img"));
        std::fs::write(&img, &dev).unwrap();
        let dump = Command::new(&cs).arg("luksDump").arg(&img).output().unwrap();
        assert!(dump.status.success(), "luksDump: {}", String::from_utf8_lossy(&dump.stderr));
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(text.contains(&format!("sector: {sector_size} [bytes]")), "{text}");
        assert!(text.contains("veil-test"), "{text}");
        let mut open = Command::new(&cs)
            .args(["open", "--test-passphrase", "--key-file=-"])
            .arg(&img)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        open.stdin.take().unwrap().write_all(b"interop passphrase").unwrap();
        assert!(open.wait().unwrap().success(), "cryptsetup open --test-passphrase refused our volume");
        // cryptsetup reads back the same volume key.
        let mut vk = Command::new(&cs)
            .args(["luksDump", "--dump-volume-key", "--batch-mode", "--key-file=-"])
            .arg(&img)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        vk.stdin.take().unwrap().write_all(b"interop passphrase").unwrap();
        let out = vk.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<String>();
        assert!(text.contains(&hex::encode(&key)), "volume key differs: {text}");
    }
}

#[test]
fn we_open_what_cryptsetup_formats() {
    let Some(cs) = cryptsetup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("cs.img");
    std::fs::write(&img, vec![0u8; 20 * MIB]).unwrap();
    let keyfile = dir.path().join("key");
    std::fs::write(&keyfile, b"made by cryptsetup").unwrap();
    let status = Command::new(&cs)
        .args([
            "luksFormat",
            "--type",
            "luks2",
            "--batch-mode",
            "--cipher",
            "aes-xts-plain64",
            "--key-size",
            "512",
            "--sector-size",
            "4096",
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "32768",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-parallel",
            "1",
            "--key-file",
        ])
        .arg(&keyfile)
        .arg(&img)
        .status()
        .unwrap();
    assert!(status.success());
    let mut file = std::fs::File::open(&img).unwrap();
    let volume = Volume::load(&mut file).unwrap();
    let (_, key) = volume.unlock(&mut file, b"made by cryptsetup", &KdfLimits::default()).unwrap();
    let out = Command::new(&cs)
        .args(["luksDump", "--dump-volume-key", "--batch-mode", "--key-file"])
        .arg(&keyfile)
        .arg(&img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<String>();
    assert!(text.contains(&hex::encode(&*key)), "volume key differs");
    let (seg, _) = volume.data_cipher(&key).unwrap();
    assert_eq!(seg.sector_size, 4096);
}

/// A damaged or older header copy is rewritten from the one in use, as cryptsetup does when
/// it loads such a header: same sequence id and metadata, its own salt; afterwards either
/// copy alone is the whole volume, for us and for cryptsetup.
#[test]
fn the_other_copy_is_repaired_from_the_one_in_use() {
    let (dev, _) = new_volume(&FormatOptions::default(), b"pw");
    let mut rng = test_rng();
    let mut damaged_secondary = dev.clone();
    damaged_secondary[0x4000 + 4096 + 10] ^= 1;
    let mut torn_primary = dev.clone();
    torn_primary[0x1000..0x2000].fill(0);
    // A header edit cut after the primary copy: the secondary is one sequence id behind.
    let mut older_secondary = dev.clone();
    let mut w = HeaderWriter::edit(&Volume::load(&mut dev.as_slice()).unwrap()).unwrap();
    w.add_token(veil_agent::json!({"type": "veil-test"}), &[], None).unwrap();
    let writes = w.commit(&mut rng).unwrap();
    assert_eq!(writes[0].0, 0);
    apply(&mut older_secondary, writes.into_iter().take(1).collect());
    let dir = tempfile::tempdir().unwrap();
    for (name, mut d) in
        [("damaged secondary", damaged_secondary), ("torn primary", torn_primary), ("older secondary", older_secondary)]
    {
        let used = Volume::load(&mut d.as_slice()).unwrap();
        assert!(used.other_copy_stale, "{name}");
        let (offset, bytes) = used.repair_other_copy(&mut d.as_slice(), &mut rng).unwrap().expect(name);
        assert_eq!(offset, if used.header().secondary { 0 } else { 0x4000 }, "{name}");
        apply(&mut d, vec![(offset, bytes)]);
        let repaired = Volume::load(&mut d.as_slice()).unwrap();
        assert!(!repaired.other_copy_stale, "{name}");
        assert_eq!(repaired.header().seqid, used.header().seqid, "{name}");
        assert_eq!(repaired.json(), used.json(), "{name}");
        assert!(repaired.repair_other_copy(&mut d.as_slice(), &mut rng).unwrap().is_none(), "{name}");
        for (copy, wipe) in [("primary", 0x4000..0x8000), ("secondary", 0..0x4000)] {
            let mut one = d.clone();
            one[wipe].fill(0);
            let alone = Volume::load(&mut one.as_slice()).unwrap();
            assert_eq!((alone.header().secondary, alone.json()), (copy == "secondary", used.json()), "{name}");
            if let Some(cs) = cryptsetup() {
                let img = dir.path().join("one-copy.img");
                std::fs::write(&img, &one).unwrap();
                let dump = Command::new(cs).arg("luksDump").arg(&img).output().unwrap();
                let text = String::from_utf8_lossy(&dump.stdout);
                assert!(
                    dump.status.success(),
                    "{name}: the {copy} copy alone: {}",
                    String::from_utf8_lossy(&dump.stderr)
                );
                let epoch = text.lines().find(|l| l.starts_with("Epoch:")).map(|l| l[6..].trim().to_string());
                assert_eq!(epoch, Some(used.header().seqid.to_string()), "{name}: {text}");
            }
        }
    }
}
