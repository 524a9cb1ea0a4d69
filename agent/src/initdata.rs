//! Init-data (the confidential-containers convention): a small TOML document the host hands a
//! confidential VM, whose digest the launch carries in a register the guest cannot change
//! (SEV-SNP HOST_DATA, 32 bytes; TDX MRCONFIGID, 48), zero-padded or truncated to fit. Trustee
//! digests the document's raw bytes with the `algorithm` it names.
//!
//! veilboot's document names the boot target: the SHA-384 of the `veil-boot` manifest, so a
//! launch made for one disk image cannot boot another.
//!
//! ```toml
//! algorithm = "sha256"
//! version = "0.1.0"
//!
//! [data]
//! "veilboot.json" = '''{"boot-manifest-sha384":"<96 hex digits>","bundle-version":1}'''
//! ```
//!
//! The parser reads exactly this shape (a general TOML parser is not needed for a document
//! veil writes, and the firmware has no room for one); anything else is refused.

use alloc::string::String;
use alloc::vec::Vec;

use sha2::Digest;

/// Everything before the `veilboot.json` entry's JSON: the only document shape read.
const HEAD: &str = "algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"veilboot.json\" = '''";
/// Everything after it.
const TAIL: &str = "'''\n";

/// The init-data document naming `manifest_sha384` and, when the manifest binds one, the
/// bundle's version (a broker can require a minimum: rollback).
pub fn document(manifest_sha384: &[u8; 48], bundle_version: Option<u64>) -> String {
    let version = bundle_version.map(|v| alloc::format!(",\"bundle-version\":{v}")).unwrap_or_default();
    alloc::format!("{HEAD}{{\"boot-manifest-sha384\":\"{}\"{version}}}{TAIL}", hex::encode(manifest_sha384))
}

/// The bundle version the document names, if any.
pub fn bundle_version(doc: &str) -> Result<Option<u64>, String> {
    match entry(doc)?.get("bundle-version") {
        None => Ok(None),
        Some(n) => n.as_u64().map(Some).ok_or_else(|| String::from("init-data: bundle-version is not a number")),
    }
}

/// The `veilboot.json` entry, parsed, of a document exactly in the shape [`document`] writes
/// (one copy in the firmware: it counts against the ROM's budget). Exactly, because a TOML
/// parser (Trustee's) and this one must read the same entry from the bytes the launch digest
/// covers: a document with a second `"veilboot.json"` line in a comment, another table or
/// anything else around the entry is refused rather than read two ways.
#[inline(never)]
fn entry(doc: &str) -> Result<crate::json::Value, String> {
    let json =
        doc.strip_prefix(HEAD).and_then(|rest| rest.strip_suffix(TAIL)).filter(|json| !json.contains("\'\'\'")).ok_or(
            "init-data: not the document veil writes (algorithm sha256, version 0.1.0, one \"veilboot.json\" entry)",
        )?;
    crate::json::from_slice(json.as_bytes()).map_err(|_| String::from("init-data: \"veilboot.json\" is not JSON"))
}

/// The document's digest with the algorithm it names (sha256, sha384 or sha512).
pub fn digest(doc: &str) -> Result<Vec<u8>, String> {
    let algorithm = doc
        .lines()
        .find_map(|l| l.trim_ascii().strip_prefix("algorithm"))
        .and_then(|rest| rest.trim_ascii().strip_prefix('='))
        .map(|v| v.trim_ascii().trim_matches('"'))
        .ok_or("init-data: no algorithm line")?;
    Ok(match algorithm {
        "sha256" => sha2::Sha256::digest(doc.as_bytes()).to_vec(),
        "sha384" => sha2::Sha384::digest(doc.as_bytes()).to_vec(),
        "sha512" => sha2::Sha512::digest(doc.as_bytes()).to_vec(),
        other => return Err(alloc::format!("init-data: algorithm {other:?} is not sha256, sha384 or sha512")),
    })
}

/// `d` zero-padded or truncated to `n` bytes (Trustee's `regularize_data`).
pub fn regularize(d: &[u8], n: usize) -> Vec<u8> {
    let mut v = d[..d.len().min(n)].to_vec();
    v.resize(n, 0);
    v
}

/// The boot-manifest digest the document names.
pub fn manifest_sha384(doc: &str) -> Result<[u8; 48], String> {
    let v = entry(doc)?;
    let h = v["boot-manifest-sha384"].as_str().ok_or("init-data: no boot-manifest-sha384")?;
    hex::decode(h)
        .ok()
        .and_then(|b| <[u8; 48]>::try_from(b).ok())
        .ok_or_else(|| String::from("init-data: boot-manifest-sha384 is not 48 bytes of hex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_digest_and_refusals() {
        let doc = document(&[0xAB; 48], None);
        assert_eq!(manifest_sha384(&doc), Ok([0xAB; 48]));
        assert_eq!(bundle_version(&doc), Ok(None));
        let versioned = document(&[0xAB; 48], Some(7));
        assert_eq!((manifest_sha384(&versioned), bundle_version(&versioned)), (Ok([0xAB; 48]), Ok(Some(7))));
        assert_eq!(digest(&doc).unwrap(), sha2::Sha256::digest(doc.as_bytes()).to_vec());
        assert_eq!(regularize(&[1, 2], 4), [1, 2, 0, 0]);
        assert_eq!(regularize(&[1; 48], 32), [1; 32]);
        let sha384 = doc.replace("sha256", "sha384");
        assert_eq!(digest(&sha384).unwrap().len(), 48);
        assert!(digest(&doc.replace("sha256", "md5")).is_err());
        assert!(manifest_sha384(&doc.replace("veilboot.json", "other.json")).is_err());
        assert!(manifest_sha384(&doc.replace(&"ab".repeat(48), "ab")).is_err());
    }

    /// A host writes a document that a TOML parser (Trustee's) and this one would read two
    /// ways: an old entry in a comment before the real one, a second entry in another table,
    /// text after the entry. The launch digest covers all of it, so each is refused rather than
    /// read as the first occurrence says.
    #[test]
    fn a_document_read_two_ways_is_refused() {
        use alloc::format;
        let old = document(&[0xAB; 48], Some(1));
        let new = document(&[0xAB; 48], Some(9));
        let commented = old.lines().map(|l| format!("# {l}\n")).collect::<String>() + &new;
        assert_eq!(bundle_version(&new), Ok(Some(9)));
        assert!(bundle_version(&commented).unwrap_err().contains("not the document veil writes"));
        let mut old_first = old.clone();
        old_first.push_str("[other]\n\"veilboot.json\" = '''{}'''\n");
        assert!(bundle_version(&old_first).unwrap_err().contains("not the document veil writes"));
        let in_entry = new.replace("\"bundle-version\":9}", "\"bundle-version\":9}''' # '''");
        assert!(manifest_sha384(&in_entry).unwrap_err().contains("not the document veil writes"));
        assert!(manifest_sha384(&format!("{new}\n")).is_err());
        assert!(manifest_sha384(&new.replace("version = \"0.1.0\"", "version = \"0.2.0\"")).is_err());
    }
}
