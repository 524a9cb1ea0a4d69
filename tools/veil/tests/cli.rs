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
        for secret_hex in
            [hex::encode(secret.key()), hex::encode(secret.salt()), hex::encode(*secret.measurement_secret())]
        {
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
    for args in [
        &["--help"][..],
        &["secret", "--help"],
        &["secret", "new", "--help"],
        &["secret", "show", "--help"],
        &["derive", "disk-key", "--help"],
    ] {
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

/// `veil kbs serve` and `veil kbs relay` wired together with no VM: a test plays the VM's
/// end of the console socket, sends frames and reads the broker's replies through the relay.
#[test]
fn kbs_relay_carries_frames_to_the_broker_and_back() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (secret, _) = write_known_secret(dir.path(), false);
    // A self-signed certificate is enough to start; no EK certificate will be presented.
    let ca = dir.path().join("ca.pem");
    let Some(openssl) = veil_testkit::tool("openssl", "apt-get install openssl") else { return };
    let st = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test", "-days", "1", "-keyout"])
        .arg(dir.path().join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .stderr(std::process::Stdio::null())
        .status();
    assert!(st.is_ok_and(|s| s.success()), "openssl could not make a test CA");
    let m = dir.path().join("m.json");
    // All warn-only: refused at start-up (it would release to any boot).
    std::fs::write(&m, format!(r#"{{"4": {{"expected": "{}", "warnOnly": true}}}}"#, "00".repeat(32))).unwrap();
    let out = veil(&[
        "kbs",
        "serve",
        "--secret",
        secret.to_str().unwrap(),
        "--measurements",
        m.to_str().unwrap(),
        "--ek-ca",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PCR is enforced"), "{out:?}");
    std::fs::write(&m, format!(r#"{{"4": {{"expected": "{}", "warnOnly": false}}}}"#, "00".repeat(32))).unwrap();
    // No TPM registry: refused at start-up (any TPM under the CA could reproduce the PCRs).
    let serve_args = |extra: &[&str]| {
        let mut a = vec!["kbs", "serve", "--secret", secret.to_str().unwrap(), "--measurements", m.to_str().unwrap()];
        a.extend(["--ek-ca", ca.to_str().unwrap()]);
        a.extend(extra.iter().copied());
        veil(&a)
    };
    let out = serve_args(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --tpm-registry"), "{out:?}");
    // A registry that holds no public key, or something else: refused too.
    let registry = dir.path().join("registry.pem");
    std::fs::write(&registry, "nothing").unwrap();
    let out = serve_args(&["--tpm-registry", registry.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no public key"), "{out:?}");
    std::fs::write(&registry, r#"{"trusted_aks": ["AQID"]}"#).unwrap();
    let out = serve_args(&["--tpm-registry", registry.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an RSA public key"), "{out:?}");
    // Both a registry and --any-tpm-under-ca: a usage error.
    let out = serve_args(&["--tpm-registry", registry.to_str().unwrap(), "--any-tpm-under-ca"]);
    assert_eq!(out.status.code(), Some(2));

    let mut serve = Command::new(env!("CARGO_BIN_EXE_veil"));
    serve.args([
        "kbs",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--secret",
        secret.to_str().unwrap(),
        "--measurements",
        m.to_str().unwrap(),
        "--ek-ca",
        ca.to_str().unwrap(),
        "--any-tpm-under-ca",
    ]);
    let (mut serve, addr) =
        veil_testkit::spawn_announcing(&mut serve, veil_testkit::KBS_LISTENING, std::time::Duration::from_secs(30))
            .unwrap();
    let sock = dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut relay = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["kbs", "relay", "--socket", sock.to_str().unwrap(), "--broker", &format!("http://{addr}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (mut vm, _) = listener.accept().unwrap();
    vm.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut exchange = |request: serde_json::Value| -> serde_json::Value {
        let body = serde_json::to_vec(&request).unwrap();
        vm.write_all(&veil_agent::kbs::frame::encode(&body).unwrap()).unwrap();
        let mut len = [0u8; 4];
        vm.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; u32::from_le_bytes(len) as usize];
        vm.read_exact(&mut reply).unwrap();
        serde_json::from_slice(&reply).unwrap()
    };
    // The broker listens already (it announced its address): the first request reaches it.
    let auth = serde_json::json!({"method": "POST", "path": "/kbs/v0/auth", "body": {"version": "0.4.0", "tee": "tpm", "extra-params": ""}});
    let reply = exchange(auth);
    // Through the relay, the broker's refusal and its reason.
    assert_eq!(reply["status"], 400, "{reply}");
    assert!(reply["body"].as_str().unwrap().contains("veil-ak-public"), "{reply}");
    let reply =
        exchange(serde_json::json!({"method": "GET", "path": "/kbs/v0/resource/veilboot/cluster/master-secret"}));
    assert_eq!(reply["status"], 401, "{reply}");
    // The relay forwards nothing outside the KBS API.
    let reply = exchange(serde_json::json!({"method": "GET", "path": "/etc/passwd"}));
    assert_eq!(reply["status"], 400, "{reply}");
    drop(vm);
    assert!(relay.wait().unwrap().success(), "the relay exits cleanly when the VM closes the channel");
    let _ = serve.kill();
    let _ = serve.wait();
}

#[test]
fn measure_snp_refuses_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let rom = dir.path().join("rom.fd");
    std::fs::write(&rom, vec![0u8; 8192]).unwrap();
    let r = rom.to_str().unwrap();
    // --platform tpm still needs its image; SNP takes none.
    assert_eq!(veil(&["measure", "--platform", "tpm", "--rom", r]).status.code(), Some(2));
    let out = veil(&["measure", "--platform", "snp", "--rom", r, "--vcpu-type", "Skylake"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown --vcpu-type \"Skylake\""), "{out:?}");
    let out = veil(&["measure", "--platform", "snp", "--rom", r]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no footer GUID"), "{out:?}");
    // An initrd without a kernel is a usage error.
    assert_eq!(veil(&["measure", "--platform", "snp", "--rom", r, "--initrd", r]).status.code(), Some(2));
    // SNP has no offline sealing.
    let out = veil(&["seal", "--platform", "snp", "--parent-public", r, "--secret", r, "--rom", r, "--image", r]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("derived inside the guest"), "{out:?}");
}

/// `veil verify --platform snp`: the real Genoa report (Oak stage0, version 5) verifies with
/// its VCEK and AMD's Genoa chain, raw and as Trustee evidence JSON (AMD's CRL is not in the
/// test data: --allow-missing-crl, and without it the refusal says so); a flipped signed byte,
/// a wrong reference value, a wrong HOST_DATA and a TCB below --snp-min-tcb are refused with
/// their reasons and exit 1.
#[test]
fn verify_snp_reports_each_check_and_refusal() {
    let Some(data) = veil_testkit::testdata("snp") else { return };
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(data.join("reports/oak-genoa-v5/vcek.der"), certs.join("vcek.der")).unwrap();
    std::fs::copy(data.join("certs/amd-ark-ask/genoa-ask.pem"), certs.join("ask.pem")).unwrap();
    std::fs::copy(data.join("certs/amd-ark-ask/genoa-ark.pem"), certs.join("ark.pem")).unwrap();
    let report = data.join("reports/oak-genoa-v5/report.bin");
    let (r, c) = (report.to_str().unwrap(), certs.to_str().unwrap());
    let no_crl = veil(&["verify", "--platform", "snp", "--report", r, "--certs", c]);
    assert_eq!(no_crl.status.code(), Some(1));
    assert!(stdout(&no_crl).contains("no CRL"), "{}", stdout(&no_crl));
    let veil = |args: &[&str]| veil(&[args, &["--allow-missing-crl"][..]].concat());
    let ok = veil(&["verify", "--platform", "snp", "--report", r, "--certs", c]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = stdout(&ok);
    assert!(
        out.contains(
            "ok   signature: over the report's bytes by the VCEK, certified by the ASK, certified by AMD's Genoa root key"
        ),
        "{out}"
    );
    assert!(out.contains("ok   TCB: ") && out.ends_with("VERIFIED\n"), "{out}");

    // The Trustee evidence form of the same report.
    let bytes = std::fs::read(&report).unwrap();
    let evidence = veil_agent::snp::evidence::evidence_json(&bytes, None).unwrap();
    let json = dir.path().join("evidence.json");
    std::fs::write(&json, veil_agent::json::to_vec(&evidence)).unwrap();
    let ok = veil(&["verify", "--platform", "snp", "--report", json.to_str().unwrap(), "--certs", c, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["verified"], true, "{v}");

    let mut flipped = bytes.clone();
    flipped[0x60] ^= 1;
    let bad = dir.path().join("flipped.bin");
    std::fs::write(&bad, &flipped).unwrap();
    let refused = veil(&["verify", "--platform", "snp", "--report", bad.to_str().unwrap(), "--certs", c]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stdout(&refused).starts_with("REFUSED: the report's signature does not verify"), "{}", stdout(&refused));

    let reference = dir.path().join("ref.json");
    std::fs::write(&reference, format!(r#"{{"platform":"snp","launch_measurement":"{}"}}"#, "00".repeat(48))).unwrap();
    let refused =
        veil(&["verify", "--platform", "snp", "--report", r, "--certs", c, "--reference", reference.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stdout(&refused).contains("is not among the reference values"));
    let refused = veil(&["verify", "--platform", "snp", "--report", r, "--certs", c, "--host-data", &"11".repeat(32)]);
    assert!(stdout(&refused).contains("REFUSED: HOST_DATA "), "{}", stdout(&refused));
    let tcb = bytes[0x180];
    let min = format!("bootloader={}", u16::from(tcb) + 1);
    let refused = veil(&["verify", "--platform", "snp", "--report", r, "--certs", c, "--snp-min-tcb", &min]);
    assert!(
        stdout(&refused).contains(&format!("REFUSED: the reported TCB's bootloader SPL {tcb} is below the minimum")),
        "{}",
        stdout(&refused)
    );
    let min = format!("bootloader={tcb}");
    let ok = veil(&["verify", "--platform", "snp", "--report", r, "--certs", c, "--snp-min-tcb", &min]);
    assert!(ok.status.success(), "{}", stdout(&ok));
}

/// `veil verify --platform tdx` on dcap-qvl's real quote at its collateral's time: every field
/// printed, UpToDate, VERIFIED; a reference MRTD it does not match, a time after nextUpdate and
/// a TCB status the operator did not allow refuse with exit status 1.
#[test]
fn verify_tdx_prints_the_checks_and_refuses() {
    let Some(data) = veil_testkit::testdata("tdx/quotes/dcap-qvl") else { return };
    let q = data.join("tdx_quote");
    let c = data.join("tdx_quote_collateral.json");
    let (q, c) = (q.to_str().unwrap(), c.to_str().unwrap());
    let at = "2025-06-19T12:00:00Z";
    let ok = veil(&["verify", "--platform", "tdx", "--quote", q, "--collateral", c, "--at", at]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = stdout(&ok);
    assert!(out.contains("tcb_status     UpToDate") && out.contains("ok   not a debug TD"), "{out}");
    assert!(out.contains("mrtd           91eb2b44d141d4ec") && out.ends_with("VERIFIED\n"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("rv.json");
    std::fs::write(&reference, format!(r#"{{"platform":"tdx","mrtd":"{}"}}"#, "00".repeat(48))).unwrap();
    let r = reference.to_str().unwrap();
    let refused = veil(&["verify", "--platform", "tdx", "--quote", q, "--collateral", c, "--at", at, "--reference", r]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stdout(&refused).contains("REFUSED: MRTD 91eb2b44"), "{}", stdout(&refused));
    let late = veil(&["verify", "--platform", "tdx", "--quote", q, "--collateral", c, "--at", "2025-08-01T00:00:00Z"]);
    assert_eq!(late.status.code(), Some(1));
    // The PCK CRL's nextUpdate (2025-07-19) comes first.
    assert!(stdout(&late).contains("past its nextUpdate"), "{}", stdout(&late));
    let strict = veil(&[
        "verify",
        "--platform",
        "tdx",
        "--quote",
        q,
        "--collateral",
        c,
        "--at",
        at,
        "--allow-status",
        "Revoked",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&strict.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert!(v["refusal"].as_str().unwrap().starts_with("TCB status UpToDate"), "{v}");
    // The refusal keeps the check that passed before it.
    assert!(v["checks"][0].as_str().unwrap().starts_with("quote v4 signed by a PCK chain"), "{v}");
    // The outdated quote at its collateral's time: its TCB is below every level Intel lists.
    let old = veil(&[
        "verify",
        "--platform",
        "tdx",
        "--quote",
        data.join("tdx_quote_outdated").to_str().unwrap(),
        "--collateral",
        data.join("tdx_quote_outdated_collateral.json").to_str().unwrap(),
        "--at",
        "2026-02-18T12:00:00Z",
    ]);
    assert_eq!(old.status.code(), Some(1));
    // The check that passed (the quote's signature chain), then the refusal.
    assert!(stdout(&old).starts_with("ok   quote v5 signed by a PCK chain"), "{}", stdout(&old));
    assert!(stdout(&old).contains("\nREFUSED: TCB status TcbNotSupported"), "{}", stdout(&old));
}

/// Issue 35: `veil kbs serve` refuses TDX reference values without RTMR1 (the boot bundle) or
/// RTMR2 (the clusterID): such a broker released to any boot target of the ROM.
#[test]
fn kbs_serve_refuses_tdx_reference_without_rtmr1_and_rtmr2() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, _) = write_known_secret(dir.path(), false);
    let Some(data) = veil_testkit::testdata("tdx/quotes/dcap-qvl") else { return };
    let collateral = data.join("tdx_quote_collateral.json");
    let full = serde_json::json!({"platform": "tdx", "mrtd": "11".repeat(48), "rtmr1": "22".repeat(48), "rtmr2": "33".repeat(48)});
    for (drop, named) in [("rtmr1", "no RTMR1 value"), ("rtmr2", "no RTMR2 value")] {
        let mut doc = full.clone();
        doc.as_object_mut().unwrap().remove(drop);
        let reference = dir.path().join(format!("without-{drop}.json"));
        std::fs::write(&reference, doc.to_string()).unwrap();
        // The port is taken by nothing: a broker that started would print its address and
        // serve; one that refuses exits at once.
        let mut serve = Command::new(env!("CARGO_BIN_EXE_veil"));
        serve.args(["kbs", "serve", "--listen", "127.0.0.1:0", "--secret", secret.to_str().unwrap()]);
        serve.args(["--tdx-reference", reference.to_str().unwrap(), "--tdx-collateral", collateral.to_str().unwrap()]);
        match veil_testkit::spawn_announcing(
            &mut serve,
            veil_testkit::KBS_LISTENING,
            std::time::Duration::from_secs(30),
        ) {
            Ok((mut child, addr)) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("without {drop}: the broker started on {addr}");
            }
            Err(_) => {
                let out = serve.output().unwrap();
                assert!(!out.status.success(), "without {drop}");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains(named) && err.contains("any boot target"), "without {drop}: {err}");
            }
        }
    }
}

/// `veil kbs serve` serves clients concurrently: a client that declares a 60000-byte body and
/// sends one byte neither stalls the others (each answered at once) nor keeps its connection
/// past the request deadline (408). The single-threaded server answered no one while such a
/// client held it (issue 33).
#[test]
fn kbs_serve_is_not_stalled_by_a_slow_client() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let (secret, _) = write_known_secret(dir.path(), false);
    let ca = dir.path().join("ca.pem");
    let Some(openssl) = veil_testkit::tool("openssl", "apt-get install openssl") else { return };
    let st = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test", "-days", "1", "-keyout"])
        .arg(dir.path().join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .stderr(std::process::Stdio::null())
        .status();
    assert!(st.is_ok_and(|s| s.success()), "openssl could not make a test CA");
    let m = dir.path().join("m.json");
    std::fs::write(&m, format!(r#"{{"4": {{"expected": "{}", "warnOnly": false}}}}"#, "00".repeat(32))).unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_veil"));
    serve.args(["kbs", "serve", "--listen", "127.0.0.1:0", "--secret", secret.to_str().unwrap()]);
    serve.args(["--measurements", m.to_str().unwrap(), "--ek-ca", ca.to_str().unwrap(), "--any-tpm-under-ca"]);
    serve.args(["--request-timeout", "3", "--min-bundle-version", "2"]);
    let log = dir.path().join("serve.log");
    let (mut serve, addr) = veil_testkit::spawn_announcing_logged(
        &mut serve,
        veil_testkit::KBS_LISTENING,
        Duration::from_secs(30),
        Some(std::fs::File::create(&log).unwrap()),
    )
    .unwrap();
    // Issue 35: --min-bundle-version cannot apply to tpm evidence (no init-data): said at start.
    let said = std::fs::read_to_string(&log).unwrap();
    if !said.contains("--min-bundle-version does not apply to tpm evidence") {
        let _ = serve.kill();
        panic!("no warning that --min-bundle-version does not apply to tpm evidence:\n{said}");
    }
    // Ten slow clients: a head announcing 60000 bytes, then one byte.
    let mut slow: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Honest clients are answered while the slow ones hang.
    for _ in 0..5 {
        let started = Instant::now();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let body = br#"{"version":"0.4.0","tee":"tpm","extra-params":""}"#;
        c.write_all(
            format!("POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
        )
        .unwrap();
        c.write_all(body).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).expect("an answer while slow clients hold connections");
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
        assert!(reply.contains("veil-ak-public"), "{reply}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
    // The slow clients are cut off at the deadline (3 s), not left hanging.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    }
    let _ = serve.kill();
    let _ = serve.wait();
}
