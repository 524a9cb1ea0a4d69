//! The `veil-tpm2` LUKS2 token: the master secret sealed to PCR values, kept in the
//! `veil-boot` header (whose JSON is readable without a key). Parsing is of untrusted input;
//! a token that does not parse is reported and skipped, never trusted.
//!
//! {"type": "veil-tpm2", "keyslots": [], "version": 2, "pcr_bank": "sha256", "pcrs": [0, 4, 8, 9, 15],
//!  "policy": "<hex SHA-256 policy digest>", "blob": "<base64 TPM2B_PRIVATE || TPM2B_PUBLIC>"}
//!
//! The sealed bytes (version 2) are the token's binding (32 bytes: [`binding`], the boot
//! volume's UUID and its bundle manifest's digest) followed by the master secret in a compact
//! form: key length (1 byte) || key || salt; 97 bytes for Constellation's secrets, within a
//! sealed object's 128. The firmware opens version-2 tokens only, sealed to a policy that
//! covers PCR 15 (measure::SEAL_PCRS); version 1 (no `version` field) carried no binding.

use alloc::string::String;
use alloc::vec::Vec;

use zeroize::Zeroizing;

use super::command::SealedBlob;
use crate::keys::MasterSecret;

/// The token type.
pub const TOKEN_TYPE: &str = "veil-tpm2";
/// The token version this code writes (and the firmware opens).
pub const VERSION: u64 = 2;

/// A parsed `veil-tpm2` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealToken {
    /// LUKS2 token number.
    pub number: u32,
    /// Its version (1 when the field is absent: made before the binding).
    pub version: u64,
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
        "version": VERSION,
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
    let version = match t.get("version") {
        None => 1,
        Some(v) => v.as_u64().filter(|v| (1..=VERSION).contains(v)).ok_or("version is not 1 or 2")?,
    };
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
    Ok(SealToken { number, version, pcrs, policy, blob, import_seed })
}

impl SealToken {
    /// Is the token's policy one the OS cannot satisfy after the hand-off (it covers PCR 15,
    /// which the firmware extends with the clusterID)? Tokens made before PCR 15 was part of
    /// the policy are refused: the booted OS could unseal them.
    /// Version-1 tokens are refused too: they bind no boot volume.
    pub fn closes_at_handoff(&self) -> Result<(), String> {
        if self.version < VERSION {
            return Err(alloc::format!(
                "token {} is a version-{} token (no boot volume binding, and a policy the booted OS can satisfy); not used",
                self.number,
                self.version
            ));
        }
        if self.pcrs.contains(&super::measure::CLUSTER_ID_PCR) {
            return Ok(());
        }
        Err(alloc::format!(
            "token {} is sealed to PCRs {:?}, without PCR {}: the booted OS could unseal it too; not used",
            self.number,
            self.pcrs,
            super::measure::CLUSTER_ID_PCR
        ))
    }
}

/// What a sealed token (`veil-tpm2`, `veil-snp`) is bound to besides its root of trust's
/// policy: the boot volume's LUKS2 UUID and the SHA-384 of its bundle manifest (the one the
/// `veil-bundle` token states and the MAC'd one must equal). A token copied to another volume,
/// or left beside another bundle on the same volume, does not open.
pub fn binding(volume_uuid: &str, manifest_sha384: &[u8; 48]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"veil-token-binding v1\0");
    h.update(volume_uuid.to_ascii_lowercase().as_bytes());
    h.update([0u8]);
    h.update(manifest_sha384);
    h.finalize().into()
}

/// The bytes a version-2 token seals: `binding` || the compact secret.
pub fn seal_payload_bound(secret: &MasterSecret, binding: &[u8; 32]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(32 + 1 + secret.key().len() + secret.salt().len()));
    v.extend_from_slice(binding);
    v.extend_from_slice(&seal_payload(secret));
    v
}

/// The master secret from a version-2 token's unsealed bytes, if they were sealed for
/// `binding`.
pub fn open_payload_bound(bytes: &[u8], binding: &[u8; 32]) -> Result<MasterSecret, String> {
    let (bound, rest) = bytes.split_at_checked(32).ok_or("sealed payload shorter than its binding")?;
    if bound != binding {
        return Err(String::from(
            "sealed for another boot volume or bundle (its binding names another volume UUID or manifest)",
        ));
    }
    open_payload(rest)
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
                version: VERSION,
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
            ("version", crate::json!(3)),
        ] {
            let mut bad = header.clone();
            bad["tokens"]["3"][field] = value;
            assert!(find(&bad)[0].is_err(), "{field}");
        }
        // A token without PCR 15 in its policy opens for the booted OS too: not used.
        assert!(found[0].as_ref().unwrap().closes_at_handoff().unwrap_err().contains("without PCR 15"));
        let closed = crate::json!({"tokens": {"1": token_json(&[0, 4, 8, 9, 15], &[9; 32], &blob, None)}});
        assert_eq!(find(&closed)[0].as_ref().unwrap().closes_at_handoff(), Ok(()));
        let mut v1 = closed.clone();
        v1["tokens"]["1"].as_object_mut().unwrap().remove("version");
        assert!(find(&v1)[0].as_ref().unwrap().closes_at_handoff().unwrap_err().contains("version-1"));
        let imported = crate::json!({"tokens": {"0": token_json(&[7], &[1; 32], &blob, Some(&[0, 1, 5]))}});
        assert_eq!(find(&imported)[0].as_ref().unwrap().import_seed.as_deref(), Some(&[0u8, 1, 5][..]));
        let secret = MasterSecret::new(&[1; 32], &[2; 32]).unwrap();
        // Version 2 binds the volume and the manifest.
        let b = binding("0B5C1A3E-0000-4000-8000-000000000001", &[3; 48]);
        assert_eq!(b, binding("0b5c1a3e-0000-4000-8000-000000000001", &[3; 48]));
        assert_ne!(b, binding("0b5c1a3e-0000-4000-8000-000000000002", &[3; 48]));
        assert_ne!(b, binding("0b5c1a3e-0000-4000-8000-000000000001", &[4; 48]));
        let bound = seal_payload_bound(&secret, &b);
        assert!(bound.len() <= 128, "a sealed object holds 128 bytes");
        assert_eq!(open_payload_bound(&bound, &b).unwrap().key(), secret.key());
        assert!(open_payload_bound(&bound, &[0; 32]).unwrap_err().contains("another boot volume"));
        assert!(open_payload_bound(&bound[..20], &b).is_err());
        let payload = seal_payload(&secret);
        assert_eq!(payload.len(), 65);
        let back = open_payload(&payload).unwrap();
        assert_eq!((back.key(), back.salt()), (secret.key(), secret.salt()));
        assert!(open_payload(&[40, 1, 2]).is_err());
        assert!(open_payload(&[]).is_err());
    }
}
