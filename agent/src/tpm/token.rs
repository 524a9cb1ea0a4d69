//! The `veil-tpm2` LUKS2 token: the master secret sealed to PCR values, kept in the
//! `veil-boot` header (whose JSON is readable without a key). Parsing is of untrusted input;
//! a token that does not parse is reported and skipped, never trusted.
//!
//! {"type": "veil-tpm2", "keyslots": [], "pcr_bank": "sha256", "pcrs": [0, 4, 8, 9],
//!  "policy": "<hex SHA-256 policy digest>", "blob": "<base64 TPM2B_PRIVATE || TPM2B_PUBLIC>"}
//!
//! The sealed bytes are the master secret in a compact form (fits a sealed object's 128
//! bytes): key length (1 byte) || key || salt.

use alloc::string::String;
use alloc::vec::Vec;

use zeroize::Zeroizing;

use super::command::SealedBlob;
use crate::keys::MasterSecret;

/// The token type.
pub const TOKEN_TYPE: &str = "veil-tpm2";

/// A parsed `veil-tpm2` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealToken {
    /// LUKS2 token number.
    pub number: u32,
    /// PCRs of the SHA-256 bank the policy covers.
    pub pcrs: Vec<u32>,
    /// The policy digest the object was sealed with.
    pub policy: [u8; 32],
    /// The sealed object (for an imported one: the duplicate and its public area).
    pub blob: SealedBlob,
    /// For an object sealed offline by `veil seal`: the TPM2_Import seed (TPM2B_ENCRYPTED_SECRET).
    pub import_seed: Option<Vec<u8>>,
}

/// The token JSON (LUKS2 adds `keyslots`); `import_seed` for a blob that must be imported.
pub fn token_json(
    pcrs: &[u32],
    policy: &[u8; 32],
    blob: &SealedBlob,
    import_seed: Option<&[u8]>,
) -> crate::json::Value {
    let mut t = crate::json!({
        "type": TOKEN_TYPE,
        "pcr_bank": "sha256",
        "pcrs": pcrs,
        "policy": hex::encode(policy),
        "blob": crate::b64::STANDARD.encode(blob.concatenated()),
    });
    if let Some(seed) = import_seed {
        t["import_seed"] = crate::json::Value::String(crate::b64::STANDARD.encode(seed));
    }
    t
}

/// Every `veil-tpm2` token in a LUKS2 header, each parsed or with the reason it was refused.
pub fn find(luks2_json: &crate::json::Value) -> Vec<Result<SealToken, String>> {
    crate::luks2::tokens_of_type(luks2_json, TOKEN_TYPE)
        .map(|(n, t)| parse(n, t).map_err(|e| alloc::format!("token {n}: {e}")))
        .collect()
}

fn parse(number: &str, t: &crate::json::Value) -> Result<SealToken, String> {
    let number = number.parse().map_err(|_| String::from("token number is not a number"))?;
    if t.get("pcr_bank").and_then(|v| v.as_str()) != Some("sha256") {
        return Err(String::from("pcr_bank must be \"sha256\""));
    }
    let pcrs: Vec<u32> = t
        .get("pcrs")
        .and_then(|v| v.as_array())
        .ok_or("no pcrs list")?
        .iter()
        .map(|p| p.as_u64().filter(|p| *p < 24).map(|p| p as u32).ok_or("a PCR index is not a number below 24"))
        .collect::<Result<_, _>>()?;
    if pcrs.is_empty() {
        return Err(String::from("empty pcrs list"));
    }
    let policy =
        hex::decode(t.get("policy").and_then(|v| v.as_str()).ok_or("no policy")?).map_err(|_| "policy is not hex")?;
    let policy: [u8; 32] = policy.try_into().map_err(|_| "policy is not 32 bytes")?;
    let blob = crate::b64::STANDARD
        .decode(t.get("blob").and_then(|v| v.as_str()).ok_or("no blob")?)
        .map_err(|_| "blob is not base64")?;
    let blob = SealedBlob::from_concatenated(&blob).map_err(|e| alloc::format!("{e}"))?;
    let import_seed = match t.get("import_seed") {
        None => None,
        Some(v) => Some(
            crate::b64::STANDARD
                .decode(v.as_str().ok_or("import_seed is not a string")?)
                .map_err(|_| "import_seed is not base64")?,
        ),
    };
    Ok(SealToken { number, pcrs, policy, blob, import_seed })
}

/// The bytes sealed for `secret`.
pub fn seal_payload(secret: &MasterSecret) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(1 + secret.key().len() + secret.salt().len()));
    v.push(secret.key().len() as u8);
    v.extend_from_slice(secret.key());
    v.extend_from_slice(secret.salt());
    v
}

/// The master secret back from unsealed bytes.
pub fn open_payload(bytes: &[u8]) -> Result<MasterSecret, String> {
    let (&n, rest) = bytes.split_first().ok_or("empty sealed payload")?;
    if rest.len() < usize::from(n) {
        return Err(String::from("sealed payload shorter than its key length"));
    }
    let (key, salt) = rest.split_at(usize::from(n));
    MasterSecret::new(key, salt).map_err(|e| alloc::format!("sealed payload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_payload_round_trip() {
        let blob = SealedBlob { private: alloc::vec![0, 2, 1, 2], public: alloc::vec![0, 1, 7] };
        let mut header = crate::json!({"tokens": {"3": token_json(&[0, 4, 8, 9], &[9; 32], &blob, None)}});
        header["tokens"]["3"]["keyslots"] = crate::json!([]);
        let found = find(&header);
        assert_eq!(
            found,
            alloc::vec![Ok(SealToken {
                number: 3,
                pcrs: alloc::vec![0, 4, 8, 9],
                policy: [9; 32],
                blob: blob.clone(),
                import_seed: None
            })]
        );
        for (field, value) in [
            ("pcrs", crate::json!([24])),
            ("pcrs", crate::json!([])),
            ("policy", crate::json!("00")),
            ("blob", crate::json!("AAEC")),
            ("pcr_bank", crate::json!("sha1")),
            ("import_seed", crate::json!("!")),
        ] {
            let mut bad = header.clone();
            bad["tokens"]["3"][field] = value;
            assert!(find(&bad)[0].is_err(), "{field}");
        }
        let imported = crate::json!({"tokens": {"0": token_json(&[7], &[1; 32], &blob, Some(&[0, 1, 5]))}});
        assert_eq!(find(&imported)[0].as_ref().unwrap().import_seed.as_deref(), Some(&[0u8, 1, 5][..]));
        let secret = MasterSecret::new(&[1; 32], &[2; 32]).unwrap();
        let payload = seal_payload(&secret);
        assert_eq!(payload.len(), 65);
        let back = open_payload(&payload).unwrap();
        assert_eq!((back.key(), back.salt()), (secret.key(), secret.salt()));
        assert!(open_payload(&[40, 1, 2]).is_err());
        assert!(open_payload(&[]).is_err());
    }
}
