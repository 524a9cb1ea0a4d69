//! Forged TDX evidence is refused, each case with its reason (issue 31's findings 1-6). The
//! method: a test PKI shaped like Intel's (a root, an "Intel SGX PCK Platform CA" with path
//! length 0, a PCK leaf with cA false carrying the SGX extensions of the real PCK certificate,
//! an "Intel SGX TCB Signing" certificate, the root CA CRL and the PCK CRL), dcap-qvl's real
//! quote rebuilt with a new attestation key under that PCK, Intel's real TCB info and QE
//! identity re-signed by the TCB signing key; verified by the broker's own function
//! (`verify_tdx`) at the collateral's validity. The unmodified case is UpToDate; each case
//! changes one thing.
mod common;

use common::tdx_forge::*;
use common::test_pki::{Cert, Spec, crl};
use veil_agent::tdx::collateral::{Collateral, parse_time};
use veil_agent::tdx::verify::{TdxPolicy, TdxVerified, verify_tdx};

fn at() -> u64 {
    parse_time("2025-06-19T12:00:00Z").unwrap()
}

fn policy(root: &Cert, collateral: Collateral) -> TdxPolicy {
    TdxPolicy {
        root: root.der.clone(),
        test_root: true,
        collateral,
        allowed_status: vec![String::from("UpToDate")],
        reference: None,
        allow_missing_crl: false,
        allow_service_td: false,
    }
}

/// A case: the quote's parts and the PCK-side signer and chain, the collateral.
struct Case<'a> {
    pki: &'a Pki,
    parts: QuoteParts,
    coll: Coll,
}

impl Case<'_> {
    fn honest_chain(&self) -> String {
        format!("{}{}{}", self.pki.pck.pem, self.pki.platform.pem, self.pki.root.pem)
    }
    fn tcb_chain(&self) -> String {
        format!("{}{}", self.pki.tcb.pem, self.pki.root.pem)
    }
    fn run(&self) -> Result<TdxVerified, String> {
        let quote = self.parts.build(&self.pki.pck, &self.honest_chain());
        verify_tdx(&quote, None, &policy(&self.pki.root, self.coll.build(&self.pki.tcb, &self.tcb_chain())), at())
    }
}

#[track_caller]
fn refused(result: Result<TdxVerified, String>, reason: &str) {
    match result {
        Ok(v) => panic!("verified ({}), expected a refusal with {reason:?}", v.verdict.status),
        Err(e) => assert!(e.contains(reason), "refused for another reason: {e}\n(expected {reason:?})"),
    }
}

#[test]
fn the_unmodified_case_verifies_up_to_date() {
    let Some(real) = real() else { return };
    let pki = pki(&real);
    let case = Case { pki: &pki, parts: QuoteParts::from_real(&real), coll: Coll::from_real(&real, &pki) };
    let v = case.run().unwrap();
    assert_eq!(v.verdict.status, "UpToDate");
    assert!(v.checks[0].contains("root CA CRL and PCK CRL checked"), "{:?}", v.checks);
}

/// Finding 1: the certificate chain was checked for signatures and names only.
#[test]
fn chains_outside_intels_profile_are_refused() {
    let Some(real) = real() else { return };
    let pki = pki(&real);
    let parts = QuoteParts::from_real(&real);
    let coll = Coll::from_real(&real, &pki);
    let case = Case { pki: &pki, parts: parts.clone(), coll: Coll::from_real(&real, &pki) };
    let tcb = coll.build(&pki.tcb, &case.tcb_chain());
    let run = |signer: &Cert, chain: String| {
        verify_tdx(&parts.build(signer, &chain), None, &policy(&pki.root, tcb.clone()), at())
    };

    // A PCK leaf (cA false) issues a certificate that signs the QE report.
    let sub = pck_spec(&real, 30).signed_by(&pki.pck);
    refused(run(&sub, format!("{}{}{}{}", sub.pem, pki.pck.pem, pki.platform.pem, pki.root.pem)), "is not a CA");
    // The same from a PCK leaf without basicConstraints at all.
    let mut no_bc = pck_spec(&real, 31);
    no_bc.no_basic_constraints = true;
    let no_bc = no_bc.signed_by(&pki.platform);
    let sub = pck_spec(&real, 30).signed_by(&no_bc);
    refused(run(&sub, format!("{}{}{}{}", sub.pem, no_bc.pem, pki.platform.pem, pki.root.pem)), "is not a CA");
    // A Platform CA (path length 0) issues a CA that issues the PCK.
    let mid = Spec::ca("Intel SGX PCK Processor CA", None, 32).signed_by(&pki.platform);
    let pck2 = pck_spec(&real, 33).signed_by(&mid);
    refused(
        run(&pck2, format!("{}{}{}{}", pck2.pem, mid.pem, pki.platform.pem, pki.root.pem)),
        "path length constraint",
    );
    // The root issues the PCK directly: not Intel's shape.
    let direct = pck_spec(&real, 34).signed_by(&pki.root);
    refused(run(&direct, format!("{}{}", direct.pem, pki.root.pem)), "0 certificates between it and the root, not 1");
    // A PCK leaf under another name.
    let mut named = pck_spec(&real, 35);
    named.cn = "Intel SGX PCK Certificate (not)";
    let named = named.signed_by(&pki.platform);
    refused(run(&named, format!("{}{}{}", named.pem, pki.platform.pem, pki.root.pem)), "its subject is");
    // A Platform CA whose keyUsage does not allow certificate signing.
    let mut weak = Spec::ca(PLATFORM_CA, Some(0), 36);
    weak.key_usages = vec![rcgen::KeyUsagePurpose::CrlSign];
    let weak = weak.signed_by(&pki.root);
    let pck3 = pck_spec(&real, 37).signed_by(&weak);
    let mut c = Coll::from_real(&real, &pki);
    c.pck_crl = Some(crl(&weak, (2025, 6, 1), (2025, 7, 1), &[]));
    let quote = parts.build(&pck3, &format!("{}{}{}", pck3.pem, weak.pem, pki.root.pem));
    let p = policy(&pki.root, c.build(&pki.tcb, &case.tcb_chain()));
    refused(verify_tdx(&quote, None, &p, at()), "no keyUsage keyCertSign");
    // A PCK leaf that is a CA.
    let mut ca_leaf = pck_spec(&real, 38);
    ca_leaf.ca = Some(Some(0));
    let ca_leaf = ca_leaf.signed_by(&pki.platform);
    refused(run(&ca_leaf, format!("{}{}{}", ca_leaf.pem, pki.platform.pem, pki.root.pem)), "the leaf is a CA");
    // A PCK certificate expired at the verification time.
    let mut old = pck_spec(&real, 39);
    old.valid = ((2018, 1, 1), (2024, 1, 1));
    let old = old.signed_by(&pki.platform);
    refused(run(&old, format!("{}{}{}", old.pem, pki.platform.pem, pki.root.pem)), "has expired");
}

/// Finding 2: TCB info and QE identity were accepted when signed by any certificate chained to
/// the root.
#[test]
fn collateral_not_signed_by_intels_tcb_signing_certificate_is_refused() {
    let Some(real) = real() else { return };
    let pki = pki(&real);
    let parts = QuoteParts::from_real(&real);
    let case = Case { pki: &pki, parts: parts.clone(), coll: Coll::from_real(&real, &pki) };
    let quote = parts.build(&pki.pck, &case.honest_chain());
    // Every level relabelled UpToDate, signed by the PCK key with the PCK chain.
    let mut coll = Coll::from_real(&real, &pki);
    coll.tcb_info = coll.tcb_info.replace("\"OutOfDate\"", "\"UpToDate\"");
    let by_pck = coll.build(&pki.pck, &case.honest_chain());
    refused(verify_tdx(&quote, None, &policy(&pki.root, by_pck), at()), "the collateral's signer: its subject is");
    // A certificate named like Intel's TCB signing certificate, issued by the Platform CA.
    let fake = Spec::leaf(TCB_SIGNING, 40).signed_by(&pki.platform);
    let by_fake = coll.build(&fake, &format!("{}{}{}", fake.pem, pki.platform.pem, pki.root.pem));
    refused(
        verify_tdx(&quote, None, &policy(&pki.root, by_fake), at()),
        "1 certificates between it and the root, not 0",
    );
}

/// Finding 3: no CRL was read.
#[test]
fn revoked_certificates_and_missing_or_stale_crls_are_refused() {
    let Some(real) = real() else { return };
    let pki = pki(&real);
    let parts = QuoteParts::from_real(&real);
    let case = |coll: Coll| Case { pki: &pki, parts: parts.clone(), coll };
    let base = || Coll::from_real(&real, &pki);
    // The PCK CRL revokes the PCK's serial.
    let mut c = base();
    c.pck_crl = Some(crl(&pki.platform, (2025, 6, 1), (2025, 7, 1), &[3]));
    refused(case(c).run(), "revoked");
    // The root CA CRL revokes the Platform CA.
    let mut c = base();
    c.root_crl = Some(crl(&pki.root, (2025, 6, 1), (2025, 7, 1), &[2]));
    refused(case(c).run(), "revoked");
    // The root CA CRL revokes the TCB signing certificate.
    let mut c = base();
    c.root_crl = Some(crl(&pki.root, (2025, 6, 1), (2025, 7, 1), &[4]));
    refused(case(c).run(), "TCB info issuer chain: the collateral's signer: a certificate on the path is revoked");
    // No PCK CRL: refused; allowed with allow_missing_crl.
    let mut c = base();
    c.pck_crl = None;
    let missing = case(c);
    refused(missing.run(), "no CRL of its issuer covers");
    let quote = missing.parts.build(&pki.pck, &missing.honest_chain());
    let mut p = policy(&pki.root, missing.coll.build(&pki.tcb, &missing.tcb_chain()));
    p.allow_missing_crl = true;
    let v = verify_tdx(&quote, None, &p, at()).unwrap();
    assert!(v.checks[0].contains("NO PCK CRL (allowed)"), "{:?}", v.checks);
    // A PCK CRL past its nextUpdate.
    let mut c = base();
    c.pck_crl = Some(crl(&pki.platform, (2025, 5, 1), (2025, 6, 1), &[]));
    refused(case(c).run(), "past its nextUpdate");
    // A PCK CRL with the Platform CA's name, signed by another key (it would hide a revocation).
    let other = Spec::ca(PLATFORM_CA, Some(0), 2).signed_by(&pki.root);
    let mut c = base();
    c.pck_crl = Some(crl(&other, (2025, 6, 1), (2025, 7, 1), &[]));
    refused(case(c).run(), "CRL's signature does not verify");
}

/// The TCB info and the QE identity hold only from their issueDate to their nextUpdate, both
/// included; the verification time is 2025-06-19T12:00:00Z.
#[test]
fn collateral_documents_hold_from_their_issue_date_to_their_next_update() {
    let Some(real) = real() else { return };
    let pki = pki(&real);
    let parts = QuoteParts::from_real(&real);
    // The document with one date field set to `value` (re-signed by the TCB signing key).
    let dated = |qe: bool, field: &str, value: &str| {
        let mut coll = Coll::from_real(&real, &pki);
        let doc = if qe { &mut coll.qe_identity } else { &mut coll.tcb_info };
        let key = format!("\"{field}\":\"");
        let start = doc.find(&key).unwrap_or_else(|| panic!("{field} in the document")) + key.len();
        let end = start + doc[start..].find('"').unwrap();
        doc.replace_range(start..end, value);
        Case { pki: &pki, parts: parts.clone(), coll }.run()
    };
    for (qe, what) in [(false, "the TCB info"), (true, "the QE identity")] {
        assert!(dated(qe, "issueDate", "2025-06-19T12:00:00Z").is_ok(), "{what} issued at the verification time");
        refused(
            dated(qe, "issueDate", "2025-06-19T12:00:01Z"),
            &format!("{what} was issued at 2025-06-19T12:00:01Z, after the verification time"),
        );
        assert!(dated(qe, "nextUpdate", "2025-06-19T12:00:00Z").is_ok(), "{what} due at the verification time");
        refused(
            dated(qe, "nextUpdate", "2025-06-19T11:59:59Z"),
            &format!("{what} expired at 2025-06-19T11:59:59Z (its nextUpdate): fetch current collateral"),
        );
        refused(dated(qe, "nextUpdate", "2025-06-19 11:59:59"), "is not a time of the form");
    }
}

/// The documents' kind and the identities' masks: TDX TCB info of version 3 or later only (as
/// QVL), a mask of another length than its field refused, and SEAM_ATTRIBUTES compared under the
/// module identity's mask only, as Intel's QVL does (a bit outside the mask does not matter).
#[test]
fn tcb_info_kind_and_identity_masks_are_checked() {
    let Some(real) = real() else { return };
    let pki = pki(&real);
    let parts = QuoteParts::from_real(&real);
    // The case with `from` replaced by `to` in the TCB info (or the QE identity), re-signed.
    let edited = |qe: bool, from: &str, to: &str, parts: &QuoteParts| {
        let mut coll = Coll::from_real(&real, &pki);
        let doc = if qe { &mut coll.qe_identity } else { &mut coll.tcb_info };
        assert!(doc.contains(from), "{from} in the document");
        *doc = doc.replace(from, to);
        Case { pki: &pki, parts: parts.clone(), coll }.run()
    };
    refused(edited(false, "\"id\":\"TDX\"", "\"id\":\"SGX\"", &parts), "TCB info SGX version 3: not TDX TCB info");
    refused(edited(false, "\"version\":3", "\"version\":2", &parts), "TCB info TDX version 2: not TDX TCB info");
    refused(
        edited(true, "\"miscselectMask\":\"FFFFFFFF\"", "\"miscselectMask\":\"FFFF\"", &parts),
        "a field of the wrong length",
    );
    // SEAM_ATTRIBUTES bit 0 set: refused under Intel's mask, accepted under a mask without it.
    let mut set = parts.clone();
    set.body[SEAM_ATTRIBUTES] |= 1;
    refused(
        Case { pki: &pki, parts: set.clone(), coll: Coll::from_real(&real, &pki) }.run(),
        "SEAM_ATTRIBUTES does not match",
    );
    let (mask, cleared) = ("\"attributesMask\":\"FFFFFFFFFFFFFFFF\"", "\"attributesMask\":\"FEFFFFFFFFFFFFFF\"");
    assert!(edited(false, mask, cleared, &set).is_ok());
}

/// Finding 4: the TDX module identity of major version 0 was never compared.
#[test]
fn the_module_identity_is_checked_for_major_version_zero() {
    let Some(real) = real() else { return };
    let pki = pki(&real);
    let mut parts = QuoteParts::from_real(&real);
    parts.body[TEE_TCB_SVN + 1] = 0; // major version 0: the TCB info's tdxModule applies
    let ok = Case { pki: &pki, parts: parts.clone(), coll: Coll::from_real(&real, &pki) }.run();
    assert!(ok.is_ok(), "{ok:?}");
    let mut signer = parts.clone();
    signer.body[MR_SIGNER_SEAM..MR_SIGNER_SEAM + 48].fill(0xAA);
    refused(Case { pki: &pki, parts: signer, coll: Coll::from_real(&real, &pki) }.run(), "MRSIGNER_SEAM aaaaaaaa");
    let mut attrs = parts.clone();
    attrs.body[SEAM_ATTRIBUTES..SEAM_ATTRIBUTES + 8].copy_from_slice(&0x8000000000000001u64.to_le_bytes());
    refused(Case { pki: &pki, parts: attrs, coll: Coll::from_real(&real, &pki) }.run(), "SEAM_ATTRIBUTES");
    // And for major version 1 (TDX_01), as before.
    let mut v1 = QuoteParts::from_real(&real);
    v1.body[MR_SIGNER_SEAM] ^= 1;
    refused(Case { pki: &pki, parts: v1, coll: Coll::from_real(&real, &pki) }.run(), "is not TDX_01's");
}

/// Finding 5: TD report 1.5 fields were cut off.
#[test]
fn td_report_15_fields_are_parsed_shown_and_refused_when_set() {
    let Some(real) = real() else { return };
    let pki = pki(&real);
    let tee: [u8; 16] = real.quote.body.tee_tcb_svn;
    let case = |service: [u8; 48]| Case {
        pki: &pki,
        parts: QuoteParts::from_real(&real).td15(tee, service),
        coll: Coll::from_real(&real, &pki),
    };
    let v = case([0; 48]).run().unwrap();
    assert_eq!(v.quote.version, 5);
    assert_eq!(v.quote.body.mr_service_td, Some([0; 48]));
    assert_eq!(v.quote.body.tee_tcb_svn2, Some(tee));
    assert!(v.checks.iter().any(|c| c.starts_with("TD report 1.5: MRSERVICETD 0000")), "{:?}", v.checks);
    let bound = case([0x5E; 48]);
    refused(bound.run(), "MRSERVICETD 5e5e5e");
    let quote = bound.parts.build(&pki.pck, &bound.honest_chain());
    let mut p = policy(&pki.root, bound.coll.build(&pki.tcb, &bound.tcb_chain()));
    p.allow_service_td = true;
    verify_tdx(&quote, None, &p, at()).unwrap();
    // A current TCB (TEE_TCB_SVN2) below every level: not supported.
    let mut low = QuoteParts::from_real(&real).td15([0; 16], [0; 48]);
    low.body[TEE_TCB_SVN] = tee[0];
    refused(Case { pki: &pki, parts: low, coll: Coll::from_real(&real, &pki) }.run(), "TCB status TcbNotSupported");
}

/// Finding 6: MRSIGNER compared ignoring ASCII case, the QE vendor ID not compared, only TD
/// attribute bit 0 checked.
#[test]
fn the_qe_and_the_td_attributes_are_checked_exactly() {
    let Some(real) = real() else { return };
    let pki = pki(&real);
    let run = |parts: QuoteParts| Case { pki: &pki, parts, coll: Coll::from_real(&real, &pki) }.run();
    let base = QuoteParts::from_real(&real);
    // Intel's QE MRSIGNER DC9E2A7C6F94...: 0x6F -> 0x4F (another ASCII case).
    let mut m = base.clone();
    assert_eq!(m.qe_report[128 + 4], 0x6F);
    m.qe_report[128 + 4] = 0x4F;
    refused(run(m), "the QE's MRSIGNER is not Intel's");
    let mut v = base.clone();
    v.header[12] ^= 0xFF;
    refused(run(v), "the QE vendor ID");
    let attrs = |f: &dyn Fn(u64) -> u64| {
        let mut p = base.clone();
        let a = u64::from_le_bytes(p.body[TD_ATTRIBUTES..TD_ATTRIBUTES + 8].try_into().unwrap());
        p.body[TD_ATTRIBUTES..TD_ATTRIBUTES + 8].copy_from_slice(&f(a).to_le_bytes());
        run(p)
    };
    refused(attrs(&|a| a | 0b10), "reserved bits 0x2 are set"); // a reserved TUD bit
    refused(attrs(&|a| a & !(1 << 28)), "SEPT_VE_DISABLE (bit 28) is clear");
    refused(attrs(&|a| a | 1), "a debug TD");
    refused(attrs(&|a| a | (1 << 29)), "migratable");
    refused(attrs(&|a| a | (1 << 17)), "SERVTD_EXT");
    refused(attrs(&|a| a | (1 << 40)), "reserved bits");
    assert!(attrs(&|a| a | (1 << 30)).is_ok(), "PKS (bit 30) is allowed");
    // Each reserved range's first and last bit (1-3, 7-15, 23-26, 32-61), and the defined bits
    // beside them (Linux's tdx.h: ICSSD 16, LASS 27, KL 31, TPA 62, PERFMON 63), accepted.
    for bit in [1, 3, 7, 15, 23, 26, 32, 61] {
        refused(attrs(&|a| a | (1 << bit)), &format!("reserved bits {:#x} are set", 1u64 << bit));
    }
    for bit in [16, 27, 31, 62, 63] {
        assert!(attrs(&|a| a | (1 << bit)).is_ok(), "bit {bit} is not reserved");
    }
    // SERVTD_EXT is accepted when service TDs are.
    let mut servtd = base.clone();
    let a = u64::from_le_bytes(servtd.body[TD_ATTRIBUTES..TD_ATTRIBUTES + 8].try_into().unwrap());
    servtd.body[TD_ATTRIBUTES..TD_ATTRIBUTES + 8].copy_from_slice(&(a | (1 << 17)).to_le_bytes());
    let case = Case { pki: &pki, parts: servtd, coll: Coll::from_real(&real, &pki) };
    let mut p = policy(&pki.root, case.coll.build(&pki.tcb, &case.tcb_chain()));
    p.allow_service_td = true;
    verify_tdx(&case.parts.build(&pki.pck, &case.honest_chain()), None, &p, at()).unwrap();
}

/// The broker refuses the forged chain of finding 1 with the same reason (its /attest path runs
/// `check_tdx`, which runs `verify_tdx` before the session binding).
#[test]
fn the_broker_refuses_a_forged_chain_with_its_reason() {
    use base64::Engine;
    let Some(real) = real() else { return };
    let pki = pki(&real);
    let case = Case { pki: &pki, parts: QuoteParts::from_real(&real), coll: Coll::from_real(&real, &pki) };
    let sub = pck_spec(&real, 30).signed_by(&pki.pck);
    let quote = case.parts.build(&sub, &format!("{}{}{}{}", sub.pem, pki.pck.pem, pki.platform.pem, pki.root.pem));
    let attestation: kbs_types::Attestation = serde_json::from_value(serde_json::json!({
        "runtime-data": {"nonce": "n", "tee-pubkey": {"kty": "EC", "crv": "P-256", "alg": "ES256", "x": "", "y": ""}},
        "tee-evidence": {
            "primary_evidence": {"quote": base64::engine::general_purpose::STANDARD.encode(&quote)},
            "additional_evidence": "",
        },
    }))
    .unwrap();
    let p = policy(&pki.root, case.coll.build(&pki.tcb, &case.tcb_chain()));
    let e = veil_agent::kbs::broker::check_tdx(
        &p,
        &attestation,
        at(),
        &veil_agent::kbs::broker::BrokerConfig { allow_no_init_data: true, ..Default::default() },
    )
    .unwrap_err();
    assert!(e.contains("is not a CA"), "{e}");
}

/// The CC event log and the reference values, the checks after the DCAP verdict: a real TD's
/// CCEL (go-tdx-guest's COS TD, shared/testdata/tdx/ccel-rtmr-replay) sent with a quote that
/// holds that TD's RTMRs is accepted, and a quote whose RTMRi differs in one bit is refused for
/// RTMRi; MRTD and RTMRs are compared with `veil measure --platform tdx --out` files read by
/// `TdxReference::from_json` (several files: every MRTD is accepted, their RTMRs must agree).
#[test]
fn the_event_log_and_the_reference_values_are_compared() {
    use common::{testdata, unhex};
    use serde_json::json;
    use veil_agent::tdx::verify::TdxReference;
    let Some(real) = real() else { return };
    let Some(dir) = testdata("tdx/ccel-rtmr-replay/go-tdx-guest") else { return };
    let log = std::fs::read(dir.join("ccel_data.dat")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected_rtmrs_from_quote.json")).unwrap()).unwrap();
    let rtmr = |i: usize| unhex(expected[format!("rtmr{i}")].as_str().unwrap());
    let pki = pki(&real);
    let mut cos = QuoteParts::from_real(&real);
    for i in 0..4 {
        cos.body[RTMR + 48 * i..RTMR + 48 * (i + 1)].copy_from_slice(&rtmr(i));
    }
    let verify = |parts: &QuoteParts, ccel: Option<&[u8]>, reference: Option<TdxReference>| {
        let case = Case { pki: &pki, parts: parts.clone(), coll: Coll::from_real(&real, &pki) };
        let mut p = policy(&pki.root, case.coll.build(&pki.tcb, &case.tcb_chain()));
        p.reference = reference;
        verify_tdx(&case.parts.build(&pki.pck, &case.honest_chain()), ccel, &p, at())
    };

    let v = verify(&cos, Some(&log), None).unwrap();
    assert!(
        v.checks.iter().any(|c| c.starts_with("the CC event log (") && c.ends_with("replays to the quoted RTMR0-3"))
    );
    for i in 0..4 {
        let mut other = cos.clone();
        other.body[RTMR + 48 * i + 47] ^= 1;
        refused(
            verify(&other, Some(&log), None),
            &format!("the CC event log replays RTMR{i} to {}, the quote holds", hex::encode(rtmr(i))),
        );
    }
    // The dcap-qvl TD's own RTMRs are not what this log replays to.
    refused(verify(&QuoteParts::from_real(&real), Some(&log), None), "the CC event log replays RTMR0 to 3fa2f61f");
    refused(verify(&cos, Some(&log[..40]), None), "the CC event log: event log at byte 32: truncated Spec ID event"); // cut inside its header

    // Reference values as `veil measure --platform tdx --out` writes them (RTMR0 only with --vmm).
    let mrtd = hex::encode(&cos.body[MR_TD..MR_TD + 48]);
    let other_mrtd = "ab".repeat(48);
    let doc = |mrtd: &str, rtmrs: &[usize]| {
        let mut d = json!({"platform": "tdx", "mrtd": mrtd});
        for &i in rtmrs {
            d[format!("rtmr{i}")] = json!(hex::encode(rtmr(i)));
        }
        d
    };
    let reference = |docs: &[serde_json::Value]| TdxReference::from_json(docs);
    // Two ROMs' files: either MRTD is accepted, each RTMR compared.
    let both = reference(&[doc(&other_mrtd, &[1, 2, 3]), doc(&mrtd, &[0, 1, 2, 3])]).unwrap();
    assert_eq!(both.mrtd.len(), 2);
    let v = verify(&cos, Some(&log), Some(both.clone())).unwrap();
    assert!(v.checks.contains(&format!("MRTD {mrtd} is a reference value")), "{:?}", v.checks);
    for i in 0..4 {
        assert!(v.checks.contains(&format!("RTMR{i} is the reference value")), "{:?}", v.checks);
    }
    refused(
        verify(&cos, None, Some(reference(&[doc(&other_mrtd, &[1, 2, 3])]).unwrap())),
        &format!("MRTD {mrtd} is not among the reference values"),
    );
    for i in 0..4 {
        let mut changed = cos.clone();
        changed.body[RTMR + 48 * i] ^= 0x80;
        let mut quoted = rtmr(i);
        quoted[0] ^= 0x80;
        refused(
            verify(&changed, None, Some(both.clone())),
            &format!("RTMR{i} {} is not the reference {}", hex::encode(quoted), hex::encode(rtmr(i))),
        );
    }
    // Without an RTMR in any file, that RTMR is not compared.
    let mut changed = cos.clone();
    changed.body[RTMR] ^= 0x80;
    let v = verify(&changed, None, Some(reference(&[doc(&mrtd, &[1, 2, 3])]).unwrap())).unwrap();
    assert!(!v.checks.iter().any(|c| c.starts_with("RTMR0")), "{:?}", v.checks);

    // The files' own refusals.
    let err = |docs: &[serde_json::Value]| reference(docs).unwrap_err();
    assert_eq!(
        err(&[doc(&mrtd, &[1]), json!({"platform": "snp", "measurement": "00"})]),
        "reference 1: not a TDX reference-values file (platform is not \"tdx\")"
    );
    let mut disagree = doc(&other_mrtd, &[1, 2]);
    disagree["rtmr2"] = json!("cd".repeat(48));
    assert_eq!(err(&[doc(&mrtd, &[1, 2]), disagree]), "reference files disagree on RTMR2");
    assert_eq!(err(&[json!({"platform": "tdx", "rtmr1": hex::encode(rtmr(1))})]), "reference 0: no mrtd");
    assert_eq!(err(&[json!({"platform": "tdx", "mrtd": "ab".repeat(47)})]), "reference 0: mrtd is not 48 bytes of hex");
}
