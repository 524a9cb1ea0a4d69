//! Every AES-128/256 XTS vector of shared/testdata/xts (IEEE 1619-2007 via Crypto++,
//! Wycheproof, Botan) through veilboot's XTS, both directions.
mod common;

use std::collections::BTreeMap;

use common::{testdata, unhex};
use veil_agent::xts::{self, SectorCipher, XtsError, soft::SoftXts};

struct Vector {
    source: String,
    key: Vec<u8>,
    iv: [u8; 16],
    plain: Vec<u8>,
    cipher: Vec<u8>,
}

fn iv16(bytes: &[u8]) -> [u8; 16] {
    assert!(bytes.len() <= 16, "IV longer than a block");
    let mut iv = [0u8; 16];
    iv[..bytes.len()].copy_from_slice(bytes);
    iv
}

/// Crypto++ format: `Name: value` records, `\` continues a line, `Test:` ends a record.
fn cryptopp(text: &str) -> Vec<Vector> {
    let joined = text.replace("\r\n", "\n").replace("\\\n", "");
    let mut out = Vec::new();
    let mut rec: BTreeMap<String, String> = BTreeMap::new();
    for line in joined.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.split_whitespace().collect::<String>();
        if k == "Test" {
            out.push(Vector {
                source: format!("ieee1619/cryptopp {}", rec.get("Comment").cloned().unwrap_or_default()),
                key: unhex(&rec["Key"]),
                iv: iv16(&unhex(&rec["IV"])),
                plain: unhex(&rec["Plaintext"]),
                cipher: unhex(&rec["Ciphertext"]),
            });
        } else if k == "Comment" {
            rec.insert(k.to_string(), line[8..].trim().to_string());
        } else {
            rec.insert(k.to_string(), v);
        }
    }
    out
}

/// Botan format: `[SECTION]` headers, `Key = ...` records ending with `Out`.
fn botan(text: &str) -> Vec<Vector> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut rec: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(s) = line.strip_prefix('[') {
            section = s.trim_end_matches(']').to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        rec.insert(k.trim().to_string(), v.trim().to_string());
        if k.trim() == "Out" && (section == "AES-128/XTS" || section == "AES-256/XTS") {
            out.push(Vector {
                source: format!("botan {section} #{}", out.len()),
                key: unhex(&rec["Key"]),
                iv: iv16(&unhex(&rec["Nonce"])),
                plain: unhex(&rec["In"]),
                cipher: unhex(&rec["Out"]),
            });
        }
    }
    out
}

/// Wycheproof: AES-128 and AES-256 groups (AES-192-XTS is not an aes-xts-plain64 cipher).
/// Short IVs are the leading bytes of the tweak block, the rest zero.
fn wycheproof(text: &str) -> (Vec<Vector>, usize) {
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut out = Vec::new();
    let mut aes192 = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let key_bits = group["keySize"].as_u64().unwrap();
        for t in group["tests"].as_array().unwrap() {
            assert_eq!(t["result"], "valid", "corpus has only valid vectors");
            if key_bits == 384 {
                aes192 += 1;
                continue;
            }
            out.push(Vector {
                source: format!("wycheproof tcId {}", t["tcId"]),
                key: unhex(t["key"].as_str().unwrap()),
                iv: iv16(&unhex(t["iv"].as_str().unwrap())),
                plain: unhex(t["msg"].as_str().unwrap()),
                cipher: unhex(t["ct"].as_str().unwrap()),
            });
        }
    }
    (out, aes192)
}

/// Run one vector through every backend this CPU has; returns false if the key was refused
/// for equal halves.
fn check(v: &Vector) -> bool {
    let backends = match xts::available_backends(&v.key) {
        Ok(b) => b,
        Err(XtsError::DuplicateKeyHalves) => return false,
        Err(e) => panic!("{}: key refused: {e}", v.source),
    };
    for backend in backends {
        let name = backend.name();
        let mut buf = v.plain.clone();
        xts::encrypt_data_unit(backend.as_ref(), &v.iv, &mut buf).unwrap();
        assert_eq!(hex::encode(&buf), hex::encode(&v.cipher), "{} [{name}]: encrypt", v.source);
        xts::decrypt_data_unit(backend.as_ref(), &v.iv, &mut buf).unwrap();
        assert_eq!(buf, v.plain, "{} [{name}]: decrypt", v.source);

        // Whole dm-crypt sectors with a plain64 IV also go through the sector API.
        let sector_iv = u64::from_le_bytes(v.iv[..8].try_into().unwrap());
        if v.iv[8..] == [0; 8] && matches!(v.plain.len(), 512 | 4096) {
            let cipher = SectorCipher::with_backend(backend, v.plain.len()).unwrap();
            let mut buf = v.plain.clone();
            cipher.encrypt_sectors(sector_iv, &mut buf).unwrap();
            assert_eq!(buf, v.cipher, "{} [{name}]: sector encrypt", v.source);
            cipher.decrypt_sectors(sector_iv, &mut buf).unwrap();
            assert_eq!(buf, v.plain, "{} [{name}]: sector decrypt", v.source);
        }
    }
    let _ = SoftXts::new(&v.key).unwrap();
    true
}

fn run(name: &str, vectors: &[Vector]) -> (usize, usize) {
    assert!(!vectors.is_empty(), "{name}: parsed no vectors");
    let mut passed = 0;
    let mut refused = 0;
    for v in vectors {
        if check(v) {
            passed += 1;
        } else {
            // Only all-equal-halves keys may be refused, and they must be.
            let h = v.key.len() / 2;
            assert_eq!(v.key[..h], v.key[h..], "{}: refused a valid key", v.source);
            refused += 1;
        }
    }
    eprintln!("{name}: {passed} vectors passed, {refused} refused for equal key halves");
    (passed, refused)
}

#[test]
fn ieee1619_and_cryptopp_vectors() {
    let Some(dir) = testdata("xts/ieee1619-2007") else { return };
    let text = std::fs::read_to_string(dir.join("cryptopp-TestVectors-xts.txt")).unwrap();
    let vectors = cryptopp(&text);
    let (passed, refused) = run("ieee1619-2007", &vectors);
    // Vectors 1-19 of the standard plus Botan-generated ones; vector 1 has key1 == key2.
    assert!(passed >= 18, "only {passed} vectors");
    assert_eq!(refused, 1, "exactly IEEE vector 1 has equal key halves");
    assert!(vectors.iter().any(|v| v.plain.len() % 16 != 0), "CTS vectors parsed");
}

#[test]
fn botan_vectors() {
    let Some(dir) = testdata("xts/botan") else { return };
    let text = std::fs::read_to_string(dir.join("xts.vec")).unwrap();
    let vectors = botan(&text);
    let (passed, _) = run("botan", &vectors);
    assert!(vectors.iter().any(|v| v.key.len() == 64));
    assert!(passed > 20);
}

#[test]
fn backends_this_cpu_offers() {
    let key: Vec<u8> = (0..64).collect();
    let names: Vec<&str> = xts::available_backends(&key).unwrap().iter().map(|b| b.name()).collect();
    eprintln!("XTS backends on this CPU: {names:?}");
    assert_eq!(names.last(), Some(&"rustcrypto"), "the portable backend is always there");
    // Asked for by name (what VEIL_XTS_BACKEND does; the variable itself is not set here:
    // setting it while other test threads read the environment is a data race), the sector
    // cipher uses exactly that backend.
    for name in &names {
        let backend = xts::backend_preferring(&key, Some(name)).unwrap();
        assert_eq!(SectorCipher::with_backend(backend, 512).unwrap().backend_name(), *name);
    }
    assert_eq!(xts::backend_preferring(&key, Some("no-such")).unwrap().name(), xts::best_backend(&key).unwrap().name());
}

#[test]
fn wycheproof_vectors() {
    let Some(dir) = testdata("xts/wycheproof") else { return };
    let text = std::fs::read_to_string(dir.join("aes_xts_test.json")).unwrap();
    let (vectors, aes192) = wycheproof(&text);
    eprintln!("wycheproof: {aes192} AES-192-XTS vectors not applicable (dm-crypt has no AES-192-XTS)");
    let (passed, refused) = run("wycheproof", &vectors);
    assert_eq!(passed + refused + aes192, 123);
    assert_eq!(refused, 0);
}
