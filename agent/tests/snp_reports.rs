//! Real AMD-signed SEV-SNP attestation reports (shared/testdata/snp/reports: virtee/sev's
//! Milan report and go-sev-guest's) verify against their VCEKs and AMD's Milan chain; a flipped
//! bit in the signed part, a chain of another product line, and a VCEK of another chip refuse.
mod common;

use common::testdata;
use veil_agent::snp::verify::{Product, verify_report};

fn pem_blocks(text: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(text);
    text.split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
        .map(|b| b.trim_start().as_bytes().to_vec())
        .collect()
}

#[test]
fn real_milan_reports_verify_and_tampering_refuses() {
    let Some(dir) = testdata("snp/reports") else { return };
    let virtee = dir.join("virtee-sev-milan");
    let report = std::fs::read(virtee.join("report_milan.bin")).unwrap();
    let vcek = std::fs::read(virtee.join("vcek_milan.der")).unwrap();
    let chain = pem_blocks(&std::fs::read(virtee.join("cert_chain_milan.pem")).unwrap());
    let (ask, ark) = (&chain[0], &chain[1]);
    let parsed = verify_report(&report, &vcek, ask, ark, Product::Milan).unwrap();
    assert_eq!(parsed.version, 2);
    // Upstream's negative case: bit 7 of byte 21 (inside the signed part).
    let mut flipped = report.clone();
    flipped[21] ^= 0x80;
    assert!(verify_report(&flipped, &vcek, ask, ark, Product::Milan).is_err());
    // The Milan chain is not Genoa's root.
    assert_eq!(
        verify_report(&report, &vcek, ask, ark, Product::Genoa).unwrap_err(),
        "the ARK is not AMD's Genoa root key"
    );

    let google = dir.join("go-sev-guest-milan");
    let report2 = std::fs::read(google.join("attestation.bin")).unwrap();
    let vcek2 = std::fs::read(google.join("vcek.testcer")).unwrap();
    let chain2 = pem_blocks(&std::fs::read(google.join("milan.testcer")).unwrap());
    verify_report(&report2, &vcek2, &chain2[0], &chain2[1], Product::Milan).unwrap();
    // A report checked with another chip's VCEK does not verify.
    assert!(verify_report(&report2, &vcek, ask, ark, Product::Milan).is_err());
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
        let ours = veil_agent::snp::evidence::report_json(&r).unwrap();
        assert_eq!(ours, theirs, "version {} family {:#x}", r[0], r[0x188]);
    }
}
