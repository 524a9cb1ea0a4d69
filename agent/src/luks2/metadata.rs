//! Typed view of validated LUKS2 JSON metadata: keyslots, segments, digests, tokens, config.
//!
//! The JSON `Value` stays the source of truth (so fields veilboot does not know survive a
//! rewrite); these types are read from it after `validate` accepted it.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use crate::b64::STANDARD;
use crate::json::Value;

use super::validate::{as_u32, strtoull_exact};
use super::{Luks2Error, Luks2ErrorKind};

/// A keyslot's key derivation function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2 with an HMAC hash.
    Pbkdf2 {
        /// Hash name (sha1, sha256, sha512, ...).
        hash: String,
        /// Iteration count.
        iterations: u32,
        /// Salt.
        salt: Vec<u8>,
    },
    /// Argon2i (`argon2i`) or Argon2id (`argon2id`).
    Argon2 {
        /// True for Argon2id.
        id: bool,
        /// Time cost (passes).
        time: u32,
        /// Memory cost in KiB.
        memory_kib: u32,
        /// Lanes.
        cpus: u32,
        /// Salt.
        salt: Vec<u8>,
    },
    /// Anything else (kept so that the header still loads; unlocking it fails).
    Other(String),
}

/// A `luks2`-type keyslot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyslot {
    /// Keyslot type (`luks2`, or e.g. `reencrypt`).
    pub kind: String,
    /// Size of the key it stores.
    pub key_size: u32,
    /// Priority (0 ignore, 1 normal, 2 prefer).
    pub priority: i64,
    /// KDF turning the passphrase into the area key (luks2 keyslots only).
    pub kdf: Option<Kdf>,
    /// Anti-forensic splitter hash and stripes.
    pub af: Option<(String, u32)>,
    /// Area: offset, size, encryption, key size.
    pub area: Area,
}

/// Where a keyslot's encrypted key material lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Area {
    /// Byte offset on the device.
    pub offset: u64,
    /// Byte length.
    pub size: u64,
    /// Cipher of the area, e.g. `aes-xts-plain64`.
    pub encryption: String,
    /// Key size of that cipher in bytes.
    pub key_size: u32,
}

/// Size of a data segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentSize {
    /// Up to the end of the device.
    Dynamic,
    /// A fixed number of bytes.
    Bytes(u64),
}

/// A data segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Segment type (`crypt` for encrypted data).
    pub kind: String,
    /// Byte offset of the data on the device.
    pub offset: u64,
    /// Its size.
    pub size: SegmentSize,
    /// Added to the sector number for the IV (512-byte units).
    pub iv_tweak: u64,
    /// Cipher, e.g. `aes-xts-plain64`.
    pub encryption: String,
    /// Encryption sector size.
    pub sector_size: u32,
    /// Flags.
    pub flags: Vec<String>,
}

/// A volume-key digest (`pbkdf2` type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// Digest type (`pbkdf2`).
    pub kind: String,
    /// Keyslots whose key it verifies.
    pub keyslots: Vec<u32>,
    /// Segments that key encrypts.
    pub segments: Vec<u32>,
    /// PBKDF2 hash.
    pub hash: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Salt.
    pub salt: Vec<u8>,
    /// Expected PBKDF2 output.
    pub digest: Vec<u8>,
}

/// A token: an opaque JSON object with a type and the keyslots it unlocks.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// Token type, e.g. `systemd-tpm2` or `veil-sealed`.
    pub kind: String,
    /// Keyslots it is bound to.
    pub keyslots: Vec<u32>,
    /// The whole token object.
    pub json: Value,
}

/// The `config` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// JSON area size.
    pub json_size: u64,
    /// Keyslots area size.
    pub keyslots_size: u64,
    /// Persistent flags.
    pub flags: Vec<String>,
    /// Mandatory requirements (features a reader must understand).
    pub requirements: Vec<String>,
}

/// Numbered objects (keyslots, segments, digests, tokens) in ascending number order.
///
/// A sorted `Vec` rather than a `BTreeMap`: a header has a handful of each, and the B-tree's
/// code, instantiated per value type, was about 10 KiB of the firmware's ROM.
#[derive(Clone, Debug, PartialEq)]
pub struct Numbered<T>(Vec<(u32, T)>);

impl<T> Default for Numbered<T> {
    fn default() -> Self {
        Numbered(Vec::new())
    }
}

impl<T> Numbered<T> {
    /// Add (or replace) object `n`.
    pub fn insert(&mut self, n: u32, value: T) {
        match self.0.binary_search_by_key(&n, |(k, _)| *k) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (n, value)),
        }
    }

    /// Object `n`.
    pub fn get(&self, n: &u32) -> Option<&T> {
        self.0.binary_search_by_key(n, |(k, _)| *k).ok().map(|i| &self.0[i].1)
    }

    /// True when object `n` exists.
    pub fn contains_key(&self, n: &u32) -> bool {
        self.get(n).is_some()
    }

    /// The objects with their numbers, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = (&u32, &T)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    /// The numbers in ascending order.
    pub fn keys(&self) -> impl Iterator<Item = &u32> {
        self.0.iter().map(|(n, _)| n)
    }

    /// The objects in ascending number order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, v)| v)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, T> IntoIterator for &'a Numbered<T> {
    type Item = (&'a u32, &'a T);
    type IntoIter = core::iter::Map<core::slice::Iter<'a, (u32, T)>, fn(&'a (u32, T)) -> (&'a u32, &'a T)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(n, v)| (n, v))
    }
}

/// `numbered[&n]`: object `n`.
///
/// # Panics
/// When there is no object `n` (use [`Numbered::get`] for numbers from untrusted input).
impl<T> core::ops::Index<&u32> for Numbered<T> {
    type Output = T;
    fn index(&self, n: &u32) -> &T {
        self.get(n).expect("no object with this number")
    }
}

/// All of a volume's metadata, typed.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// Keyslots by number.
    pub keyslots: Numbered<Keyslot>,
    /// Segments by number.
    pub segments: Numbered<Segment>,
    /// Digests by number.
    pub digests: Numbered<Digest>,
    /// Tokens by number.
    pub tokens: Numbered<Token>,
    /// Config section.
    pub config: Config,
}

fn bad(what: String) -> Luks2Error {
    Luks2ErrorKind::Metadata(what).into()
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn num_u64(v: &Value, key: &str) -> Option<u64> {
    s(v, key).and_then(strtoull_exact)
}

fn int_u32(v: &Value, key: &str) -> Option<u32> {
    v.get(key).and_then(as_u32)
}

fn b64(v: &Value, key: &str, what: &str) -> Result<Vec<u8>, Luks2Error> {
    let text = s(v, key).ok_or_else(|| bad(alloc::format!("{what}: missing {key}")))?;
    STANDARD.decode(text.as_bytes()).map_err(|e| bad(alloc::format!("{what}: {key} is not base64: {e}")))
}

fn index(key: &str) -> Result<u32, Luks2Error> {
    key.parse().map_err(|_| bad(alloc::format!("object name \"{key}\" is not a small number")))
}

fn refs(v: &Value, key: &str) -> Result<Vec<u32>, Luks2Error> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(index).collect())
        .unwrap_or_else(|| Ok(Vec::new()))
}

fn parse_kdf(kdf: &Value, what: &str) -> Result<Kdf, Luks2Error> {
    let kind = s(kdf, "type").unwrap_or("");
    Ok(match kind {
        "pbkdf2" => Kdf::Pbkdf2 {
            hash: s(kdf, "hash").unwrap_or("").to_owned(),
            iterations: int_u32(kdf, "iterations").ok_or_else(|| bad(alloc::format!("{what}: bad iterations")))?,
            salt: b64(kdf, "salt", what)?,
        },
        "argon2i" | "argon2id" => Kdf::Argon2 {
            id: kind == "argon2id",
            time: int_u32(kdf, "time").ok_or_else(|| bad(alloc::format!("{what}: bad argon2 time")))?,
            memory_kib: int_u32(kdf, "memory").ok_or_else(|| bad(alloc::format!("{what}: bad argon2 memory")))?,
            cpus: int_u32(kdf, "cpus").ok_or_else(|| bad(alloc::format!("{what}: bad argon2 cpus")))?,
            salt: b64(kdf, "salt", what)?,
        },
        other => Kdf::Other(other.to_owned()),
    })
}

impl Metadata {
    /// Read the typed view out of metadata that passed validation.
    pub fn from_json(root: &Value) -> Result<Self, Luks2Error> {
        let section = |name: &str| {
            root.get(name).and_then(Value::as_object).ok_or_else(|| bad(alloc::format!("missing {name} section")))
        };
        let mut keyslots = Numbered::default();
        for (key, v) in section("keyslots")? {
            let what = alloc::format!("keyslot {key}");
            let area = v.get("area").ok_or_else(|| bad(alloc::format!("{what}: no area")))?;
            let kind = s(v, "type").unwrap_or("").to_owned();
            let luks2 = kind == "luks2";
            keyslots.insert(
                index(key)?,
                Keyslot {
                    key_size: int_u32(v, "key_size").unwrap_or(0),
                    priority: v.get("priority").and_then(Value::as_i64).unwrap_or(1),
                    kdf: if luks2 { Some(parse_kdf(&v["kdf"], &what)?) } else { None },
                    af: if luks2 {
                        Some((s(&v["af"], "hash").unwrap_or("").to_owned(), int_u32(&v["af"], "stripes").unwrap_or(0)))
                    } else {
                        None
                    },
                    area: Area {
                        offset: num_u64(area, "offset").unwrap_or(0),
                        size: num_u64(area, "size").unwrap_or(0),
                        encryption: s(area, "encryption").unwrap_or("").to_owned(),
                        key_size: int_u32(area, "key_size").unwrap_or(0),
                    },
                    kind,
                },
            );
        }
        let mut segments = Numbered::default();
        for (key, v) in section("segments")? {
            segments.insert(
                index(key)?,
                Segment {
                    kind: s(v, "type").unwrap_or("").to_owned(),
                    offset: num_u64(v, "offset").unwrap_or(0),
                    size: match s(v, "size") {
                        Some("dynamic") => SegmentSize::Dynamic,
                        _ => SegmentSize::Bytes(num_u64(v, "size").unwrap_or(0)),
                    },
                    iv_tweak: num_u64(v, "iv_tweak").unwrap_or(0),
                    encryption: s(v, "encryption").unwrap_or("").to_owned(),
                    sector_size: int_u32(v, "sector_size").unwrap_or(512),
                    flags: v
                        .get("flags")
                        .and_then(Value::as_array)
                        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                        .unwrap_or_default(),
                },
            );
        }
        let mut digests = Numbered::default();
        for (key, v) in section("digests")? {
            let what = alloc::format!("digest {key}");
            let kind = s(v, "type").unwrap_or("").to_owned();
            let pbkdf2 = kind == "pbkdf2";
            digests.insert(
                index(key)?,
                Digest {
                    keyslots: refs(v, "keyslots")?,
                    segments: refs(v, "segments")?,
                    hash: s(v, "hash").unwrap_or("").to_owned(),
                    iterations: int_u32(v, "iterations").unwrap_or(0),
                    salt: if pbkdf2 { b64(v, "salt", &what)? } else { Vec::new() },
                    digest: if pbkdf2 { b64(v, "digest", &what)? } else { Vec::new() },
                    kind,
                },
            );
        }
        let mut tokens = Numbered::default();
        for (key, v) in section("tokens")? {
            tokens.insert(
                index(key)?,
                Token { kind: s(v, "type").unwrap_or("").to_owned(), keyslots: refs(v, "keyslots")?, json: v.clone() },
            );
        }
        let config = &root["config"];
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        Ok(Metadata {
            keyslots,
            segments,
            digests,
            tokens,
            config: Config {
                json_size: num_u64(config, "json_size").unwrap_or(0),
                keyslots_size: num_u64(config, "keyslots_size").unwrap_or(0),
                flags: strings(config.get("flags")),
                requirements: strings(config.get("requirements").and_then(|r| r.get("mandatory"))),
            },
        })
    }

    /// The digest that verifies keys from `keyslot`.
    pub fn digest_for_keyslot(&self, keyslot: u32) -> Option<(u32, &Digest)> {
        self.digests.iter().find(|(_, d)| d.keyslots.contains(&keyslot)).map(|(n, d)| (*n, d))
    }

    /// The default data segment (the lowest-numbered regular segment).
    pub fn data_segment(&self) -> Option<(u32, &Segment)> {
        self.segments.iter().find(|(_, s)| !s.flags.iter().any(|f| f.starts_with("backup-"))).map(|(n, s)| (*n, s))
    }
}
