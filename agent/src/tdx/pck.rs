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

fn p256_key(cert: &Certificate) -> Result<p256::ecdsa::VerifyingKey, String> {
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
/// caller) and return the PCK's public key (SEC1, uncompressed).
pub fn verify_pck_chain(quote: &Quote, root: &[u8]) -> Result<Vec<u8>, String> {
    let (kind, data) = &quote.certification;
    if *kind != 5 {
        return Err(format!("certification data type {kind}: not a PCK certificate chain (type 5)"));
    }
    let chain = pem_chain(data)?;
    if chain.len() < 2 {
        return Err(String::from("a PCK certificate chain of fewer than two certificates"));
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
    Ok(p256_key(&chain[0])?.to_sec1_point(false).as_bytes().to_vec())
}
