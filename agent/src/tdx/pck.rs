//! On the host (a key broker, `veil verify`): Intel's certificate chains of a TD quote's
//! verification. The PCK certificate chain the quote carries (certification data type 5, PEM:
//! PCK certificate, Intel SGX PCK Platform or Processor CA, root) and the TCB signing chain of
//! the collateral (Intel SGX TCB Signing, root) are validated by [`crate::pki`] (rustls-webpki)
//! up to Intel's SGX root CA, which the caller pins, with Intel's profile: the PCK leaf is no CA
//! and is issued by the Platform or Processor CA, which the root issues (its path length 0);
//! the collateral's signer is Intel's TCB signing certificate, issued by the root; each
//! certificate within its validity at the verification time; each covered by its issuer's CRL
//! (the root CA CRL, the PCK CRL). The PCK key is what
//! [`Quote::verify_signatures`](super::quote::Quote::verify_signatures) checks the QE report
//! with; the PCK certificate's SGX extensions give the platform's TCB.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use der::Decode;
use der::asn1::{ObjectIdentifier, OctetString};
use x509_cert::Certificate;

use crate::pki::{self, Crls, Profile};

/// Intel's PCK certificate profile (Intel SGX PCK Certificate and CRL Profile).
pub const PCK_PROFILE: Profile = Profile {
    what: "the PCK certificate",
    leaf_cn: &["Intel SGX PCK Certificate"],
    intermediates: &[&["Intel SGX PCK Platform CA", "Intel SGX PCK Processor CA"]],
    algorithms: pki::INTEL_ALGORITHMS,
    every_certificate_has_a_crl: true,
};

/// Intel's TCB signing certificate, which signs TCB info and QE identities.
pub const TCB_SIGNING_PROFILE: Profile = Profile {
    what: "the collateral's signer",
    leaf_cn: &["Intel SGX TCB Signing"],
    intermediates: &[],
    algorithms: pki::INTEL_ALGORITHMS,
    every_certificate_has_a_crl: true,
};

pub(crate) fn p256_key(cert: &Certificate) -> Result<p256::ecdsa::VerifyingKey, String> {
    let key = cert.tbs_certificate().subject_public_key_info().subject_public_key.raw_bytes();
    p256::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(|_| String::from("a certificate key that is not P-256"))
}

/// A certificate's P-256 key, SEC1 uncompressed (what [`Quote::verify_signatures`] takes).
///
/// [`Quote::verify_signatures`]: super::quote::Quote::verify_signatures
pub fn p256_key_of(cert: &Certificate) -> Result<Vec<u8>, String> {
    Ok(p256_key(cert)?.to_sec1_point(false).as_bytes().to_vec())
}

/// Validate a PEM chain (leaf first, Intel's root last, as Intel serves it) with `profile` up
/// to the pinned `root` (PEM or DER) at `now` (seconds since the epoch) with `crls` (DER);
/// the verified path, leaf first.
pub fn verify_chain(
    pem: &[u8],
    root: &[u8],
    now: u64,
    crls: &[Vec<u8>],
    missing: Crls,
    profile: &Profile,
) -> Result<Vec<Certificate>, String> {
    let chain = pki::pem_bundle(pem)?;
    if chain.len() < 2 {
        return Err(String::from("a certificate chain of fewer than two certificates"));
    }
    let root_der = pki::to_der(root)?;
    if chain.last().expect("two or more") != &root_der {
        return Err(String::from("the chain does not end at the pinned Intel SGX root CA"));
    }
    pki::validate(&chain[0], &chain[1..chain.len() - 1], &root_der, now, crls, missing, profile)
}

/// Intel's SGX extensions OID 1.2.840.113741.1.13.1.
const SGX_EXTENSIONS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1");
const SGX_TCB: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1.2");
const SGX_PCE_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1.3");
const SGX_FMSPC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1.4");

/// One entry of Intel's SGX extensions: SEQUENCE { OID, value }.
#[derive(der::Sequence)]
struct SgxEntry {
    id: ObjectIdentifier,
    value: der::Any,
}

/// The TCB values of a PCK certificate's SGX extensions (Intel's PCK certificate profile):
/// TCB (…1.2: components 1-16, PCESVN 17), PCE-ID (…1.3), FMSPC (…1.4).
pub fn sgx_extensions(cert: &Certificate) -> Result<super::collateral::PckTcb, String> {
    let bad = |e: der::Error| format!("PCK certificate: malformed SGX extensions: {e}");
    let ext = cert
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == SGX_EXTENSIONS)
        .ok_or("the PCK certificate has no SGX extensions")?;
    let entries = Vec::<SgxEntry>::from_der(ext.extn_value.as_bytes()).map_err(bad)?;
    let (mut components, mut pcesvn, mut fmspc, mut pce_id) = ([None::<u8>; 16], None, None, None);
    let octets = |e: &SgxEntry| e.value.decode_as::<OctetString>().map(|o| o.as_bytes().to_vec()).map_err(bad);
    for entry in &entries {
        if entry.id == SGX_TCB {
            for c in entry.value.decode_as::<Vec<SgxEntry>>().map_err(bad)? {
                let arcs: Vec<u32> = c.id.arcs().collect();
                let Some((&last, parent)) = arcs.split_last() else { continue };
                if ObjectIdentifier::from_arcs(parent.iter().copied()).ok() != Some(SGX_TCB) {
                    continue;
                }
                match last {
                    n @ 1..=16 => {
                        let svn =
                            c.value.decode_as::<u8>().map_err(|_| "PCK certificate: a component SVN above 255")?;
                        components[n as usize - 1] = Some(svn);
                    }
                    17 => {
                        pcesvn = Some(c.value.decode_as::<u16>().map_err(|_| "PCK certificate: a PCESVN out of range")?)
                    }
                    _ => {}
                }
            }
        } else if entry.id == SGX_PCE_ID {
            pce_id =
                Some(<[u8; 2]>::try_from(octets(entry)?).map_err(|_| "PCK certificate: a PCE-ID that is not 2 bytes")?);
        } else if entry.id == SGX_FMSPC {
            fmspc =
                Some(<[u8; 6]>::try_from(octets(entry)?).map_err(|_| "PCK certificate: an FMSPC that is not 6 bytes")?);
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

/// The PCK certificate's serial number (DER INTEGER content), for messages.
pub fn serial(cert: &Certificate) -> String {
    hex::encode(cert.tbs_certificate().serial_number().as_bytes())
}
