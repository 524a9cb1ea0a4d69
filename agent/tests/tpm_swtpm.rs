//! agent::tpm against a real TPM: Debian's swtpm, reached over its raw TCP data port, and
//! tpm2-tools as the independent second opinion on policy digests. Skipped (loudly) without
//! swtpm unless VEIL_REQUIRE_TOOLS is set.

use std::net::TcpStream;
use std::process::{Command, Stdio};

use veil_agent::tpm::command::{self, StreamTransport, Tpm, TpmErrorKind};
use veil_agent::tpm::{Bank, policy};

/// A swtpm on a fresh state in its own temporary directory (the process goes first on drop).
struct Swtpm {
    tpm: veil_testkit::SwtpmTcp,
    _dir: tempfile::TempDir,
}

fn start_swtpm() -> Option<Swtpm> {
    start_swtpm_with(false)
}

/// swtpm on a fresh state; `with_ek_cert` provisions it first with swtpm_setup (EK
/// certificate from swtpm's local CA in NV).
fn start_swtpm_with(with_ek_cert: bool) -> Option<Swtpm> {
    veil_testkit::tools(&["swtpm", "tpm2_createpolicy"], "apt-get install swtpm swtpm-tools tpm2-tools")?;
    let dir = tempfile::tempdir().unwrap();
    if with_ek_cert {
        let st = Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--overwrite", "--pcr-banks", "sha256", "--tpmstate"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "swtpm_setup failed");
    }
    let tpm = veil_testkit::SwtpmTcp::start(dir.path(), "not-need-init").expect("starting swtpm");
    Some(Swtpm { tpm, _dir: dir })
}

fn connect(t: &Swtpm) -> Tpm<StreamTransport<TcpStream>> {
    // The listening socket exists before swtpm runs: the connection waits in its backlog.
    let s = TcpStream::connect(("127.0.0.1", t.tpm.port())).expect("connecting to swtpm");
    s.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    Tpm::new(StreamTransport(s))
}

#[test]
fn measure_seal_and_unseal_on_swtpm() {
    let Some(sw) = start_swtpm() else { return };
    let mut tpm = connect(&sw);
    assert!(tpm.startup_clear().unwrap(), "first Startup starts the TPM");
    assert!(!tpm.startup_clear().unwrap(), "a second Startup is TPM_RC_INITIALIZE, reported as already started");
    let banks = tpm.active_banks().unwrap();
    assert!(banks.contains(&Bank::Sha256), "{banks:?}");

    // Extend PCR 4 in every active bank; read it back and compare with the host computation.
    let digests: Vec<(Bank, Vec<u8>)> = banks.iter().map(|b| (*b, b.digest(b"kernel"))).collect();
    tpm.pcr_extend(4, &digests).unwrap();
    for b in &banks {
        let read = tpm.pcr_read(*b, &[4]).unwrap();
        assert_eq!(read, vec![(4, b.extend(&vec![0; b.size()], &b.digest(b"kernel")))]);
    }
    // More than eight PCRs take several PCR_Read rounds.
    let all: Vec<u32> = (0..24).collect();
    let values = tpm.pcr_read(Bank::Sha256, &all).unwrap();
    assert_eq!(values.iter().map(|(p, _)| *p).collect::<Vec<_>>(), all);

    // Seal to PCRs 0, 4, 8, 9 as they are now; unseal through a PolicyPCR session.
    let pcrs = [0, 4, 8, 9];
    let current: Vec<Vec<u8>> = tpm.pcr_read(Bank::Sha256, &pcrs).unwrap().into_iter().map(|(_, v)| v).collect();
    let policy = policy::policy_pcr(Bank::Sha256, &pcrs, &current);
    let primary = tpm.create_primary(&command::storage_primary_template()).unwrap();
    let blob = tpm.create_sealed(primary, &policy, b"the master secret").unwrap();
    let object = tpm.load(primary, &blob).unwrap();
    let session = tpm.start_policy_session(&[1; 32]).unwrap();
    tpm.policy_pcr(session, Bank::Sha256, &pcrs).unwrap();
    assert_eq!(tpm.unseal(object, session).unwrap().as_slice(), b"the master secret");
    // The blob survives the concatenated (systemd tpm2-blob) form.
    assert_eq!(command::SealedBlob::from_concatenated(&blob.concatenated()).unwrap(), blob);

    // A new measurement: the policy no longer matches and the TPM refuses.
    tpm.pcr_extend(4, &digests).unwrap();
    let session = tpm.start_policy_session(&[2; 32]).unwrap();
    tpm.policy_pcr(session, Bank::Sha256, &pcrs).unwrap();
    let err = tpm.unseal(object, session).unwrap_err();
    assert!(matches!(err.kind(), TpmErrorKind::Rc { command: "Unseal", .. }), "{err}");
    assert!(err.to_string().contains("POLICY_FAIL"), "{err}");
    tpm.flush(session).ok(); // a failed command leaves the session open
    tpm.flush(object).unwrap();
    tpm.flush(primary).unwrap();

    // tpm2-tools computes the same policy digest for the TPM's current PCRs.
    let now: Vec<Vec<u8>> = tpm.pcr_read(Bank::Sha256, &pcrs).unwrap().into_iter().map(|(_, v)| v).collect();
    drop(tpm); // swtpm serves one client at a time
    let out = tempfile::NamedTempFile::new().unwrap();
    let st = Command::new("tpm2_createpolicy")
        .args(["--policy-pcr", "-l", "sha256:0,4,8,9", "-L"])
        .arg(out.path())
        .env("TPM2TOOLS_TCTI", sw.tpm.tcti())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(out.path()).unwrap(), policy::policy_pcr(Bank::Sha256, &pcrs, &now));
}

/// Issue 35, case 1: after the firmware's full sequence (measure the firmware, the boot
/// target and the separators; seal to the seal policy; extend the clusterID into PCR 15 before
/// the hand-off) the booted OS, with a fresh policy session over the token's PCRs, cannot
/// unseal. Sealed to PCRs 0, 4, 8, 9 (before the fix) the last unseal succeeded.
#[test]
fn the_sealed_secret_does_not_open_after_the_handoff() {
    use veil_agent::tpm::measure;
    let Some(sw) = start_swtpm() else { return };
    let mut tpm = connect(&sw);
    tpm.startup_clear().unwrap();
    let banks = tpm.active_banks().unwrap();
    let extend = |tpm: &mut Tpm<StreamTransport<TcpStream>>, m: &measure::Measurement<'_>| {
        let digests: Vec<(Bank, Vec<u8>)> = banks.iter().map(|b| (*b, m.digest(*b))).collect();
        tpm.pcr_extend(m.pcr, &digests).unwrap();
    };
    let rom = vec![0x90u8; 4096];
    let mut plan = vec![measure::rom(&rom), measure::config("etc/e820", b"map")];
    plan.extend([measure::kernel("aa"), measure::cmdline("console=ttyS0"), measure::initrd("bb")]);
    plan.extend(measure::separators());
    for m in &plan {
        extend(&mut tpm, m);
    }
    // Sealed as the firmware seals (kernel/src/platform/tpm.rs, MeasuredBoot::seal).
    let values = tpm.pcr_read(Bank::Sha256, &measure::SEAL_PCRS).unwrap();
    let policy = measure::seal_policy(&values).unwrap();
    let primary = tpm.create_primary(&command::storage_primary_template()).unwrap();
    let blob = tpm.create_sealed(primary, &policy, b"the master secret").unwrap();
    let pcrs: Vec<u32> = measure::SEAL_PCRS.to_vec(); // what the token records
    let unseal = |tpm: &mut Tpm<StreamTransport<TcpStream>>, nonce: u8| {
        let object = tpm.load(primary, &blob).unwrap();
        let session = tpm.start_policy_session(&[nonce; 32]).unwrap();
        tpm.policy_pcr(session, Bank::Sha256, &pcrs).unwrap();
        let r = tpm.unseal(object, session).map(|s| s.to_vec());
        if r.is_err() {
            tpm.flush(session).ok();
        }
        tpm.flush(object).unwrap();
        r
    };
    // The firmware, before the clusterID: opens.
    assert_eq!(unseal(&mut tpm, 1).unwrap(), b"the master secret");
    // The firmware extends the clusterID (always, once it has the secret), then hands off.
    extend(&mut tpm, &measure::cluster_id(&[7u8; 32]));
    // The OS: a fresh session over the same PCRs is refused.
    let err = unseal(&mut tpm, 2).unwrap_err();
    assert!(err.to_string().contains("POLICY_FAIL"), "{err}");
    // And nothing seals once PCR 15 is extended (such a token would open after the hand-off).
    let values = tpm.pcr_read(Bank::Sha256, &measure::SEAL_PCRS).unwrap();
    assert!(measure::seal_policy(&values).unwrap_err().contains("PCR 15 is already extended"));
    tpm.flush(primary).unwrap();
}

#[test]
fn sealed_blob_splitting_refuses_bad_lengths() {
    assert!(command::SealedBlob::from_concatenated(&[]).is_err());
    assert!(command::SealedBlob::from_concatenated(&[0, 5, 1, 2]).is_err());
    assert!(command::SealedBlob::from_concatenated(&[0, 1, 9, 0, 2, 1]).is_err());
    let ok = command::SealedBlob::from_concatenated(&[0, 1, 9, 0, 2, 1, 2]).unwrap();
    assert_eq!((ok.private, ok.public), (vec![0, 1, 9], vec![0, 2, 1, 2]));
}

#[test]
fn offline_seal_imports_and_unseals() {
    use veil_agent::tpm::duplicate;
    let Some(sw) = start_swtpm() else { return };
    let mut tpm = connect(&sw);
    tpm.startup_clear().unwrap();
    let digests = vec![(Bank::Sha256, Bank::Sha256.digest(b"kernel"))];
    tpm.pcr_extend(4, &digests).unwrap();

    // The host knows only the storage primary's public key and the expected PCRs.
    let (primary, public) = tpm.create_primary_with_public(&command::storage_primary_template()).unwrap();
    let parent = duplicate::p256_point(&public).unwrap();
    let pcrs = [0, 4, 8, 9];
    let expected: Vec<Vec<u8>> =
        pcrs.iter().map(|p| if *p == 4 { Bank::Sha256.extend(&[0; 32], &digests[0].1) } else { vec![0; 32] }).collect();
    let policy = policy::policy_pcr(Bank::Sha256, &pcrs, &expected);
    let mut counter = 0u8;
    let mut rng = |b: &mut [u8]| {
        for x in b.iter_mut() {
            counter = counter.wrapping_mul(31).wrapping_add(17);
            *x = counter;
        }
    };
    let blob = duplicate::seal_for_import(parent, &policy, b"sealed offline", &mut rng).unwrap();

    let private = tpm.import(primary, &blob.public, &blob.duplicate, &blob.seed).unwrap();
    let object = tpm.load(primary, &command::SealedBlob { private, public: blob.public.clone() }).unwrap();
    let session = tpm.start_policy_session(&[3; 32]).unwrap();
    tpm.policy_pcr(session, Bank::Sha256, &pcrs).unwrap();
    assert_eq!(tpm.unseal(object, session).unwrap().as_slice(), b"sealed offline");
    tpm.flush(object).unwrap();

    // A flipped byte anywhere in the duplicate fails the TPM's integrity check.
    let mut bad = blob.duplicate.clone();
    let n = bad.len();
    bad[n - 3] ^= 1;
    let err = tpm.import(primary, &blob.public, &bad, &blob.seed).unwrap_err();
    assert!(matches!(err.kind(), TpmErrorKind::Rc { command: "Import", .. }), "{err}");
    // Sealed to other PCR values: imports, but does not unseal.
    let other = duplicate::seal_for_import(
        parent,
        &policy::policy_pcr(Bank::Sha256, &pcrs, &[vec![1; 32], vec![0; 32], vec![0; 32], vec![0; 32]]),
        b"x",
        &mut rng,
    )
    .unwrap();
    let private = tpm.import(primary, &other.public, &other.duplicate, &other.seed).unwrap();
    let object = tpm.load(primary, &command::SealedBlob { private, public: other.public }).unwrap();
    let session = tpm.start_policy_session(&[4; 32]).unwrap();
    tpm.policy_pcr(session, Bank::Sha256, &pcrs).unwrap();
    assert!(tpm.unseal(object, session).unwrap_err().to_string().contains("POLICY_FAIL"));
}

#[test]
fn quotes_verify_here_and_with_tpm2_checkquote() {
    use veil_agent::tpm::quote;
    let Some(sw) = start_swtpm() else { return };
    let mut tpm = connect(&sw);
    tpm.startup_clear().unwrap();
    tpm.pcr_extend(4, &[(Bank::Sha256, Bank::Sha256.digest(b"kernel"))]).unwrap();
    let (ak, ak_public) = tpm.create_attestation_key().unwrap();
    let (ak2, ak2_public) = tpm.create_attestation_key().unwrap();
    assert_eq!(ak_public, ak2_public, "the AK is a primary: the same key every time");
    tpm.flush(ak2).unwrap();
    let nonce = [0x5Au8; 32];
    let pcrs: Vec<u32> = (0..24).collect();
    let q = tpm.quote(ak, &nonce, Bank::Sha256, &pcrs).unwrap();
    let values: Vec<(Bank, u32, Vec<u8>)> =
        tpm.pcr_read(Bank::Sha256, &pcrs).unwrap().into_iter().map(|(p, v)| (Bank::Sha256, p, v)).collect();
    let info = quote::verify(&ak_public, &q.attest, &q.signature, &nonce, &values).unwrap();
    assert_eq!(info.pcr_select, vec![(Bank::Sha256, pcrs.clone())]);

    // Refusals: another nonce (replay), other PCR values, a flipped signature bit, another key.
    assert!(quote::verify(&ak_public, &q.attest, &q.signature, &[0; 32], &values).unwrap_err().contains("replayed"));
    let mut other = values.clone();
    other[4].2[0] ^= 1;
    assert!(quote::verify(&ak_public, &q.attest, &q.signature, &nonce, &other).unwrap_err().contains("do not match"));
    let mut sig = q.signature.clone();
    let n = sig.len();
    sig[n - 1] ^= 1;
    assert!(quote::verify(&ak_public, &q.attest, &sig, &nonce, &values).is_err());
    let (srk, srk_public) = tpm.create_primary_with_public(&command::storage_primary_template()).unwrap();
    tpm.flush(srk).unwrap();
    assert!(quote::verify(&srk_public, &q.attest, &q.signature, &nonce, &values).is_err());
    tpm.flush(ak).unwrap();
    drop(tpm);

    // tpm2-tools agrees: signature and nonce.
    let dir = tempfile::tempdir().unwrap();
    let (msg, sig, public) = (dir.path().join("q.msg"), dir.path().join("q.sig"), dir.path().join("ak.pub"));
    std::fs::write(&msg, &q.attest).unwrap();
    std::fs::write(&sig, &q.signature).unwrap();
    std::fs::write(&public, &ak_public).unwrap();
    let out = Command::new("tpm2_checkquote")
        .arg("-u")
        .arg(&public)
        .arg("-m")
        .arg(&msg)
        .arg("-s")
        .arg(&sig)
        .args(["-g", "sha256", "-q", &hex::encode(nonce)])
        .output()
        .unwrap();
    assert!(out.status.success(), "tpm2_checkquote: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn make_credential_activates_only_on_the_tpm_holding_ek_and_ak() {
    use veil_agent::tpm::{credential, quote};
    let Some(sw) = start_swtpm() else { return };
    let mut tpm = connect(&sw);
    tpm.startup_clear().unwrap();
    let (ek, ek_public) = tpm.create_ek().unwrap();
    let (ak, ak_public) = tpm.create_attestation_key().unwrap();
    let ek_key = credential::rsa_public_key(&ek_public).unwrap();
    let ak_name = quote::key_name(&ak_public).unwrap();
    let mut n = 1u8;
    let mut rng = |b: &mut [u8]| {
        b.iter_mut().for_each(|x| {
            n = n.wrapping_mul(13).wrapping_add(7);
            *x = n;
        })
    };
    let (blob, secret) = credential::make_credential(&ek_key, &ak_name, &[0x42; 32], &mut rng).unwrap();
    let got = tpm.activate_credential(ak, ek, &blob, &secret, &[6; 32]).unwrap();
    assert_eq!(got.as_slice(), &[0x42; 32]);

    // Bound to another key's name: the TPM refuses (the AK it holds has a different name).
    let (srk, srk_public) = tpm.create_primary_with_public(&command::storage_primary_template()).unwrap();
    let (blob, secret) =
        credential::make_credential(&ek_key, &quote::key_name(&srk_public).unwrap(), &[0x42; 32], &mut rng).unwrap();
    assert!(tpm.activate_credential(ak, ek, &blob, &secret, &[7; 32]).is_err());
    tpm.flush(srk).unwrap();
    // A changed secret (seed for another EK) or blob (integrity) is refused.
    let (blob, secret) = credential::make_credential(&ek_key, &ak_name, &[0x42; 32], &mut rng).unwrap();
    let mut bad_secret = secret.clone();
    bad_secret[10] ^= 1;
    assert!(tpm.activate_credential(ak, ek, &blob, &bad_secret, &[8; 32]).is_err());
    let mut bad_blob = blob.clone();
    let last = bad_blob.len() - 1;
    bad_blob[last] ^= 1;
    assert!(tpm.activate_credential(ak, ek, &bad_blob, &secret, &[9; 32]).is_err());
}

#[test]
fn ek_certificate_from_nv_chains_to_the_swtpm_local_ca() {
    use veil_agent::tpm::{credential, ekcert};
    let Some(sw) = start_swtpm_with(true) else { return };
    // swtpm_setup (run as root) creates its local CA on first use.
    let ca = |f: &str| std::fs::read_to_string(format!("/var/lib/swtpm-localca/{f}"));
    let (Ok(issuer), Ok(root)) = (ca("issuercert.pem"), ca("swtpm-localca-rootca-cert.pem")) else {
        let _: Option<()> =
            veil_testkit::missing_tool("swtpm's local CA in /var/lib/swtpm-localca", "run swtpm_setup as root");
        return;
    };
    let mut tpm = connect(&sw);
    tpm.startup_clear().unwrap();
    let cert = tpm.nv_read(command::EK_CERT_RSA_NV_INDEX).unwrap();
    let (_, ek_public) = tpm.create_ek().unwrap();
    let ek = credential::rsa_public_key(&ek_public).unwrap();
    let (issuer, root) = (ekcert::pem_to_der(&issuer).unwrap(), ekcert::pem_to_der(&root).unwrap());
    ekcert::verify(&cert, &ek, std::slice::from_ref(&issuer), &root, now()).unwrap();

    // Refusals: another key, a missing intermediate, a forged signature.
    let other =
        rsa::PublicKey::new(rsa::BoxedUint::from_be_slice_vartime(&[0xC3; 256]), rsa::BoxedUint::from(65537u64));
    if let Ok(other) = other {
        assert!(
            ekcert::verify(&cert, &other, std::slice::from_ref(&issuer), &root, now())
                .unwrap_err()
                .contains("another key")
        );
    }
    assert!(ekcert::verify(&cert, &ek, &[], &root, now()).unwrap_err().contains("issued by"));
    let mut forged = cert.clone();
    let n = forged.len();
    forged[n - 5] ^= 1;
    assert!(ekcert::verify(&forged, &ek, &[issuer], &root, now()).unwrap_err().contains("does not verify"));
}

/// The broker in-process behind a relay that keeps the session cookie, like `veil kbs
/// relay`, and lets a test rewrite what passes through.
struct InProcessRelay<'a> {
    broker: &'a veil_agent::kbs::broker::Broker,
    session: Option<String>,
    /// Rewrites (method, path, body) on the way to the broker.
    tamper: Box<dyn FnMut(&str, &mut serde_json::Value) + 'a>,
    /// Every request body sent (after tampering), for replays.
    sent: Vec<(String, Vec<u8>)>,
}

impl veil_agent::kbs::client::Relay for InProcessRelay<'_> {
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&veil_agent::json::Value>,
    ) -> Result<(u16, Vec<u8>), veil_agent::kbs::frame::RelayError> {
        let mut body = body.map(serde_json::Value::from).unwrap_or(serde_json::Value::Null);
        (self.tamper)(path, &mut body);
        let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).unwrap() };
        self.sent.push((path.to_string(), bytes.clone()));
        let reply = self.broker.handle(&veil_agent::kbs::broker::Request {
            method,
            path,
            session: self.session.as_deref(),
            body: &bytes,
        });
        eprintln!("broker: {}", reply.log);
        if let Some(s) = reply.set_session {
            self.session = Some(s);
        }
        Ok((reply.status, reply.body))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn swtpm_local_ca() -> Option<(Vec<u8>, Vec<u8>)> {
    use veil_agent::tpm::ekcert::pem_to_der;
    let ca =
        |f: &str| std::fs::read_to_string(format!("/var/lib/swtpm-localca/{f}")).ok().and_then(|p| pem_to_der(&p).ok());
    Some((ca("issuercert.pem")?, ca("swtpm-localca-rootca-cert.pem")?))
}

#[test]
fn remote_release_through_the_broker_and_its_refusals() {
    use veil_agent::kbs::broker::{Broker, BrokerConfig, Reference, TpmTrust};
    use veil_agent::kbs::client::{self, KbsError, Phases};
    let Some(sw) = start_swtpm_with(true) else { return };
    let Some((issuer, root)) = swtpm_local_ca().or_else(|| {
        veil_testkit::missing_tool("swtpm's local CA in /var/lib/swtpm-localca", "run swtpm_setup as root")
    }) else {
        return;
    };
    let mut tpm = connect(&sw);
    tpm.startup_clear().unwrap();
    tpm.pcr_extend(4, &[(Bank::Sha256, Bank::Sha256.digest(b"kernel"))]).unwrap();
    let pcr4 = tpm.pcr_read(Bank::Sha256, &[4]).unwrap().remove(0).1;
    let secret = b"the cluster's master secret".to_vec();
    // What the operator registers: this TPM's AK (as `veil tpm ak` makes it) or its EK (the
    // key its EK certificate certifies, as `veil tpm ek` prints it).
    let ak_spki = {
        let (handle, public) = tpm.create_attestation_key().unwrap();
        tpm.flush(handle).unwrap();
        let (n, e) = veil_agent::tpm::rsa_public_parts(&public).unwrap();
        veil_agent::kbs::evidence::rsa_spki(&n, e)
    };
    let ek_spki = {
        use rsa::pkcs8::EncodePublicKey;
        let cert = tpm.nv_read(command::EK_CERT_RSA_NV_INDEX).unwrap();
        veil_agent::tpm::ekcert::certified_key(&cert).unwrap().to_public_key_der().unwrap().as_bytes().to_vec()
    };
    let mut other_ak = ak_spki.clone();
    let n = other_ak.len();
    other_ak[n - 20] ^= 1;
    let registered = TpmTrust::Registered(vec![ak_spki.clone()]);
    let config = |pcr4: &[u8], tpm_trust: TpmTrust| BrokerConfig {
        snp: None,
        tdx: None,
        resources: [("veilboot/cluster/master-secret".to_string(), zeroize::Zeroizing::new(secret.clone()))].into(),
        reference: [
            (4, Reference { expected: pcr4.try_into().unwrap(), warn_only: false }),
            (0, Reference { expected: [0; 32], warn_only: false }),
        ]
        .into(),
        ek_root: root.clone(),
        ek_intermediates: vec![issuer.clone()],
        allow_no_init_data: false,
        min_bundle_version: None,
        tpm_trust,
    };
    let mut seed = 0u64;
    let random = move |b: &mut [u8]| {
        for x in b.iter_mut() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *x = (seed >> 33) as u8;
        }
    };
    let broker = Broker::new(config(&pcr4, registered.clone()), Box::new(random));
    let mut rng = random;
    let mut release = |tpm: &mut Tpm<StreamTransport<TcpStream>>,
                       broker: &Broker,
                       tamper: Box<dyn FnMut(&str, &mut serde_json::Value)>| {
        let mut relay = InProcessRelay { broker, session: None, tamper, sent: Vec::new() };
        let r =
            client::remote_release(tpm, &mut relay, client::DEFAULT_RESOURCE, &mut rng, &|| 0, &mut Phases::default());
        (r, relay.sent, relay.session)
    };

    let refused = |r: Result<zeroize::Zeroizing<Vec<u8>>, KbsError>, why: &str| match r {
        Err(KbsError::Refused { detail, .. }) => assert!(detail.contains(why), "wanted {why:?}, got {detail:?}"),
        other => panic!("wanted a refusal ({why}), got {other:?}"),
    };
    // The PCRs this host program extended are public inputs any TPM under the swtpm CA can
    // reproduce: a broker releases only to a registered TPM (issue 33). No registry: refused.
    let (r, ..) =
        release(&mut tpm, &Broker::new(config(&pcr4, TpmTrust::Nobody), Box::new(random)), Box::new(|_, _| {}));
    refused(r, "no TPM registry");
    // Another VM's AK registered: refused, before any credential is made.
    let others = Broker::new(config(&pcr4, TpmTrust::Registered(vec![other_ak])), Box::new(random));
    let (r, ..) = release(&mut tpm, &others, Box::new(|_, _| {}));
    refused(r, "the TPM is not registered");
    // Registered by its EK instead of its AK: released.
    let by_ek = Broker::new(config(&pcr4, TpmTrust::Registered(vec![ek_spki])), Box::new(random));
    let (r, ..) = release(&mut tpm, &by_ek, Box::new(|_, _| {}));
    assert_eq!(r.unwrap().as_slice(), secret.as_slice());
    // --any-tpm-under-ca: the operator's explicit choice of the old behaviour.
    let any = Broker::new(config(&pcr4, TpmTrust::AnyTpmUnderCa), Box::new(random));
    let (r, ..) = release(&mut tpm, &any, Box::new(|_, _| {}));
    assert_eq!(r.unwrap().as_slice(), secret.as_slice());

    // The registered TPM's honest path releases the secret.
    let (r, sent, session) = release(&mut tpm, &broker, Box::new(|_, _| {}));
    assert_eq!(r.unwrap().as_slice(), secret.as_slice());
    let attest = sent.iter().find(|(p, _)| p == "/kbs/v0/attest").unwrap().1.clone();

    // An /auth flood made with this VM's EK certificate and AK (both public) while the VM's
    // own session is open, between its /auth and its /attest: refused beyond the EK's quota,
    // and the VM's session still completes. (The broker used to drop its oldest session to
    // make room, the VM's.)
    {
        use std::sync::{Arc, Mutex};
        let flooded = Arc::new(Broker::new(config(&pcr4, registered.clone()), Box::new(random)));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let (attacker, seen, auth_body) = (flooded.clone(), statuses.clone(), sent[0].1.clone());
        let (r, ..) = release(
            &mut tpm,
            &flooded,
            Box::new(move |path, _| {
                if path == "/kbs/v0/attest" {
                    for _ in 0..1100 {
                        let reply = attacker.handle(&veil_agent::kbs::broker::Request {
                            method: "POST",
                            path: "/kbs/v0/auth",
                            session: None,
                            body: &auth_body,
                        });
                        seen.lock().unwrap().push(reply.status);
                    }
                }
            }),
        );
        assert_eq!(r.unwrap().as_slice(), secret.as_slice(), "the VM's session survived the flood");
        let statuses = statuses.lock().unwrap();
        let quota = veil_agent::kbs::broker::MAX_SESSIONS_PER_EK;
        assert!(statuses[..quota - 1].iter().all(|s| *s == 200), "{:?}", &statuses[..quota]);
        assert!(statuses[quota - 1..].iter().all(|s| *s == 429), "{:?}", &statuses[quota - 1..quota + 2]);
    }

    // Replay: the same attestation in its own session, and in a fresh one.
    let again = broker.handle(&veil_agent::kbs::broker::Request {
        method: "POST",
        path: "/kbs/v0/attest",
        session: session.as_deref(),
        body: &attest,
    });
    assert_eq!(again.status, 401, "{}", again.log);
    let fresh = broker.handle(&veil_agent::kbs::broker::Request {
        method: "POST",
        path: "/kbs/v0/auth",
        session: None,
        body: &sent[0].1,
    });
    let replay = broker.handle(&veil_agent::kbs::broker::Request {
        method: "POST",
        path: "/kbs/v0/attest",
        session: fresh.set_session.as_deref(),
        body: &attest,
    });
    assert!(replay.status == 401 && replay.log.contains("nonce is not this session's"), "{}", replay.log);

    // Each refusal, with the reason the broker gives.
    // A relay that swaps in its own key for the secret: the quote's report data (SHA-384 of
    // the runtime data) no longer matches.
    let (r, ..) = release(
        &mut tpm,
        &broker,
        Box::new(|path, body| {
            if path == "/kbs/v0/attest" {
                let other = p256::SecretKey::from_slice(&[0x11; 32]).unwrap().public_key();
                body["runtime-data"]["tee-pubkey"] = client::tee_pubkey(&other).into();
            }
        }),
    );
    refused(r, "nonce (extraData) differs");
    // An unknown AK offered at /auth in the TPM's place (one modulus bit flipped). The
    // registry refuses it; a broker taking any TPM under the CA certifies it, but the
    // credential is bound to that key's name, so the TPM will not activate it.
    let swap_ak = || -> Box<dyn FnMut(&str, &mut serde_json::Value)> {
        Box::new(|path, body| {
            if path == "/kbs/v0/auth" {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD;
                let mut ak = b64.decode(body["extra-params"]["veil-ak-public"].as_str().unwrap()).unwrap();
                let n = ak.len();
                ak[n - 7] ^= 1;
                body["extra-params"]["veil-ak-public"] = serde_json::json!(b64.encode(ak));
            }
        })
    };
    let (r, ..) = release(&mut tpm, &broker, swap_ak());
    refused(r, "the TPM is not registered");
    let (r, ..) = release(&mut tpm, &any, swap_ak());
    // The TPM refuses: the credential was made for another key's name.
    assert!(
        matches!(&r, Err(KbsError::Tpm { error, .. }) if matches!(error.kind(), TpmErrorKind::Rc { command: "ActivateCredential", .. })),
        "{r:?}"
    );
    // Swapped in at /attest: the broker refuses a quote key other than the certified AK.
    let (r, ..) = release(
        &mut tpm,
        &broker,
        Box::new(|path, body| {
            if path == "/kbs/v0/attest" {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD;
                let mut spki =
                    b64.decode(body["tee-evidence"]["primary_evidence"]["ak_public"].as_str().unwrap()).unwrap();
                let n = spki.len();
                spki[n - 9] ^= 1;
                body["tee-evidence"]["primary_evidence"]["ak_public"] = serde_json::json!(b64.encode(spki));
            }
        }),
    );
    refused(r, "unknown AK");
    // A forged credential.
    let (r, ..) = release(
        &mut tpm,
        &broker,
        Box::new(|path, body| {
            if path == "/kbs/v0/attest" {
                body["tee-evidence"]["primary_evidence"]["veil_credential"] =
                    serde_json::json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
            }
        }),
    );
    refused(r, "credential is wrong");
    // A quote without the credential (a TPM that could not activate it).
    let (r, ..) = release(
        &mut tpm,
        &broker,
        Box::new(|path, body| {
            if path == "/kbs/v0/attest" {
                body["tee-evidence"]["primary_evidence"].as_object_mut().unwrap().remove("veil_credential");
            }
        }),
    );
    refused(r, "no recovered credential");
    // Another PCR 4 (a tampered kernel): the broker refuses and names the PCR.
    let strict = Broker::new(config(&[0x44; 32], registered.clone()), Box::new(random));
    let (r, ..) = release(&mut tpm, &strict, Box::new(|_, _| {}));
    refused(r, "PCR 4 is");
    // An EK certificate from a CA the broker does not trust.
    let mut untrusting = config(&pcr4, registered.clone());
    untrusting.ek_root = issuer.clone();
    untrusting.ek_intermediates.clear();
    let (r, ..) = release(&mut tpm, &Broker::new(untrusting, Box::new(random)), Box::new(|_, _| {}));
    refused(r, "EK certificate not trusted");
    // Issue 35: the firmware quotes before it extends PCR 15 with the clusterID; the booted OS
    // (PCR 15 extended, every boot PCR as the firmware left it) asks with the same TPM: refused
    // although PCR 15 is in no reference value (before, released). Last: PCR 15 stays extended.
    tpm.pcr_extend(15, &[(Bank::Sha256, Bank::Sha256.digest(b"the clusterID"))]).unwrap();
    let (r, ..) = release(&mut tpm, &broker, Box::new(|_, _| {}));
    refused(r, "PCR 15 is not zero");
}
