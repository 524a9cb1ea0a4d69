//! The `veil-snp` LUKS2 token: the master secret sealed with a key the AMD-SP derives for this
//! launch (MSG_KEY_REQ), kept in the `veil-boot` header. Parsing is of untrusted input.
//!
//! {"type": "veil-snp", "keyslots": [], "version": 2, "root_key": "vcek", "vmpl": 0,
//!  "guest_field_select": "0x9", "nonce": "<base64 12 bytes>", "ciphertext": "<base64>"}
//!
//! AES-256-GCM; the associated data is the token's metadata (version, root key, VMPL, field
//! selection), so a header edited to ask the AMD-SP for another key fails to open rather than
//! opening under a weaker binding, and the token's binding (crate::tpm::token::binding: the
//! boot volume's UUID and its bundle manifest's digest), so a token copied to another volume or
//! left beside another bundle does not open: the derived key does not cover HOST_DATA, so
//! without this a token sealed for one bundle would open beside any other. The plaintext is
//! the master secret in the `veil-tpm2` token's compact form. Version-1 tokens (no binding)
//! are refused.
//!
//! Which key: VCEK-rooted (the chip's, so the token opens on this machine only), VMPL 0 (the
//! firmware's own; Linux runs at the same VMPL but has no VMPCK0 to ask with), mixing in the
//! launch MEASUREMENT (another ROM, vCPU count or kernel-hashes table gets another key and
//! goes back to the broker) and the guest POLICY (a debug-enabled launch gets another key).
//! Not mixed in: the TCB version (a firmware update of the AMD-SP would strand every sealed
//! secret; the broker checks TCB on each release instead), the family and image IDs and the
//! guest SVN (veilboot launches carry no ID block).

use alloc::string::String;
use alloc::vec::Vec;

use crate::b64::STANDARD as B64;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

use super::requests::{FIELD_GUEST_POLICY, FIELD_MEASUREMENT};
use crate::keys::MasterSecret;
use crate::tpm::token::{open_payload, seal_payload};

/// The token type.
pub const TOKEN_TYPE: &str = "veil-snp";
/// The guest fields the sealing key mixes in.
pub const KEY_FIELDS: u64 = FIELD_MEASUREMENT | FIELD_GUEST_POLICY;
/// The VMPL the key is derived for.
pub const KEY_VMPL: u32 = 0;

/// A parsed `veil-snp` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpToken {
    /// Its number in the header.
    pub number: u32,
    /// The guest field selection the key was derived with.
    pub fields: u64,
    /// The VMPL it was derived for.
    pub vmpl: u32,
    nonce: [u8; 12],
    ciphertext: Vec<u8>,
}

fn aad(fields: u64, vmpl: u32, binding: &[u8; 32]) -> Vec<u8> {
    alloc::format!("veil-snp v2 root=vcek vmpl={vmpl} fields={fields:#x} binding={}", hex::encode(binding)).into_bytes()
}

/// The token for `secret` under `key` (derived with [`KEY_FIELDS`] at [`KEY_VMPL`]), bound to
/// `binding` (crate::tpm::token::binding).
pub fn token_json(key: &[u8; 32], nonce: [u8; 12], secret: &MasterSecret, binding: &[u8; 32]) -> crate::json::Value {
    let mut body = seal_payload(secret);
    let cipher = Aes256Gcm::new_from_slice(key).expect("32 bytes");
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), &aad(KEY_FIELDS, KEY_VMPL, binding), (&mut body[..]).into())
        .expect("within GCM's limits");
    let mut ct = body.to_vec();
    ct.extend_from_slice(&tag);
    crate::json!({
        "type": TOKEN_TYPE,
        "version": 2,
        "root_key": "vcek",
        "vmpl": KEY_VMPL,
        "guest_field_select": alloc::format!("{KEY_FIELDS:#x}"),
        "nonce": B64.encode(nonce),
        "ciphertext": B64.encode(ct),
    })
}

/// Every `veil-snp` token in a LUKS2 header's JSON, parsed (or why not).
pub fn find(luks2_json: &crate::json::Value) -> Vec<Result<SnpToken, String>> {
    crate::luks2::tokens_of_type(luks2_json, TOKEN_TYPE)
        .map(|(n, t)| parse(n, t).map_err(|e| alloc::format!("token {n}: {e}")))
        .collect()
}

fn parse(number: &str, t: &crate::json::Value) -> Result<SnpToken, String> {
    let number = number.parse().map_err(|_| String::from("token number is not a number"))?;
    if t.get("version").and_then(|v| v.as_u64()) == Some(1) {
        return Err(String::from("a version-1 veil-snp token binds no boot volume: not used"));
    }
    if t.get("version").and_then(|v| v.as_u64()) != Some(2)
        || t.get("root_key").and_then(|v| v.as_str()) != Some("vcek")
    {
        return Err(String::from("not a version-2 VCEK-rooted veil-snp token"));
    }
    let vmpl = t.get("vmpl").and_then(|v| v.as_u64()).filter(|v| *v <= 3).ok_or("vmpl is not 0-3")? as u32;
    let fields = t
        .get("guest_field_select")
        .and_then(|v| v.as_str())
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .filter(|f| f >> 6 == 0)
        .ok_or("guest_field_select is not a hexadecimal selection of bits 0-5")?;
    let nonce = B64
        .decode(t.get("nonce").and_then(|v| v.as_str()).ok_or("no nonce")?)
        .ok()
        .and_then(|n| <[u8; 12]>::try_from(n).ok())
        .ok_or("the nonce is not 12 base64 bytes")?;
    let ciphertext = B64
        .decode(t.get("ciphertext").and_then(|v| v.as_str()).ok_or("no ciphertext")?)
        .map_err(|_| "ciphertext is not base64")?;
    if ciphertext.len() < 16 + 2 || ciphertext.len() > 1024 {
        return Err(String::from("a ciphertext of impossible length"));
    }
    Ok(SnpToken { number, fields, vmpl, nonce, ciphertext })
}

impl SnpToken {
    /// Open the token with the key the AMD-SP derived for its field selection and VMPL, for
    /// the boot volume and bundle `binding` names.
    pub fn open(&self, key: &[u8; 32], binding: &[u8; 32]) -> Result<MasterSecret, String> {
        let (body, tag) = self.ciphertext.split_at(self.ciphertext.len() - 16);
        let mut body = Zeroizing::new(body.to_vec());
        let cipher = Aes256Gcm::new_from_slice(key).expect("32 bytes");
        let tag = Tag::try_from(tag).expect("16 bytes");
        cipher
            .decrypt_inout_detached(
                &Nonce::from(self.nonce),
                &aad(self.fields, self.vmpl, binding),
                (&mut body[..]).into(),
                &tag,
            )
            .map_err(|_| {
                String::from(
                    "does not open with this launch's sealing key for this boot volume (another ROM, launch or policy, another volume or bundle, or an altered token)",
                )
            })?;
        open_payload(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refusals() {
        let secret = MasterSecret::new(&[7u8; 32], &[9u8; 32]).unwrap();
        let key = [0x5A; 32];
        let b = crate::tpm::token::binding("0b5c1a3e-0000-4000-8000-000000000001", &[3; 48]);
        let mut header = crate::json!({"tokens": {"2": token_json(&key, [1; 12], &secret, &b)}});
        header["tokens"]["2"]["keyslots"] = crate::json!([]);
        let found = find(&header);
        let t = found[0].as_ref().unwrap();
        assert_eq!((t.number, t.fields, t.vmpl), (2, 0x9, 0));
        assert_eq!(t.open(&key, &b).unwrap().key(), secret.key());
        assert!(t.open(&[0x5B; 32], &b).is_err());
        // Issue 35, case 2: moved to another volume, or beside another bundle, it does not open.
        let other_volume = crate::tpm::token::binding("0b5c1a3e-0000-4000-8000-000000000002", &[3; 48]);
        let other_bundle = crate::tpm::token::binding("0b5c1a3e-0000-4000-8000-000000000001", &[4; 48]);
        assert!(t.open(&key, &other_volume).is_err());
        assert!(t.open(&key, &other_bundle).is_err());
        // Version 1 (no binding) is refused.
        let mut v1 = header.clone();
        v1["tokens"]["2"]["version"] = crate::json!(1);
        assert!(find(&v1)[0].as_ref().unwrap_err().contains("version-1"));
        // The metadata is authenticated: asking for a weaker key selection does not open it.
        let mut weaker = header.clone();
        weaker["tokens"]["2"]["guest_field_select"] = crate::json!("0x1");
        assert!(find(&weaker)[0].as_ref().unwrap().open(&key, &b).is_err());
        let mut flipped = header.clone();
        let ct = B64.decode(header["tokens"]["2"]["ciphertext"].as_str().unwrap()).unwrap();
        let mut ct2 = ct.clone();
        ct2[3] ^= 1;
        flipped["tokens"]["2"]["ciphertext"] = crate::json!(B64.encode(ct2));
        assert!(find(&flipped)[0].as_ref().unwrap().open(&key, &b).is_err());
        let mut junk = header.clone();
        junk["tokens"]["2"]["nonce"] = crate::json!("AAAA");
        assert!(find(&junk)[0].is_err());
    }
}
