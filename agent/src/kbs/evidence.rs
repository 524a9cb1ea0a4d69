//! The attestation evidence veilboot sends to a Trustee KBS for the `tpm` TEE, in the shape
//! Trustee's TPM verifier reads (the guest-components attester's format):
//!
//! ```json
//! {"ak_public": "<base64 DER SubjectPublicKeyInfo of the RSA AK>",
//!  "tpm_quote": {"signature": "<base64 TPMT_SIGNATURE (RSASSA)>",
//!                "message": "<base64 TPMS_ATTEST>",
//!                "pcrs": ["<hex SHA-256 PCR 0>", ..., "<hex PCR 23>"]}}
//! ```
//!
//! plus, for veilboot's own broker, `veil_credential` (base64): the credential the TPM
//! recovered with ActivateCredential, proving the AK lives on the TPM of the EK certificate.
//!
//! The binding to the session, exactly as Trustee's KBS checks it (`report_data`): SHA-384 of
//! the JCS form (RFC 8785) of `{"additional-evidence": .., "nonce": .., "tee-pubkey": ..}`,
//! where `additional-evidence` is the attestation's `tee-evidence.additional_evidence` (veilboot
//! sends none: ""). How much of that digest the evidence carries depends on the TEE: a TPM
//! quote's extraData holds its first 32 bytes (Trustee's TPM verifier compares those); an SNP
//! report's or a TD quote's REPORT_DATA holds all 48, zero-padded to 64 ([`Tee`]). Pinned in
//! the tests to a request the real Trustee KBS accepted.
//!
//! Both sides use this module: the firmware builds evidence, the broker parses it (untrusted).

use alloc::string::String;
use alloc::vec::Vec;

use crate::b64::STANDARD as B64;
use crate::json;
use crate::json::Value;
use sha2::{Digest, Sha384};

/// Number of SHA-256 PCRs quoted.
pub const PCR_COUNT: usize = 24;

/// The TEE whose evidence carries the report data, and with it Trustee's rule for how much of
/// the runtime-data digest the evidence holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tee {
    /// A TPM quote: extraData = the first 32 bytes of the digest.
    Tpm,
    /// An SEV-SNP attestation report: REPORT_DATA = the 48-byte digest, zero-padded to 64.
    Snp,
    /// A TD quote: REPORTDATA = the 48-byte digest, zero-padded to 64.
    Tdx,
}

impl Tee {
    /// The name in the KBS protocol's `tee` field.
    pub fn name(self) -> &'static str {
        match self {
            Tee::Tpm => "tpm",
            Tee::Snp => "snp",
            Tee::Tdx => "tdx",
        }
    }

    /// Bytes of report data the evidence carries.
    pub fn report_data_len(self) -> usize {
        match self {
            Tee::Tpm => 32,
            Tee::Snp | Tee::Tdx => 64,
        }
    }
}

/// The runtime data of an attestation as sent: the broker's nonce and the key the secret is
/// wrapped to (a JWK).
pub fn runtime_data(nonce: &str, tee_pubkey: &Value) -> Value {
    json!({"nonce": nonce, "tee-pubkey": tee_pubkey})
}

/// SHA-384 of the JCS form of `runtime_data` with `additional-evidence` added, as Trustee's KBS
/// builds and hashes it.
pub fn runtime_digest(runtime_data: &Value, additional_evidence: &str) -> [u8; 48] {
    let mut bound = runtime_data.clone();
    if let Value::Object(map) = &mut bound {
        map.insert(String::from("additional-evidence"), Value::String(String::from(additional_evidence)));
    }
    // agent::json's objects are ordered by key and written compactly with the escapes RFC 8785
    // prescribes for strings; the runtime data holds only strings and objects, so this is its
    // JCS form.
    let bytes = crate::json::to_vec(&bound);
    Sha384::digest(&bytes).into()
}

/// The report data for `tee`: the digest cut or zero-padded to what its evidence carries.
pub fn report_data(tee: Tee, runtime_data: &Value, additional_evidence: &str) -> Vec<u8> {
    let digest = runtime_digest(runtime_data, additional_evidence);
    let mut out = alloc::vec![0u8; tee.report_data_len()];
    let n = out.len().min(digest.len());
    out[..n].copy_from_slice(&digest[..n]);
    out
}

/// DER SubjectPublicKeyInfo of an RSA public key (rsaEncryption, RFC 8017 A.1.1).
///
/// Written by hand: the only caller-visible DER the firmware produces, a fixed shape of five
/// nested TLVs; the RustCrypto encoders would pull the whole RSA crate into the ROM.
pub fn rsa_spki(modulus: &[u8], exponent: u32) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = alloc::vec![tag];
        let n = body.len();
        if n < 0x80 {
            v.push(n as u8);
        } else if n < 0x100 {
            v.extend_from_slice(&[0x81, n as u8]);
        } else {
            v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend_from_slice(body);
        v
    }
    fn unsigned(bytes: &[u8]) -> Vec<u8> {
        let trimmed: &[u8] = match bytes.iter().position(|b| *b != 0) {
            Some(i) => &bytes[i..],
            None => &[0],
        };
        let mut v = Vec::with_capacity(trimmed.len() + 1);
        if trimmed[0] & 0x80 != 0 {
            v.push(0);
        }
        v.extend_from_slice(trimmed);
        tlv(0x02, &v)
    }
    // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const RSA_ALGORITHM: [u8; 15] =
        [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut key = unsigned(modulus);
    key.extend_from_slice(&unsigned(&exponent.to_be_bytes()));
    let mut bits = alloc::vec![0u8]; // no unused bits
    bits.extend_from_slice(&tlv(0x30, &key));
    let mut body = RSA_ALGORITHM.to_vec();
    body.extend_from_slice(&tlv(0x03, &bits));
    tlv(0x30, &body)
}

/// TPM evidence as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmEvidence {
    /// DER SubjectPublicKeyInfo of the AK.
    pub ak_spki: Vec<u8>,
    /// TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// TPMS_ATTEST.
    pub message: Vec<u8>,
    /// The 24 SHA-256 PCR values.
    pub pcrs: Vec<[u8; 32]>,
    /// The credential ActivateCredential recovered, if the broker issued one.
    pub credential: Option<Vec<u8>>,
}

impl TpmEvidence {
    /// The JSON Trustee's verifier reads.
    pub fn to_json(&self) -> Value {
        let pcrs: Vec<String> = self.pcrs.iter().map(hex::encode).collect();
        let mut v = json!({
            "ak_public": B64.encode(&self.ak_spki),
            "tpm_quote": {"signature": B64.encode(&self.signature), "message": B64.encode(&self.message), "pcrs": pcrs},
        });
        if let Some(c) = &self.credential {
            v["veil_credential"] = Value::String(B64.encode(c));
        }
        v
    }

    /// Parse untrusted evidence.
    pub fn from_json(v: &Value) -> Result<TpmEvidence, String> {
        let b64 = |v: &Value, name: &str| -> Result<Vec<u8>, String> {
            let s =
                v.get(name).and_then(Value::as_str).ok_or_else(|| alloc::format!("evidence: no \"{name}\" string"))?;
            B64.decode(s).map_err(|_| alloc::format!("evidence: \"{name}\" is not base64"))
        };
        let quote = v.get("tpm_quote").filter(|q| q.is_object()).ok_or("evidence: no \"tpm_quote\" object")?;
        let list = quote.get("pcrs").and_then(Value::as_array).ok_or("evidence: no \"pcrs\" list")?;
        if list.len() != PCR_COUNT {
            return Err(alloc::format!("evidence: {} PCR values ({PCR_COUNT} expected)", list.len()));
        }
        let mut pcrs = Vec::with_capacity(PCR_COUNT);
        for (i, p) in list.iter().enumerate() {
            let bytes = p
                .as_str()
                .and_then(|s| hex::decode(s).ok())
                .ok_or_else(|| alloc::format!("evidence: PCR {i} is not hex"))?;
            pcrs.push(bytes.try_into().map_err(|_| alloc::format!("evidence: PCR {i} is not 32 bytes"))?);
        }
        let credential = match v.get("veil_credential") {
            None | Some(Value::Null) => None,
            Some(_) => Some(b64(v, "veil_credential")?),
        };
        Ok(TpmEvidence {
            ak_spki: b64(v, "ak_public")?,
            signature: b64(quote, "signature")?,
            message: b64(quote, "message")?,
            pcrs,
            credential,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime data of a request the real Trustee KBS (78962cd4) accepted, and the report
    /// data it computed for it (../shared/testdata/kbs/trustee-tpm-accepted, as literals so a
    /// plain clone tests the binding; the corpus test replays the whole request).
    const TRUSTEE_NONCE: &str = "vWznT7tobYERbN6PKcNAjcxzUu7FMWcjzatmim5gsSo=";
    const TRUSTEE_X: &str = "RPgOYaWsjwYATsx1ihY_2UfnzuM5FVxuwJTBXJAafCU";
    const TRUSTEE_Y: &str = "JkF3XBkcV5aQPqvnlEh6MmhKq5g4ThLaPIcKBJZcJhs";
    const TRUSTEE_DIGEST: &str =
        "4eaa8da5080faaf8a766cccf024f94bdf814b8932b6f80876512f4262bcfc942bb625f30276340a4534175990f7e6869";

    fn trustee_runtime() -> Value {
        runtime_data(
            TRUSTEE_NONCE,
            &json!({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": TRUSTEE_X, "y": TRUSTEE_Y}),
        )
    }

    #[test]
    fn binding_matches_what_trustee_computed() {
        let runtime = trustee_runtime();
        assert_eq!(hex::encode(runtime_digest(&runtime, "")), TRUSTEE_DIGEST);
        assert_eq!(hex::encode(report_data(Tee::Tpm, &runtime, "")), TRUSTEE_DIGEST[..64]);
        for tee in [Tee::Snp, Tee::Tdx] {
            let r = report_data(tee, &runtime, "");
            assert_eq!(r.len(), 64);
            assert_eq!(hex::encode(&r[..48]), TRUSTEE_DIGEST);
            assert_eq!(&r[48..], &[0u8; 16]);
        }
        // Without additional-evidence (the old binding) the digest differs: the test can fail.
        let bytes = crate::json::to_vec(&runtime);
        assert_ne!(hex::encode(Sha384::digest(&bytes)), TRUSTEE_DIGEST);
    }

    #[test]
    fn binding_is_canonical_in_key_order() {
        // Trustee attestation-service's own vector (parse_data_json_binding, SHA-384), here
        // with the additional-evidence member Trustee's KBS adds.
        let a = runtime_digest(&json!({"b": 1, "a": "test", "c": {"d": "e"}}), "x");
        let reordered: Value = crate::json::from_str(r#"{"c":{"d":"e"},"a":"test","b":1}"#).unwrap();
        assert_eq!(runtime_digest(&reordered, "x"), a);
        let text = br#"{"a":"test","additional-evidence":"x","b":1,"c":{"d":"e"}}"#;
        assert_eq!(a, <[u8; 48]>::from(Sha384::digest(text)));
    }

    #[test]
    fn spki_matches_the_rsa_crate() {
        use rsa::pkcs8::EncodePublicKey;
        let mut modulus: Vec<u8> = (0..256).map(|i| (i as u8).wrapping_mul(151).wrapping_add(3) | 0x80).collect();
        modulus[255] |= 1; // an RSA modulus is odd
        let key = rsa::PublicKey::new(rsa::BoxedUint::from_be_slice_vartime(&modulus), rsa::BoxedUint::from(65537u64))
            .unwrap();
        assert_eq!(rsa_spki(&modulus, 65537), key.to_public_key_der().unwrap().as_bytes());
    }

    #[test]
    fn evidence_round_trips_and_refuses_malformed_input() {
        let e = TpmEvidence {
            ak_spki: alloc::vec![1, 2],
            signature: alloc::vec![3],
            message: alloc::vec![4],
            pcrs: alloc::vec![[7; 32]; 24],
            credential: Some(alloc::vec![9; 32]),
        };
        assert_eq!(TpmEvidence::from_json(&e.to_json()).unwrap(), e);
        let mut short = e.to_json();
        short["tpm_quote"]["pcrs"].as_array_mut().unwrap().pop();
        assert!(TpmEvidence::from_json(&short).unwrap_err().contains("23 PCR values"));
        let mut bad = e.to_json();
        bad["tpm_quote"]["pcrs"][3] = json!("zz");
        assert!(TpmEvidence::from_json(&bad).unwrap_err().contains("PCR 3"));
        assert!(TpmEvidence::from_json(&json!({"ak_public": "AA=="})).unwrap_err().contains("tpm_quote"));
    }
}
