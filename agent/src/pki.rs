//! On the host (the key broker, `veil verify`): X.509 path validation of the attestation
//! chains (Intel's PCK and TCB signing chains, AMD's VCEK/VLEK chains). The path itself is
//! rustls-webpki's: each signature, CA flags (basicConstraints cA on every issuer, none on the
//! leaf), path-length constraints, every certificate's validity at the verification time, and
//! revocation from the CRLs given (their signatures, their issuers' cRLSign, their nextUpdate).
//! What webpki leaves to its caller is the vendor's profile, checked here on the verified path
//! with x509-cert: key usage (webpki ignores the keyUsage extension), the subject names of the
//! leaf and of its issuer, and the number of certificates between the leaf and the root.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use der::Decode;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use webpki::{
    BorrowedCertRevocationList, CertRevocationList, EndEntityCert, ExpirationPolicy, ExtendedKeyUsageValidator,
    KeyPurposeIdIter, RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_cert::Certificate;
use x509_cert::ext::pkix::KeyUsage as KeyUsageExt;

/// ECDSA P-256 with SHA-256: every certificate and CRL of Intel's SGX/TDX PKI.
pub const INTEL_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[webpki::ring::ECDSA_P256_SHA256];
/// RSASSA-PSS with SHA-384 (MGF1-SHA-384, salt 48): AMD's ARK signs the ASK, the ASK the VCEK,
/// and AMD's CRLs; some VLEK chains use ECDSA P-384 with SHA-384.
pub const AMD_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] =
    &[webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY, &RsaPssSha384ExplicitTrailer, webpki::ring::ECDSA_P384_SHA384];

/// RSASSA-PSS SHA-384 as AMD's ASKs and older (Milan) VCEKs name it: with the default
/// trailerField (`[3] INTEGER 1`) written out, which DER omits. webpki matches algorithm
/// identifiers byte for byte and knows only the DER form (what newer Genoa and Turin VCEKs
/// carry), so this names AMD's encoding and verifies with webpki's own RSA-PSS SHA-384: the
/// parameters are the same (SHA-384, MGF1-SHA-384, salt 48, trailer 1).
#[derive(Debug)]
struct RsaPssSha384ExplicitTrailer;

impl SignatureVerificationAlgorithm for RsaPssSha384ExplicitTrailer {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), rustls_pki_types::InvalidSignature> {
        webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY.verify_signature(public_key, message, signature)
    }
    fn public_key_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY.public_key_alg_id()
    }
    fn signature_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        // OID rsassaPss; SEQUENCE { [0] sha384 NULL, [1] mgf1(sha384 NULL), [2] 48, [3] 1 }.
        rustls_pki_types::AlgorithmIdentifier::from_slice(&[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x39, 0xa0, 0x0f, 0x30, 0x0d, 0x06,
            0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09,
            0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
            0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x30, 0xa3, 0x03, 0x02, 0x01, 0x01,
        ])
    }
}

/// What a vendor's chain must look like, beyond what webpki checks.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// The leaf, in messages ("the PCK certificate").
    pub what: &'static str,
    /// The leaf's subject common name must be one of these.
    pub leaf_cn: &'static [&'static str],
    /// The certificates between the leaf and the root, and the common names each may have
    /// (leaf's issuer first); empty: the root issues the leaf.
    pub intermediates: &'static [&'static [&'static str]],
    /// The signature algorithms accepted anywhere on the path and on the CRLs.
    pub algorithms: &'static [&'static dyn SignatureVerificationAlgorithm],
    /// Must every certificate below the root be covered by a CRL of its issuer (Intel: the root
    /// CA CRL and the PCK CRL), or only those whose issuer published one (AMD: the ARK's CRL
    /// revokes ASKs; no CRL covers a VCEK)?
    pub every_certificate_has_a_crl: bool,
}

/// Intel's and AMD's profiles define no extended key usage for these certificates (they carry
/// none): a well-formed EKU extension is not what decides, the names and the path are.
struct AnyExtendedKeyUsage;

impl ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for id in iter {
            id?;
        }
        Ok(())
    }
}

/// How missing CRLs are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crls {
    /// The profile's CRLs must be given: a missing one is a refusal.
    Required,
    /// The operator allowed missing CRLs (`--allow-missing-crl`): those given are still used.
    AllowMissing,
}

/// A certificate's subject common name (empty when it has none).
pub fn common_name(name: &x509_cert::name::Name) -> String {
    name.common_name().ok().flatten().map(|cn| cn.value().into_owned()).unwrap_or_default()
}

fn key_usage(cert: &Certificate) -> Result<Option<KeyUsageExt>, String> {
    cert.tbs_certificate()
        .get_extension::<KeyUsageExt>()
        .map(|o| o.map(|(_, ku)| ku))
        .map_err(|e| format!("{}: a malformed keyUsage extension: {e}", cert.tbs_certificate().subject()))
}

fn explain(e: webpki::Error, what: &str) -> String {
    use webpki::Error as E;
    let why = match &e {
        E::UnknownIssuer => "no path to the root: an issuer is missing or a signature does not verify".to_string(),
        E::EndEntityUsedAsCa => {
            "a certificate that is not a CA (basicConstraints cA false or absent) issued another".into()
        }
        E::CaUsedAsEndEntity => "the leaf is a CA certificate".into(),
        E::PathLenConstraintViolated => "a CA's path length constraint is exceeded".into(),
        E::CertExpired { .. } => "a certificate on the path has expired at the verification time".into(),
        E::CertNotValidYet { .. } => "a certificate on the path is not yet valid at the verification time".into(),
        E::CertRevoked => "a certificate on the path is revoked by its issuer's CRL".into(),
        E::UnknownRevocationStatus => {
            "no CRL of its issuer covers a certificate on the path (give the CRL, or allow missing CRLs)".into()
        }
        E::CrlExpired { .. } => "a CRL is past its nextUpdate at the verification time: fetch a current one".into(),
        E::InvalidCrlSignatureForPublicKey => "a CRL's signature does not verify with its issuer's key".into(),
        E::IssuerNotCrlSigner => "a CRL's issuer may not sign CRLs (keyUsage without cRLSign)".into(),
        E::InvalidSignatureForPublicKey => "a signature on the path does not verify".into(),
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::UnsupportedCrlSignatureAlgorithmContext(_) => "a signature algorithm this vendor does not use".into(),
        other => format!("{other:?}"),
    };
    format!("{what}: {why}")
}

/// Validate `leaf` (DER) up to the pinned root `anchor` (DER) through `intermediates` (DER, any
/// order; those not on the path are ignored) at `at` (seconds since the epoch), with the CRLs
/// `crls` (DER), and check `profile` on the verified path. Returns the path's certificates,
/// leaf first, root last.
pub fn validate(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    anchor: &[u8],
    at: u64,
    crls: &[Vec<u8>],
    missing: Crls,
    profile: &Profile,
) -> Result<Vec<Certificate>, String> {
    let what = profile.what;
    let anchor_der = CertificateDer::from(anchor);
    let anchors = [webpki::anchor_from_trusted_cert(&anchor_der)
        .map_err(|e| format!("the root is not a usable certificate: {e:?}"))?
        .to_owned()];
    let leaf_der = CertificateDer::from(leaf);
    let ee =
        EndEntityCert::try_from(&leaf_der).map_err(|e| format!("{what}: not a certificate webpki accepts: {e:?}"))?;
    let inter: Vec<CertificateDer<'_>> = intermediates.iter().map(|d| CertificateDer::from(d.as_slice())).collect();
    let parsed_crls = crls
        .iter()
        .map(|d| {
            BorrowedCertRevocationList::from_der(d.as_slice())
                .map(CertRevocationList::from)
                .map_err(|e| format!("a CRL that is not one: {e:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let crl_refs: Vec<&CertRevocationList<'_>> = parsed_crls.iter().collect();
    let status = if profile.every_certificate_has_a_crl && missing == Crls::Required {
        UnknownStatusPolicy::Deny
    } else {
        UnknownStatusPolicy::Allow
    };
    let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
        b.with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(status)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build()
    });
    if revocation.is_none() && missing == Crls::Required {
        return Err(format!("{what}: no CRL given (give the vendor's CRLs, or allow missing CRLs)"));
    }
    if !profile.every_certificate_has_a_crl
        && missing == Crls::Required
        && !parsed_crls.iter().any(|c| c.issuer() == anchors[0].subject.as_ref())
    {
        // The root's CRL revokes the intermediates; webpki checks it (signature, nextUpdate,
        // serials) when it is given, and it must be.
        return Err(format!("{what}: no CRL of the root is given (give the vendor's CRL, or allow missing CRLs)"));
    }
    let usage = AnyExtendedKeyUsage;
    let path = ee
        .verify_for_usage(
            profile.algorithms,
            &anchors,
            &inter,
            UnixTime::since_unix_epoch(core::time::Duration::from_secs(at)),
            &usage,
            revocation,
            None,
        )
        .map_err(|e| explain(e, what))?;
    let mut chain = Vec::new();
    chain.push(Certificate::from_der(leaf).map_err(|e| format!("{what}: {e}"))?);
    for c in path.intermediate_certificates() {
        chain.push(Certificate::from_der(c.der().as_ref()).map_err(|e| format!("{what}: an intermediate: {e}"))?);
    }
    chain.push(Certificate::from_der(anchor).map_err(|e| format!("the root: {e}"))?);

    // The vendor's profile on the verified path.
    let leaf_cert = &chain[0];
    let cn = common_name(leaf_cert.tbs_certificate().subject());
    if !profile.leaf_cn.contains(&cn.as_str()) {
        return Err(format!("{what}: its subject is {cn:?}, not {}", profile.leaf_cn.join(" or ")));
    }
    if let Some(ku) = key_usage(leaf_cert)?
        && (!ku.digital_signature() || ku.key_cert_sign())
    {
        return Err(format!("{what}: its keyUsage does not allow signing data only (digitalSignature)"));
    }
    let between = &chain[1..chain.len() - 1];
    if between.len() != profile.intermediates.len() {
        return Err(format!(
            "{what}: {} certificates between it and the root, not {}",
            between.len(),
            profile.intermediates.len()
        ));
    }
    for (cert, names) in between.iter().zip(profile.intermediates) {
        let cn = common_name(cert.tbs_certificate().subject());
        if !names.contains(&cn.as_str()) {
            return Err(format!("{what}: issued through {cn:?}, not {}", names.join(" or ")));
        }
    }
    for cert in &chain[1..] {
        match key_usage(cert)? {
            Some(ku) if ku.key_cert_sign() => {}
            _ => {
                return Err(format!(
                    "{what}: the CA {:?} has no keyUsage keyCertSign",
                    common_name(cert.tbs_certificate().subject())
                ));
            }
        }
    }
    Ok(chain)
}

/// The DER certificates of a PEM bundle, in order. Text between the blocks (and a quote's
/// trailing NUL) is ignored, as Intel's and AMD's tools do; each block is decoded strictly.
pub fn pem_bundle(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = find(rest, BEGIN) {
        let block = &rest[start..];
        let end = find(block, END).ok_or("an unterminated PEM certificate")? + END.len();
        let (label, der) = der::pem::decode_vec(&block[..end]).map_err(|e| format!("not a PEM certificate: {e}"))?;
        if label != "CERTIFICATE" {
            return Err(format!("a PEM {label} where a certificate was expected"));
        }
        out.push(der);
        rest = &block[end..];
    }
    if out.is_empty() {
        return Err(String::from("no PEM certificate"));
    }
    Ok(out)
}

/// A certificate in PEM or DER, as DER.
pub fn to_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let mut all = pem_bundle(bytes)?;
        if all.len() != 1 {
            return Err(format!("{} certificates where one was expected", all.len()));
        }
        Ok(all.remove(0))
    } else {
        Ok(bytes.to_vec())
    }
}
