//! EK certificates, as a key broker checks them (host-only, std): the certificate the TPM
//! keeps in NV (command::EK_CERT_RSA_NV_INDEX) must certify exactly the EK that the TPM
//! derives from the default template, and chain, signature by signature
//! (sha256WithRSAEncryption), to a root the broker trusts: the manufacturer's CA, or for
//! swtpm the local CA that `swtpm_setup --create-ek-cert` uses. Beyond the signatures, every
//! certificate of the chain must be valid at the time the caller gives, and the certificates
//! must have the fields the TCG EK Credential Profile (for TPM Family 2.0, section 3.2) gives
//! them, each its own refusal:
//! - the EK certificate: Key Usage present, critical, with keyEncipherment (an RSA EK
//!   decrypts credentials; it signs nothing) and without keyCertSign; no Basic Constraints
//!   cA; the EK certificate marker, Extended Key Usage tcg-kp-EKCertificate (2.23.133.8.1);
//!   a Subject Alternative Name naming the TPM (tcg-at-tpmManufacturer, 2.23.133.2.1);
//! - every CA above it: Basic Constraints cA, and Key Usage keyCertSign when it has one.

use der::{Decode, Encode};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};

/// sha256WithRSAEncryption.
const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
/// tcg-kp-EKCertificate: the Extended Key Usage that marks an EK certificate.
const TCG_KP_EK_CERTIFICATE: &str = "2.23.133.8.1";
/// tcg-at-tpmManufacturer: the TPM's manufacturer, in the Subject Alternative Name.
const TCG_AT_TPM_MANUFACTURER: &str = "2.23.133.2.1";

/// `cert` is within its validity period at `now` (seconds since the Unix epoch).
fn check_valid_at(cert: &Certificate, now: u64, what: &str) -> Result<(), String> {
    let validity = cert.tbs_certificate().validity();
    let not_before = validity.not_before.to_unix_duration().as_secs();
    let not_after = validity.not_after.to_unix_duration().as_secs();
    if now < not_before {
        return Err(format!("{what}: not valid before {} (it is not yet valid)", validity.not_before));
    }
    if now > not_after {
        return Err(format!("{what}: expired at {}", validity.not_after));
    }
    Ok(())
}

/// The fields the TCG EK Credential Profile gives an EK certificate (see the module comment).
fn check_ek_profile(cert: &Certificate) -> Result<(), String> {
    let tbs = cert.tbs_certificate();
    let what = "EK certificate";
    match tbs.get_extension::<KeyUsage>().map_err(|e| format!("{what}: Key Usage: {e}"))? {
        None => return Err(format!("{what}: no Key Usage (the EK profile requires keyEncipherment)")),
        Some((false, _)) => return Err(format!("{what}: its Key Usage is not critical")),
        Some((true, ku)) if !ku.key_encipherment() => {
            return Err(format!("{what}: its Key Usage lacks keyEncipherment (not an encryption EK)"));
        }
        Some((true, ku)) if ku.key_cert_sign() => {
            return Err(format!("{what}: its Key Usage allows keyCertSign (a CA key, not an EK)"));
        }
        Some(_) => {}
    }
    if let Some((_, bc)) =
        tbs.get_extension::<BasicConstraints>().map_err(|e| format!("{what}: Basic Constraints: {e}"))?
        && bc.ca
    {
        return Err(format!("{what}: it is a CA certificate (Basic Constraints cA)"));
    }
    let eku = tbs.get_extension::<ExtendedKeyUsage>().map_err(|e| format!("{what}: Extended Key Usage: {e}"))?;
    if !eku.is_some_and(|(_, eku)| eku.0.iter().any(|oid| oid.to_string() == TCG_KP_EK_CERTIFICATE)) {
        return Err(format!(
            "{what}: no EK certificate marker (Extended Key Usage tcg-kp-EKCertificate {TCG_KP_EK_CERTIFICATE})"
        ));
    }
    let san = tbs.get_extension::<SubjectAltName>().map_err(|e| format!("{what}: Subject Alternative Name: {e}"))?;
    let names_tpm = san.is_some_and(|(_, san)| {
        san.0.iter().any(|gn| match gn {
            GeneralName::DirectoryName(name) => name.iter().any(|atv| atv.oid.to_string() == TCG_AT_TPM_MANUFACTURER),
            _ => false,
        })
    });
    if !names_tpm {
        return Err(format!(
            "{what}: its Subject Alternative Name does not name the TPM (tcg-at-tpmManufacturer {TCG_AT_TPM_MANUFACTURER})"
        ));
    }
    Ok(())
}

/// A certificate that issues others: Basic Constraints cA, and keyCertSign if it has a Key
/// Usage.
fn check_ca(cert: &Certificate, what: &str) -> Result<(), String> {
    let tbs = cert.tbs_certificate();
    let bc = tbs.get_extension::<BasicConstraints>().map_err(|e| format!("{what}: Basic Constraints: {e}"))?;
    if !bc.is_some_and(|(_, bc)| bc.ca) {
        return Err(format!("{what}: not a CA (no Basic Constraints cA) but it issued a certificate"));
    }
    if let Some((_, ku)) = tbs.get_extension::<KeyUsage>().map_err(|e| format!("{what}: Key Usage: {e}"))?
        && !ku.key_cert_sign()
    {
        return Err(format!("{what}: its Key Usage lacks keyCertSign"));
    }
    Ok(())
}

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
/// certificate first) to `root`, which must sign itself; every certificate valid at `now`
/// (seconds since the Unix epoch), the EK certificate and the CAs shaped as the TCG EK
/// Credential Profile says (module comment). All certificates DER.
pub fn verify(
    ek_cert: &[u8],
    ek: &rsa::PublicKey,
    intermediates: &[Vec<u8>],
    root: &[u8],
    now: u64,
) -> Result<(), String> {
    let leaf = parse(ek_cert, "EK certificate")?;
    if &rsa_key_of(&leaf, "EK certificate")? != ek {
        return Err(String::from("EK certificate: it certifies another key than this TPM's EK"));
    }
    check_valid_at(&leaf, now, "EK certificate")?;
    check_ek_profile(&leaf)?;
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
        let issuer = format!("CA certificate {}", pair[1].tbs_certificate().subject());
        check_valid_at(&pair[1], now, &issuer)?;
        check_ca(&pair[1], &issuer)?;
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
    let mut lines = pem.lines().skip_while(|l| l.trim_ascii() != begin);
    if lines.next().is_none() {
        return Err(alloc::format!("PEM: no {label} block"));
    }
    let body: String = lines.take_while(|l| !l.starts_with("-----END")).collect();
    crate::b64::STANDARD.decode(body.trim_ascii()).map_err(|_| alloc::format!("PEM: the {label} block is not base64"))
}
