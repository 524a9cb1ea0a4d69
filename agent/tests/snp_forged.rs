//! Forged SEV-SNP evidence is refused, each case with its reason (issue 31's findings 3 and 7):
//! a test PKI shaped like AMD's (an ARK, an ASK "SEV-Milan" or "SEV-Turin" with path length 0,
//! a "SEV-VCEK" with the KDS TCB and hwID extensions, the ARK's CRL), a version-3 report the
//! VCEK key signs, verified by the broker's own function (`verify_snp`) with that ARK as the
//! test root. The unmodified Milan and Turin cases verify; each case changes one thing.
mod common;

use common::test_pki::{Cert, Spec, crl};
use veil_agent::snp::evidence::CertType;
use veil_agent::snp::verify::{MinTcb, SnpPolicy, Verified, verify_snp};
use veil_agent::tdx::collateral::parse_time;

const KDS: [u64; 7] = [1, 3, 6, 1, 4, 1, 3704];

/// The platform: Milan's or Turin's TCB layout.
#[derive(Clone, Copy, PartialEq)]
enum Gen {
    Milan,
    Turin,
}

/// A TCB: bootloader, TEE, SNP, microcode, FMC (Turin).
#[derive(Clone, Copy)]
struct Tcb {
    bl: u8,
    tee: u8,
    snp: u8,
    ucode: u8,
    fmc: u8,
}

const TCB: Tcb = Tcb { bl: 3, tee: 0, snp: 8, ucode: 0x73, fmc: 1 };

impl Tcb {
    fn bytes(self, g: Gen) -> [u8; 8] {
        match g {
            Gen::Milan => [self.bl, self.tee, 0, 0, 0, 0, self.snp, self.ucode],
            Gen::Turin => [self.fmc, self.bl, self.tee, self.snp, 0, 0, 0, self.ucode],
        }
    }
}

fn int(v: u8) -> Vec<u8> {
    if v < 0x80 { vec![0x02, 0x01, v] } else { vec![0x02, 0x02, 0x00, v] }
}

fn kds(sub: &[u64]) -> Vec<u64> {
    [&KDS[..], sub].concat()
}

struct Pki {
    ark: Cert,
    ask: Cert,
    vcek: Cert,
}

/// A chain to verify with: the VCEK, the ASK, the ARK.
struct Chain<'a> {
    ark: &'a Cert,
    ask: &'a Cert,
    vcek: &'a Cert,
}

impl Pki {
    fn chain(&self) -> Chain<'_> {
        Chain { ark: &self.ark, ask: &self.ask, vcek: &self.vcek }
    }
}

fn vcek_spec(g: Gen, tcb: Tcb, hwid: &[u8], serial: u64) -> Spec {
    let mut s = Spec::leaf("SEV-VCEK", serial);
    s.alg = &rcgen::PKCS_ECDSA_P384_SHA384;
    s.key_usages = Vec::new();
    s.extensions = vec![
        (kds(&[1, 3, 1]), int(tcb.bl)),
        (kds(&[1, 3, 2]), int(tcb.tee)),
        (kds(&[1, 3, 3]), int(tcb.snp)),
        (kds(&[1, 3, 8]), int(tcb.ucode)),
        // AMD writes the hwID as the extension's OCTET STRING itself.
        (kds(&[1, 4]), hwid.to_vec()),
    ];
    if g == Gen::Turin {
        s.extensions.push((kds(&[1, 3, 9]), int(tcb.fmc)));
    }
    s
}

fn ca(cn: &'static str, path_len: Option<u8>, serial: u64) -> Spec {
    let mut s = Spec::ca(cn, path_len, serial);
    s.alg = &rcgen::PKCS_ECDSA_P384_SHA384;
    s
}

fn hwid(g: Gen) -> Vec<u8> {
    match g {
        Gen::Milan => vec![0x5C; 64],
        Gen::Turin => vec![0x7E; 8],
    }
}

fn pki(g: Gen) -> Pki {
    let ark = ca("ARK-Test", None, 1).self_signed();
    let ask = ca(if g == Gen::Milan { "SEV-Milan" } else { "SEV-Turin" }, Some(0), 2).signed_by(&ark);
    let vcek = vcek_spec(g, TCB, &hwid(g), 3).signed_by(&ask);
    Pki { ark, ask, vcek }
}

/// An unsigned version-3 report of a launch on `g` at `TCB`.
fn report(g: Gen) -> Vec<u8> {
    let mut r = vec![0u8; 0x4A0];
    r[0..4].copy_from_slice(&3u32.to_le_bytes());
    r[0x08..0x10].copy_from_slice(&0x30000u64.to_le_bytes()); // SMT allowed, bit 17
    r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes()); // ECDSA P-384 with SHA-384
    for offset in [0x38, 0x180, 0x1E0, 0x1F0] {
        r[offset..offset + 8].copy_from_slice(&TCB.bytes(g));
    }
    r[0x90..0xC0].fill(0x33); // MEASUREMENT
    let (fam, model) = if g == Gen::Milan { (0x19, 0x01) } else { (0x1A, 0x02) };
    r[0x188] = fam;
    r[0x189] = model;
    r[0x18A] = 1;
    let id = hwid(g);
    r[0x1A0..0x1A0 + id.len()].copy_from_slice(&id);
    r
}

/// Sign the report's first 0x2A0 bytes with `key` (R and S little-endian, 72-byte fields).
fn sign(r: &mut [u8], key: &Cert) {
    let sig = p384::ecdsa::Signature::from_der(&key.sign(&r[..0x2A0])).unwrap();
    let (rr, ss) = sig.split_bytes();
    let mut le = |offset: usize, v: &[u8]| {
        let mut b = v.to_vec();
        b.reverse();
        r[offset..offset + 48].copy_from_slice(&b);
    };
    le(0x2A0, &rr);
    le(0x2E8, &ss);
}

fn now() -> u64 {
    parse_time("2026-01-01T00:00:00Z").unwrap()
}

fn certs(p: &Chain) -> Vec<(CertType, Vec<u8>)> {
    vec![(CertType::Vcek, p.vcek.der.clone()), (CertType::Ask, p.ask.der.clone()), (CertType::Ark, p.ark.der.clone())]
}

fn policy(p: &Chain) -> SnpPolicy {
    SnpPolicy {
        test_root: Some(p.ark.der.clone()),
        crls: vec![crl(p.ark, (2025, 12, 1), (2026, 2, 1), &[])],
        ..SnpPolicy::default()
    }
}

fn run(p: &Chain, r: &[u8], policy: &SnpPolicy) -> Result<Verified, String> {
    verify_snp(r, &certs(p), policy, now())
}

#[track_caller]
fn refused(result: Result<Verified, String>, reason: &str) {
    match result {
        Ok(v) => panic!("verified ({:?}), expected a refusal with {reason:?}", v.checks),
        Err(e) => assert!(e.contains(reason), "refused for another reason: {e}\n(expected {reason:?})"),
    }
}

fn signed(g: Gen, p: &Chain, change: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut r = report(g);
    change(&mut r);
    sign(&mut r, p.vcek);
    r
}

#[test]
fn the_unmodified_cases_verify() {
    for g in [Gen::Milan, Gen::Turin] {
        let pk = pki(g);
        let p = pk.chain();
        let v = run(&p, &signed(g, &p, |_| {}), &policy(&p)).unwrap();
        assert!(v.checks[0].contains("the ASK is not on AMD's CRL"), "{:?}", v.checks);
        assert!(v.checks.iter().any(|c| c == "chip: CHIP_ID equals the VCEK's hwID"), "{:?}", v.checks);
    }
}

/// Finding 3 (AMD's CRL) and finding 7 (VCEK validity).
#[test]
fn chain_revocation_and_validity_are_checked() {
    let g = Gen::Milan;
    let pk = pki(g);
    let p = pk.chain();
    let r = signed(g, &p, |_| {});
    // No CRL: refused unless allowed.
    let none = SnpPolicy { crls: Vec::new(), ..policy(&p) };
    refused(run(&p, &r, &none), "no CRL");
    let allowed = SnpPolicy { allow_missing_crl: true, ..none };
    assert!(run(&p, &r, &allowed).unwrap().checks[0].contains("NO CRL"));
    // The ARK's CRL revokes the ASK.
    let revoked = SnpPolicy { crls: vec![crl(p.ark, (2025, 12, 1), (2026, 2, 1), &[2])], ..policy(&p) };
    refused(run(&p, &r, &revoked), "revoked");
    // The CRL as PEM (`--snp-crl crl.pem`), and a PEM of something else.
    let pem = |label: &str, der: &[u8]| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("\n-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n")).into_bytes()
    };
    let as_pem = SnpPolicy { crls: vec![pem("X509 CRL", &policy(&p).crls[0])], ..policy(&p) };
    assert!(run(&p, &r, &as_pem).unwrap().checks[0].contains("the ASK is not on AMD's CRL"));
    let revoked_pem =
        SnpPolicy { crls: vec![pem("X509 CRL", &crl(p.ark, (2025, 12, 1), (2026, 2, 1), &[2]))], ..policy(&p) };
    refused(run(&p, &r, &revoked_pem), "revoked");
    let not_a_crl = SnpPolicy { crls: vec![pem("CERTIFICATE", &p.ark.der)], ..policy(&p) };
    refused(run(&p, &r, &not_a_crl), "AMD's CRL: a PEM CERTIFICATE, not an X509 CRL");
    // A stale CRL.
    let stale = SnpPolicy { crls: vec![crl(p.ark, (2025, 10, 1), (2025, 11, 1), &[])], ..policy(&p) };
    refused(run(&p, &r, &stale), "past its nextUpdate");
    // A CRL in the ARK's name by another key.
    let other = ca("ARK-Test", None, 1).self_signed();
    let forged = SnpPolicy { crls: vec![crl(&other, (2025, 12, 1), (2026, 2, 1), &[])], ..policy(&p) };
    refused(run(&p, &r, &forged), "CRL's signature does not verify");
    // A VCEK outside its validity at the verification time.
    for (valid, why) in [(((2018, 1, 1), (2025, 1, 1)), "has expired"), (((2027, 1, 1), (2030, 1, 1)), "not yet valid")]
    {
        let mut s = vcek_spec(g, TCB, &hwid(g), 9);
        s.valid = valid;
        let vcek = s.signed_by(p.ask);
        let q = Chain { vcek: &vcek, ..p };
        refused(run(&q, &signed(g, &q, |_| {}), &policy(&p)), why);
    }
    // A VCEK (no CA) that issued the certificate of the key that signed the report.
    let sub = vcek_spec(g, TCB, &hwid(g), 10).signed_by(p.vcek);
    let chained = vec![
        (CertType::Vcek, sub.der.clone()),
        (CertType::Ask, p.vcek.der.clone()),
        (CertType::Ark, p.ark.der.clone()),
    ];
    let mut r2 = report(g);
    sign(&mut r2, &sub);
    refused(verify_snp(&r2, &chained, &policy(&p), now()), "certificate chain");
    // An ASK that is not a CA.
    let mut leaf_ask = Spec::leaf("SEV-Milan", 11);
    leaf_ask.alg = &rcgen::PKCS_ECDSA_P384_SHA384;
    let leaf_ask = leaf_ask.signed_by(p.ark);
    let vcek = vcek_spec(g, TCB, &hwid(g), 12).signed_by(&leaf_ask);
    let q = Chain { ask: &leaf_ask, vcek: &vcek, ..p };
    refused(run(&q, &signed(g, &q, |_| {}), &policy(&p)), "is not a CA");
}

/// Finding 7: the minimum TCB, for the reported, current and launch TCB.
#[test]
fn a_tcb_below_the_minimum_is_refused() {
    let g = Gen::Milan;
    let pk = pki(g);
    let p = pk.chain();
    let min = SnpPolicy { min_tcb: MinTcb { bootloader: 3, tee: 0, snp: 8, microcode: 0x73, fmc: 0 }, ..policy(&p) };
    run(&p, &signed(g, &p, |_| {}), &min).unwrap();
    let higher = SnpPolicy { min_tcb: MinTcb { snp: 9, ..min.min_tcb }, ..policy(&p) };
    refused(run(&p, &signed(g, &p, |_| {}), &higher), "the reported TCB's SNP SPL 8 is below the minimum 9");
    let low = Tcb { ucode: 0x72, ..TCB }.bytes(g);
    refused(
        run(&p, &signed(g, &p, |r| r[0x38..0x40].copy_from_slice(&low)), &min),
        "the current TCB's microcode SPL 114",
    );
    refused(
        run(&p, &signed(g, &p, |r| r[0x1F0..0x1F8].copy_from_slice(&low)), &min),
        "the launch TCB's microcode SPL 114",
    );
    // A reported TCB that is not the VCEK's.
    refused(run(&p, &signed(g, &p, |r| r[0x180..0x188].copy_from_slice(&low)), &policy(&p)), "differs from the VCEK's");
    assert_eq!(
        MinTcb::parse("bootloader=3,snp=0x18,microcode=219").unwrap(),
        MinTcb { bootloader: 3, tee: 0, snp: 0x18, microcode: 219, fmc: 0 }
    );
    assert!(MinTcb::parse("bl=3").is_err());
    // Each component against its own floor (Turin: the FMC too), and the parser's forms.
    for (min, why) in [
        (MinTcb { bootloader: 4, ..MinTcb::default() }, "the reported TCB's bootloader SPL 3 is below the minimum 4"),
        (MinTcb { tee: 1, ..MinTcb::default() }, "the reported TCB's TEE SPL 0 is below the minimum 1"),
        (
            MinTcb { microcode: 0x74, ..MinTcb::default() },
            "the reported TCB's microcode SPL 115 is below the minimum 116",
        ),
        (MinTcb { fmc: 2, ..MinTcb::default() }, "the reported TCB's FMC SPL 1 is below the minimum 2"),
    ] {
        let t = pki(Gen::Turin);
        let q = t.chain();
        refused(run(&q, &signed(Gen::Turin, &q, |_| {}), &SnpPolicy { min_tcb: min, ..policy(&q) }), why);
    }
    let fmc_only = SnpPolicy { min_tcb: MinTcb { fmc: 9, ..MinTcb::default() }, ..policy(&p) };
    run(&p, &signed(g, &p, |_| {}), &fmc_only).expect("Milan's TCB has no FMC");
    assert_eq!(MinTcb::parse(" tee = 2 , fmc=0x1F,,").unwrap(), MinTcb { tee: 2, fmc: 0x1F, ..MinTcb::default() });
    assert_eq!(MinTcb::parse("snp=256").unwrap_err(), "\"snp=256\": not an SPL from 0 to 255");
    assert_eq!(MinTcb::parse("snp").unwrap_err(), "\"snp\" is not NAME=VALUE");
    assert_eq!(
        MinTcb::parse("bl=3").unwrap_err(),
        "\"bl\" is not a TCB component (bootloader, tee, snp, microcode, fmc)"
    );
}

/// Finding 7: the signature over the raw bytes, with the reserved fields enforced.
#[test]
fn reserved_fields_must_be_zero_and_the_raw_bytes_are_signed() {
    let g = Gen::Milan;
    let pk = pki(g);
    let p = pk.chain();
    // Reserved bytes inside the signed range, set and signed.
    for (offset, why) in [
        (0x182, "REPORTED_TCB has its reserved bytes set"),
        (0x185, "REPORTED_TCB has its reserved bytes set"),
        (0x1F2, "LAUNCH_TCB has its reserved bytes set"),
        (0x3A, "CURRENT_TCB has its reserved bytes set"),
        (0x04C, "reserved (0x04C) is not zero"),
        (0x18B, "reserved (0x18B) is not zero"),
        (0x1EB, "reserved (0x1EB) is not zero"),
        (0x210, "reserved (0x208) is not zero"),
        (0x1F8, "MIT_VECTOR (reserved before version 5)"),
    ] {
        refused(run(&p, &signed(g, &p, |r| r[offset] = 1), &policy(&p)), why);
    }
    refused(run(&p, &signed(g, &p, |r| r[0x48] = 0x20), &policy(&p)), "key information has reserved bits set");
    // Outside the signed range: the signature's padding and the bytes after it.
    for (offset, why) in
        [(0x2A0 + 50, "R padding"), (0x2E8 + 70, "S padding"), (0x400, "reserved (after the signature)")]
    {
        let mut r = signed(g, &p, |_| {});
        r[offset] = 1;
        refused(run(&p, &r, &policy(&p)), why);
    }
    // A signed byte changed after signing.
    let mut r = signed(g, &p, |_| {});
    r[0x182] = 1;
    refused(run(&p, &r, &policy(&p)), "the report's signature does not verify");
}

/// Finding 7: Turin's hwID (8 bytes; CHIP_ID is those 8 bytes and zeros).
#[test]
fn turin_chip_ids_are_compared_as_amd_defines_them() {
    let g = Gen::Turin;
    let pk = pki(g);
    let p = pk.chain();
    run(&p, &signed(g, &p, |_| {}), &policy(&p)).unwrap();
    refused(run(&p, &signed(g, &p, |r| r[0x1A0] ^= 1), &policy(&p)), "another chip's key");
    refused(run(&p, &signed(g, &p, |r| r[0x1A0 + 8] = 1), &policy(&p)), "another chip's key");
    // A 64-byte hwID on a Turin report, an 8-byte one on Milan's: not what AMD issues.
    let wide = vcek_spec(g, TCB, &[0x7E; 64], 20).signed_by(p.ask);
    let q = Chain { vcek: &wide, ..p };
    refused(run(&q, &signed(g, &q, |_| {}), &policy(&p)), "hwID is 64 bytes");
    let mk = pki(Gen::Milan);
    let m = mk.chain();
    let narrow = vcek_spec(Gen::Milan, TCB, &[0x5C; 8], 21).signed_by(m.ask);
    let q = Chain { vcek: &narrow, ..m };
    refused(run(&q, &signed(Gen::Milan, &q, |_| {}), &policy(&m)), "hwID is 8 bytes");
}

/// The broker refuses a report whose ASK AMD's CRL revokes, with the same reason (its /attest
/// path runs `check_snp`, which runs `verify_snp` before the session binding).
#[test]
fn the_broker_refuses_a_revoked_chain_with_its_reason() {
    let g = Gen::Milan;
    let pk = pki(g);
    let p = pk.chain();
    let r = signed(g, &p, |_| {});
    let evidence = veil_agent::snp::evidence::evidence_json(&r, Some(&certs(&p))).unwrap();
    let attestation: kbs_types::Attestation = serde_json::from_value(serde_json::json!({
        "runtime-data": {"nonce": "n", "tee-pubkey": {"kty": "EC", "crv": "P-256", "alg": "ES256", "x": "", "y": ""}},
        "tee-evidence": {"primary_evidence": serde_json::Value::from(evidence), "additional_evidence": ""},
    }))
    .unwrap();
    let revoked = SnpPolicy { crls: vec![crl(p.ark, (2025, 12, 1), (2026, 2, 1), &[2])], ..policy(&p) };
    let e = veil_agent::kbs::broker::check_snp(
        &revoked,
        &attestation,
        now(),
        &veil_agent::kbs::broker::BrokerConfig { allow_no_init_data: true, ..Default::default() },
    )
    .unwrap_err();
    assert!(e.contains("revoked"), "{e}");
    // The unrevoked chain gets past the verifier to the session binding.
    let e = veil_agent::kbs::broker::check_snp(
        &policy(&p),
        &attestation,
        now(),
        &veil_agent::kbs::broker::BrokerConfig { allow_no_init_data: true, ..Default::default() },
    )
    .unwrap_err();
    assert!(e.contains("REPORT_DATA is not this session's"), "{e}");
}

/// The checks after the signature and the TCB: the guest policy (DEBUG, MIGRATE_MA, SMT when
/// the verifier refuses it), the VMPL, the measurement and HOST_DATA against the policy's; and
/// before them the report's length, version, signature algorithm and signing key (a VLEK's
/// report verifies with a VLEK chain). Each refusal with its reason.
#[test]
fn the_guest_policy_vmpl_measurement_host_data_and_signing_key_are_checked() {
    let g = Gen::Milan;
    let pk = pki(g);
    let p = pk.chain();
    let plain = policy(&p);
    let ok = run(&p, &signed(g, &p, |_| {}), &plain).unwrap();
    let measurement = "33".repeat(48);
    for check in [
        String::from("policy: 0x30000 (no debugging, no migration agent)"),
        String::from("VMPL: 0"),
        format!("measurement: {measurement} (no reference values given: not checked)"),
    ] {
        assert!(ok.checks.contains(&check), "{check:?} not in {:?}", ok.checks);
    }
    let guest_policy =
        |bits: u64| signed(g, &p, move |r| r[0x08..0x10].copy_from_slice(&(0x30000 | bits).to_le_bytes()));
    refused(run(&p, &guest_policy(1 << 19), &plain), "the guest policy allows debugging (DEBUG, bit 19)");
    refused(run(&p, &guest_policy(1 << 18), &plain), "the guest policy allows a migration agent (MIGRATE_MA, bit 18)");
    // SMT (bit 16, allowed in the test report): refused only when the verifier says so.
    let no_smt = SnpPolicy { refuse_smt: true, ..policy(&p) };
    refused(run(&p, &signed(g, &p, |_| {}), &no_smt), "the guest policy allows SMT (bit 16)");
    run(&p, &signed(g, &p, |r| r[0x0A] = 0x02), &no_smt).unwrap();
    refused(run(&p, &signed(g, &p, |r| r[0x30] = 1), &plain), "the report was requested at VMPL 1, not 0");

    let pinned = SnpPolicy { measurements: vec![[0x11; 48], [0x33; 48]], ..policy(&p) };
    let v = run(&p, &signed(g, &p, |_| {}), &pinned).unwrap();
    assert!(v.checks.contains(&format!("measurement: {measurement} is a reference value")), "{:?}", v.checks);
    let other = SnpPolicy { measurements: vec![[0x11; 48]], ..policy(&p) };
    refused(
        run(&p, &signed(g, &p, |_| {}), &other),
        &format!("the launch measurement {measurement} is not among the reference values"),
    );
    let host_data = SnpPolicy { host_data: Some([0x44; 32]), ..policy(&p) };
    let v = run(&p, &signed(g, &p, |r| r[0xC0..0xE0].fill(0x44)), &host_data).unwrap();
    assert!(v.checks.contains(&format!("HOST_DATA: {}", "44".repeat(32))), "{:?}", v.checks);
    refused(
        run(&p, &signed(g, &p, |r| r[0xDF] = 0x45), &host_data),
        &format!("HOST_DATA {}45 is not the expected {}", "00".repeat(31), "44".repeat(32)),
    );

    // The report's header.
    refused(run(&p, &signed(g, &p, |_| {})[..0x49F], &plain), "the report is 1183 bytes, not 1184");
    for version in [1u8, 6] {
        refused(
            run(&p, &signed(g, &p, |r| r[0] = version), &plain),
            &format!("report version {version}: not a layout this verifier knows (2 to 5)"),
        );
    }
    refused(
        run(&p, &signed(g, &p, |r| r[0x34] = 2), &plain),
        "the report's signature algorithm is not ECDSA P-384 with SHA-384",
    );
    refused(
        run(&p, &signed(g, &p, |r| r[0x48] = 2 << 2), &plain),
        "the report is signed by key 2, neither VCEK nor VLEK",
    );
    // KEY_INFO SIGNING_KEY 1: a VLEK, issued by the ASVK ("SEV-VLEK-Milan"), not the VCEK.
    refused(run(&p, &signed(g, &p, |r| r[0x48] = 1 << 2), &plain), "no VLEK certificate (the evidence carries none)");
    let asvk = ca("SEV-VLEK-Milan", Some(0), 40).signed_by(p.ark);
    let mut vlek = vcek_spec(g, TCB, &hwid(g), 41);
    vlek.cn = "SEV-VLEK";
    let vlek = vlek.signed_by(&asvk);
    let mut r = report(g);
    r[0x48] = 1 << 2;
    r[0x1A0..0x1E0].fill(0); // a VLEK's report carries no CHIP_ID
    sign(&mut r, &vlek);
    let chain =
        vec![(CertType::Vlek, vlek.der.clone()), (CertType::Ask, asvk.der.clone()), (CertType::Ark, p.ark.der.clone())];
    let v = verify_snp(&r, &chain, &plain, now()).unwrap();
    assert!(
        v.checks[0].starts_with("signature: over the report's bytes by the VLEK, certified by the ASK"),
        "{:?}",
        v.checks
    );
    assert!(!v.checks.iter().any(|c| c.starts_with("chip:")), "{:?}", v.checks);
    // Trustee's evidence form carries the VLEK as such.
    let evidence = veil_agent::snp::evidence::evidence_json(&r, Some(&chain)).unwrap();
    let (raw, carried) = veil_agent::snp::verify::from_evidence(&evidence.into()).unwrap();
    assert_eq!((raw, carried), (r.clone(), chain.clone()));
    // The VCEK's chain for a report the VLEK signed: the VCEK profile does not name SEV-VLEK.
    let vcek_named =
        vec![(CertType::Vcek, vlek.der.clone()), (CertType::Ask, asvk.der.clone()), (CertType::Ark, p.ark.der.clone())];
    refused(
        verify_snp(&signed(g, &p, |_| {}), &vcek_named, &plain, now()),
        "certificate chain: the VCEK certificate: its subject is \"SEV-VLEK\", not SEV-VCEK",
    );
}
