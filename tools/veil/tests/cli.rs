//! The `veil` binary end to end: files, exit codes, output formats, no secret on screen.
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use veil_agent::keys::MasterSecret;

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil")).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn secret_new_writes_private_constellation_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("constellation-mastersecret.json");
    let p = path.to_str().unwrap();
    let out = veil(&["secret", "new", "--out", p]);
    assert!(out.status.success(), "{out:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(doc["key"].is_string() && doc["salt"].is_string());
    let secret = MasterSecret::parse(text.as_bytes()).unwrap();
    assert_eq!((secret.key().len(), secret.salt().len()), (32, 32));
    assert!(!stdout(&out).contains(&hex::encode(secret.key())));

    let again = veil(&["secret", "new", "--out", p]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "file untouched");

    // Two secrets are never the same.
    let other = dir.path().join("other.json");
    assert!(veil(&["secret", "new", "--out", other.to_str().unwrap()]).status.success());
    assert_ne!(std::fs::read_to_string(&other).unwrap(), text);
}

fn write_known_secret(dir: &std::path::Path, as_uri: bool) -> (std::path::PathBuf, MasterSecret) {
    let key: Vec<u8> = (0x40..0x60).collect();
    let salt: Vec<u8> = (0x60..0x80).collect();
    let secret = MasterSecret::new(&key, &salt).unwrap();
    let path = dir.join(if as_uri { "secret.uri" } else { "secret.json" });
    let body = if as_uri { secret.to_uri() } else { secret.to_json() };
    std::fs::write(&path, body.as_bytes()).unwrap();
    (path, secret)
}

#[test]
fn secret_show_prints_cluster_id_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    for as_uri in [false, true] {
        let (path, secret) = write_known_secret(dir.path(), as_uri);
        let msalt = "20".repeat(32);
        let out = veil(&["secret", "show", path.to_str().unwrap(), "--measurement-salt", &msalt, "--json"]);
        assert!(out.status.success(), "{out:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = secret.cluster_id(&[0x20; 32]);
        assert_eq!(doc["cluster_id"], hex::encode(id.0));
        assert_eq!(doc["expected_pcr15"], hex::encode(id.expected_pcr15()));
        let text = stdout(&out);
        for secret_hex in [hex::encode(secret.key()), hex::encode(secret.salt()), hex::encode(*secret.measurement_secret())] {
            assert!(!text.contains(&secret_hex));
        }
        let plain = veil(&["secret", "show", path.to_str().unwrap()]);
        assert!(stdout(&plain).contains("pass --measurement-salt"));
    }
}

#[test]
fn derive_disk_key_matches_agent_and_normalizes_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let (path, secret) = write_known_secret(dir.path(), false);
    let uuid = "4D3C2B1A-0000-4000-8000-00000000ABCD";
    let out = veil(&["derive", "disk-key", "--secret", path.to_str().unwrap(), "--uuid", uuid]);
    assert!(out.status.success(), "{out:?}");
    let expected = hex::encode(*secret.disk_key(&uuid.to_lowercase()).unwrap());
    assert_eq!(stdout(&out).trim(), expected);
    let json = veil(&["derive", "disk-key", "--secret", path.to_str().unwrap(), "--uuid", uuid, "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["uuid"], uuid.to_lowercase());
    assert_eq!(doc["disk_key"], expected);
}

#[test]
fn exit_codes_and_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Usage errors exit 2.
    assert_eq!(veil(&["derive", "disk-key"]).status.code(), Some(2));
    assert_eq!(veil(&["no-such-command"]).status.code(), Some(2));
    // Help on every command exits 0.
    for args in [&["--help"][..], &["secret", "--help"], &["secret", "new", "--help"], &["secret", "show", "--help"], &["derive", "disk-key", "--help"]] {
        assert_eq!(veil(args).status.code(), Some(0), "{args:?}");
    }
    // Failures exit 1 with one line naming the problem.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"key": "AAAA", "salt": "AAAA"}"#).unwrap();
    let out = veil(&["secret", "show", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("shorter than the minimum of 16"), "{err}");
    let missing = veil(&["secret", "show", dir.path().join("nope.json").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}
