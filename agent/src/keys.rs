//! Constellation-compatible key tree.
//!
//! A cluster's master secret (key + salt) is the root of every key veilboot uses. The
//! derivations are Constellation's, bit for bit (its `internal/crypto` and `internal/kms`):
//!
//! * `DeriveKey(secret, salt, info, len)` = HKDF-SHA256 (RFC 5869);
//! * disk key of a LUKS2 volume = `DeriveKey(masterKey, masterSalt, "key-" + lowercase UUID, 32)`;
//! * measurementSecret = `DeriveKey(masterKey, masterSalt, "key-measurementSecret", 32)`;
//! * clusterID = `DeriveKey(measurementSecret, measurementSalt, "key-clusterID", 32)`;
//! * PCR 15 after the clusterID is extended = `SHA256(0^32 || SHA256(clusterID))`.
//!
//! The master secret travels as Constellation's `constellation-mastersecret.json`
//! (`{"key": base64, "salt": base64}`, standard padded base64) or as its KMS URI
//! (`kms://cluster-kms?key=...&salt=...`, URL-safe padded base64). Every secret byte lives in
//! zeroizing storage and `Debug` never prints it.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::b64::{STANDARD, URL_SAFE};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Shortest master key Constellation accepts (`crypto.MasterSecretLengthMin`).
pub const MIN_KEY_LEN: usize = 16;
/// Shortest master salt Constellation accepts (`crypto.RNGLengthDefault`).
pub const MIN_SALT_LEN: usize = 32;
/// Length of the key and salt that `veil secret new` generates, and of every derived key.
pub const DEFAULT_LEN: usize = 32;
/// Longest output HKDF-SHA256 can produce (255 hash lengths).
pub const MAX_DERIVED_LEN: usize = 255 * 32;

/// HKDF info prefix of every key Constellation derives from a master secret (`crypto.DEKPrefix`).
pub const DEK_PREFIX: &str = "key-";
/// HKDF info of the measurement secret.
pub const MEASUREMENT_SECRET_INFO: &str = "key-measurementSecret";
/// HKDF info of the clusterID.
pub const CLUSTER_ID_INFO: &str = "key-clusterID";

/// Why a master secret or a derivation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The master secret file is not valid JSON of the expected shape.
    Json(String),
    /// A required field (`key` or `salt`) is missing.
    MissingField(&'static str),
    /// A field is not valid base64 in the encoding its format prescribes.
    Base64 {
        /// The field (`key` or `salt`).
        field: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The master key is shorter than Constellation's minimum.
    KeyTooShort(usize),
    /// The master salt is shorter than Constellation's minimum.
    SaltTooShort(usize),
    /// A KMS URI that is not `kms://cluster-kms?key=...&salt=...`.
    Uri(String),
    /// A LUKS2 volume UUID that is not of the form 8-4-4-4-12 hex digits.
    BadUuid(String),
    /// More output requested than HKDF-SHA256 can produce.
    OutputTooLong(usize),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Json(e) => write!(f, "master secret is not valid JSON: {e}"),
            KeyError::MissingField(name) => write!(f, "master secret has no `{name}` field"),
            KeyError::Base64 { field, reason } => {
                write!(f, "master secret field `{field}` is not valid base64: {reason}")
            }
            KeyError::KeyTooShort(n) => {
                write!(f, "master key is {n} bytes, shorter than the minimum of {MIN_KEY_LEN} bytes")
            }
            KeyError::SaltTooShort(n) => {
                write!(f, "master salt is {n} bytes, shorter than the minimum of {MIN_SALT_LEN} bytes")
            }
            KeyError::Uri(why) => write!(f, "bad cluster KMS URI: {why}"),
            KeyError::BadUuid(u) => write!(f, "`{u}` is not a volume UUID (expected 8-4-4-4-12 hex digits)"),
            KeyError::OutputTooLong(n) => {
                write!(f, "cannot derive {n} bytes with HKDF-SHA256 (maximum {MAX_DERIVED_LEN})")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KeyError {}

/// HKDF-SHA256: Constellation's `crypto.DeriveKey(secret, salt, info, len(out))`.
pub fn derive_key(secret: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), KeyError> {
    Hkdf::<Sha256>::new(Some(salt), secret).expand(info, out).map_err(|_| KeyError::OutputTooLong(out.len()))
}

/// A 32-byte derived key in zeroizing storage.
pub type Key32 = Zeroizing<[u8; 32]>;

fn derive_32(secret: &[u8], salt: &[u8], info: &[u8]) -> Key32 {
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is always within HKDF-SHA256's range.
    derive_key(secret, salt, info, out.as_mut()).expect("32 bytes is a valid HKDF length");
    out
}

/// A cluster's master secret: the root of the key tree. Zeroized on drop; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterSecret {
    key: Zeroizing<Vec<u8>>,
    salt: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MasterSecret {{ key: <{} bytes redacted>, salt: <{} bytes redacted> }}",
            self.key.len(),
            self.salt.len()
        )
    }
}

impl MasterSecret {
    /// A master secret from raw bytes, with Constellation's length checks.
    pub fn new(key: &[u8], salt: &[u8]) -> Result<Self, KeyError> {
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError::KeyTooShort(key.len()));
        }
        if salt.len() < MIN_SALT_LEN {
            return Err(KeyError::SaltTooShort(salt.len()));
        }
        Ok(MasterSecret { key: Zeroizing::new(key.to_vec()), salt: Zeroizing::new(salt.to_vec()) })
    }

    /// Parse either form Constellation uses: the JSON file or the `kms://cluster-kms` URI.
    /// Surrounding whitespace is ignored.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyError> {
        let trimmed = trim_ascii(bytes);
        if trimmed.starts_with(b"kms://") {
            let text = core::str::from_utf8(trimmed).map_err(|_| KeyError::Uri(String::from("not UTF-8")))?;
            Self::from_uri(text)
        } else {
            Self::from_json(trimmed)
        }
    }

    /// Parse `constellation-mastersecret.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, KeyError> {
        // The parse error never quotes the input (it may be secret), only what and where.
        let mut file = crate::json::from_slice(bytes).map_err(|e| KeyError::Json(alloc::format!("{e}")))?;
        let parsed = (|| {
            let map = file.as_object().ok_or_else(|| KeyError::Json(String::from("not a JSON object")))?;
            let field = |name: &str| match map.get(name) {
                None | Some(crate::json::Value::Null) => Ok(None),
                Some(crate::json::Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(KeyError::Json(alloc::format!("`{name}` is not a string"))),
            };
            let key = decode_field(STANDARD, "key", field("key")?)?;
            let salt = decode_field(STANDARD, "salt", field("salt")?)?;
            Self::new(&key, &salt)
        })();
        // The strings held the key and salt in base64.
        file.wipe();
        parsed
    }

    /// Serialize as `constellation-mastersecret.json` (the layout Constellation's CLI writes).
    pub fn to_json(&self) -> Zeroizing<String> {
        let mut key = Zeroizing::new(STANDARD.encode(&*self.key));
        let mut salt = Zeroizing::new(STANDARD.encode(&*self.salt));
        let out = Zeroizing::new(alloc::format!(
            "{{\n  \"key\": \"{}\",\n  \"salt\": \"{}\"\n}}\n",
            key.as_str(),
            salt.as_str()
        ));
        key.zeroize();
        salt.zeroize();
        out
    }

    /// Parse `kms://cluster-kms?key=<b64url>&salt=<b64url>`.
    pub fn from_uri(uri: &str) -> Result<Self, KeyError> {
        let rest = uri.strip_prefix("kms://").ok_or_else(|| KeyError::Uri(String::from("scheme is not `kms`")))?;
        let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
        if host != "cluster-kms" {
            return Err(KeyError::Uri(alloc::format!(
                "host is `{}`, expected `cluster-kms`",
                host.chars().take(64).collect::<String>()
            )));
        }
        let mut key = None;
        let mut salt = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "key" => &mut key,
                "salt" => &mut salt,
                _ => continue,
            };
            // Go's url.Values keeps the first of repeated parameters.
            if slot.is_none() && !value.is_empty() {
                *slot = Some(percent_decode(value)?);
            }
        }
        let key = decode_field(URL_SAFE, "key", key.as_deref().map(|s| s.as_str()))?;
        let salt = decode_field(URL_SAFE, "salt", salt.as_deref().map(|s| s.as_str()))?;
        Self::new(&key, &salt)
    }

    /// Serialize as Constellation's cluster KMS URI.
    pub fn to_uri(&self) -> Zeroizing<String> {
        let key = Zeroizing::new(URL_SAFE.encode(&*self.key));
        let salt = Zeroizing::new(URL_SAFE.encode(&*self.salt));
        Zeroizing::new(alloc::format!("kms://cluster-kms?key={}&salt={}", key.as_str(), salt.as_str()))
    }

    /// The master key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The master salt bytes.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// `DeriveKey(masterKey, masterSalt, info, out.len())`.
    pub fn derive(&self, info: &[u8], out: &mut [u8]) -> Result<(), KeyError> {
        derive_key(&self.key, &self.salt, info, out)
    }

    /// The disk key of the LUKS2 volume with this UUID: the volume's keyslot passphrase.
    pub fn disk_key(&self, uuid: &str) -> Result<Key32, KeyError> {
        let uuid = normalize_uuid(uuid)?;
        let mut info = Vec::with_capacity(DEK_PREFIX.len() + uuid.len());
        info.extend_from_slice(DEK_PREFIX.as_bytes());
        info.extend_from_slice(uuid.as_bytes());
        Ok(derive_32(&self.key, &self.salt, &info))
    }

    /// The measurement secret, from which the clusterID is derived.
    pub fn measurement_secret(&self) -> Key32 {
        derive_32(&self.key, &self.salt, MEASUREMENT_SECRET_INFO.as_bytes())
    }

    /// The clusterID for a given measurement salt.
    pub fn cluster_id(&self, measurement_salt: &[u8]) -> ClusterId {
        let secret = self.measurement_secret();
        ClusterId::derive(secret.as_ref(), measurement_salt)
    }
}

/// A cluster's public identity, derived from the measurement secret. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ClusterId(pub [u8; 32]);

impl ClusterId {
    /// `DeriveKey(measurementSecret, measurementSalt, "key-clusterID", 32)`.
    pub fn derive(measurement_secret: &[u8], measurement_salt: &[u8]) -> Self {
        let id = derive_32(measurement_secret, measurement_salt, CLUSTER_ID_INFO.as_bytes());
        ClusterId(*id)
    }

    /// PCR 15 (SHA-256 bank) of a fresh TPM after the clusterID was extended into it.
    pub fn expected_pcr15(&self) -> [u8; 32] {
        let measurement: [u8; 32] = Sha256::digest(self.0).into();
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(measurement);
        h.finalize().into()
    }
}

/// Check that `uuid` is 8-4-4-4-12 hex digits and return it in lowercase, as Constellation
/// formats it in the HKDF info.
pub fn normalize_uuid(uuid: &str) -> Result<String, KeyError> {
    let bytes = uuid.as_bytes();
    let well_formed = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if !well_formed {
        return Err(KeyError::BadUuid(uuid.chars().take(64).collect()));
    }
    Ok(uuid.to_ascii_lowercase())
}

fn decode_field(
    codec: crate::b64::Codec,
    field: &'static str,
    value: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let value = value.ok_or(KeyError::MissingField(field))?;
    codec
        .decode(value.as_bytes())
        .map(Zeroizing::new)
        .map_err(|e| KeyError::Base64 { field, reason: alloc::format!("{e}") })
}

/// Undo URL query escaping (`%XX` and `+`), as Go's `url.Values` does.
fn percent_decode(value: &str) -> Result<Zeroizing<String>, KeyError> {
    let bytes = value.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| core::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| KeyError::Uri(String::from("malformed %-escape in query")))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    let text = core::str::from_utf8(&out).map_err(|_| KeyError::Uri(String::from("query value is not UTF-8")))?;
    Ok(Zeroizing::new(String::from(text)))
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |p| p + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(start: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| start.wrapping_add(i as u8)).collect()
    }

    fn hex32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    // Constellation internal/crypto/testvector: HKDF-SHA256 with its own info strings.
    #[test]
    fn constellation_vector_cluster_id() {
        let mut out = [0u8; 32];
        derive_key(&seq(0x00, 32), &seq(0x20, 32), b"key-clusterID", &mut out).unwrap();
        assert_eq!(out, hex32("128c164378fe8767f998fbdfe4b4d6463ec5ae1b664ea5999bc27417607ae9b6"));
        // The same through the named derivation: clusterID(measurementSecret, salt).
        assert_eq!(ClusterId::derive(&seq(0x00, 32), &seq(0x20, 32)).0, out);
    }

    #[test]
    fn constellation_vector_measurement_secret() {
        let secret = MasterSecret::new(&seq(0x40, 32), &seq(0x60, 32)).unwrap();
        assert_eq!(
            *secret.measurement_secret(),
            hex32("4790578891f3fe6cc22cb661ecdc1b7e33121b1287546a52ba33a9136719c213")
        );
    }

    // RFC 5869 A.1, as a literal so that a plain clone still tests HKDF.
    #[test]
    fn rfc5869_case_1() {
        let ikm = [0x0bu8; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let mut okm = [0u8; 42];
        derive_key(&ikm, &salt, &info, &mut okm).unwrap();
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn disk_key_uses_lowercase_uuid_with_prefix() {
        let secret = MasterSecret::new(&seq(1, 32), &seq(2, 32)).unwrap();
        let upper = secret.disk_key("0F6A6C12-1D4B-4E55-9A0B-8C3C2D1E0F00").unwrap();
        let lower = secret.disk_key("0f6a6c12-1d4b-4e55-9a0b-8c3c2d1e0f00").unwrap();
        assert_eq!(*upper, *lower);
        let mut expected = [0u8; 32];
        derive_key(&seq(1, 32), &seq(2, 32), b"key-0f6a6c12-1d4b-4e55-9a0b-8c3c2d1e0f00", &mut expected).unwrap();
        assert_eq!(*lower, expected);
        // A different volume gets a different key.
        let other = secret.disk_key("0f6a6c12-1d4b-4e55-9a0b-8c3c2d1e0f01").unwrap();
        assert_ne!(*other, *lower);
    }

    #[test]
    fn bad_uuids_are_refused() {
        let secret = MasterSecret::new(&seq(1, 32), &seq(2, 32)).unwrap();
        for bad in [
            "",
            "0f6a6c12-1d4b-4e55-9a0b-8c3c2d1e0f0",
            "0f6a6c121d4b4e559a0b8c3c2d1e0f00",
            "0f6a6c12-1d4b-4e55-9a0b-8c3c2d1e0f0g",
            "0f6a6c12_1d4b-4e55-9a0b-8c3c2d1e0f00",
            "0f6a6c12-1d4b-4e55-9a0b-8c3c2d1e0f00 ",
        ] {
            assert!(matches!(secret.disk_key(bad), Err(KeyError::BadUuid(_))), "{bad:?}");
        }
    }

    #[test]
    fn pcr15_is_extend_of_hashed_cluster_id() {
        let id = ClusterId([0xab; 32]);
        let inner: [u8; 32] = Sha256::digest([0xab; 32]).into();
        let mut concat = [0u8; 64];
        concat[32..].copy_from_slice(&inner);
        let expected: [u8; 32] = Sha256::digest(concat).into();
        assert_eq!(id.expected_pcr15(), expected);
    }

    #[test]
    fn json_round_trip_and_constellation_layout() {
        let secret = MasterSecret::new(&seq(0x10, 32), &seq(0x80, 32)).unwrap();
        let json = secret.to_json();
        let value: crate::json::Value = crate::json::from_str(&json).unwrap();
        assert_eq!(value["key"], STANDARD.encode(seq(0x10, 32)));
        assert_eq!(value["salt"], STANDARD.encode(seq(0x80, 32)));
        assert_eq!(MasterSecret::parse(json.as_bytes()).unwrap(), secret);
    }

    #[test]
    fn uri_round_trip_uses_url_safe_alphabet() {
        // 0xfb 0xff encodes to "-_" characters in the URL-safe alphabet.
        let key = [0xfbu8; 32];
        let salt = [0xffu8; 32];
        let secret = MasterSecret::new(&key, &salt).unwrap();
        let uri = secret.to_uri();
        assert!(uri.starts_with("kms://cluster-kms?key="));
        let query = &uri["kms://cluster-kms?".len()..];
        assert!(query.contains('_') && query.contains('-'));
        assert!(!query.contains('+') && !query.contains('/'));
        assert_eq!(MasterSecret::parse(uri.as_bytes()).unwrap(), secret);
        // Percent-escaped padding is accepted, as Go's url package does.
        let escaped = alloc::format!(
            "kms://cluster-kms?key={}&salt={}",
            URL_SAFE.encode(key).replace('=', "%3D"),
            URL_SAFE.encode(salt).replace('=', "%3D")
        );
        assert!(escaped.contains("%3D"));
        assert_eq!(MasterSecret::from_uri(&escaped).unwrap(), secret);
    }

    #[test]
    fn precise_errors() {
        let b64_16 = STANDARD.encode([7u8; 16]);
        let b64_32 = STANDARD.encode([7u8; 32]);
        let b64_15 = STANDARD.encode([7u8; 15]);
        let b64_31 = STANDARD.encode([7u8; 31]);
        let j = |k: &str, s: &str| alloc::format!("{{\"key\":\"{k}\",\"salt\":\"{s}\"}}");
        assert!(MasterSecret::from_json(j(&b64_16, &b64_32).as_bytes()).is_ok());
        assert_eq!(MasterSecret::from_json(j(&b64_15, &b64_32).as_bytes()), Err(KeyError::KeyTooShort(15)));
        assert_eq!(MasterSecret::from_json(j(&b64_32, &b64_31).as_bytes()), Err(KeyError::SaltTooShort(31)));
        assert!(matches!(
            MasterSecret::from_json(j("not*base64", &b64_32).as_bytes()),
            Err(KeyError::Base64 { field: "key", .. })
        ));
        // The JSON file uses standard base64: the URL-safe alphabet is refused there.
        let url_key = URL_SAFE.encode([0xfbu8; 32]);
        assert!(matches!(
            MasterSecret::from_json(j(&url_key, &b64_32).as_bytes()),
            Err(KeyError::Base64 { field: "key", .. })
        ));
        assert_eq!(
            MasterSecret::from_json(alloc::format!("{{\"key\":\"{b64_32}\"}}").as_bytes()),
            Err(KeyError::MissingField("salt"))
        );
        assert!(matches!(MasterSecret::from_json(b"{\"key\":"), Err(KeyError::Json(_))));
        assert!(matches!(MasterSecret::from_json(b"[]"), Err(KeyError::Json(_))));
        assert!(matches!(MasterSecret::from_uri("kms://aws?key=AAAA&salt=AAAA"), Err(KeyError::Uri(_))));
        assert_eq!(
            MasterSecret::from_uri(&alloc::format!("kms://cluster-kms?key={}", URL_SAFE.encode([1u8; 32]))),
            Err(KeyError::MissingField("salt"))
        );
        assert!(matches!(MasterSecret::from_uri("kms://cluster-kms?key=%zz&salt=AAAA"), Err(KeyError::Uri(_))));
    }

    #[test]
    fn debug_output_redacts_secret() {
        let secret = MasterSecret::new(&[0x5a; 32], &[0xa5; 32]).unwrap();
        let shown = alloc::format!("{secret:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("5a") && !shown.contains("90")); // 0x5a = 90
    }

    #[test]
    fn derive_refuses_overlong_output() {
        let mut out = alloc::vec![0u8; MAX_DERIVED_LEN + 1];
        assert_eq!(derive_key(b"k", b"s", b"i", &mut out), Err(KeyError::OutputTooLong(MAX_DERIVED_LEN + 1)));
        let mut ok = alloc::vec![0u8; MAX_DERIVED_LEN];
        assert!(derive_key(b"k", b"s", b"i", &mut ok).is_ok());
    }
}
