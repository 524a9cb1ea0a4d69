//! The KBS resource response: a flattened JWE (RFC 7516) with `ECDH-ES+A256KW` key agreement
//! (RFC 7518 4.6: P-256 ECDH, Concat KDF with SHA-256, AES-256 key wrap) and `A256GCM`
//! content encryption, in the wire form of Trustee's `kbs_types::Response`
//! (`protected`, `encrypted_key`, `iv`, `ciphertext`, `tag`, optional `aad`; base64url
//! without padding; the ephemeral public key `epk` in the protected header).
//!
//! The firmware decrypts what the (untrusted) relay hands it: every field is checked, the
//! AAD is the protected header exactly as received, and any failure is one precise error.
//! The broker side encrypts with the same code.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::b64::URL_SAFE_NO_PAD as B64;
use aes_gcm::aead::{AeadInOut, KeyInit as _};
use p256::elliptic_curve::sec1::ToSec1Point;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The only key management algorithm accepted.
pub const ALG: &str = "ECDH-ES+A256KW";
/// The only content encryption accepted.
pub const ENC: &str = "A256GCM";

/// Why a JWE was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JweError {
    /// Not the KBS response shape (missing field, not base64url, not JSON).
    Format(String),
    /// An algorithm other than ECDH-ES+A256KW / A256GCM, or a bad ephemeral key.
    Algorithm(String),
    /// The wrapped key or the ciphertext failed its integrity check: wrong recipient key or
    /// tampering on the way.
    Integrity(&'static str),
}

impl fmt::Display for JweError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JweError::Format(w) => write!(f, "KBS response: {w}"),
            JweError::Algorithm(w) => write!(f, "KBS response: {w}"),
            JweError::Integrity(w) => {
                write!(f, "KBS response: {w} failed its integrity check (not for this key, or altered in transit)")
            }
        }
    }
}

fn fmt_err(what: &str) -> JweError {
    JweError::Format(String::from(what))
}

fn b64_field(v: &crate::json::Value, name: &str) -> Result<Vec<u8>, JweError> {
    let s =
        v.get(name).and_then(|x| x.as_str()).ok_or_else(|| JweError::Format(alloc::format!("no \"{name}\" string")))?;
    B64.decode(s).map_err(|_| JweError::Format(alloc::format!("\"{name}\" is not base64url")))
}

/// Concat KDF (NIST SP 800-56A, RFC 7518 4.6.2) for a 256-bit AES key wrap key.
fn concat_kdf(z: &[u8], apu: &[u8], apv: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    for part in [ALG.as_bytes(), apu, apv] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.update(256u32.to_be_bytes());
    Zeroizing::new(h.finalize().into())
}

fn coord(jwk: &crate::json::Value, name: &str) -> Result<[u8; 32], JweError> {
    let s = jwk
        .get(name)
        .and_then(|x| x.as_str())
        .ok_or_else(|| JweError::Algorithm(alloc::format!("epk has no \"{name}\"")))?;
    let v = B64.decode(s).map_err(|_| JweError::Algorithm(alloc::format!("epk \"{name}\" is not base64url")))?;
    v.try_into().map_err(|_| JweError::Algorithm(alloc::format!("epk \"{name}\" is not 32 bytes")))
}

/// A P-256 public key as a JWK (`{"kty":"EC","crv":"P-256","x":..,"y":..}`), e.g. the
/// firmware's ephemeral `tee-pubkey`.
pub fn public_jwk(key: &p256::PublicKey) -> crate::json::Value {
    let point = key.to_sec1_point(false);
    let b = point.as_bytes();
    crate::json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&b[1..33]), "y": B64.encode(&b[33..65])})
}

/// The P-256 key in a JWK.
pub fn key_from_jwk(jwk: &crate::json::Value) -> Result<p256::PublicKey, JweError> {
    if jwk.get("kty").and_then(|v| v.as_str()) != Some("EC") || jwk.get("crv").and_then(|v| v.as_str()) != Some("P-256")
    {
        return Err(JweError::Algorithm(String::from("the key is not an EC P-256 JWK")));
    }
    let (x, y) = (coord(jwk, "x")?, coord(jwk, "y")?);
    let mut sec1 = [0u8; 65];
    sec1[0] = 4;
    sec1[1..33].copy_from_slice(&x);
    sec1[33..].copy_from_slice(&y);
    p256::PublicKey::from_sec1_bytes(&sec1)
        .map_err(|_| JweError::Algorithm(String::from("the key's point is not on P-256")))
}

/// Decrypt a KBS response (JSON bytes) with the recipient's private key.
pub fn decrypt(response: &[u8], recipient: &p256::SecretKey) -> Result<Zeroizing<Vec<u8>>, JweError> {
    let v: crate::json::Value = crate::json::from_slice(response).map_err(|_| fmt_err("not JSON"))?;
    let protected_b64 =
        v.get("protected").and_then(|x| x.as_str()).ok_or_else(|| fmt_err("no \"protected\" string"))?;
    let header: crate::json::Value = B64
        .decode(protected_b64)
        .ok()
        .and_then(|h| crate::json::from_slice(&h).ok())
        .ok_or_else(|| fmt_err("the protected header is not base64url JSON"))?;
    match (header.get("alg").and_then(|x| x.as_str()), header.get("enc").and_then(|x| x.as_str())) {
        (Some(ALG), Some(ENC)) => {}
        (alg, enc) => {
            return Err(JweError::Algorithm(alloc::format!(
                "alg {} / enc {}; only {ALG} with {ENC} is accepted",
                alg.unwrap_or("(none)"),
                enc.unwrap_or("(none)")
            )));
        }
    }
    if header.get("zip").is_some() || header.get("crit").is_some() {
        return Err(JweError::Algorithm(String::from("\"zip\" and \"crit\" are not supported")));
    }
    let epk = key_from_jwk(
        header.get("epk").ok_or_else(|| JweError::Algorithm(String::from("no epk in the protected header")))?,
    )?;
    let party = |name: &str| -> Result<Vec<u8>, JweError> {
        match header.get(name) {
            None => Ok(Vec::new()),
            Some(x) => x
                .as_str()
                .and_then(|s| B64.decode(s).ok())
                .ok_or_else(|| JweError::Format(alloc::format!("\"{name}\" is not base64url"))),
        }
    };
    let (apu, apv) = (party("apu")?, party("apv")?);
    let encrypted_key = b64_field(&v, "encrypted_key")?;
    let iv = b64_field(&v, "iv")?;
    let ciphertext = b64_field(&v, "ciphertext")?;
    let tag = b64_field(&v, "tag")?;
    if encrypted_key.len() != 40 || iv.len() != 12 || tag.len() != 16 {
        return Err(fmt_err("encrypted_key, iv or tag has the wrong length for A256KW / A256GCM"));
    }
    let mut aad = protected_b64.as_bytes().to_vec();
    if let Some(extra) = v.get("aad") {
        aad.push(b'.');
        aad.extend_from_slice(extra.as_str().ok_or_else(|| fmt_err("\"aad\" is not a string"))?.as_bytes());
    }

    let shared = recipient.diffie_hellman(&epk);
    let kek = concat_kdf(shared.raw_secret_bytes(), &apu, &apv);
    let mut cek = Zeroizing::new([0u8; 32]);
    aes_kw::KwAes256::new((&*kek).into())
        .unwrap_key(&encrypted_key, cek.as_mut())
        .map_err(|_| JweError::Integrity("the wrapped content key"))?;
    let (iv, tag): ([u8; 12], [u8; 16]) = (iv.try_into().expect("checked"), tag.try_into().expect("checked"));
    let mut plain = Zeroizing::new(ciphertext);
    let gcm = aes_gcm::Aes256Gcm::new((&*cek).into());
    gcm.decrypt_inout_detached((&iv).into(), &aad, plain.as_mut_slice().into(), (&tag).into())
        .map_err(|_| JweError::Integrity("the ciphertext"))?;
    Ok(plain)
}

/// Encrypt `plaintext` to `recipient` as a KBS response (the broker side). `random` supplies
/// the ephemeral key, the content key and the IV.
pub fn encrypt(
    plaintext: &[u8],
    recipient: &p256::PublicKey,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<Vec<u8>, JweError> {
    let ephemeral = loop {
        let mut b = Zeroizing::new([0u8; 32]);
        random(b.as_mut());
        if let Ok(k) = p256::SecretKey::from_slice(b.as_ref()) {
            break k;
        }
    };
    let header = crate::json!({"alg": ALG, "enc": ENC, "epk": public_jwk(&ephemeral.public_key())});
    let protected = B64.encode(crate::json::to_vec(&header));
    let shared = ephemeral.diffie_hellman(recipient);
    let kek = concat_kdf(shared.raw_secret_bytes(), &[], &[]);
    let mut cek = Zeroizing::new([0u8; 32]);
    random(cek.as_mut());
    let mut wrapped = [0u8; 40];
    aes_kw::KwAes256::new((&*kek).into()).wrap_key(cek.as_ref(), &mut wrapped).map_err(|_| fmt_err("key wrap"))?;
    let mut iv = [0u8; 12];
    random(&mut iv);
    let mut ct = Zeroizing::new(plaintext.to_vec());
    let tag = aes_gcm::Aes256Gcm::new((&*cek).into())
        .encrypt_inout_detached((&iv).into(), protected.as_bytes(), ct.as_mut_slice().into())
        .map_err(|_| fmt_err("encryption"))?;
    let out = crate::json!({
        "protected": protected,
        "encrypted_key": B64.encode(wrapped),
        "iv": B64.encode(iv),
        "ciphertext": B64.encode(ct.as_slice()),
        "tag": B64.encode(tag.as_slice()),
    });
    Ok(crate::json::to_vec(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by python-jwcrypto 1.6.1 (an independent implementation): its compact form of
    /// `JWE(plaintext, protected={"alg":"ECDH-ES+A256KW","enc":"A256GCM"})` to this key.
    const RECIPIENT_D: &str = "smjEuxb9IsBeomoJwHeMjG_IuNwr4ReaTMgLtpG4Ie4";
    const COMPACT: &str = "eyJhbGciOiJFQ0RILUVTK0EyNTZLVyIsImVuYyI6IkEyNTZHQ00iLCJlcGsiOnsiY3J2IjoiUC0yNTYiLCJrdHkiOiJFQyIsIngiOiJ1cEhxQ0VJVm51ZDFZRFhuUG1PQnhOOVd2U1J6UUJ0MVlXSHB4V3RsOTZNIiwieSI6IjRrdDBnWWQ5TlVCOHNEcDR4cWZfeE4tclBwVGpDSjlOZk1QLTNId1FxQk0ifX0.dXqCGuXoxmJphfa8RGFxmuiJAyGZNrSyx8n26tE7EGXeZKu-0hq85A.Ic1YZXVlEMBQGJnt.E9loM1kFLxqSN1vFxBUuDDjo_Dv467EwLcL5SbCiI8AoisnYDoWc0YyRolzze2Hl.SrDG0RXOtlP1Cosbx8Db2Q";
    const PLAINTEXT: &[u8] = br#"{"key":"dGhlIG1hc3RlciBrZXk=","salt":"c2FsdA=="}"#;

    fn as_kbs_response(compact: &str) -> crate::json::Value {
        let p: Vec<&str> = compact.split('.').collect();
        crate::json!({"protected": p[0], "encrypted_key": p[1], "iv": p[2], "ciphertext": p[3], "tag": p[4]})
    }

    fn recipient() -> p256::SecretKey {
        p256::SecretKey::from_slice(&B64.decode(RECIPIENT_D).unwrap()).unwrap()
    }

    #[test]
    fn decrypts_a_jwe_made_by_jwcrypto() {
        let resp = crate::json::to_vec(&as_kbs_response(COMPACT));
        assert_eq!(decrypt(&resp, &recipient()).unwrap().as_slice(), PLAINTEXT);
    }

    #[test]
    fn round_trip_and_every_tampering_is_refused() {
        let key = recipient();
        let mut n = 0u8;
        let mut rng = |b: &mut [u8]| {
            b.iter_mut().for_each(|x| {
                n = n.wrapping_add(37);
                *x = n;
            })
        };
        let resp = encrypt(b"secret", &key.public_key(), &mut rng).unwrap();
        assert_eq!(decrypt(&resp, &key).unwrap().as_slice(), b"secret");
        // It is a kbs_types::Response, Trustee's wire type, with our algorithms.
        let typed: kbs_types::Response = serde_json::from_slice(&resp).unwrap();
        assert_eq!((typed.protected.alg.as_str(), typed.protected.enc.as_str()), (ALG, ENC));
        let v: crate::json::Value = crate::json::from_slice(&resp).unwrap();
        for field in ["encrypted_key", "iv", "ciphertext", "tag", "protected"] {
            let mut bad = v.clone();
            let mut bytes = B64.decode(bad[field].as_str().unwrap()).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            bad[field] = B64.encode(&bytes).into();
            assert!(decrypt(&crate::json::to_vec(&bad), &key).is_err(), "{field}");
        }
        let other = p256::SecretKey::from_slice(&[9; 32]).unwrap();
        assert_eq!(decrypt(&resp, &other).unwrap_err(), JweError::Integrity("the wrapped content key"));
        // An aad member the sender did not authenticate.
        let mut bad = v.clone();
        bad["aad"] = "eHl6".into();
        assert_eq!(decrypt(&crate::json::to_vec(&bad), &key).unwrap_err(), JweError::Integrity("the ciphertext"));
        // Other algorithms.
        let mut bad = v;
        bad["protected"] = B64.encode(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#).into();
        assert!(matches!(decrypt(&crate::json::to_vec(&bad), &key), Err(JweError::Algorithm(_))));
        assert!(matches!(decrypt(b"{}", &key), Err(JweError::Format(_))));
    }
}
