//! systemd's `systemd-tpm2` LUKS2 token (systemd-cryptenroll v252): a sealed object under
//! systemd's storage primary key (ECC P-256 template, see command::storage_primary_template),
//! bound to a PolicyPCR policy; the unsealed bytes, base64-encoded, are the passphrase of the
//! token's keyslot. Parsed here from untrusted header JSON; tokens veilboot cannot honour
//! (a PIN, a signed PCR policy, an RSA primary) are refused with the reason.

use alloc::string::String;
use alloc::vec::Vec;

use zeroize::Zeroizing;

use super::Bank;
use super::command::SealedBlob;

/// The token type.
pub const TOKEN_TYPE: &str = "systemd-tpm2";

/// A usable `systemd-tpm2` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdToken {
    /// LUKS2 token number.
    pub number: u32,
    /// Keyslots the passphrase opens.
    pub keyslots: Vec<u32>,
    /// The sealed object.
    pub blob: SealedBlob,
    /// PCRs of the policy.
    pub pcrs: Vec<u32>,
    /// Their bank.
    pub bank: Bank,
    /// The policy digest systemd recorded.
    pub policy_hash: Option<[u8; 32]>,
}

/// Every `systemd-tpm2` token of a LUKS2 header, parsed or with the reason it is unusable.
pub fn find(luks2_json: &crate::json::Value) -> Vec<Result<SystemdToken, String>> {
    crate::luks2::tokens_of_type(luks2_json, TOKEN_TYPE)
        .map(|(n, t)| parse(n, t).map_err(|e| alloc::format!("systemd-tpm2 token {n}: {e}")))
        .collect()
}

fn parse(number: &str, t: &crate::json::Value) -> Result<SystemdToken, String> {
    let number = number.parse().map_err(|_| "token number is not a number")?;
    if t.get("tpm2-pin").and_then(|v| v.as_bool()) == Some(true) {
        return Err(String::from("needs a PIN, which the firmware cannot ask for"));
    }
    if t.get("tpm2-pubkey").and_then(|v| v.as_str()).is_some_and(|s| !s.is_empty()) {
        return Err(String::from("uses a signed PCR policy (tpm2-pubkey), which veilboot does not support"));
    }
    match t.get("tpm2-primary-alg").and_then(|v| v.as_str()) {
        None | Some("ecc") => {}
        Some(other) => return Err(alloc::format!("primary key algorithm {other}: only ecc is supported")),
    }
    let bank = match t.get("tpm2-pcr-bank").and_then(|v| v.as_str()) {
        None | Some("sha256") => Bank::Sha256,
        Some("sha1") => Bank::Sha1,
        Some(other) => return Err(alloc::format!("PCR bank {other}")),
    };
    let list = |key: &str| -> Result<Vec<u32>, String> {
        t.get(key)
            .and_then(|v| v.as_array())
            .ok_or_else(|| alloc::format!("no {key} list"))?
            .iter()
            .map(|p| match (p.as_u64(), p.as_str()) {
                (Some(n), _) => Ok(n),
                (None, Some(s)) => s.parse::<u64>().map_err(|_| alloc::format!("{key}: {s:?} is not a number")),
                _ => Err(alloc::format!("{key}: not a number")),
            })
            .map(|n| n.and_then(|n| u32::try_from(n).map_err(|_| alloc::format!("{key}: {n} out of range"))))
            .collect()
    };
    let pcrs = list("tpm2-pcrs")?;
    if pcrs.iter().any(|p| *p > 23) {
        return Err(String::from("a PCR index above 23"));
    }
    let keyslots = list("keyslots")?;
    if keyslots.is_empty() {
        return Err(String::from("bound to no keyslot"));
    }
    let blob = t.get("tpm2-blob").and_then(|v| v.as_str()).ok_or("no tpm2-blob")?;
    let blob = crate::b64::STANDARD.decode(blob).map_err(|_| "tpm2-blob is not base64")?;
    let blob = SealedBlob::from_concatenated(&blob).map_err(|e| alloc::format!("{e}"))?;
    let policy_hash = match t.get("tpm2-policy-hash").and_then(|v| v.as_str()) {
        Some(h) => {
            Some(hex::decode(h).ok().and_then(|v| v.try_into().ok()).ok_or("tpm2-policy-hash is not 32 bytes of hex")?)
        }
        None => None,
    };
    Ok(SystemdToken { number, keyslots, blob, pcrs, bank, policy_hash })
}

/// The LUKS2 passphrase for unsealed bytes: their base64 (systemd-cryptsetup's convention).
pub fn passphrase(unsealed: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(crate::b64::STANDARD.encode(unsealed).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::policy;

    /// Exported with `cryptsetup token export` from a volume systemd-cryptenroll 252 enrolled
    /// (`--tpm2-device=swtpm:... --tpm2-pcrs=7`) against swtpm 0.7.1 whose PCR 7 held one
    /// EV_SEPARATOR extend: SHA256(0^32 || SHA256(00000000)).
    const ENROLLED: &str = r#"{"type":"systemd-tpm2","keyslots":["1"],"tpm2-blob":"AJ4AINhq+d966yv9AT5NUJ5l4adx/KwI/nWnPtjh7xVGr0KcABDrigldr+c092AiRXjyJGBSSNenpsWTzoDCPhNxcTE8+TiaLkvyHsoxTJTq0dkmKDyMVf6k17YlsMrqFjB3KJX6L3oDQ+VZME2SqnPlP8M0m2ByCQKZ1tSDdCA+4i8rtjeocKpI8SHiKd9JmUypStQGUgNynrWhQo1ipQBOAAgACwAAABIAIG5sVXpQWjInd/rger1HW5CC8+TfrkzP965Rx+homAUwABAAIGgwqFUI+xmp1YlZIhfWtUaGlcuntF1Laugz/KlyrP6/","tpm2-pcrs":[7],"tpm2-pcr-bank":"sha256","tpm2-primary-alg":"ecc","tpm2-policy-hash":"6e6c557a505a322777fae07abd475b9082f3e4dfae4ccff7ae51c7e868980530","tpm2-pin":false}"#;

    #[test]
    fn our_policy_digest_equals_systemds() {
        let header = crate::json!({"tokens": {"0": crate::json::from_str(ENROLLED).unwrap()}});
        let t = find(&header).pop().unwrap().unwrap();
        assert_eq!(
            (t.number, t.keyslots.clone(), t.pcrs.clone(), t.bank),
            (0, alloc::vec![1], alloc::vec![7], Bank::Sha256)
        );
        let separator = Bank::Sha256.digest(&[0; 4]);
        let pcr7 = Bank::Sha256.extend(&[0; 32], &separator);
        assert_eq!(Some(policy::policy_pcr(Bank::Sha256, &[7], std::slice::from_ref(&pcr7))), t.policy_hash);
        // The sealed object's public area carries the same authPolicy, attributes 0x12.
        assert!(t.blob.public.windows(32).any(|w| Some(w) == t.policy_hash.as_ref().map(|h| &h[..])));
    }

    #[test]
    fn unusable_tokens_say_why() {
        let base: crate::json::Value = crate::json::from_str(ENROLLED).unwrap();
        for (field, value, why) in [
            ("tpm2-pin", crate::json!(true), "PIN"),
            ("tpm2-pubkey", crate::json!("LS0t"), "signed PCR policy"),
            ("tpm2-primary-alg", crate::json!("rsa"), "only ecc"),
            ("tpm2-pcrs", crate::json!([24]), "above 23"),
            ("keyslots", crate::json!([]), "no keyslot"),
            ("tpm2-blob", crate::json!("!!"), "base64"),
            ("tpm2-policy-hash", crate::json!("00"), "32 bytes"),
        ] {
            let mut t = base.clone();
            t[field] = value;
            let header = crate::json!({"tokens": {"2": t}});
            let err = find(&header).pop().unwrap().unwrap_err();
            assert!(err.contains(why), "{field}: {err}");
        }
        assert_eq!(&passphrase(&[0xFF, 0, 1])[..], b"/wAB");
    }
}
