//! Real AMD-signed SEV-SNP attestation reports (shared/testdata/snp/reports: virtee/sev's
//! Milan report and go-sev-guest's) verify against their VCEKs and AMD's Milan chain; a flipped
//! bit in the signed part, a chain of another product line, and a VCEK of another chip refuse.
mod common;

use common::testdata;
use veil_agent::snp::evidence::CertType;
use veil_agent::snp::verify::{Product, SnpPolicy, verify_snp};

fn pem_blocks(text: &[u8]) -> Vec<Vec<u8>> {
    // Line ends may be LF or CRLF.
    let text = String::from_utf8_lossy(text).replace("\r\n", "\n");
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
        .map(|b| format!("{}\n", b.trim_start()).into_bytes())
        .collect()
}

/// virtee/sev's Milan report's certificates: its VCEK, then the ASK and ARK of its PEM chain.
fn virtee_milan_chain(virtee: &std::path::Path) -> Vec<(CertType, Vec<u8>)> {
    let chain = pem_blocks(&std::fs::read(virtee.join("cert_chain_milan.pem")).unwrap());
    vec![
        (CertType::Vcek, std::fs::read(virtee.join("vcek_milan.der")).unwrap()),
        (CertType::Ask, chain[0].clone()),
        (CertType::Ark, chain[1].clone()),
    ]
}

/// A time within every real VCEK's validity (the Genoa VCEK was issued 2025-08-07).
fn at() -> u64 {
    veil_agent::tdx::collateral::parse_time("2025-09-01T00:00:00Z").unwrap()
}

/// No AMD CRL is in the test data: the real chains are checked with missing CRLs allowed (the
/// CRL path is tested with the test PKI in snp_forged.rs).
fn real() -> SnpPolicy {
    SnpPolicy { allow_missing_crl: true, ..SnpPolicy::default() }
}

#[test]
fn real_milan_reports_verify_and_tampering_refuses() {
    let Some(dir) = testdata("snp/reports") else { return };
    let virtee = dir.join("virtee-sev-milan");
    let report = std::fs::read(virtee.join("report_milan.bin")).unwrap();
    let vcek = std::fs::read(virtee.join("vcek_milan.der")).unwrap();
    let chain = pem_blocks(&std::fs::read(virtee.join("cert_chain_milan.pem")).unwrap());
    let certs = |vcek: &[u8], ask: &[u8], ark: &[u8]| {
        vec![(CertType::Vcek, vcek.to_vec()), (CertType::Ask, ask.to_vec()), (CertType::Ark, ark.to_vec())]
    };
    let milan = certs(&vcek, &chain[0], &chain[1]);
    verify_snp(&report, &milan, &real(), at()).unwrap();
    // Upstream's negative case: bit 7 of byte 21 (inside the signed part).
    let mut flipped = report.clone();
    flipped[21] ^= 0x80;
    assert!(verify_snp(&flipped, &milan, &real(), at()).is_err());

    let google = dir.join("go-sev-guest-milan");
    let report2 = std::fs::read(google.join("attestation.bin")).unwrap();
    let vcek2 = std::fs::read(google.join("vcek.testcer")).unwrap();
    let chain2 = pem_blocks(&std::fs::read(google.join("milan.testcer")).unwrap());
    let e = verify_snp(&report2, &certs(&vcek2, &chain2[0], &chain2[1]), &real(), at()).unwrap_err();
    // Its chain and signature hold; the guest was launched with DEBUG allowed.
    assert!(e.contains("allows debugging"), "{e}");
    // A report checked with another chip's VCEK does not verify.
    let e = verify_snp(&report2, &milan, &real(), at()).unwrap_err();
    assert!(e.contains("signature does not verify"), "{e}");
}

/// The firmware's no_std JSON of a report equals virtee/sev's serde form of the same bytes
/// (what Trustee's SNP verifier deserializes), for the real v2 reports and for v3 (Genoa and
/// Turin TCB layouts) and v5 variants of them.
#[test]
fn evidence_json_equals_sev_serde() {
    let Some(dir) = testdata("snp/reports") else { return };
    let reports = [
        std::fs::read(dir.join("virtee-sev-milan/report_milan.bin")).unwrap(),
        std::fs::read(dir.join("go-sev-guest-milan/attestation.bin")).unwrap(),
    ];
    let mut variants = Vec::new();
    for r in &reports {
        variants.push(r.clone());
        for (version, family, model) in [(3u8, 0x19u8, 0x11u8), (3, 0x1A, 0x02), (5, 0x19, 0x01), (5, 0x1A, 0x11)] {
            let mut v = r.clone();
            v[0] = version;
            v[0x188] = family;
            v[0x189] = model;
            v[0x18A] = 1;
            if version == 5 {
                v[0x1F8] = 0x5;
                v[0x200] = 0x7;
            }
            variants.push(v);
        }
    }
    for r in variants {
        let theirs = serde_json::to_value(sev::firmware::guest::AttestationReport::from_bytes(&r).unwrap()).unwrap();
        let ours = serde_json::Value::from(veil_agent::snp::evidence::report_json(&r).unwrap());
        assert_eq!(ours, theirs, "version {} family {:#x}", r[0], r[0x188]);
    }
}

/// The broker's and `veil verify`'s full check (verify_snp) on real reports: signature and
/// chain to AMD's built-in root, TCB against the VCEK's extensions, CHIP_ID against its hwID,
/// policy, VMPL, measurement; one flipped signed byte anywhere refuses.
#[test]
fn real_reports_pass_the_full_verification() {
    let Some(dir) = testdata("snp/reports") else { return };
    let Some(certs) = testdata("snp/certs/amd-ark-ask") else { return };
    let virtee = dir.join("virtee-sev-milan");
    let milan = virtee_milan_chain(&virtee);
    let report = std::fs::read(virtee.join("report_milan.bin")).unwrap();
    // Trustee's JSON form round-trips to the same bytes, certificates included.
    let evidence = veil_agent::snp::evidence::evidence_json(&report, Some(&milan)).unwrap();
    let (raw, carried) = veil_agent::snp::verify::from_evidence(&evidence.into()).unwrap();
    assert_eq!((raw.as_slice(), carried.as_slice()), (report.as_slice(), milan.as_slice()));
    let v = verify_snp(&report, &milan, &real(), at()).unwrap();
    assert!(v.checks[0].contains("AMD's Milan root key"), "{:?}", v.checks);
    assert!(v.checks.iter().any(|c| c.starts_with("TCB: ")), "{:?}", v.checks);
    let measurement: [u8; 48] = report[0x90..0xC0].try_into().unwrap();
    let pinned = SnpPolicy { measurements: vec![measurement], ..real() };
    assert!(verify_snp(&report, &milan, &pinned, at()).is_ok());
    let other = SnpPolicy { measurements: vec![[0u8; 48]], ..real() };
    assert!(verify_snp(&report, &milan, &other, at()).unwrap_err().contains("not among the reference values"));
    for offset in [0x00, 0x08, 0x50, 0x90, 0x180, 0x1A0, 0x29F] {
        let mut flipped = report.clone();
        flipped[offset] ^= 1;
        assert!(verify_snp(&flipped, &milan, &real(), at()).is_err(), "byte {offset:#x} flipped verified");
    }

    // Genoa, report version 5, under Oak stage0, with AMD's Genoa chain.
    let oak = dir.join("oak-genoa-v5");
    let genoa = vec![
        (CertType::Vcek, std::fs::read(oak.join("vcek.der")).unwrap()),
        (CertType::Ask, std::fs::read(certs.join("genoa-ask.pem")).unwrap()),
        (CertType::Ark, std::fs::read(certs.join("genoa-ark.pem")).unwrap()),
    ];
    let report5 = std::fs::read(oak.join("report.bin")).unwrap();
    let v = verify_snp(&report5, &genoa, &real(), at()).unwrap();
    assert!(v.checks[0].contains("AMD's Genoa root key"), "{:?}", v.checks);
    // Milan's chain for a Genoa report: refused.
    assert!(verify_snp(&report5, &milan, &real(), at()).is_err());
    // The Genoa report's own chip with the Milan VCEK: refused.
    let mixed = vec![milan[0].clone(), genoa[1].clone(), genoa[2].clone()];
    assert!(verify_snp(&report5, &mixed, &real(), at()).is_err());
}

/// AMD's Turin chain (virtee/sev's VCEK, ASK and ARK) verifies; the Milan ARK does not sign it.
#[test]
fn the_turin_chain_verifies() {
    use veil_agent::pki::Crls;
    use veil_agent::snp::verify::verify_chain;
    let Some(dir) = testdata("snp/reports/virtee-sev-turin-vcek") else { return };
    let chain = pem_blocks(&std::fs::read(dir.join("cert_chain_turin.pem")).unwrap());
    let vcek = std::fs::read(dir.join("vcek_turin.der")).unwrap();
    let ok = verify_chain(&vcek, &chain[0], &chain[1], at(), &[], Crls::AllowMissing);
    assert_eq!(ok, Ok(Product::Turin));
    let e = verify_chain(&vcek, &chain[0], &chain[1], at(), &[], Crls::Required).unwrap_err();
    assert!(e.contains("no CRL"), "{e}");
    let before = veil_agent::tdx::collateral::parse_time("2024-01-01T00:00:00Z").unwrap();
    let e = verify_chain(&vcek, &chain[0], &chain[1], before, &[], Crls::AllowMissing).unwrap_err();
    assert!(e.contains("not yet valid"), "{e}");
    let Some(certs) = testdata("snp/certs/amd-ark-ask") else { return };
    let milan_ark = std::fs::read(certs.join("milan-ark.pem")).unwrap();
    assert!(verify_chain(&vcek, &chain[0], &milan_ark, at(), &[], Crls::AllowMissing).is_err());
}

/// Without a test root the ARK must be AMD's root key for the report's product line (version
/// 3 and later: CPUID family and model; Milan 0x19 models 0x00-0x0F, Genoa 0x19 models
/// 0x10-0x1F and 0xA0-0xAF, Turin 0x1A; any other: any of AMD's roots), checked before the
/// chain and the signature: real
/// reports and AMD's real chains, the report's family and model edited (its signature then
/// fails, which says the product-line check passed).
#[test]
fn the_ark_must_be_amds_root_for_the_reports_product_line() {
    let Some(dir) = testdata("snp/reports") else { return };
    let Some(certs) = testdata("snp/certs/amd-ark-ask") else { return };
    let virtee = dir.join("virtee-sev-milan");
    let milan = virtee_milan_chain(&virtee);
    let genoa = vec![
        (CertType::Vcek, std::fs::read(dir.join("oak-genoa-v5/vcek.der")).unwrap()),
        (CertType::Ask, std::fs::read(certs.join("genoa-ask.pem")).unwrap()),
        (CertType::Ark, std::fs::read(certs.join("genoa-ark.pem")).unwrap()),
    ];
    let turin_dir = dir.join("virtee-sev-turin-vcek");
    let turin_chain = pem_blocks(&std::fs::read(turin_dir.join("cert_chain_turin.pem")).unwrap());
    let turin = vec![
        (CertType::Vcek, std::fs::read(turin_dir.join("vcek_turin.der")).unwrap()),
        (CertType::Ask, turin_chain[0].clone()),
        (CertType::Ark, turin_chain[1].clone()),
    ];
    const OTHER_LINE: &str = "the ARK is not AMD's root key for the report's product line";
    const SIGNATURE: &str = "the report's signature does not verify with the VCEK's key";
    let check = |report: &[u8], certs: &[(CertType, Vec<u8>)], reason: &str| {
        let e = verify_snp(report, certs, &real(), at()).unwrap_err();
        assert!(e.contains(reason), "{e} (expected {reason:?})");
    };
    // Oak's Genoa report (version 5, family 0x19 model 0x11) with Milan's chain.
    let report5 = std::fs::read(dir.join("oak-genoa-v5/report.bin")).unwrap();
    assert_eq!((report5[0], report5[0x188], report5[0x189]), (5, 0x19, 0x11));
    check(&report5, &milan, OTHER_LINE);
    check(&report5, &turin, OTHER_LINE);
    // virtee's Milan report (version 2: no CPUID, any AMD root) as version 3 of each family
    // and model edge, against each chain.
    let report = std::fs::read(virtee.join("report_milan.bin")).unwrap();
    assert_eq!(report[0], 2);
    verify_snp(&report, &milan, &real(), at()).unwrap();
    for (family, model, line) in [
        (0x19, 0x00, "milan"),
        (0x19, 0x0F, "milan"),
        (0x19, 0x10, "genoa"),
        (0x19, 0x1F, "genoa"),
        (0x19, 0xA0, "genoa"),
        (0x19, 0xAF, "genoa"),
        (0x1A, 0x02, "turin"),
    ] {
        let mut r = report.clone();
        r[0] = 3;
        r[0x188] = family;
        r[0x189] = model;
        for (name, certs) in [("milan", &milan), ("genoa", &genoa), ("turin", &turin)] {
            let e = verify_snp(&r, certs, &real(), at()).unwrap_err();
            let want = if name == line { SIGNATURE } else { OTHER_LINE };
            assert!(e.contains(want), "family {family:#x} model {model:#x}, {name}'s chain: {e} (expected {want:?})");
        }
    }
    // A family or model of no known line: any of AMD's roots, as for version 2.
    for (family, model) in [(0x19, 0x20), (0x19, 0x9F), (0x19, 0xB0), (0x17, 0x01)] {
        let mut r = report.clone();
        r[0] = 3;
        r[0x188] = family;
        r[0x189] = model;
        check(&r, &milan, SIGNATURE);
        check(&r, &genoa, SIGNATURE);
    }
}

/// The TCB a `veil-snp` key is derived at is the report's COMMITTED_TCB, as
/// parsed-fields.json decodes it independently (shared/testdata, from the ABI's layout); a
/// report too short to hold the field gives none.
#[test]
fn the_sealing_tcb_is_the_reports_committed_tcb() {
    use veil_agent::snp::seal::committed_tcb;
    let Some(dir) = testdata("snp/reports") else { return };
    let fields: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("parsed-fields.json")).unwrap()).unwrap();
    for (name, file) in [
        ("virtee-sev/report_milan", "virtee-sev-milan/report_milan.bin"),
        ("go-sev-guest/attestation.bin", "go-sev-guest-milan/attestation.bin"),
    ] {
        let report = std::fs::read(dir.join(file)).unwrap();
        let bytes = hex::decode(fields[name]["committed_tcb"].as_str().unwrap()).unwrap();
        let want = u64::from_le_bytes(bytes.try_into().unwrap());
        assert!(want > 1, "{name}: a TCB that tells the field from a constant");
        assert_eq!(committed_tcb(&report), Some(want), "{name}");
        assert_eq!(committed_tcb(&report[..0x1E8]), Some(want), "{name}: the field's end");
        assert_eq!(committed_tcb(&report[..0x1E7]), None, "{name}: one byte short");
    }
}
