//! The boot bundle: what the `veil-boot` LUKS2 volume holds. A 4 KiB header carries a JSON
//! manifest (kernel, initrd, command line, root volume UUID; SHA-384 digest, offset and size
//! of every payload) and an HMAC-SHA256 over it with a key derived from the master secret,
//! so a host that can rewrite the (unauthenticated, XTS-encrypted) disk cannot swap the
//! manifest; the payloads follow, 4 KiB aligned. Nothing is booted before its digest matches.
//!
//! Header: "VEILBNDL" | version u32 LE (1) | manifest length u32 LE | HMAC (32) | manifest.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256, Sha384};

use crate::json::Value;
use crate::keys::MasterSecret;

/// Magic at the start of a bundle.
pub const MAGIC: &[u8; 8] = b"VEILBNDL";
/// Size of the header block; payloads start at or after it.
pub const HEADER_SIZE: usize = 4096;
const MAC_OFFSET: usize = 16;
const MANIFEST_OFFSET: usize = 48;
/// HKDF info of the manifest MAC key (veilboot's own derivation from the master secret).
pub const MAC_KEY_INFO: &str = "veil-boot-bundle-mac";

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// No magic: the volume does not hold a boot bundle.
    NotABundle,
    /// Unknown version.
    Version(u32),
    /// The manifest length does not fit the header.
    ManifestLength(u32),
    /// The MAC does not match: the manifest was not made with this master secret.
    Mac,
    /// The manifest is malformed (after the MAC matched: a tool bug, not an attack).
    Manifest(String),
    /// A payload lies outside the volume.
    Range(&'static str),
    /// A payload's digest does not match the manifest.
    Digest(&'static str),
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::NotABundle => write!(f, "boot bundle: no VEILBNDL magic (wrong key or not a veilboot volume)"),
            BundleError::Version(v) => write!(f, "boot bundle: unknown version {v}"),
            BundleError::ManifestLength(n) => write!(f, "boot bundle: manifest length {n} does not fit the header"),
            BundleError::Mac => {
                write!(f, "boot bundle: manifest MAC mismatch (not made with this master secret, or tampered)")
            }
            BundleError::Manifest(m) => write!(f, "boot bundle: malformed manifest: {m}"),
            BundleError::Range(part) => write!(f, "boot bundle: the {part} lies outside the volume"),
            BundleError::Digest(part) => {
                write!(f, "boot bundle: the {part} does not match its SHA-384 digest in the manifest; refusing to boot")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BundleError {}

/// One payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Offset from the start of the bundle (4 KiB aligned).
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// SHA-384, hex.
    pub sha384: String,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The bzImage.
    pub kernel: Payload,
    /// The initrd.
    pub initrd: Payload,
    /// The kernel command line.
    pub cmdline: String,
    /// LUKS2 UUID of the root volume whose key is handed to Linux.
    pub root_uuid: String,
    /// What the image binds besides its boot target; None in manifests made before it
    /// existed (the firmware refuses those: see [`Bound`]).
    pub bound: Option<Bound>,
}

/// What a manifest binds besides its boot target, under the MAC (and in the manifest digest
/// that init-data and sealed tokens name), so that the host cannot choose it:
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// Constellation's measurementSalt (hex), from which the clusterID (PCR 15 / RTMR2) is
    /// derived: the clear `veil-bundle` token carries a copy, which must equal this one.
    pub measurement_salt: String,
    /// The LUKS2 UUID of the image's state disk: a blank state disk is formatted with it, and
    /// a state disk with another UUID (another node's, another image's) gets no key.
    pub state_uuid: String,
    /// The bundle's version, chosen by the image builder (`veil image build
    /// --bundle-version`): init-data names it, so a broker can refuse older bundles
    /// (`veil kbs serve --min-bundle-version`).
    pub version: u64,
    /// Never seal the master secret locally (`veil image build --never-seal`): every boot
    /// asks the broker, so a disk rolled back to an older image, or a firmware rolled back,
    /// meets the broker's checks each time. In the manifest (written only when set, so the
    /// manifests of other images keep their bytes) so the host cannot clear it.
    pub never_seal: bool,
}

impl Payload {
    fn text(&self) -> String {
        alloc::format!(r#"{{"offset":{},"size":{},"sha384":{}}}"#, self.offset, self.size, Value::from(&self.sha384))
    }

    fn from_json(v: &Value, part: &str) -> Result<Self, String> {
        let field = |key: &str| v.get(key).ok_or_else(|| alloc::format!("{part}: missing field `{key}`"));
        let number = |key: &str| {
            field(key)?.as_u64().ok_or_else(|| alloc::format!("{part}: `{key}` is not an unsigned integer"))
        };
        let sha384 = field("sha384")?.as_str().ok_or_else(|| alloc::format!("{part}: `sha384` is not a string"))?;
        Ok(Payload { offset: number("offset")?, size: number("size")?, sha384: String::from(sha384) })
    }
}

impl Manifest {
    /// The manifest's JSON text as the bundle header and init-data carry it: fields in
    /// declaration order (the order serde wrote them in when the format was made; images
    /// made since carry these bytes, so the order is part of the format).
    pub fn to_json_text(&self) -> String {
        let bound = match &self.bound {
            Some(b) => {
                let mut fields = alloc::format!(
                    r#","measurement_salt":{},"state_uuid":{},"version":{}"#,
                    Value::from(&b.measurement_salt),
                    Value::from(&b.state_uuid),
                    b.version
                );
                if b.never_seal {
                    fields.push_str(r#","never_seal":true"#);
                }
                fields
            }
            None => String::new(),
        };
        alloc::format!(
            r#"{{"kernel":{},"initrd":{},"cmdline":{},"root_uuid":{}{bound}}}"#,
            self.kernel.text(),
            self.initrd.text(),
            Value::from(&self.cmdline),
            Value::from(&self.root_uuid)
        )
    }

    /// The manifest from its JSON (untrusted until its MAC or digest is checked): every
    /// field present with its type, and no other field.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let map = v.as_object().ok_or("not a JSON object")?;
        const FIELDS: [&str; 8] =
            ["kernel", "initrd", "cmdline", "root_uuid", "measurement_salt", "state_uuid", "version", "never_seal"];
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(alloc::format!("unknown field `{unknown}`"));
        }
        let field = |key: &str| map.get(key).ok_or_else(|| alloc::format!("missing field `{key}`"));
        let string =
            |key: &str| field(key)?.as_str().map(String::from).ok_or_else(|| alloc::format!("`{key}` is not a string"));
        Ok(Manifest {
            kernel: Payload::from_json(field("kernel")?, "kernel")?,
            initrd: Payload::from_json(field("initrd")?, "initrd")?,
            cmdline: string("cmdline")?,
            root_uuid: string("root_uuid")?,
            bound: match ["measurement_salt", "state_uuid", "version"].map(|k| map.contains_key(k)) {
                [false, false, false] if map.contains_key("never_seal") => {
                    return Err(String::from("never_seal comes with measurement_salt, state_uuid and version"));
                }
                [false, false, false] => None,
                [true, true, true] => Some(Bound {
                    measurement_salt: string("measurement_salt")?,
                    state_uuid: string("state_uuid")?,
                    version: field("version")?.as_u64().ok_or("`version` is not an unsigned integer")?,
                    // One encoding per meaning: present only as `true`.
                    never_seal: match map.get("never_seal") {
                        None => false,
                        Some(v) if v.as_bool() == Some(true) => true,
                        Some(_) => return Err(String::from("`never_seal` is present only as true")),
                    },
                }),
                _ => return Err(String::from("measurement_salt, state_uuid and version come together")),
            },
        })
    }
}

fn mac_key(secret: &MasterSecret) -> crate::keys::Key32 {
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    secret.derive(MAC_KEY_INFO.as_bytes(), k.as_mut()).expect("32 bytes");
    k
}

fn mac(secret: &MasterSecret, authenticated: &[u8]) -> [u8; 32] {
    let key = mac_key(secret);
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key.as_ref()).expect("any key length");
    m.update(authenticated);
    m.finalize().into_bytes().into()
}

/// SHA-384 of a payload, hex.
pub fn sha384_hex(data: &[u8]) -> String {
    hex::encode(Sha384::digest(data))
}

/// Build a bundle: header block followed by the kernel and initrd, 4 KiB aligned.
pub fn build(
    secret: &MasterSecret,
    kernel: &[u8],
    initrd: &[u8],
    cmdline: &str,
    root_uuid: &str,
    bound: Option<Bound>,
) -> Result<Vec<u8>, BundleError> {
    let kernel_off = HEADER_SIZE as u64;
    let initrd_off = (kernel_off + kernel.len() as u64).div_ceil(4096) * 4096;
    let manifest = Manifest {
        kernel: Payload { offset: kernel_off, size: kernel.len() as u64, sha384: sha384_hex(kernel) },
        initrd: Payload { offset: initrd_off, size: initrd.len() as u64, sha384: sha384_hex(initrd) },
        cmdline: String::from(cmdline),
        root_uuid: crate::keys::normalize_uuid(root_uuid).map_err(|e| BundleError::Manifest(alloc::format!("{e}")))?,
        bound,
    };
    let json = manifest.to_json_text().into_bytes();
    if json.len() > HEADER_SIZE - MANIFEST_OFFSET {
        return Err(BundleError::ManifestLength(json.len() as u32));
    }
    let mut out = alloc::vec![0u8; (initrd_off + initrd.len() as u64).div_ceil(4096) as usize * 4096];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    out[12..16].copy_from_slice(&(json.len() as u32).to_le_bytes());
    out[MANIFEST_OFFSET..MANIFEST_OFFSET + json.len()].copy_from_slice(&json);
    let tag = mac(secret, &authenticated_bytes(&out[..HEADER_SIZE], json.len()));
    out[MAC_OFFSET..MAC_OFFSET + 32].copy_from_slice(&tag);
    out[kernel_off as usize..kernel_off as usize + kernel.len()].copy_from_slice(kernel);
    out[initrd_off as usize..initrd_off as usize + initrd.len()].copy_from_slice(initrd);
    Ok(out)
}

/// What the MAC covers: magic, version, length and manifest.
fn authenticated_bytes(header: &[u8], len: usize) -> Vec<u8> {
    let mut v = header[..MAC_OFFSET].to_vec();
    v.extend_from_slice(&header[MANIFEST_OFFSET..MANIFEST_OFFSET + len]);
    v
}

/// Check the header block (the first 4 KiB of the bundle) and return the manifest, whose
/// payload ranges are checked against `volume_len`.
pub fn open_header(secret: &MasterSecret, header: &[u8], volume_len: u64) -> Result<Manifest, BundleError> {
    if header.len() < HEADER_SIZE || &header[..8] != MAGIC {
        return Err(BundleError::NotABundle);
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != 1 {
        return Err(BundleError::Version(version));
    }
    let len = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    if len as usize > HEADER_SIZE - MANIFEST_OFFSET {
        return Err(BundleError::ManifestLength(len));
    }
    let expected = mac(secret, &authenticated_bytes(header, len as usize));
    let stored: [u8; 32] = header[MAC_OFFSET..MAC_OFFSET + 32].try_into().expect("32 bytes");
    if expected.iter().zip(stored).fold(0u8, |a, (x, y)| a | (x ^ y)) != 0 {
        return Err(BundleError::Mac);
    }
    let manifest = crate::json::from_slice(&header[MANIFEST_OFFSET..MANIFEST_OFFSET + len as usize])
        .map_err(|e| alloc::format!("{e}"))
        .and_then(|v| Manifest::from_json(&v))
        .map_err(BundleError::Manifest)?;
    for (part, p) in [("kernel", &manifest.kernel), ("initrd", &manifest.initrd)] {
        if p.offset < HEADER_SIZE as u64
            || p.offset % 4096 != 0
            || p.offset.checked_add(p.size).is_none_or(|end| end > volume_len)
        {
            return Err(BundleError::Range(part));
        }
    }
    Ok(manifest)
}

/// Check a payload against the manifest.
pub fn verify(part: &'static str, expected: &Payload, data: &[u8]) -> Result<(), BundleError> {
    if data.len() as u64 != expected.size || sha384_hex(data) != expected.sha384 {
        return Err(BundleError::Digest(part));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> MasterSecret {
        MasterSecret::new(&[b; 32], &[b ^ 0x55; 32]).unwrap()
    }

    /// The manifest's bytes are part of the format (MAC'd in the header, hashed into
    /// init-data): fields in declaration order, compact, as serde wrote them.
    #[test]
    fn manifest_text_is_pinned() {
        let p = |o| Payload { offset: o, size: 10, sha384: "ab".into() };
        let m = Manifest {
            kernel: p(4096),
            initrd: p(8192),
            cmdline: "a \"b\"".into(),
            root_uuid: "u".into(),
            bound: None,
        };
        let text = r#"{"kernel":{"offset":4096,"size":10,"sha384":"ab"},"initrd":{"offset":8192,"size":10,"sha384":"ab"},"cmdline":"a \"b\"","root_uuid":"u"}"#;
        assert_eq!(m.to_json_text(), text);
        assert_eq!(Manifest::from_json(&crate::json::from_str(text).unwrap()).unwrap(), m);
        let extra = text.replace(r#""root_uuid""#, r#""x":1,"root_uuid""#);
        assert_eq!(Manifest::from_json(&crate::json::from_str(&extra).unwrap()).unwrap_err(), "unknown field `x`");
        // The bound fields follow, all three or none.
        let bound = Bound { measurement_salt: "05".into(), state_uuid: "s".into(), version: 3, never_seal: false };
        let m2 = Manifest { bound: Some(bound), ..m.clone() };
        let text2 = text
            .replace(r#""root_uuid":"u"}"#, r#""root_uuid":"u","measurement_salt":"05","state_uuid":"s","version":3}"#);
        assert_eq!(m2.to_json_text(), text2);
        assert_eq!(Manifest::from_json(&crate::json::from_str(&text2).unwrap()).unwrap(), m2);
        let partial = text2.replace(r#","version":3"#, "");
        assert!(Manifest::from_json(&crate::json::from_str(&partial).unwrap()).unwrap_err().contains("come together"));
        let missing = text.replace(r#","root_uuid":"u""#, "");
        assert_eq!(
            Manifest::from_json(&crate::json::from_str(&missing).unwrap()).unwrap_err(),
            "missing field `root_uuid`"
        );
    }

    /// Issue 31, item 5: `never_seal` is part of the manifest, so of its MAC and of the digest
    /// init-data names: a host that clears it in the header (to have the firmware seal, and
    /// later unseal without the broker) or sets it gets a manifest that does not verify.
    #[test]
    fn never_seal_is_under_the_mac() {
        let s = secret(1);
        let uuid = "0f6a6c12-1d4b-4e55-9a0b-8c3c2d1e0f00";
        let bound =
            |never_seal| Bound { measurement_salt: "05".into(), state_uuid: "s".into(), version: 3, never_seal };
        let b = build(&s, b"kernel bytes", &[7u8; 5000], "console=ttyS0", uuid, Some(bound(true))).unwrap();
        let m = open_header(&s, &b[..HEADER_SIZE], b.len() as u64).unwrap();
        assert!(m.bound.as_ref().unwrap().never_seal);
        assert!(m.to_json_text().ends_with(r#""version":3,"never_seal":true}"#));
        // Only `true` is written; `false` or a non-boolean is refused, and it needs the rest.
        let text = m.to_json_text();
        for bad in [text.replace("true}", "false}"), text.replace("true}", "1}")] {
            let e = Manifest::from_json(&crate::json::from_str(&bad).unwrap()).unwrap_err();
            assert_eq!(e, "`never_seal` is present only as true");
        }
        let lone = r#"{"kernel":{"offset":4096,"size":1,"sha384":"ab"},"initrd":{"offset":8192,"size":1,"sha384":"ab"},"cmdline":"","root_uuid":"u","never_seal":true}"#;
        assert!(
            Manifest::from_json(&crate::json::from_str(lone).unwrap()).unwrap_err().contains("never_seal comes with")
        );
        // Cleared by the host: the header's MAC no longer verifies, and the digest differs.
        let cleared = Manifest { bound: Some(bound(false)), ..m.clone() };
        let json = cleared.to_json_text().into_bytes();
        let mut forged = b[..HEADER_SIZE].to_vec();
        forged[12..16].copy_from_slice(&(json.len() as u32).to_le_bytes());
        forged[MANIFEST_OFFSET..].fill(0);
        forged[MANIFEST_OFFSET..MANIFEST_OFFSET + json.len()].copy_from_slice(&json);
        assert_eq!(open_header(&s, &forged, b.len() as u64), Err(BundleError::Mac));
        assert_ne!(manifest_sha384(&cleared), manifest_sha384(&m));
    }

    #[test]
    fn build_open_verify() {
        let s = secret(1);
        let uuid = "0f6a6c12-1d4b-4e55-9a0b-8c3c2d1e0f00";
        let b = build(&s, b"kernel bytes", &[7u8; 5000], "console=ttyS0", uuid, None).unwrap();
        let m = open_header(&s, &b[..HEADER_SIZE], b.len() as u64).unwrap();
        assert_eq!((m.cmdline.as_str(), m.root_uuid.as_str()), ("console=ttyS0", uuid));
        let k = &b[m.kernel.offset as usize..(m.kernel.offset + m.kernel.size) as usize];
        verify("kernel", &m.kernel, k).unwrap();
        let i = &b[m.initrd.offset as usize..(m.initrd.offset + m.initrd.size) as usize];
        verify("initrd", &m.initrd, i).unwrap();
        let mut bad = k.to_vec();
        bad[3] ^= 1;
        assert_eq!(verify("kernel", &m.kernel, &bad), Err(BundleError::Digest("kernel")));
        // Another cluster's secret, a changed manifest byte, or a truncated volume: refused.
        assert_eq!(open_header(&secret(2), &b[..HEADER_SIZE], b.len() as u64), Err(BundleError::Mac));
        let mut t = b.clone();
        t[MANIFEST_OFFSET + 5] ^= 1;
        assert_eq!(open_header(&s, &t[..HEADER_SIZE], t.len() as u64), Err(BundleError::Mac));
        assert_eq!(open_header(&s, &b[..HEADER_SIZE], 8192), Err(BundleError::Range("initrd")));
        assert_eq!(open_header(&s, &[0u8; HEADER_SIZE], 1 << 20), Err(BundleError::NotABundle));
        let mut v = b.clone();
        v[8] = 2;
        assert_eq!(open_header(&s, &v[..HEADER_SIZE], v.len() as u64), Err(BundleError::Version(2)));
    }
    /// A header with `manifest` MAC'd by `s` as `build` would write it, whatever the manifest
    /// says (to reach the range checks behind the MAC).
    fn forge(s: &MasterSecret, manifest: &Manifest) -> Vec<u8> {
        let json = manifest.to_json_text().into_bytes();
        let mut h = alloc::vec![0u8; HEADER_SIZE];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        h[12..16].copy_from_slice(&(json.len() as u32).to_le_bytes());
        h[MANIFEST_OFFSET..MANIFEST_OFFSET + json.len()].copy_from_slice(&json);
        let tag = mac(s, &authenticated_bytes(&h, json.len()));
        h[MAC_OFFSET..MAC_OFFSET + 32].copy_from_slice(&tag);
        h
    }

    /// Every bound of the header is exact (issue 37, the bundle group's surviving mutants): a
    /// manifest filling the header to its last byte is built and opened and one byte more is
    /// refused both ways; a header one byte short is no bundle; the initrd starts at the
    /// kernel's end rounded up to 4 KiB; a payload ending exactly at the volume's end opens.
    #[test]
    fn header_bounds_are_exact() {
        let s = secret(1);
        let uuid = "0f6a6c12-1d4b-4e55-9a0b-8c3c2d1e0f00";
        let room = HEADER_SIZE - MANIFEST_OFFSET;
        let base = build(&s, b"k", b"i", "", uuid, None).unwrap();
        let m = open_header(&s, &base[..HEADER_SIZE], base.len() as u64).unwrap();
        assert_eq!((m.kernel.offset, m.initrd.offset), (HEADER_SIZE as u64, HEADER_SIZE as u64 + 4096));
        let fill = "x".repeat(room - m.to_json_text().len());
        let full = build(&s, b"k", b"i", &fill, uuid, None).unwrap();
        let m = open_header(&s, &full[..HEADER_SIZE], full.len() as u64).unwrap();
        assert_eq!(m.to_json_text().len(), room);
        let over = alloc::format!("{fill}x");
        assert_eq!(build(&s, b"k", b"i", &over, uuid, None), Err(BundleError::ManifestLength(room as u32 + 1)));
        let mut long = full[..HEADER_SIZE].to_vec();
        long[12..16].copy_from_slice(&(room as u32 + 1).to_le_bytes());
        assert_eq!(open_header(&s, &long, full.len() as u64), Err(BundleError::ManifestLength(room as u32 + 1)));
        assert_eq!(open_header(&s, &full[..HEADER_SIZE - 1], full.len() as u64), Err(BundleError::NotABundle));
        let end = m.initrd.offset + m.initrd.size;
        assert_eq!(open_header(&s, &full[..HEADER_SIZE], end).map(|m| m.initrd.size), Ok(1));
        assert_eq!(open_header(&s, &full[..HEADER_SIZE], end - 1), Err(BundleError::Range("initrd")));
    }

    /// The MAC is compared in every byte at once: two bytes changed by the same bit (which an
    /// XOR fold would cancel) are refused, as is a payload placed over the header or off a
    /// 4 KiB boundary behind a valid MAC, each alone; the errors say what they are.
    #[test]
    fn mac_and_payload_placement_are_checked_exactly() {
        let s = secret(1);
        let uuid = "0f6a6c12-1d4b-4e55-9a0b-8c3c2d1e0f00";
        let b = build(&s, b"kernel", b"initrd", "", uuid, None).unwrap();
        let mut t = b[..HEADER_SIZE].to_vec();
        t[MAC_OFFSET] ^= 0x80;
        t[MAC_OFFSET + 1] ^= 0x80;
        assert_eq!(open_header(&s, &t, b.len() as u64), Err(BundleError::Mac));
        let good = open_header(&s, &b[..HEADER_SIZE], b.len() as u64).unwrap();
        assert_eq!(open_header(&s, &forge(&s, &good), b.len() as u64), Ok(good.clone()));
        let mut over_header = good.clone();
        over_header.kernel.offset = 0;
        assert_eq!(open_header(&s, &forge(&s, &over_header), b.len() as u64), Err(BundleError::Range("kernel")));
        let mut unaligned = good.clone();
        unaligned.initrd.offset += 512;
        assert_eq!(open_header(&s, &forge(&s, &unaligned), 1 << 20), Err(BundleError::Range("initrd")));
        assert!(BundleError::Mac.to_string().contains("manifest MAC mismatch"));
        assert!(BundleError::Range("kernel").to_string().contains("the kernel lies outside the volume"));
    }
}

/// Type of the LUKS2 token that keeps a copy of the manifest in the clear, in the
/// `veil-boot` header: the firmware measures the boot target from it before it can decrypt
/// anything (the seal policy depends on those measurements), and boots only if the MAC'd
/// manifest inside the volume is the same.
pub const TOKEN_TYPE: &str = "veil-bundle";

/// What the `veil-bundle` token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleToken {
    /// The manifest (unauthenticated until compared with the MAC'd one).
    pub manifest: Manifest,
    /// Constellation's measurementSalt, from which the clusterID is derived (public).
    pub measurement_salt: Vec<u8>,
    /// The init-data document naming this manifest (crate::initdata), whose digest a
    /// confidential launch carries (SEV-SNP HOST_DATA); None in images made before it existed.
    pub init_data: Option<String>,
}

/// SHA-384 of the manifest's JSON text ([`Manifest::to_json_text`]): the boot target that
/// init-data names.
pub fn manifest_sha384(manifest: &Manifest) -> [u8; 48] {
    use sha2::Digest;
    sha2::Sha384::digest(manifest.to_json_text()).into()
}

/// The init-data document naming `manifest` (its digest, and its version when it binds one).
pub fn init_data(manifest: &Manifest) -> String {
    crate::initdata::document(&manifest_sha384(manifest), manifest.bound.as_ref().map(|b| b.version))
}

/// Does `doc` name what `manifest` (the token's, which the firmware later requires to be the
/// MAC'd one) binds, in every field the broker reads: the manifest's digest, and the bundle
/// version `--min-bundle-version` compares (absent when the manifest binds none)? So a host
/// cannot hand an old bundle with init-data claiming a newer version. Field by field rather
/// than the whole document [`init_data`] makes: formatting it costs the firmware more ROM
/// than it has (a field the broker comes to read must be checked here too).
pub fn check_init_data(manifest: &Manifest, doc: &str) -> Result<(), String> {
    if crate::initdata::manifest_sha384(doc)? != manifest_sha384(manifest) {
        return Err(String::from("the init-data names another boot manifest than this disk's veil-bundle token"));
    }
    if crate::initdata::bundle_version(doc)? != manifest.bound.as_ref().map(|b| b.version) {
        return Err(String::from(
            "the init-data claims another bundle version than this disk's manifest binds (a host's rollback?)",
        ));
    }
    Ok(())
}

/// The token JSON for `manifest` (LUKS2 adds its `keyslots`), with its init-data document.
pub fn token_json(manifest: &Manifest, measurement_salt: &[u8]) -> crate::json::Value {
    crate::json!({
        "type": TOKEN_TYPE,
        "manifest": crate::json::from_str(&manifest.to_json_text()).expect("the manifest's own text parses"),
        "measurement_salt": hex::encode(measurement_salt),
        "init_data": init_data(manifest),
    })
}

/// Find and parse the `veil-bundle` token among a LUKS2 header's tokens (untrusted input).
pub fn find_token(luks2_json: &crate::json::Value) -> Result<Option<BundleToken>, BundleError> {
    let Some((_, t)) = crate::luks2::tokens_of_type(luks2_json, TOKEN_TYPE).next() else {
        return Ok(None);
    };
    let bad = |what: &str| BundleError::Manifest(alloc::format!("{TOKEN_TYPE} token: {what}"));
    let manifest = Manifest::from_json(t.get("manifest").ok_or_else(|| bad("no manifest"))?).map_err(|e| bad(&e))?;
    let salt = t.get("measurement_salt").and_then(|v| v.as_str()).ok_or_else(|| bad("no measurement_salt"))?;
    let measurement_salt = hex::decode(salt).map_err(|_| bad("measurement_salt is not hex"))?;
    if measurement_salt.len() < 16 || measurement_salt.len() > 64 {
        return Err(bad("measurement_salt must be 16 to 64 bytes"));
    }
    let init_data = match t.get("init_data") {
        None => None,
        Some(v) => Some(String::from(v.as_str().ok_or_else(|| bad("init_data is not a string"))?)),
    };
    Ok(Some(BundleToken { manifest, measurement_salt, init_data }))
}

#[cfg(test)]
mod token_tests {
    use super::*;

    fn manifest() -> Manifest {
        let p = |o| Payload { offset: o, size: 10, sha384: "ab".into() };
        Manifest {
            kernel: p(4096),
            initrd: p(8192),
            cmdline: "console=ttyS0".into(),
            root_uuid: "u".into(),
            bound: None,
        }
    }

    /// Issue 35: a host hands an old bundle with init-data naming its manifest but claiming a
    /// newer bundle version (what the broker's `--min-bundle-version` reads), or none, or one
    /// for a manifest that binds none, or naming another manifest: refused.
    #[test]
    fn init_data_must_be_the_manifests() {
        let mut m = manifest();
        m.bound = Some(Bound { measurement_salt: "05".into(), state_uuid: "s".into(), version: 2, never_seal: false });
        assert_eq!(check_init_data(&m, &init_data(&m)), Ok(()));
        let digest = manifest_sha384(&m);
        let newer = crate::initdata::document(&digest, Some(9));
        let err = check_init_data(&m, &newer).unwrap_err();
        assert!(err.contains("claims another bundle version than this disk's manifest binds"), "{err}");
        let unversioned = crate::initdata::document(&digest, None);
        assert!(check_init_data(&m, &unversioned).unwrap_err().contains("claims another bundle version"));
        let mut unbound = m.clone();
        unbound.bound = None;
        let claims_one = crate::initdata::document(&manifest_sha384(&unbound), Some(1));
        assert!(check_init_data(&unbound, &claims_one).unwrap_err().contains("claims another bundle version"));
        let not_a_number = init_data(&m).replace("\"bundle-version\":2", "\"bundle-version\":\"9\"");
        assert!(check_init_data(&m, &not_a_number).unwrap_err().contains("bundle-version is not a number"));
        let other = crate::initdata::document(&[0xAB; 48], Some(2));
        assert!(check_init_data(&m, &other).unwrap_err().contains("another boot manifest"));
    }

    #[test]
    fn token_round_trip_and_refusals() {
        let mut header = crate::json!({"tokens": {"0": {"type": "other", "keyslots": []}}});
        assert_eq!(find_token(&header).unwrap(), None);
        let t = token_json(&manifest(), &[5; 32]);
        header["tokens"]["1"] = t.clone();
        assert_eq!(
            find_token(&header).unwrap(),
            Some(BundleToken {
                manifest: manifest(),
                measurement_salt: alloc::vec![5; 32],
                init_data: Some(init_data(&manifest()))
            })
        );
        for n in [16, 64] {
            let mut edge = header.clone();
            edge["tokens"]["1"]["measurement_salt"] = crate::json!(hex::encode(alloc::vec![5u8; n]));
            assert_eq!(find_token(&edge).unwrap().map(|t| t.measurement_salt.len()), Some(n));
        }
        for (field, value) in [
            ("measurement_salt", crate::json!("zz")),
            ("measurement_salt", crate::json!("00")),
            ("measurement_salt", crate::json!(hex::encode([5u8; 15]))),
            ("measurement_salt", crate::json!(hex::encode([5u8; 65]))),
            ("manifest", crate::json!({"kernel": 1})),
        ] {
            let mut bad = header.clone();
            bad["tokens"]["1"][field] = value;
            assert!(matches!(find_token(&bad), Err(BundleError::Manifest(_))), "{field}");
        }
    }
}
