//! EK certificates, as a key broker checks them (host-only, std): the certificate the TPM
//! keeps in NV (command::EK_CERT_RSA_NV_INDEX) must certify exactly the EK that the TPM
//! derives from the default template, and chain, signature by signature
//! (sha256WithRSAEncryption), to a root the broker trusts: the manufacturer's CA, or for
//! swtpm the local CA that `swtpm_setup --create-ek-cert` uses. Validity periods are not
//! checked here (the caller owns the clock).

use der::{Decode, Encode};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use x509_cert::Certificate;

/// sha256WithRSAEncryption.
const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";

fn parse(der_bytes: &[u8], what: &str) -> Result<Certificate, String> {
    Certificate::from_der(der_bytes).map_err(|e| format!("{what}: not a DER X.509 certificate: {e}"))
}

fn rsa_key_of(cert: &Certificate, what: &str) -> Result<rsa::PublicKey, String> {
    let spki = cert.tbs_certificate().subject_public_key_info().to_der().map_err(|e| format!("{what}: {e}"))?;
    rsa::PublicKey::from_public_key_der(&spki).map_err(|e| format!("{what}: not an RSA key: {e}"))
}

fn check_signed_by(cert: &Certificate, issuer: &Certificate, what: &str) -> Result<(), String> {
    if cert.signature_algorithm().oid.to_string() != SHA256_WITH_RSA {
        return Err(format!(
            "{what}: signature algorithm {} (only sha256WithRSAEncryption is accepted)",
            cert.signature_algorithm().oid
        ));
    }
    let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(rsa_key_of(issuer, "issuer")?);
    let tbs = cert.tbs_certificate().to_der().map_err(|e| format!("{what}: {e}"))?;
    let sig = rsa::pkcs1v15::Signature::try_from(cert.signature().raw_bytes()).map_err(|e| format!("{what}: {e}"))?;
    key.verify(&tbs, &sig).map_err(|_| format!("{what}: the signature does not verify with its issuer's key"))
}

/// The RSA key `ek_cert` certifies (what a broker encrypts a credential to).
pub fn certified_key(ek_cert: &[u8]) -> Result<rsa::PublicKey, String> {
    rsa_key_of(&parse(ek_cert, "EK certificate")?, "EK certificate")
}

/// Check that `ek_cert` certifies `ek` and chains through `intermediates` (issuer of the EK
/// certificate first) to `root`, which must sign itself. All certificates DER.
pub fn verify(ek_cert: &[u8], ek: &rsa::PublicKey, intermediates: &[Vec<u8>], root: &[u8]) -> Result<(), String> {
    let leaf = parse(ek_cert, "EK certificate")?;
    if &rsa_key_of(&leaf, "EK certificate")? != ek {
        return Err(String::from("EK certificate: it certifies another key than this TPM's EK"));
    }
    let mut chain = vec![leaf];
    for (i, c) in intermediates.iter().enumerate() {
        chain.push(parse(c, &format!("intermediate certificate {i}"))?);
    }
    let root_cert = parse(root, "root certificate")?;
    chain.push(root_cert.clone());
    for pair in chain.windows(2) {
        let what = format!("certificate {}", pair[0].tbs_certificate().subject());
        if pair[0].tbs_certificate().issuer() != pair[1].tbs_certificate().subject() {
            return Err(format!(
                "{what}: issued by {}, not by {}",
                pair[0].tbs_certificate().issuer(),
                pair[1].tbs_certificate().subject()
            ));
        }
        check_signed_by(&pair[0], &pair[1], &what)?;
    }
    check_signed_by(&root_cert, &root_cert, "root certificate")
}

/// DER from PEM (one certificate).
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    pem_block(pem, "CERTIFICATE")
}

/// The DER of the first PEM block labelled `label` (`CERTIFICATE`, `PUBLIC KEY`).
pub fn pem_block(pem: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = alloc::format!("-----BEGIN {label}-----");
    let mut lines = pem.lines().skip_while(|l| l.trim() != begin);
    if lines.next().is_none() {
        return Err(alloc::format!("PEM: no {label} block"));
    }
    let body: String = lines.take_while(|l| !l.starts_with("-----END")).collect();
    crate::b64::STANDARD.decode(body.trim()).map_err(|_| alloc::format!("PEM: the {label} block is not base64"))
}
