//! `veil luks` end to end on image files, checked against cryptsetup where it is installed.
use std::path::Path;
use std::process::{Command, Output};

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil")).args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "veil failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn cryptsetup() -> Option<std::path::PathBuf> {
    veil_testkit::tool("cryptsetup", "apt-get install cryptsetup-bin")
}

#[test]
fn format_open_add_key_token_dump() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("ms.json");
    let img = dir.path().join("v.img");
    ok(veil(&["secret", "new", "--out", p(&secret)]));
    let uuid = ok(veil(&["luks", "format", p(&img), "--size", "20M", "--secret", p(&secret), "--label", "state"]));
    let uuid = uuid.trim();
    assert_eq!(uuid.len(), 36);
    // Never formats over an existing volume by accident.
    let again = veil(&["luks", "format", p(&img), "--secret", p(&secret)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a LUKS2 volume"));

    let opened = ok(veil(&["luks", "open", p(&img), "--secret", p(&secret), "--json"]));
    let doc: serde_json::Value = serde_json::from_str(&opened).unwrap();
    assert_eq!((doc["uuid"].as_str().unwrap(), doc["keyslot"].as_u64().unwrap()), (uuid, 0));

    let pw = dir.path().join("pw");
    std::fs::write(&pw, b"second passphrase").unwrap();
    ok(veil(&[
        "luks",
        "add-key",
        p(&img),
        "--secret",
        p(&secret),
        "--new-key-file",
        p(&pw),
        "--pbkdf",
        "argon2id",
        "--argon2-memory",
        "4096",
        "--argon2-time",
        "1",
    ]));
    let opened = ok(veil(&["luks", "open", p(&img), "--key-file", p(&pw)]));
    assert!(opened.contains("keyslot 1 (argon2id"), "{opened}");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, b"nope").unwrap();
    let out = veil(&["luks", "open", p(&img), "--key-file", p(&wrong)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no keyslot opens with this passphrase"));

    let token = dir.path().join("t.json");
    std::fs::write(&token, r#"{"type": "veil-sealed", "blob": "abc"}"#).unwrap();
    assert!(
        ok(veil(&["luks", "token", "add", p(&img), "--file", p(&token), "--keyslot", "1"])).contains("token 0 added")
    );
    let listed = ok(veil(&["luks", "token", "list", p(&img)]));
    assert!(listed.starts_with("0\t") && listed.contains("veil-sealed"), "{listed}");
    let dump: serde_json::Value = serde_json::from_str(&ok(veil(&["luks", "dump", p(&img), "--json"]))).unwrap();
    assert_eq!(dump["label"], "state");
    assert_eq!(dump["metadata"]["tokens"]["0"]["keyslots"], serde_json::json!(["1"]));
    assert!(ok(veil(&["luks", "dump", p(&img)])).contains("4096-byte sectors"));
    ok(veil(&["luks", "token", "remove", p(&img), "--id", "0"]));
    assert!(ok(veil(&["luks", "token", "list", p(&img)])).is_empty());

    if let Some(cs) = cryptsetup() {
        // The disk key from the master secret opens the volume in cryptsetup too.
        let key = ok(veil(&["derive", "disk-key", "--secret", p(&secret), "--uuid", uuid]));
        let keyfile = dir.path().join("dk");
        std::fs::write(&keyfile, hex::decode(key.trim()).unwrap()).unwrap();
        let st = Command::new(&cs)
            .args(["open", "--test-passphrase", "--key-file"])
            .arg(&keyfile)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success(), "cryptsetup refused the derived disk key");
        let st =
            Command::new(&cs).args(["open", "--test-passphrase", "--key-file"]).arg(&pw).arg(&img).status().unwrap();
        assert!(st.success(), "cryptsetup refused the added argon2id keyslot");
        let dumped = Command::new(&cs).arg("luksDump").arg(&img).output().unwrap();
        assert!(String::from_utf8_lossy(&dumped.stdout).contains("argon2id"));
    }
}

#[test]
fn encrypt_then_decrypt_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.img");
    // Not a multiple of the sector size: the tail is zero-padded.
    let data: Vec<u8> = (0..(3 << 20) + 1000).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&plain, &data).unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, b"stream me").unwrap();
    let enc = dir.path().join("enc.img");
    let out =
        veil(&["luks", "encrypt", "--in", p(&plain), "--out", p(&enc), "--key-file", p(&pw), "--sector-size", "512"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(stderr.contains("MB/s"), "{stderr}");
    let image = std::fs::read(&enc).unwrap();
    assert_eq!(image.len(), (16 << 20) + data.len().div_ceil(512) * 512);
    // The data area holds no plaintext.
    assert!(!image.windows(64).any(|w| w == &data[4096..4160]));
    // Refuses to overwrite.
    assert_eq!(
        veil(&["luks", "encrypt", "--in", p(&plain), "--out", p(&enc), "--key-file", p(&pw)]).status.code(),
        Some(1)
    );

    let back = dir.path().join("back.img");
    let decrypted = veil(&["luks", "decrypt", "--in", p(&enc), "--out", p(&back), "--key-file", p(&pw), "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&decrypted.stdout).unwrap();
    ok(decrypted);
    let got = std::fs::read(&back).unwrap();
    assert_eq!(doc["bytes"], got.len(), "{doc}");
    assert_eq!(&got[..data.len()], &data[..]);
    assert!(got[data.len()..].iter().all(|b| *b == 0));

    // A wrong passphrase creates no output file.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, b"nope").unwrap();
    let back2 = dir.path().join("back2.img");
    assert_eq!(
        veil(&["luks", "decrypt", "--in", p(&enc), "--out", p(&back2), "--key-file", p(&wrong)]).status.code(),
        Some(1)
    );
    assert!(!back2.exists());
}
