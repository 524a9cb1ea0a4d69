//! The `veil-snp` LUKS2 token: the master secret sealed with a key the AMD-SP derives for this
//! launch (MSG_KEY_REQ), kept in the `veil-boot` header. Parsing is of untrusted input.
//!
//! {"type": "veil-snp", "keyslots": [], "version": 3, "root_key": "vcek", "vmpl": 0,
//!  "guest_field_select": "0x29", "tcb_version": "0xdb18000000000003",
//!  "nonce": "<base64 12 bytes>", "ciphertext": "<base64>"}
//!
//! AES-256-GCM; the associated data is the token's metadata (version, root key, VMPL, field
//! selection, TCB), so a header edited to ask the AMD-SP for another key fails to open rather
//! than opening under a weaker binding, and the token's binding (crate::tpm::token::binding: the
//! boot volume's UUID and its bundle manifest's digest), so a token copied to another volume or
//! left beside another bundle does not open: the derived key does not cover HOST_DATA, so
//! without this a token sealed for one bundle would open beside any other. The plaintext is
//! the master secret in the `veil-tpm2` token's compact form. Version-1 tokens (no binding)
//! are refused.
//!
//! Which key: VCEK-rooted (the chip's, so the token opens on this machine only), VMPL 0 (the
//! firmware's own; Linux runs at the same VMPL but has no VMPCK0 to ask with), mixing in the
//! launch MEASUREMENT (another ROM, vCPU count or kernel-hashes table gets another key and
//! goes back to the broker), the guest POLICY (a debug-enabled launch gets another key) and a
//! TCB_VERSION (issue 31): the token records the TCB it was sealed at, and the AMD-SP refuses
//! to derive a key for a TCB above its committed TCB, so a host that rolls the AMD-SP's
//! firmware back below that TCB cannot have the key derived, and the secret goes back to the
//! broker, which checks the TCB (`--snp-min-tcb`). The TCB sealed at is the committed TCB of
//! the attestation report (COMMITTED_TCB), not CURRENT_TCB: the ABI bounds TCB_VERSION by the
//! committed TCB (a current TCB above it, after a firmware update not yet committed, would be
//! refused), the committed TCB is the one the AMD-SP will not load firmware below (an
//! uncommitted update can still be reverted by the host, legitimately), and REPORTED_TCB is
//! the host's to set. After an update, a token sealed at an older TCB still opens (its TCB is
//! below the committed one) and is sealed again at the committed TCB ([`SnpToken::stale`]).
//! Not mixed in: the family and image IDs and the guest SVN (veilboot launches carry no ID
//! block).
//!
//! Version-2 tokens (sealed before the TCB was mixed in: fields 0x9, no `tcb_version`) open
//! with the key they were sealed with, once: the firmware then seals the secret again in a
//! version-3 token, which replaces them.

use alloc::string::String;
use alloc::vec::Vec;

use crate::b64::STANDARD as B64;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

use super::requests::{FIELD_GUEST_POLICY, FIELD_MEASUREMENT, FIELD_TCB_VERSION};
use crate::keys::MasterSecret;
use crate::tpm::token::{open_payload, seal_payload};

/// The token type.
pub const TOKEN_TYPE: &str = "veil-snp";
/// The guest fields the sealing key mixes in.
pub const KEY_FIELDS: u64 = FIELD_MEASUREMENT | FIELD_GUEST_POLICY | FIELD_TCB_VERSION;
/// The fields of version-2 tokens (no TCB), which open once and are sealed again.
pub const LEGACY_FIELDS: u64 = FIELD_MEASUREMENT | FIELD_GUEST_POLICY;
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
    /// The TCB_VERSION the key was derived at; None in a version-2 token.
    pub tcb: Option<u64>,
    nonce: [u8; 12],
    ciphertext: Vec<u8>,
}

/// Where an ATTESTATION_REPORT carries COMMITTED_TCB.
const REPORT_COMMITTED_TCB: usize = 0x1E0;

/// The COMMITTED_TCB of an attestation report the AMD-SP gave this guest (through its own
/// encrypted channel, so not the host's to change), or None if `report` is too short.
pub fn committed_tcb(report: &[u8]) -> Option<u64> {
    let bytes = report.get(REPORT_COMMITTED_TCB..REPORT_COMMITTED_TCB + 8)?;
    Some(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
}

/// Is every component of `tcb` at most the same component of `bound`? (Each byte of a
/// TCB_VERSION is one component's SPL, or reserved and zero, in every product's layout.)
pub fn tcb_at_most(tcb: u64, bound: u64) -> bool {
    tcb.to_le_bytes().iter().zip(bound.to_le_bytes()).all(|(t, b)| *t <= b)
}

/// `tcb` as the token writes it: "0x" and 16 lower-case hexadecimal digits.
fn hex_tcb(tcb: u64) -> String {
    String::from("0x") + &hex::encode(tcb.to_be_bytes())
}

fn aad(fields: u64, vmpl: u32, tcb: Option<u64>, binding: &[u8; 32]) -> Vec<u8> {
    // Version 2's bytes stay as they were (its tokens still open); version 3 adds the TCB.
    let (version, tcb) = match tcb {
        None => ("2", String::new()),
        Some(t) => ("3", String::from(" tcb=") + &hex_tcb(t)),
    };
    alloc::format!("veil-snp v{version} root=vcek vmpl={vmpl} fields={fields:#x}{tcb} binding={}", hex::encode(binding))
        .into_bytes()
}

fn seal_with(
    key: &[u8; 32],
    nonce: [u8; 12],
    secret: &MasterSecret,
    binding: &[u8; 32],
    fields: u64,
    tcb: Option<u64>,
) -> String {
    let mut body = seal_payload(secret);
    let cipher = Aes256Gcm::new_from_slice(key).expect("32 bytes");
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), &aad(fields, KEY_VMPL, tcb, binding), (&mut body[..]).into())
        .expect("within GCM's limits");
    let mut ct = body.to_vec();
    ct.extend_from_slice(&tag);
    B64.encode(ct)
}

/// The token for `secret` under `key` (derived with [`KEY_FIELDS`] at [`KEY_VMPL`] and the
/// TCB_VERSION `tcb`, the committed TCB), bound to `binding` (crate::tpm::token::binding).
pub fn token_json(
    key: &[u8; 32],
    nonce: [u8; 12],
    secret: &MasterSecret,
    binding: &[u8; 32],
    tcb: u64,
) -> crate::json::Value {
    crate::json!({
        "type": TOKEN_TYPE,
        "version": 3,
        "root_key": "vcek",
        "vmpl": KEY_VMPL,
        "guest_field_select": alloc::format!("{KEY_FIELDS:#x}"),
        "tcb_version": hex_tcb(tcb),
        "nonce": B64.encode(nonce),
        "ciphertext": seal_with(key, nonce, secret, binding, KEY_FIELDS, Some(tcb)),
    })
}

/// A version-2 token (no TCB), as firmware before issue 31 wrote them: for the migration tests.
#[cfg(test)]
pub fn legacy_token_json(
    key: &[u8; 32],
    nonce: [u8; 12],
    secret: &MasterSecret,
    binding: &[u8; 32],
) -> crate::json::Value {
    crate::json!({
        "type": TOKEN_TYPE,
        "version": 2,
        "root_key": "vcek",
        "vmpl": KEY_VMPL,
        "guest_field_select": alloc::format!("{LEGACY_FIELDS:#x}"),
        "nonce": B64.encode(nonce),
        "ciphertext": seal_with(key, nonce, secret, binding, LEGACY_FIELDS, None),
    })
}

/// Every `veil-snp` token in a LUKS2 header's JSON, parsed (or why not).
pub fn find(luks2_json: &crate::json::Value) -> Vec<Result<SnpToken, String>> {
    crate::luks2::tokens_of_type(luks2_json, TOKEN_TYPE)
        .map(|(n, t)| parse(n, t).map_err(|e| alloc::format!("token {n}: {e}")))
        .collect()
}

fn hex_u64(t: &crate::json::Value, key: &str) -> Option<u64> {
    let s = t.get(key)?.as_str()?.strip_prefix("0x")?;
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn parse(number: &str, t: &crate::json::Value) -> Result<SnpToken, String> {
    let number = number.parse().map_err(|_| String::from("token number is not a number"))?;
    let version = t.get("version").and_then(|v| v.as_u64());
    if version == Some(1) {
        return Err(String::from("a version-1 veil-snp token binds no boot volume: not used"));
    }
    if !matches!(version, Some(2 | 3)) || t.get("root_key").and_then(|v| v.as_str()) != Some("vcek") {
        return Err(String::from("not a version-2 or -3 VCEK-rooted veil-snp token"));
    }
    let vmpl = t.get("vmpl").and_then(|v| v.as_u64()).filter(|v| *v <= 3).ok_or("vmpl is not 0-3")? as u32;
    let fields = hex_u64(t, "guest_field_select").ok_or("guest_field_select is not a hexadecimal number")?;
    // Version 2 selects LEGACY_FIELDS and has no TCB; version 3 selects KEY_FIELDS with one.
    let (want, tcb) = match version {
        Some(2) => (LEGACY_FIELDS, None),
        _ => {
            (KEY_FIELDS, Some(hex_u64(t, "tcb_version").ok_or("tcb_version is not a hexadecimal 64-bit TCB_VERSION")?))
        }
    };
    if fields != want {
        return Err(String::from("guest_field_select is not the one of the token's version (0x9 for 2, 0x29 for 3)"));
    }
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
    Ok(SnpToken { number, fields, vmpl, tcb, nonce, ciphertext })
}

impl SnpToken {
    /// The TCB_VERSION to ask the AMD-SP for this token's key with (0 and no TCB field for a
    /// version-2 token), or why not: a token sealed at a TCB above the platform's `committed`
    /// TCB (a rolled-back AMD-SP, or a header from a machine with newer firmware) is refused
    /// here with the two TCBs named (the AMD-SP would refuse the request too).
    pub fn key_tcb(&self, committed: u64) -> Result<u64, String> {
        match self.tcb {
            None => Ok(0),
            Some(t) if tcb_at_most(t, committed) => Ok(t),
            Some(t) => Err(alloc::format!(
                "sealed at TCB {t:#018x}, above the AMD-SP's committed TCB {committed:#018x}: the AMD-SP's firmware was rolled back"
            )),
        }
    }

    /// Must a token that opened be sealed again at the `committed` TCB? A version-2 token (no
    /// TCB) must, and so must one sealed at an older TCB than the committed one (a firmware
    /// update since).
    pub fn stale(&self, committed: u64) -> bool {
        self.tcb != Some(committed)
    }

    /// Open the token with the key the AMD-SP derived for its field selection, VMPL and TCB
    /// ([`SnpToken::key_tcb`]), for the boot volume and bundle `binding` names.
    pub fn open(&self, key: &[u8; 32], binding: &[u8; 32]) -> Result<MasterSecret, String> {
        let (body, tag) = self.ciphertext.split_at(self.ciphertext.len() - 16);
        let mut body = Zeroizing::new(body.to_vec());
        let cipher = Aes256Gcm::new_from_slice(key).expect("32 bytes");
        let tag = Tag::try_from(tag).expect("16 bytes");
        cipher
            .decrypt_inout_detached(
                &Nonce::from(self.nonce),
                &aad(self.fields, self.vmpl, self.tcb, binding),
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

    const TCB: u64 = 0xDB18_0000_0000_0003;

    #[test]
    fn seal_open_and_refusals() {
        let secret = MasterSecret::new(&[7u8; 32], &[9u8; 32]).unwrap();
        let key = [0x5A; 32];
        let b = crate::tpm::token::binding("0b5c1a3e-0000-4000-8000-000000000001", &[3; 48]);
        let mut header = crate::json!({"tokens": {"2": token_json(&key, [1; 12], &secret, &b, TCB)}});
        header["tokens"]["2"]["keyslots"] = crate::json!([]);
        let found = find(&header);
        let t = found[0].as_ref().unwrap();
        assert_eq!((t.number, t.fields, t.vmpl, t.tcb), (2, 0x29, 0, Some(TCB)));
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
        // The metadata is authenticated: another field selection is refused, and a TCB edited
        // in the clear header (to ask the AMD-SP for another TCB's key) does not open.
        let mut weaker = header.clone();
        weaker["tokens"]["2"]["guest_field_select"] = crate::json!("0x9");
        assert!(
            find(&weaker)[0].as_ref().unwrap_err().contains("guest_field_select is not the one of the token's version")
        );
        let mut lowered = header.clone();
        lowered["tokens"]["2"]["tcb_version"] = crate::json!("0xdb17000000000003");
        assert!(find(&lowered)[0].as_ref().unwrap().open(&key, &b).is_err());
        let mut no_tcb = header.clone();
        no_tcb["tokens"]["2"].as_object_mut().unwrap().remove("tcb_version");
        assert!(find(&no_tcb)[0].as_ref().unwrap_err().contains("tcb_version is not"));
        // Turned into a version-2 token (no TCB, so no TCB asked for): it does not open.
        let mut as_v2 = no_tcb.clone();
        as_v2["tokens"]["2"]["version"] = crate::json!(2);
        as_v2["tokens"]["2"]["guest_field_select"] = crate::json!("0x9");
        assert!(find(&as_v2)[0].as_ref().unwrap().open(&key, &b).is_err());
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

    #[test]
    fn the_tcb_is_compared_per_component() {
        // Written as "0x" and 16 hexadecimal digits, leading zeros kept.
        assert_eq!(hex_tcb(0x0018_0000_0000_0003), "0x0018000000000003");
        assert_eq!(hex_u64(&crate::json!({"t": hex_tcb(u64::MAX)}), "t"), Some(u64::MAX));
        assert!(tcb_at_most(TCB, TCB));
        assert!(tcb_at_most(0xDB18_0000_0000_0003, 0xDB19_0000_0000_0003)); // SNP 0x18 <= 0x19
        assert!(!tcb_at_most(0xDB19_0000_0000_0003, 0xDB18_0000_0000_0003));
        // One component above is enough to be above, whatever the others (a numeric
        // comparison of the u64 would let a higher microcode hide a lower bootloader).
        assert!(!tcb_at_most(0xDA18_0000_0000_0004, 0xDB18_0000_0000_0003));
        assert!(!tcb_at_most(0xDC18_0000_0000_0002, 0xDB18_0000_0000_0003));
    }

    /// Only the shape `veil` writes is read: a version-2 or -3 token rooted in the VCEK, its
    /// numbers in at most 16 hexadecimal digits, a ciphertext of possible length (a tag and
    /// at least 2 bytes, at most 1 KiB); anything else is refused with its reason.
    #[test]
    fn the_token_shape_is_exact() {
        let secret = MasterSecret::new(&[7u8; 32], &[9u8; 32]).unwrap();
        let b = crate::tpm::token::binding("0b5c1a3e-0000-4000-8000-000000000001", &[3; 48]);
        let good = token_json(&[0x5A; 32], [1; 12], &secret, &b, TCB);
        let parsed = |t: &crate::json::Value| parse("2", t);
        assert_eq!(parsed(&good).unwrap().tcb, Some(TCB));
        let with = |key: &str, value: crate::json::Value| {
            let mut t = good.clone();
            t[key] = value;
            t
        };
        let ct = |n: usize| crate::json!(B64.encode(alloc::vec![0u8; n]));
        for (key, value, why) in [
            ("root_key", crate::json!("vlek"), "not a version-2 or -3 VCEK-rooted veil-snp token"),
            ("version", crate::json!(4), "not a version-2 or -3 VCEK-rooted veil-snp token"),
            // 17 digits, though their value fits: not the form written.
            ("tcb_version", crate::json!("0x0db18000000000003"), "tcb_version is not a hexadecimal 64-bit TCB_VERSION"),
            ("tcb_version", crate::json!("0x"), "tcb_version is not a hexadecimal 64-bit TCB_VERSION"),
            (
                "guest_field_select",
                crate::json!("0x00000000000000029"),
                "guest_field_select is not a hexadecimal number",
            ),
            ("ciphertext", ct(17), "a ciphertext of impossible length"),
            ("ciphertext", ct(1025), "a ciphertext of impossible length"),
        ] {
            assert_eq!(parsed(&with(key, value.clone())).unwrap_err(), why, "{key} = {value:?}");
        }
        assert_eq!(parsed(&with("tcb_version", crate::json!("0xdb18000000000003"))).unwrap().tcb, Some(TCB));
        for n in [18, 1024] {
            assert!(parsed(&with("ciphertext", ct(n))).is_ok(), "{n} bytes");
        }
    }
}
