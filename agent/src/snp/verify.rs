//! On the host (a key broker, `veil verify`): an SEV-SNP attestation report checked the way
//! Trustee's SNP verifier does it, with virtee's `sev` crate (the same crate, whose serde form
//! of the report is Trustee's SNP evidence format): the report's ECDSA P-384 signature by the
//! VCEK or VLEK, that key's certificate signed by the ASK (or ASVK), the ASK by the ARK, and the
//! ARK equal to AMD's own for the product (Milan, Genoa, Turin), built into `sev`.

use alloc::format;
use alloc::string::String;

use sev::certs::snp::{Certificate, Chain, Verifiable, builtin, ca};
use sev::firmware::guest::AttestationReport;

/// AMD product lines whose root keys are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// 3rd generation EPYC.
    Milan,
    /// 4th generation EPYC.
    Genoa,
    /// 5th generation EPYC.
    Turin,
}

impl Product {
    fn builtin_ark(self) -> Result<Certificate, String> {
        match self {
            Product::Milan => builtin::milan::ark(),
            Product::Genoa => builtin::genoa::ark(),
            Product::Turin => builtin::turin::ark(),
        }
        .map_err(|e| format!("the built-in ARK: {e}"))
    }
}

/// A certificate in DER or PEM.
fn certificate(bytes: &[u8], what: &str) -> Result<Certificate, String> {
    let parsed =
        if bytes.starts_with(b"-----BEGIN") { Certificate::from_pem(bytes) } else { Certificate::from_der(bytes) };
    parsed.map_err(|e| format!("{what}: not a certificate: {e}"))
}

/// Verify `report` (1184 bytes) against the VCEK or VLEK `vek`, issued by `ask` (ASK or ASVK),
/// issued by `ark`, which must be AMD's root for `product`. Returns the parsed report.
pub fn verify_report(
    report: &[u8],
    vek: &[u8],
    ask: &[u8],
    ark: &[u8],
    product: Product,
) -> Result<AttestationReport, String> {
    let parsed = AttestationReport::from_bytes(report).map_err(|e| format!("attestation report: {e}"))?;
    let ark = certificate(ark, "ARK")?;
    let trusted = product.builtin_ark()?;
    if ark.to_der().map_err(|e| format!("ARK: {e}"))? != trusted.to_der().map_err(|e| format!("built-in ARK: {e}"))? {
        return Err(format!("the ARK is not AMD's {product:?} root key"));
    }
    let chain = Chain { ca: ca::Chain { ark, ask: certificate(ask, "ASK")? }, vek: certificate(vek, "VEK")? };
    (&chain, &parsed).verify().map_err(|e| format!("attestation report: {e}"))?;
    Ok(parsed)
}
