//! Validation of the LUKS2 JSON metadata, rule for rule as cryptsetup 2.6 applies it when it
//! loads a header (lib/luks2/luks2_json_metadata.c, luks2_keyslot*.c), so that veilboot loads
//! exactly the headers cryptsetup loads. Each rule names what it rejects in the error.
//!
//! Before validation the keyslots are "repaired" the way cryptsetup does: KDF parameters that
//! do not belong to the KDF type (left over from an older cryptsetup) are dropped.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::json::{Map, Value};

use super::binary::{BIN_LEN, valid_metadata_size};

/// Largest keyslots area LUKS2 allows (128 MiB).
pub const MAX_KEYSLOTS_SIZE: u64 = 128 << 20;

type Check = Result<(), String>;

fn fail<T>(why: impl Into<String>) -> Result<T, String> {
    Err(why.into())
}

/// `strtoull(s, &end, 10)` that must consume the whole string, as cryptsetup's
/// `json_str_to_uint64` uses it (leading blanks and a sign are accepted, overflow is not).
pub fn strtoull_exact(s: &str) -> Option<u64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() {
        // No conversion: end pointer stays at the start, so only "" itself is "whole".
        return if s.is_empty() { Some(0) } else { None };
    }
    let mut v: u64 = 0;
    for c in digits.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

/// cryptsetup's `numbered()`: every character is a digit (the empty string passes).
pub fn numbered(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_digit())
}

/// A JSON integer (json-c's `json_type_int`), not a float.
pub fn is_int(v: &Value) -> bool {
    v.as_i64().is_some() || v.as_u64().is_some()
}

/// An integer in 0..=u32::MAX, as `validate_json_uint32`.
pub fn as_u32(v: &Value) -> Option<u32> {
    v.as_i64().and_then(|i| u32::try_from(i).ok())
}

fn obj<'a>(parent: &'a Map, key: &str, what: &str) -> Result<&'a Map, String> {
    match parent.get(key) {
        Some(Value::Object(o)) => Ok(o),
        _ => fail(format!("{what}: missing \"{key}\" object")),
    }
}

fn string<'a>(parent: &'a Map, key: &str, what: &str) -> Result<&'a str, String> {
    match parent.get(key) {
        Some(Value::String(s)) => Ok(s),
        _ => fail(format!("{what}: missing \"{key}\" string")),
    }
}

/// `json_contains_string`: present, a string, not empty.
fn nonempty<'a>(parent: &'a Map, key: &str, what: &str) -> Result<&'a str, String> {
    let s = string(parent, key, what)?;
    if s.is_empty() {
        return fail(format!("{what}: \"{key}\" is empty"));
    }
    Ok(s)
}

fn int<'a>(parent: &'a Map, key: &str, what: &str) -> Result<&'a Value, String> {
    match parent.get(key) {
        Some(v) if is_int(v) => Ok(v),
        _ => fail(format!("{what}: missing \"{key}\" integer")),
    }
}

fn array<'a>(parent: &'a Map, key: &str, what: &str) -> Result<&'a Vec<Value>, String> {
    match parent.get(key) {
        Some(Value::Array(a)) => Ok(a),
        _ => fail(format!("{what}: missing \"{key}\" array")),
    }
}

fn u64_field(parent: &Map, key: &str, what: &str) -> Result<u64, String> {
    let s = nonempty(parent, key, what)?;
    if !numbered(s) {
        return fail(format!("{what}: \"{key}\" value \"{s}\" is not a decimal number"));
    }
    strtoull_exact(s).ok_or_else(|| format!("{what}: \"{key}\" value \"{s}\" overflows 64 bits"))
}

/// References from a digest or token to keyslots/segments must name existing objects.
fn references(arr: &[Value], section: &Map, what: &str, kind: &str) -> Check {
    for (i, v) in arr.iter().enumerate() {
        let Value::String(name) = v else {
            return fail(format!("{what}: {kind} reference {i} is not a string"));
        };
        if !matches!(section.get(name.as_str()), Some(Value::Object(_))) {
            return fail(format!("{what}: references missing {kind} \"{name}\""));
        }
    }
    Ok(())
}

fn is_backup_segment(seg: &Map) -> bool {
    match seg.get("flags") {
        Some(Value::Array(flags)) => flags.iter().any(|f| f.as_str().is_some_and(|s| s.starts_with("backup-"))),
        _ => false,
    }
}

fn segment_offset(seg: &Value) -> u64 {
    seg.get("offset").and_then(Value::as_str).and_then(strtoull_exact).unwrap_or(0)
}

fn segment_size(seg: &Value) -> u64 {
    match seg.get("size").and_then(Value::as_str) {
        Some("dynamic") | None => 0,
        Some(s) => strtoull_exact(s).unwrap_or(0),
    }
}

/// Drop KDF parameters that do not belong to the keyslot's KDF type (cryptsetup's
/// `luks2_keyslot_repair`).
pub fn repair_keyslots(root: &mut Value) {
    let Some(Value::Object(keyslots)) = root.get_mut("keyslots") else { return };
    for slot in keyslots.values_mut() {
        let Some(Value::Object(kdf)) = slot.get_mut("kdf") else { continue };
        let keep: &[&str] = match kdf.get("type").and_then(Value::as_str) {
            Some("pbkdf2") => &["type", "salt", "hash", "iterations"],
            Some("argon2i" | "argon2id") => &["type", "salt", "time", "memory", "cpus"],
            _ => continue,
        };
        kdf.retain(|k, _| keep.contains(&k.as_str()));
    }
}

/// The members of a section: numbered names, each an object; with their "what" for errors.
fn members<'a>(section: &'a Map, kind: &str) -> Result<Vec<(&'a String, &'a Map, String)>, String> {
    section
        .iter()
        .map(|(key, v)| {
            let what = format!("{kind} \"{key}\"");
            if !numbered(key) {
                return fail(format!("{what}: name is not a number"));
            }
            match v {
                Value::Object(o) => Ok((key, o, what)),
                _ => fail(format!("{what}: not an object")),
            }
        })
        .collect()
}

fn validate_requirements(root: &Map) -> Check {
    let config = obj(root, "config", "JSON area")?;
    let Some(reqs) = config.get("requirements") else { return Ok(()) };
    let Value::Object(reqs) = reqs else {
        return fail("config: \"requirements\" is not an object");
    };
    let Some(mandatory) = reqs.get("mandatory") else { return Ok(()) };
    let Value::Array(mandatory) = mandatory else {
        return fail("config: requirements \"mandatory\" is not an array");
    };
    let mut online_reencrypt = 0;
    for m in mandatory {
        let Some(s) = m.as_str() else {
            return fail("config: a mandatory requirement is not a string");
        };
        let versioned = s.strip_prefix("online-reencrypt-v").is_some_and(|v| !v.is_empty() && numbered(v));
        if s == "online-reencrypt" || versioned {
            online_reencrypt += 1;
        }
    }
    if online_reencrypt > 1 {
        return fail("config: several online-reencrypt requirements");
    }
    Ok(())
}

fn validate_tokens(root: &Map) -> Check {
    let tokens = obj(root, "tokens", "JSON area")?;
    let keyslots = obj(root, "keyslots", "JSON area")?;
    for (_, token, what) in members(tokens, "token")? {
        nonempty(token, "type", &what)?;
        references(array(token, "keyslots", &what)?, keyslots, &what, "keyslot")?;
    }
    Ok(())
}

fn validate_digests(root: &Map) -> Check {
    let digests = obj(root, "digests", "JSON area")?;
    let keyslots = obj(root, "keyslots", "JSON area")?;
    let segments = obj(root, "segments", "JSON area")?;
    for (_, digest, what) in members(digests, "digest")? {
        nonempty(digest, "type", &what)?;
        let ks = array(digest, "keyslots", &what)?;
        let segs = array(digest, "segments", &what)?;
        references(ks, keyslots, &what, "keyslot")?;
        references(segs, segments, &what, "segment")?;
    }
    Ok(())
}

fn validate_crypt_segment(seg: &Map, key: &str, size: u64, digests: &Map) -> Check {
    let what = format!("segment \"{key}\"");
    let iv_tweak = nonempty(seg, "iv_tweak", &what)?;
    nonempty(seg, "encryption", &what)?;
    let sector_size = int(seg, "sector_size", &what)?;
    if let Some(integrity) = seg.get("integrity") {
        let Value::Object(integrity) = integrity else {
            return fail(format!("{what}: \"integrity\" is not an object"));
        };
        for k in ["type", "journal_encryption", "journal_integrity"] {
            nonempty(integrity, k, &what)?;
        }
    }
    let sector_size = as_u32(sector_size).ok_or_else(|| format!("{what}: sector_size out of range"))?;
    if sector_size == 0 || sector_size % 512 != 0 {
        return fail(format!("{what}: illegal sector size {sector_size}"));
    }
    if !numbered(iv_tweak) || strtoull_exact(iv_tweak).is_none() {
        return fail(format!("{what}: illegal iv_tweak \"{iv_tweak}\""));
    }
    if !size.is_multiple_of(u64::from(sector_size)) {
        return fail(format!("{what}: size is not a multiple of the sector size"));
    }
    let has_digest = digests.values().any(|d| {
        d.get("segments").and_then(Value::as_array).is_some_and(|s| s.iter().any(|v| v.as_str() == Some(key)))
    });
    if !has_digest {
        return fail(format!("{what}: no digest is assigned to it"));
    }
    Ok(())
}

fn validate_segments(root: &Map) -> Check {
    let segments = obj(root, "segments", "JSON area")?;
    if segments.is_empty() {
        return fail("segments section is empty");
    }
    let digests = obj(root, "digests", "JSON area")?;
    let mut first_backup: Option<u64> = None;
    let mut regular: Vec<u64> = Vec::new();
    for (key, seg, what) in members(segments, "segment")? {
        let kind = nonempty(seg, "type", &what)?;
        let offset = u64_field(seg, "offset", &what)?;
        let size_text = nonempty(seg, "size", &what)?;
        let size = if size_text == "dynamic" {
            0
        } else {
            let s = u64_field(seg, "size", &what)?;
            if s == 0 {
                return fail(format!("{what}: size is zero"));
            }
            s
        };
        if offset % 512 != 0 {
            return fail(format!("{what}: offset is not 512-byte aligned"));
        }
        if size % 512 != 0 {
            return fail(format!("{what}: size is not 512-byte aligned"));
        }
        if let Some(flags) = seg.get("flags") {
            let Value::Array(flags) = flags else {
                return fail(format!("{what}: \"flags\" is not an array"));
            };
            if flags.iter().any(|f| !f.is_string()) {
                return fail(format!("{what}: a flag is not a string"));
            }
        }
        let index = strtoull_exact(key).unwrap_or(u64::MAX);
        if is_backup_segment(seg) {
            first_backup = Some(first_backup.map_or(index, |b| b.min(index)));
        } else {
            regular.push(index);
        }
        if kind == "crypt" {
            validate_crypt_segment(seg, key, size, digests)?;
        }
    }
    let count = segments.len() as u64;
    if let Some(b) = first_backup {
        if regular.iter().any(|r| *r >= b) {
            return fail(format!("a regular segment follows backup segment {b}"));
        }
        if b == 0 {
            return fail("no regular segment");
        }
        if b >= count {
            return fail(format!("gap between the regular segments and backup segment {b}"));
        }
    }
    let first_backup = first_backup.unwrap_or(count);
    // Regular segments 0..first_backup: no gaps, no overlaps, only the last one dynamic.
    let mut intervals = Vec::new();
    for i in 0..first_backup {
        let Some(seg) = segments.get(&i.to_string()) else {
            return fail(format!("gap at segment {i}"));
        };
        let size = segment_size(seg);
        intervals.push((segment_offset(seg), if size == 0 { u64::MAX } else { size }));
    }
    let n = intervals.len();
    for (i, &(off_i, len_i)) in intervals.iter().enumerate() {
        if len_i == u64::MAX && i != n - 1 {
            return fail(format!("segment {i}: only the last segment may be dynamic"));
        }
        for (j, &(off_j, len_j)) in intervals.iter().enumerate() {
            if i == j {
                continue;
            }
            if len_j != u64::MAX && off_j.checked_add(len_j).is_none() {
                return fail(format!("segment {j}: offset + size overflows"));
            }
            if off_i >= off_j && (len_j == u64::MAX || off_i < off_j + len_j) {
                return fail(format!("segments {i} and {j} overlap"));
            }
        }
    }
    for i in first_backup..count {
        if !segments.contains_key(&i.to_string()) {
            return fail(format!("gap at segment {i}"));
        }
    }
    Ok(())
}

fn validate_keyslots(root: &Map) -> Check {
    let keyslots = obj(root, "keyslots", "JSON area")?;
    for (_, slot, what) in members(keyslots, "keyslot")? {
        nonempty(slot, "type", &what)?;
        let key_size = int(slot, "key_size", &what)?;
        if as_u32(key_size).is_none() {
            return fail(format!("{what}: key_size out of range"));
        }
    }
    Ok(())
}

fn metadata_size(config: &Map) -> u64 {
    config.get("json_size").and_then(Value::as_str).and_then(strtoull_exact).unwrap_or(0).wrapping_add(BIN_LEN as u64)
}

fn keyslots_size(config: &Map) -> u64 {
    config.get("keyslots_size").and_then(Value::as_str).and_then(strtoull_exact).unwrap_or(0)
}

fn validate_config(root: &Map) -> Check {
    let config = obj(root, "config", "JSON area")?;
    let json_size = nonempty(config, "json_size", "config")?;
    let json_size = strtoull_exact(json_size).ok_or("config: illegal json_size")?;
    let metadata = json_size.wrapping_add(BIN_LEN as u64);
    let keyslots = nonempty(config, "keyslots_size", "config")?;
    let keyslots = strtoull_exact(keyslots).ok_or("config: illegal keyslots_size")?;
    if !valid_metadata_size(metadata) {
        return fail(format!("config: unsupported metadata size {metadata}"));
    }
    if keyslots % 4096 != 0 || keyslots > MAX_KEYSLOTS_SIZE {
        return fail(format!("config: unsupported keyslots_size {keyslots}"));
    }
    // The keyslots area must fit between the two metadata copies and the first data segment.
    let segments = obj(root, "segments", "JSON area")?;
    let mut first = u64::MAX;
    for seg in segments.values() {
        if seg.as_object().is_some_and(is_backup_segment) {
            continue;
        }
        first = first.min(segment_offset(seg));
    }
    if first != 0 && first != u64::MAX && (first < keyslots || first - keyslots < metadata.saturating_mul(2)) {
        return fail(format!(
            "config: keyslots_size {keyslots} does not fit between the metadata and the data at {first}"
        ));
    }
    if let Some(flags) = config.get("flags") {
        let Value::Array(flags) = flags else {
            return fail("config: \"flags\" is not an array");
        };
        if flags.iter().any(|f| !f.is_string()) {
            return fail("config: a flag is not a string");
        }
    }
    Ok(())
}

fn validate_areas(root: &Map) -> Check {
    let keyslots = obj(root, "keyslots", "JSON area")?;
    let config = obj(root, "config", "JSON area")?;
    let metadata = metadata_size(config);
    let end = 2u64.wrapping_mul(metadata).wrapping_add(keyslots_size(config));
    let mut areas = Vec::new();
    for (key, slot) in keyslots {
        let what = format!("keyslot \"{key}\" area");
        let slot = slot.as_object().ok_or_else(|| format!("keyslot \"{key}\": not an object"))?;
        let area = obj(slot, "area", &what)?;
        nonempty(area, "type", &what)?;
        let offset = u64_field(area, "offset", &what)?;
        let size = u64_field(area, "size", &what)?;
        areas.push((key, offset, size));
    }
    for &(key, off, len) in &areas {
        if off < metadata.saturating_mul(2) {
            return fail(format!("keyslot \"{key}\": area at {off} lies inside the metadata"));
        }
        if len == 0 {
            return fail(format!("keyslot \"{key}\": area is empty"));
        }
        let Some(area_end) = off.checked_add(len) else {
            return fail(format!("keyslot \"{key}\": area offset + size overflows"));
        };
        if area_end > end {
            return fail(format!(
                "keyslot \"{key}\": area [{off}, {area_end}) runs past the keyslots area (ends at {end})"
            ));
        }
        for &(other, o2, l2) in &areas {
            if other == key {
                continue;
            }
            if o2.checked_add(l2).is_none() {
                return fail(format!("keyslot \"{other}\": area offset + size overflows"));
            }
            if off >= o2 && off < o2 + l2 {
                return fail(format!("keyslots \"{key}\" and \"{other}\" have overlapping areas"));
            }
        }
    }
    Ok(())
}

fn validate_json_size(root: &Value, area_len: u64) -> Check {
    let config_json_size = root
        .get("config")
        .and_then(|c| c.get("json_size"))
        .and_then(Value::as_str)
        .and_then(strtoull_exact)
        .unwrap_or(0);
    if config_json_size != area_len {
        return fail(format!(
            "config json_size {config_json_size} does not match the binary header's JSON area of {area_len} bytes"
        ));
    }
    let text_len = crate::json::to_string(root).len() as u64;
    if text_len > area_len {
        return fail("the JSON does not fit in its area");
    }
    Ok(())
}

/// The keyslot-type checks cryptsetup runs last (`LUKS2_keyslots_validate`).
fn validate_luks2_keyslots(root: &Map) -> Check {
    let keyslots = obj(root, "keyslots", "JSON area")?;
    let digests = obj(root, "digests", "JSON area")?;
    for (key, slot) in keyslots {
        let what = format!("keyslot \"{key}\"");
        let Some(slot) = slot.as_object() else { continue };
        if slot.get("type").and_then(Value::as_str) != Some("luks2") {
            continue; // no handler for other types: cryptsetup skips them too
        }
        let (Some(kdf), Some(af), Some(area)) = (slot.get("kdf"), slot.get("af"), slot.get("area")) else {
            return fail(format!("{what}: missing kdf, af or area"));
        };
        let kdf = kdf.as_object().ok_or_else(|| format!("{what}: kdf is not an object"))?;
        let kdf_type = string(kdf, "type", &what)?;
        match kdf_type {
            "pbkdf2" => {
                if kdf.len() != 4 {
                    return fail(format!("{what}: pbkdf2 takes exactly type, salt, hash, iterations"));
                }
                string(kdf, "hash", &what)?;
                int(kdf, "iterations", &what)?;
                string(kdf, "salt", &what)?;
            }
            "argon2i" | "argon2id" => {
                if kdf.len() != 5 {
                    return fail(format!("{what}: argon2 takes exactly type, salt, time, memory, cpus"));
                }
                for k in ["time", "memory", "cpus"] {
                    int(kdf, k, &what)?;
                }
                string(kdf, "salt", &what)?;
            }
            _ => {}
        }
        let af = af.as_object().ok_or_else(|| format!("{what}: af is not an object"))?;
        if af.get("type").and_then(Value::as_str) != Some("luks1") {
            return fail(format!("{what}: af type is not luks1"));
        }
        string(af, "hash", &what)?;
        int(af, "stripes", &what)?;
        let area = area.as_object().ok_or_else(|| format!("{what}: area is not an object"))?;
        if area.get("type").and_then(Value::as_str) != Some("raw") {
            return fail(format!("{what}: area type is not raw"));
        }
        string(area, "encryption", &what)?;
        int(area, "key_size", &what)?;
        string(area, "offset", &what)?;
        string(area, "size", &what)?;
        let assigned = digests
            .values()
            .filter(|d| {
                d.get("keyslots")
                    .and_then(Value::as_array)
                    .is_some_and(|k| k.iter().any(|v| v.as_str() == Some(key.as_str())))
            })
            .count();
        if assigned != 1 {
            return fail(format!("{what}: assigned to {assigned} digests, not exactly one"));
        }
    }
    Ok(())
}

/// Validate repaired metadata; `area_len` is the JSON area size from the binary header.
pub fn validate(root: &Value, area_len: u64) -> Check {
    let Value::Object(map) = root else {
        return fail("the JSON metadata is not an object");
    };
    validate_requirements(map)?;
    validate_tokens(map)?;
    validate_digests(map)?;
    validate_segments(map)?;
    validate_keyslots(map)?;
    validate_config(map)?;
    validate_areas(map)?;
    validate_json_size(root, area_len)?;
    validate_luks2_keyslots(map)
}

/// Parse a JSON area: it must start with `{`, hold exactly one JSON value directly followed
/// by a NUL byte, and be NUL-padded to its end (cryptsetup's `validate_json_area`).
pub fn parse_json_area(area: &[u8]) -> Result<Value, String> {
    if area.first() != Some(&b'{') {
        return fail("JSON area does not start with '{'");
    }
    let Some(nul) = area.iter().position(|b| *b == 0) else {
        return fail("JSON area has no terminating NUL byte");
    };
    let (value, end) =
        crate::json::from_slice_prefix(&area[..nul]).map_err(|e| format!("JSON area does not parse: {e}"))?;
    if end != nul {
        return fail(format!("data after the JSON text at offset {end}"));
    }
    if let Some(pos) = area[nul..].iter().position(|b| *b != 0) {
        return fail(format!("non-NUL byte after the JSON text at offset {}", nul + pos));
    }
    Ok(value)
}
