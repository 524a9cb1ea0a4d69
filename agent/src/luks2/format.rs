//! Writing LUKS2 volumes: format a new one, add, replace or remove keyslots, add or remove
//! tokens. Every change is validated with the same rules the reader applies, the sequence id
//! goes up, and both header copies are produced again.
//!
//! Nothing here touches a device: [`HeaderWriter::commit`] returns the byte ranges to write,
//! so the host tools write them to a file and the firmware to virtio-blk. Randomness (UUID,
//! volume-independent salts, AF stripes) comes from the caller's `random` function.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crate::b64::STANDARD;
use crate::json;
use crate::json::{Map, Value};
use zeroize::Zeroizing;

use super::binary::{BIN_LEN, BinaryHeader, valid_metadata_size};
use super::validate::{MAX_KEYSLOTS_SIZE, validate};
use super::{Kdf, KdfLimits, Luks2Error, Luks2ErrorKind, Metadata, Volume, crypto, verify_digest};

/// A source of random bytes (RDSEED/RDRAND in the firmware, getrandom on the host).
pub type Random<'a> = &'a mut dyn FnMut(&mut [u8]);

/// Stripes of the anti-forensic splitter, as cryptsetup uses.
pub const AF_STRIPES: u32 = 4000;
/// Largest keyslot and token number LUKS2 allows (+1).
pub const MAX_SLOTS: u32 = 32;

/// KDF for a new keyslot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KdfParams {
    /// PBKDF2-HMAC-`hash` with this many iterations.
    Pbkdf2 {
        /// Hash name.
        hash: String,
        /// Iterations (cryptsetup's minimum is 1000).
        iterations: u32,
    },
    /// Argon2 (i or id).
    Argon2 {
        /// Argon2id rather than Argon2i.
        id: bool,
        /// Time cost.
        time: u32,
        /// Memory cost in KiB.
        memory_kib: u32,
        /// Lanes.
        cpus: u32,
    },
}

impl Default for KdfParams {
    /// PBKDF2-SHA256 at cryptsetup's minimum of 1000 iterations. veilboot's passphrases are
    /// 256-bit keys derived from the master secret: a slow KDF adds no strength to them,
    /// only boot time.
    fn default() -> Self {
        KdfParams::Pbkdf2 { hash: String::from("sha256"), iterations: 1000 }
    }
}

/// Layout and cipher of a new volume.
#[derive(Clone, Debug)]
pub struct FormatOptions {
    /// Volume UUID; random when None.
    pub uuid: Option<String>,
    /// Label (at most 47 bytes).
    pub label: String,
    /// Encryption sector size: 512 or 4096.
    pub sector_size: u32,
    /// Volume key size: 64 (AES-256-XTS) or 32 (AES-128-XTS).
    pub key_size: usize,
    /// Binary header + JSON area size (16 KiB by default).
    pub metadata_size: u64,
    /// Keyslots area size; the data starts right after it.
    pub keyslots_size: u64,
    /// Data size in bytes; None means up to the end of the device ("dynamic").
    pub data_size: Option<u64>,
    /// KDF of the first keyslot.
    pub kdf: KdfParams,
}

impl Default for FormatOptions {
    /// cryptsetup's defaults: 16 KiB metadata, data at 16 MiB, AES-256-XTS, 4096-byte sectors.
    fn default() -> Self {
        FormatOptions {
            uuid: None,
            label: String::new(),
            sector_size: 4096,
            key_size: 64,
            metadata_size: 0x4000,
            keyslots_size: (16 << 20) - 2 * 0x4000,
            data_size: None,
            kdf: KdfParams::default(),
        }
    }
}

/// A header being edited.
pub struct HeaderWriter {
    json: Value,
    header: BinaryHeader,
    area_writes: Vec<(u64, Zeroizing<Vec<u8>>)>,
}

fn err<T>(msg: impl Into<String>) -> Result<T, Luks2Error> {
    Err(Luks2ErrorKind::Format(msg.into()).into())
}

/// Bytes of the keyslot area a key of `key_len` bytes takes (AF-split into [`AF_STRIPES`]
/// stripes, rounded up to 4096 as cryptsetup does).
pub fn keyslot_area_len(key_len: usize) -> u64 {
    (key_len as u64 * u64::from(AF_STRIPES)).div_ceil(4096) * 4096
}

/// A random version-4 UUID in its text form.
pub fn random_uuid(random: Random<'_>) -> String {
    let mut b = [0u8; 16];
    random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn kdf_json(kdf: &KdfParams, random: Random<'_>) -> Value {
    let mut salt = [0u8; 32];
    random(&mut salt);
    let salt = STANDARD.encode(salt);
    match kdf {
        KdfParams::Pbkdf2 { hash, iterations } => {
            json!({"type": "pbkdf2", "hash": hash, "iterations": iterations, "salt": salt})
        }
        KdfParams::Argon2 { id, time, memory_kib, cpus } => json!({
            "type": if *id { "argon2id" } else { "argon2i" },
            "time": time, "memory": memory_kib, "cpus": cpus, "salt": salt
        }),
    }
}

/// The requested free keyslot/token number, or the lowest free one.
fn pick_number(section: &Map, wanted: Option<u32>, kind: &str) -> Result<u32, Luks2Error> {
    let free = |n: &u32| !section.contains_key(&n.to_string());
    match wanted {
        Some(n) if n >= MAX_SLOTS => err(format!("{kind} {n} is out of range (0..{MAX_SLOTS})")),
        Some(n) if !free(&n) => err(format!("{kind} {n} is in use")),
        Some(n) => Ok(n),
        None => (0..MAX_SLOTS)
            .find(free)
            .ok_or_else(|| Luks2ErrorKind::Format(format!("all {MAX_SLOTS} {kind}s are in use")).into()),
    }
}

fn num(v: &Value) -> u64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl HeaderWriter {
    /// A new volume: random volume key already chosen by the caller (`volume_key`), one
    /// keyslot (0) opened by `passphrase`. Returns the writer; `commit` produces the bytes.
    pub fn format(
        opts: &FormatOptions,
        volume_key: &[u8],
        passphrase: &[u8],
        random: Random<'_>,
    ) -> Result<Self, Luks2Error> {
        if opts.sector_size != 512 && opts.sector_size != 4096 {
            return err(format!("sector size {} is not 512 or 4096", opts.sector_size));
        }
        if volume_key.len() != opts.key_size || !(opts.key_size == 32 || opts.key_size == 64) {
            return err(format!("volume key of {} bytes; aes-xts-plain64 takes 32 or 64", volume_key.len()));
        }
        crate::xts::check_key(volume_key).map_err(Luks2ErrorKind::Xts)?;
        if !valid_metadata_size(opts.metadata_size) {
            return err(format!("metadata size {} is not one LUKS2 allows", opts.metadata_size));
        }
        if !opts.keyslots_size.is_multiple_of(4096) || opts.keyslots_size > MAX_KEYSLOTS_SIZE || opts.keyslots_size == 0
        {
            return err(format!(
                "keyslots size {} must be a non-zero multiple of 4096 up to 128 MiB",
                opts.keyslots_size
            ));
        }
        if opts.label.len() >= 48 {
            return err("label is longer than 47 bytes");
        }
        let uuid = match &opts.uuid {
            Some(u) => crate::keys::normalize_uuid(u).map_err(|e| Luks2ErrorKind::Format(e.to_string()))?,
            None => random_uuid(random),
        };
        let data_offset = 2 * opts.metadata_size + opts.keyslots_size;
        let size = match opts.data_size {
            None => String::from("dynamic"),
            Some(n) if n > 0 && n % u64::from(opts.sector_size) == 0 => n.to_string(),
            Some(n) => return err(format!("data size {n} is not a positive multiple of the sector size")),
        };
        let mut digest_salt = [0u8; 32];
        random(&mut digest_salt);
        let mut digest = [0u8; 32];
        crypto::pbkdf2("sha256", volume_key, &digest_salt, 1000, &mut digest)?;
        let json = json!({
            "keyslots": {},
            "tokens": {},
            "segments": {"0": {
                "type": "crypt", "offset": data_offset.to_string(), "size": size,
                "iv_tweak": "0", "encryption": "aes-xts-plain64", "sector_size": opts.sector_size
            }},
            "digests": {"0": {
                "type": "pbkdf2", "keyslots": [], "segments": ["0"], "hash": "sha256",
                "iterations": 1000, "salt": STANDARD.encode(digest_salt), "digest": STANDARD.encode(digest)
            }},
            "config": {
                "json_size": (opts.metadata_size - BIN_LEN as u64).to_string(),
                "keyslots_size": opts.keyslots_size.to_string()
            }
        });
        let header = BinaryHeader {
            secondary: false,
            version: 2,
            hdr_size: opts.metadata_size,
            seqid: 0,
            label: opts.label.clone(),
            checksum_alg: String::from("sha256"),
            salt: [0; 64],
            uuid,
            subsystem: String::new(),
            hdr_offset: 0,
            csum: [0; 64],
        };
        let mut writer = HeaderWriter { json, header, area_writes: Vec::new() };
        writer.add_keyslot(volume_key, passphrase, &opts.kdf, Some(0), random)?;
        Ok(writer)
    }

    /// Edit an existing volume.
    pub fn edit(volume: &Volume) -> Result<Self, Luks2Error> {
        let unmet = volume.unmet_requirements();
        if !unmet.is_empty() {
            return Err(Luks2ErrorKind::UnmetRequirements(unmet).into());
        }
        let mut header = volume.header().clone();
        header.secondary = false;
        header.hdr_offset = 0;
        Ok(HeaderWriter { json: volume.json().clone(), header, area_writes: Vec::new() })
    }

    /// The volume UUID.
    pub fn uuid(&self) -> &str {
        &self.header.uuid
    }

    fn section(&mut self, name: &str) -> &mut Map {
        self.json[name].as_object_mut().expect("validated section")
    }

    fn config_u64(&self, key: &str) -> u64 {
        num(&self.json["config"][key])
    }

    /// The lowest free range of `len` bytes in the keyslots area.
    fn free_area(&self, len: u64) -> Result<u64, Luks2Error> {
        let start = 2 * self.header.hdr_size;
        let end = start + self.config_u64("keyslots_size");
        let mut used: Vec<(u64, u64)> = self.json["keyslots"]
            .as_object()
            .map(|k| k.values().map(|s| (num(&s["area"]["offset"]), num(&s["area"]["size"]))).collect())
            .unwrap_or_default();
        crate::heapsort::sort_by_key(&mut used, |u| *u);
        let mut candidate = start;
        for (off, size) in used {
            if candidate + len <= off {
                break;
            }
            candidate = candidate.max(off + size);
        }
        if candidate + len > end {
            return err("no room left in the keyslots area");
        }
        Ok(candidate)
    }

    /// Check `volume_key` against the volume's digest 0 before binding a keyslot to it.
    fn check_volume_key(&self, volume_key: &[u8]) -> Result<(), Luks2Error> {
        let metadata = Metadata::from_json(&self.json)?;
        let (_, digest) = metadata
            .digests
            .iter()
            .find(|(_, d)| !d.segments.is_empty())
            .ok_or_else(|| Luks2ErrorKind::Format(String::from("volume has no segment digest")))?;
        if !verify_digest(digest, volume_key)? {
            return err("the volume key does not match the volume's digest");
        }
        Ok(())
    }

    /// Add a keyslot opened by `passphrase` (in slot `slot`, or the lowest free one).
    pub fn add_keyslot(
        &mut self,
        volume_key: &[u8],
        passphrase: &[u8],
        kdf: &KdfParams,
        slot: Option<u32>,
        random: Random<'_>,
    ) -> Result<u32, Luks2Error> {
        self.check_volume_key(volume_key)?;
        let slot = pick_number(self.json["keyslots"].as_object().expect("validated"), slot, "keyslot")?;
        let key_len = volume_key.len();
        let area_len = keyslot_area_len(key_len);
        let offset = self.free_area(area_len)?;
        let kdf_json = kdf_json(kdf, random);
        let kdf_typed = match kdf {
            KdfParams::Pbkdf2 { hash, iterations } => Kdf::Pbkdf2 {
                hash: hash.clone(),
                iterations: *iterations,
                salt: STANDARD.decode(kdf_json["salt"].as_str().unwrap_or("")).unwrap_or_default(),
            },
            KdfParams::Argon2 { id, time, memory_kib, cpus } => Kdf::Argon2 {
                id: *id,
                time: *time,
                memory_kib: *memory_kib,
                cpus: *cpus,
                salt: STANDARD.decode(kdf_json["salt"].as_str().unwrap_or("")).unwrap_or_default(),
            },
        };
        let mut area_key = Zeroizing::new(vec![0u8; key_len]);
        loop {
            random(&mut area_key);
            // Vanishingly unlikely, but XTS refuses equal halves: draw again.
            if crate::xts::check_key(&area_key).is_ok() {
                break;
            }
        }
        // The area key comes from the passphrase, not from `random`.
        let limits = KdfLimits {
            max_memory_kib: u32::MAX,
            max_argon2_time: u32::MAX,
            max_argon2_lanes: u32::MAX,
            max_pbkdf2_iterations: u32::MAX,
            max_af_stripes: u32::MAX,
        };
        crypto::derive_area_key(&kdf_typed, passphrase, &mut area_key, &limits)?;
        let mut material = crypto::af_split(volume_key, AF_STRIPES, "sha256", random)?;
        material.resize(area_len as usize, 0);
        crypto::crypt_area("aes-xts-plain64", &area_key, &mut material, true)?;
        self.area_writes.push((offset, material));
        let name = slot.to_string();
        self.section("keyslots").insert(
            name.clone(),
            json!({
                "type": "luks2",
                "key_size": key_len,
                "af": {"type": "luks1", "stripes": AF_STRIPES, "hash": "sha256"},
                "area": {"type": "raw", "offset": offset.to_string(), "size": area_len.to_string(),
                         "encryption": "aes-xts-plain64", "key_size": key_len},
                "kdf": kdf_json
            }),
        );
        let digests = self.section("digests");
        let digest = digests
            .values_mut()
            .find(|d| d["segments"].as_array().is_some_and(|s| !s.is_empty()))
            .expect("checked above");
        digest["keyslots"].as_array_mut().expect("validated").push(Value::String(name));
        Ok(slot)
    }

    /// Remove a keyslot and wipe its area; tokens and digests stop referring to it.
    pub fn remove_keyslot(&mut self, slot: u32) -> Result<(), Luks2Error> {
        let name = slot.to_string();
        let removed = self.section("keyslots").remove(&name).ok_or(Luks2ErrorKind::NoSuchKeyslot(slot))?;
        let (off, size) = (num(&removed["area"]["offset"]), num(&removed["area"]["size"]));
        self.area_writes.push((off, Zeroizing::new(vec![0u8; size as usize])));
        for section in ["digests", "tokens"] {
            for obj in self.section(section).values_mut() {
                if let Some(list) = obj["keyslots"].as_array_mut() {
                    list.retain(|v| v.as_str() != Some(name.as_str()));
                }
            }
        }
        Ok(())
    }

    /// Replace keyslot `slot` with a new passphrase and KDF.
    pub fn replace_keyslot(
        &mut self,
        slot: u32,
        volume_key: &[u8],
        passphrase: &[u8],
        kdf: &KdfParams,
        random: Random<'_>,
    ) -> Result<(), Luks2Error> {
        self.check_volume_key(volume_key)?;
        self.remove_keyslot(slot)?;
        self.add_keyslot(volume_key, passphrase, kdf, Some(slot), random).map(|_| ())
    }

    /// Add a token (a JSON object with at least a non-empty `type`) bound to `keyslots`.
    pub fn add_token(&mut self, token: Value, keyslots: &[u32], slot: Option<u32>) -> Result<u32, Luks2Error> {
        let Value::Object(mut token) = token else {
            return err("a token must be a JSON object");
        };
        if token.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
            return err("a token needs a non-empty \"type\"");
        }
        let existing = self.json["keyslots"].as_object().expect("validated");
        for k in keyslots {
            if !existing.contains_key(&k.to_string()) {
                return Err(Luks2ErrorKind::NoSuchKeyslot(*k).into());
            }
        }
        token.insert(
            String::from("keyslots"),
            Value::Array(keyslots.iter().map(|k| Value::String(k.to_string())).collect()),
        );
        let tokens = self.section("tokens");
        let n = pick_number(tokens, slot, "token")?;
        tokens.insert(n.to_string(), Value::Object(token));
        Ok(n)
    }

    /// Remove a token.
    pub fn remove_token(&mut self, n: u32) -> Result<(), Luks2Error> {
        self.section("tokens")
            .remove(&n.to_string())
            .map(|_| ())
            .ok_or_else(|| Luks2ErrorKind::Format(format!("token {n} does not exist")).into())
    }

    /// Validate, bump the sequence id and return every byte range to write: keyslot areas
    /// first, then the primary and the secondary header.
    pub fn commit(mut self, random: Random<'_>) -> Result<Vec<(u64, Zeroizing<Vec<u8>>)>, Luks2Error> {
        let json_size = self.header.hdr_size as usize - BIN_LEN;
        validate(&self.json, json_size as u64)
            .map_err(|e| Luks2ErrorKind::Format(format!("refusing to write invalid metadata: {e}")))?;
        let text = crate::json::to_string(&self.json);
        if text.len() >= json_size {
            return err(format!("metadata of {} bytes does not fit the {json_size}-byte JSON area", text.len()));
        }
        let mut area = vec![0u8; json_size];
        area[..text.len()].copy_from_slice(text.as_bytes());
        self.header.seqid += 1;
        let mut writes = core::mem::take(&mut self.area_writes);
        for secondary in [false, true] {
            let mut h = self.header.clone();
            h.secondary = secondary;
            h.hdr_offset = if secondary { h.hdr_size } else { 0 };
            random(&mut h.salt);
            let bin = h
                .encode_with_checksum(&area)
                .ok_or_else(|| Luks2ErrorKind::Format(String::from("checksum algorithm unavailable")))?;
            let mut bytes = Zeroizing::new(Vec::with_capacity(h.hdr_size as usize));
            bytes.extend_from_slice(&bin);
            bytes.extend_from_slice(&area);
            writes.push((h.hdr_offset, bytes));
        }
        Ok(writes)
    }
}
