//! On the host (a key broker, `veil verify`): the PCK certificate chain a TD quote carries
//! (certification data type 5, PEM: PCK certificate, Platform or Processor CA, root), checked
//! up to Intel's SGX root CA, which the caller pins; the PCK key it yields is what
//! [`Quote::verify_signatures`](super::quote::Quote::verify_signatures) checks the QE report
//! with. All of Intel's certificates here are ECDSA P-256 with SHA-256.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use der::{Decode, Encode};
use p256::ecdsa::signature::Verifier;
use x509_cert::Certificate;

use super::quote::Quote;

const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";

/// The certificates of a PEM bundle, in order.
fn pem_chain(pem: &[u8]) -> Result<Vec<Certificate>, String> {
    let text = core::str::from_utf8(pem).map_err(|_| "the PCK certificate chain is not PEM text")?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let block = &rest[start..];
        let end = block.find("-----END CERTIFICATE-----").ok_or("an unterminated PEM certificate")? + 25;
        let der = crate::tpm::ekcert::pem_to_der(&block[..end])?;
        out.push(Certificate::from_der(&der).map_err(|e| format!("PCK chain: not a certificate: {e}"))?);
        rest = &block[end..];
    }
    Ok(out)
}

pub(crate) fn p256_key(cert: &Certificate) -> Result<p256::ecdsa::VerifyingKey, String> {
    let key = cert.tbs_certificate().subject_public_key_info().subject_public_key.raw_bytes();
    p256::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(|_| String::from("a certificate key that is not P-256"))
}

fn signed_by(cert: &Certificate, issuer: &Certificate) -> Result<(), String> {
    let what = cert.tbs_certificate().subject().to_string();
    if cert.signature_algorithm().oid.to_string() != ECDSA_WITH_SHA256 {
        return Err(format!("{what}: not signed with ECDSA-SHA256"));
    }
    if cert.tbs_certificate().issuer() != issuer.tbs_certificate().subject() {
        return Err(format!(
            "{what}: issued by {}, not by {}",
            cert.tbs_certificate().issuer(),
            issuer.tbs_certificate().subject()
        ));
    }
    let tbs = cert.tbs_certificate().to_der().map_err(|e| format!("{what}: {e}"))?;
    let sig = p256::ecdsa::Signature::from_der(cert.signature().raw_bytes())
        .map_err(|_| format!("{what}: a malformed signature"))?;
    p256_key(issuer)?
        .verify(&tbs, &sig)
        .map_err(|_| format!("{what}: the signature does not verify with its issuer's key"))
}

/// Check the quote's PCK chain up to `root` (Intel's SGX root CA, DER or PEM, pinned by the
/// caller) and return the PCK's public key (SEC1, uncompressed). Validity periods are not
/// checked here (see [`verify_chain_at`]).
pub fn verify_pck_chain(quote: &Quote, root: &[u8]) -> Result<Vec<u8>, String> {
    let (kind, data) = &quote.certification;
    if *kind != 5 {
        return Err(format!("certification data type {kind}: not a PCK certificate chain (type 5)"));
    }
    let chain = chain_to_root(data, root)?;
    Ok(p256_key(&chain[0])?.to_sec1_point(false).as_bytes().to_vec())
}

/// Check a PEM chain (leaf first) up to `root` and each certificate's validity at `now`
/// (seconds since the epoch); the certificates, leaf first.
pub fn verify_chain_at(pem: &[u8], root: &[u8], now: u64) -> Result<Vec<Certificate>, String> {
    let chain = chain_to_root(pem, root)?;
    for cert in &chain {
        let v = cert.tbs_certificate().validity();
        let (from, until) = (v.not_before.to_unix_duration().as_secs(), v.not_after.to_unix_duration().as_secs());
        if now < from || now > until {
            return Err(format!(
                "{}: not valid at the verification time (valid {} to {})",
                cert.tbs_certificate().subject(),
                v.not_before,
                v.not_after
            ));
        }
    }
    Ok(chain)
}

fn chain_to_root(pem: &[u8], root: &[u8]) -> Result<Vec<Certificate>, String> {
    let chain = pem_chain(pem)?;
    if chain.len() < 2 {
        return Err(String::from("a certificate chain of fewer than two certificates"));
    }
    let root_der = if root.starts_with(b"-----BEGIN") {
        crate::tpm::ekcert::pem_to_der(core::str::from_utf8(root).map_err(|_| "the root is not PEM text")?)?
    } else {
        root.to_vec()
    };
    let last = chain.last().expect("two or more");
    if last.to_der().map_err(|e| format!("{e}"))? != root_der {
        return Err(String::from("the PCK chain does not end at the pinned Intel SGX root CA"));
    }
    for pair in chain.windows(2) {
        signed_by(&pair[0], &pair[1])?;
    }
    signed_by(last, last)?;
    Ok(chain)
}

/// A DER TLV: (tag, value, rest).
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || String::from("PCK certificate: malformed SGX extension");
    let (&tag, rest) = b.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 3 || rest.len() < n {
            return Err(bad());
        }
        (rest[..n].iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)), &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The (OID, value TLV) pairs of a DER SEQUENCE OF SEQUENCE { OID, value }.
fn oid_pairs(seq: &[u8]) -> Result<Vec<(&[u8], (u8, &[u8]))>, String> {
    let mut out = Vec::new();
    let mut rest = seq;
    while !rest.is_empty() {
        let (tag, pair, next) = tlv(rest)?;
        if tag != 0x30 {
            return Err(String::from("PCK certificate: an SGX extension entry that is not a SEQUENCE"));
        }
        let (otag, oid, after) = tlv(pair)?;
        let (vtag, value, _) = tlv(after)?;
        if otag != 0x06 {
            return Err(String::from("PCK certificate: an SGX extension entry without an OID"));
        }
        out.push((oid, (vtag, value)));
        rest = next;
    }
    Ok(out)
}

/// Intel's SGX extensions OID 1.2.840.113741.1.13.1, DER content bytes.
const SGX_EXTENSIONS: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01];

/// The TCB values of a PCK certificate's SGX extensions (Intel's PCK certificate profile):
/// TCB (…1.2: components 1-16, PCESVN 17), PCE-ID (…1.3), FMSPC (…1.4).
pub fn sgx_extensions(cert: &Certificate) -> Result<super::collateral::PckTcb, String> {
    let ext = cert
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id.as_bytes() == SGX_EXTENSIONS)
        .ok_or("the PCK certificate has no SGX extensions")?;
    let (tag, seq, _) = tlv(ext.extn_value.as_bytes())?;
    if tag != 0x30 {
        return Err(String::from("PCK certificate: the SGX extensions are not a SEQUENCE"));
    }
    let child =
        |oid: &[u8], n: u8| oid.len() == SGX_EXTENSIONS.len() + 1 && oid.starts_with(&SGX_EXTENSIONS) && oid[9] == n;
    let int = |v: &[u8]| -> Result<u16, String> {
        if v.is_empty() || v.len() > 3 {
            return Err(String::from("PCK certificate: an SVN that is not a small INTEGER"));
        }
        u16::try_from(v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
            .map_err(|_| String::from("PCK certificate: an SVN out of range"))
    };
    let (mut components, mut pcesvn, mut fmspc, mut pce_id) = ([None::<u8>; 16], None, None, None);
    for (oid, (vtag, value)) in oid_pairs(seq)? {
        if child(oid, 2) && vtag == 0x30 {
            for (c_oid, (ctag, cval)) in oid_pairs(value)? {
                let base = [&SGX_EXTENSIONS[..], &[2]].concat();
                if c_oid.len() != base.len() + 1 || !c_oid.starts_with(&base) || ctag != 0x02 {
                    continue;
                }
                match c_oid[base.len()] {
                    n @ 1..=16 => {
                        components[usize::from(n - 1)] =
                            Some(u8::try_from(int(cval)?).map_err(|_| "PCK certificate: a component SVN above 255")?)
                    }
                    17 => pcesvn = Some(int(cval)?),
                    _ => {}
                }
            }
        } else if child(oid, 3) && vtag == 0x04 {
            pce_id = Some(<[u8; 2]>::try_from(value).map_err(|_| "PCK certificate: a PCE-ID that is not 2 bytes")?);
        } else if child(oid, 4) && vtag == 0x04 {
            fmspc = Some(<[u8; 6]>::try_from(value).map_err(|_| "PCK certificate: an FMSPC that is not 6 bytes")?);
        }
    }
    let mut comps = [0u8; 16];
    for (i, c) in components.iter().enumerate() {
        comps[i] = c.ok_or_else(|| format!("PCK certificate: no SGX TCB component {}", i + 1))?;
    }
    Ok(super::collateral::PckTcb {
        components: comps,
        pcesvn: pcesvn.ok_or("PCK certificate: no PCESVN")?,
        fmspc: fmspc.ok_or("PCK certificate: no FMSPC")?,
        pce_id: pce_id.ok_or("PCK certificate: no PCE-ID")?,
    })
}
