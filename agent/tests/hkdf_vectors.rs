//! HKDF-SHA256 (Constellation's DeriveKey) against RFC 5869 and Wycheproof.
mod common;

use std::collections::BTreeMap;

use common::{testdata, unhex};
use veil_agent::keys::{KeyError, derive_key};

/// pyca/cryptography's NIST-style `KEY = value` records; a record ends at `OKM`.
fn nist_records(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut rec = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let k = k.trim().to_string();
        rec.insert(k.clone(), v.trim().to_string());
        if k == "OKM" {
            out.push(std::mem::take(&mut rec));
        }
    }
    out
}

#[test]
fn rfc5869_sha256_cases() {
    let Some(dir) = testdata("hkdf/rfc5869") else { return };
    let mut checked = 0;
    for file in ["rfc-5869-HKDF-SHA256.txt", "hkdf-generated.txt"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for rec in nist_records(&text) {
            if rec.get("Hash").map(String::as_str) != Some("SHA-256") {
                continue;
            }
            let len: usize = rec["L"].parse().unwrap();
            let mut okm = vec![0u8; len];
            derive_key(&unhex(&rec["IKM"]), &unhex(&rec["salt"]), &unhex(&rec["info"]), &mut okm).unwrap();
            assert_eq!(hex::encode(&okm), rec["OKM"].to_lowercase(), "{file} COUNT {:?}", rec.get("COUNT"));
            checked += 1;
        }
    }
    assert_eq!(checked, 4, "RFC 5869 A.1-A.3 and the 1200-byte generated case");
}

#[test]
fn wycheproof_sha256() {
    let Some(dir) = testdata("hkdf/wycheproof") else { return };
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hkdf_sha256_test.json")).unwrap()).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        for t in group["tests"].as_array().unwrap() {
            let size = t["size"].as_u64().unwrap() as usize;
            let mut okm = vec![0u8; size];
            let result = derive_key(
                &unhex(t["ikm"].as_str().unwrap()),
                &unhex(t["salt"].as_str().unwrap()),
                &unhex(t["info"].as_str().unwrap()),
                &mut okm,
            );
            match t["result"].as_str().unwrap() {
                "valid" => {
                    result.unwrap_or_else(|e| panic!("tcId {}: {e}", t["tcId"]));
                    assert_eq!(hex::encode(&okm), t["okm"].as_str().unwrap(), "tcId {}", t["tcId"]);
                    valid += 1;
                }
                _ => {
                    assert_eq!(result, Err(KeyError::OutputTooLong(size)), "tcId {}", t["tcId"]);
                    invalid += 1;
                }
            }
        }
    }
    eprintln!("wycheproof hkdf-sha256: {valid} valid, {invalid} invalid refused");
    assert_eq!(valid + invalid, doc["numberOfTests"].as_u64().unwrap() as usize);
    assert_eq!(invalid, 3);
}
