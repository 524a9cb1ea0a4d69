//! Real TD quotes (shared/testdata/tdx/quotes): every field the parser reads equals what the
//! upstream projects assert (parsed-fields.json, decoded independently), and the quotes whose
//! PCK key upstream publishes verify their signature chain to it; a changed byte refuses.
mod common;

use common::testdata;
use veil_agent::tdx::quote;

#[test]
fn real_quotes_parse_to_the_upstream_fields() {
    let Some(dir) = testdata("tdx/quotes") else { return };
    let fields: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("parsed-fields.json")).unwrap()).unwrap();
    let mut checked = 0;
    for (name, want) in fields.as_object().unwrap() {
        let path = dir.join(name);
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let bytes = if name.ends_with(".hex") {
            hex::decode(String::from_utf8_lossy(&bytes).trim().trim_start_matches("0x")).unwrap()
        } else {
            bytes
        };
        let q = quote::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let h = &want["header"];
        assert_eq!(u64::from(q.version), h["version"].as_u64().unwrap(), "{name}");
        assert_eq!(hex::encode(q.qe_vendor_id), h["qe_vendor_id"].as_str().unwrap(), "{name}");
        let b = &want["body"];
        let field = |k: &str| b[k].as_str().unwrap_or_else(|| panic!("{name}: no {k}")).to_string();
        assert_eq!(hex::encode(q.body.mr_td), field("mr_td"), "{name}");
        assert_eq!(hex::encode(q.body.mr_seam), field("mr_seam"), "{name}");
        assert_eq!(hex::encode(q.body.td_attributes), field("td_attributes"), "{name}");
        assert_eq!(hex::encode(q.body.mr_config_id), field("mr_config_id"), "{name}");
        for i in 0..4 {
            assert_eq!(hex::encode(q.body.rtmr[i]), field(&format!("rtmr{i}")), "{name} rtmr{i}");
        }
        assert_eq!(hex::encode(q.body.report_data), field("report_data"), "{name}");
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} quotes found");
}

#[test]
fn quotes_verify_to_their_pck_key_and_a_changed_byte_refuses() {
    let Some(dir) = testdata("tdx/quotes/entropyxyz-tdx-quote") else { return };
    // The PCK key upstream's tests pin (tests/parse.rs KNOWN_PCK).
    let pck = hex::decode(
        "04a667883a9d9b7cba4b518557ffe9b6c07debe679ad936c2fbef0b54bb51f9480e1c0c047ed1cb44ba124739f4c75e22e725bc4eff840a819ff65f1a271f5fd94",
    )
    .unwrap();
    for name in ["known_pck_quote_1.dat", "known_pck_quote_2.dat"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        quote::parse(&bytes).unwrap().verify_signatures(&pck).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut changed = bytes.clone();
        changed[49] ^= 1;
        assert!(quote::parse(&changed).unwrap().verify_signatures(&pck).is_err(), "{name}: byte 49 changed verified");
    }
    // Another quote's QE report is signed by another PCK.
    let other = std::fs::read(dir.join("v4_quote.dat")).unwrap();
    assert!(quote::parse(&other).unwrap().verify_signatures(&pck).is_err());
    // Refusals of malformed input.
    let bytes = std::fs::read(dir.join("known_pck_quote_1.dat")).unwrap();
    assert!(quote::parse(&bytes[..600]).is_err());
    let mut not_tdx = bytes.clone();
    not_tdx[4] = 0;
    assert_eq!(quote::parse(&not_tdx).unwrap_err(), "not a TDX quote (TEE type is not 0x81)");
}

/// The PCK chain of a real production quote (go-tdx-guest's SPR E4) validates up to Intel's SGX
/// root CA with the root CA CRL and PCK CRL published with it (at their validity), and its PCK
/// key verifies the quote's signatures; against another root, without its CRLs, or after the
/// CRLs' nextUpdate it refuses.
#[test]
fn a_real_pck_chain_reaches_intels_root() {
    use veil_agent::pki::Crls;
    use veil_agent::tdx::pck::{PCK_PROFILE, p256_key_of, verify_chain};
    let Some(dir) = testdata("tdx/quotes/go-tdx-guest") else { return };
    let root = std::fs::read(dir.join("trusted_root.pem")).unwrap();
    let q = quote::parse(&std::fs::read(dir.join("tdx_prod_quote_SPR_E4.dat")).unwrap()).unwrap();
    let crls = vec![std::fs::read(dir.join("rootcrl.der")).unwrap(), std::fs::read(dir.join("pckcrl")).unwrap()];
    let at = veil_agent::tdx::collateral::parse_time("2023-06-10T00:00:00Z").unwrap();
    let chain = verify_chain(&q.certification.1, &root, at, &crls, Crls::Required, &PCK_PROFILE).unwrap();
    assert_eq!(chain.len(), 3);
    q.verify_signatures(&p256_key_of(&chain[0]).unwrap()).unwrap();
    let e = verify_chain(&q.certification.1, &root, at, &crls[..1], Crls::Required, &PCK_PROFILE).unwrap_err();
    assert!(e.contains("no CRL of its issuer covers"), "{e}");
    verify_chain(&q.certification.1, &root, at, &crls[..1], Crls::AllowMissing, &PCK_PROFILE).unwrap();
    let late = veil_agent::tdx::collateral::parse_time("2023-08-01T00:00:00Z").unwrap();
    let e = verify_chain(&q.certification.1, &root, late, &crls, Crls::Required, &PCK_PROFILE).unwrap_err();
    assert!(e.contains("past its nextUpdate"), "{e}");
    let Some(amd) = testdata("snp/certs/amd-ark-ask") else { return };
    let other_root = std::fs::read(amd.join("milan-ark.pem")).unwrap();
    assert_eq!(
        verify_chain(&q.certification.1, &other_root, at, &crls, Crls::Required, &PCK_PROFILE).unwrap_err(),
        "the chain does not end at the pinned Intel SGX root CA"
    );
}

/// The DCAP verdict from Intel's collateral (dcap-qvl's samples, verified at their collateral's
/// validity): the up-to-date quote is UpToDate with no advisories, as upstream asserts; the
/// outdated one is not (its TCB matches no level); a flipped byte in the signed part, collateral used after its
/// nextUpdate, another platform's collateral and another root refuse.
#[test]
fn real_quotes_get_their_tcb_status_from_collateral() {
    use veil_agent::pki::Crls;
    use veil_agent::tdx::collateral::{self, Collateral};
    let Some(dir) = testdata("tdx/quotes/dcap-qvl") else { return };
    let Some(root_dir) = testdata("tdx/quotes/go-tdx-guest") else { return };
    let root = std::fs::read(root_dir.join("trusted_root.pem")).unwrap();
    assert_eq!(root.trim_ascii(), veil_agent::tdx::verify::INTEL_SGX_ROOT_CA.trim().as_bytes());
    let load = |name: &str| Collateral::from_json(&std::fs::read(dir.join(name)).unwrap()).unwrap();
    let at = |c: &Collateral| {
        let t: serde_json::Value = serde_json::from_str(&c.tcb_info).unwrap();
        let q: serde_json::Value = serde_json::from_str(&c.qe_identity).unwrap();
        let issued = |v: &serde_json::Value| collateral::parse_time(v["issueDate"].as_str().unwrap()).unwrap();
        issued(&t).max(issued(&q)) + 3600
    };
    let good = load("tdx_quote_collateral.json");
    let quote = std::fs::read(dir.join("tdx_quote")).unwrap();
    let (_, v) = collateral::verify(&quote, &good, &root, at(&good), Crls::Required).unwrap();
    assert_eq!(v.status, "UpToDate", "{v:?}");
    assert!(v.advisory_ids.is_empty(), "{v:?}");

    let old = load("tdx_quote_outdated_collateral.json");
    let outdated = std::fs::read(dir.join("tdx_quote_outdated")).unwrap();
    // Its PCK certificate's SGX components (SEAMLDR ACM SVN 3) are below every level Intel
    // lists (5): no level matches, the TCB is not supported (upstream reaches UpToDate only by
    // inserting a permissive level).
    let (_, v) = collateral::verify(&outdated, &old, &root, at(&old), Crls::Required).unwrap();
    assert_eq!(v.status, collateral::NOT_SUPPORTED, "{v:?}");

    let mut flipped = quote.clone();
    flipped[200] ^= 1; // inside the TD report body, signed by the attestation key
    assert!(
        collateral::verify(&flipped, &good, &root, at(&good), Crls::Required).unwrap_err().contains("does not verify")
    );
    let next: serde_json::Value = serde_json::from_str(&good.tcb_info).unwrap();
    let expired = collateral::parse_time(next["nextUpdate"].as_str().unwrap()).unwrap() + 1;
    let e = collateral::verify(&quote, &good, &root, expired, Crls::Required).unwrap_err();
    assert!(e.contains("expired") || e.contains("past its nextUpdate"), "{e}");
    let e = collateral::verify(&quote, &old, &root, at(&old), Crls::Required).unwrap_err();
    assert!(e.contains("FMSPC") || e.contains("signature"), "{e}");
    let Some(amd) = testdata("snp/certs/amd-ark-ask") else { return };
    let other_root = std::fs::read(amd.join("milan-ark.pem")).unwrap();
    assert!(collateral::verify(&quote, &good, &other_root, at(&good), Crls::Required).is_err());
}

/// The built-in Intel SGX root CA is the one Intel publishes (go-tdx-guest's copy).
#[test]
fn the_built_in_intel_root_is_intels() {
    let Some(dir) = testdata("tdx/quotes/go-tdx-guest") else { return };
    let published = std::fs::read_to_string(dir.join("trusted_root.pem")).unwrap();
    assert_eq!(veil_agent::tdx::verify::INTEL_SGX_ROOT_CA.trim(), published.trim());
}
