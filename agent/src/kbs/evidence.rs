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
//! The binding to the session: the quote's extraData is the report data, SHA-384 of the
//! runtime data (`{"nonce": .., "tee-pubkey": ..}`) serialized the way Trustee's attestation
//! service does it (serde_json of a JSON value: keys in byte order at every level, compact),
//! zero-padded to 64 bytes as Trustee's TPM verifier expects.
//!
//! Both sides use this module: the firmware builds evidence, the broker parses it (untrusted).

use alloc::string::String;
use alloc::vec::Vec;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha384};

/// Size of the report data in a TPM quote's extraData (Trustee's TPM_REPORT_DATA_SIZE).
pub const REPORT_DATA_SIZE: usize = 64;
/// Number of SHA-256 PCRs quoted.
pub const PCR_COUNT: usize = 24;

/// The runtime data of an attestation: the broker's nonce and the key the secret is
/// wrapped to (a JWK).
pub fn runtime_data(nonce: &str, tee_pubkey: &Value) -> Value {
    json!({"nonce": nonce, "tee-pubkey": tee_pubkey})
}

/// The report data for `runtime_data`: SHA-384 of its canonical serialization, padded
/// with zeros to REPORT_DATA_SIZE.
pub fn report_data(runtime_data: &Value) -> [u8; REPORT_DATA_SIZE] {
    // serde_json's map is ordered by key (no preserve_order), so this is the canonical form
    // Trustee hashes: compact, keys sorted at every level.
    let bytes = serde_json::to_vec(runtime_data).expect("a JSON value serializes");
    let mut out = [0u8; REPORT_DATA_SIZE];
    out[..48].copy_from_slice(&Sha384::digest(&bytes));
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
    const RSA_ALGORITHM: [u8; 15] = [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
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
            let s = v.get(name).and_then(Value::as_str).ok_or_else(|| alloc::format!("evidence: no \"{name}\" string"))?;
            B64.decode(s).map_err(|_| alloc::format!("evidence: \"{name}\" is not base64"))
        };
        let quote = v.get("tpm_quote").filter(|q| q.is_object()).ok_or("evidence: no \"tpm_quote\" object")?;
        let list = quote.get("pcrs").and_then(Value::as_array).ok_or("evidence: no \"pcrs\" list")?;
        if list.len() != PCR_COUNT {
            return Err(alloc::format!("evidence: {} PCR values ({PCR_COUNT} expected)", list.len()));
        }
        let mut pcrs = Vec::with_capacity(PCR_COUNT);
        for (i, p) in list.iter().enumerate() {
            let bytes = p.as_str().and_then(|s| hex::decode(s).ok()).ok_or_else(|| alloc::format!("evidence: PCR {i} is not hex"))?;
            pcrs.push(bytes.try_into().map_err(|_| alloc::format!("evidence: PCR {i} is not 32 bytes"))?);
        }
        let credential = match v.get("veil_credential") {
            None | Some(Value::Null) => None,
            Some(_) => Some(b64(v, "veil_credential")?),
        };
        Ok(TpmEvidence { ak_spki: b64(v, "ak_public")?, signature: b64(quote, "signature")?, message: b64(quote, "message")?, pcrs, credential })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_hashes_the_canonical_json_like_trustee() {
        // Trustee attestation-service's own vector (parse_data_json_binding, SHA-384).
        let v = json!({"b": 1, "a": "test", "c": {"d": "e"}});
        let r = report_data(&v);
        assert_eq!(hex::encode(&r[..48]), "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3");
        assert_eq!(&r[48..], &[0u8; 16]);
        // Parsed from text in another key order: the same digest.
        let reordered: Value = serde_json::from_str(r#"{"c":{"d":"e"},"a":"test","b":1}"#).unwrap();
        assert_eq!(report_data(&reordered), r);
    }

    #[test]
    fn spki_matches_the_rsa_crate() {
        use rsa::pkcs8::EncodePublicKey;
        let mut modulus: Vec<u8> = (0..256).map(|i| (i as u8).wrapping_mul(151).wrapping_add(3) | 0x80).collect();
        modulus[255] |= 1; // an RSA modulus is odd
        let key = rsa::PublicKey::new(rsa::BoxedUint::from_be_slice_vartime(&modulus), rsa::BoxedUint::from(65537u64)).unwrap();
        assert_eq!(rsa_spki(&modulus, 65537), key.to_public_key_der().unwrap().as_bytes());
    }

    #[test]
    fn evidence_round_trips_and_refuses_malformed_input() {
        let e = TpmEvidence { ak_spki: alloc::vec![1, 2], signature: alloc::vec![3], message: alloc::vec![4], pcrs: alloc::vec![[7; 32]; 24], credential: Some(alloc::vec![9; 32]) };
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
