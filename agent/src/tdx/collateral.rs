//! On the host: the DCAP verdict on a TD quote from Intel's collateral, offline. The collateral
//! is the PCS/PCCS JSON a verifier caches (the form dcap-qvl and Trustee store: TCB info and
//! QE identity as the exact JSON Intel signed, their ECDSA signatures in hex, the issuer
//! chains in PEM). [`verify`] checks, at a given time:
//!
//! 1. the quote's PCK certificate chain up to the pinned Intel SGX root CA with Intel's
//!    profile, each certificate within its validity and not revoked by the root CA CRL or the
//!    PCK CRL (`pck::verify_chain`, rustls-webpki), and the quote's signatures to the PCK key;
//! 2. the TCB info and the QE identity: signed by Intel's TCB signing certificate (issued by
//!    the same root, not revoked), within issueDate..nextUpdate;
//! 3. the quoting enclave: Intel's QE vendor ID in the quote header; its report's MRSIGNER
//!    (exactly), ISVPRODID, MISCSELECT and ATTRIBUTES as the QE identity says, its ISVSVN's TCB
//!    level;
//! 4. the platform: FMSPC and PCE-ID of the PCK certificate's SGX extensions equal the TCB
//!    info's, then the first TCB level whose SGX components and PCESVN the PCK certificate
//!    meets and whose TDX components the quote's TEE_TCB_SVN meets (a TD report 1.5's current
//!    TEE_TCB_SVN2 must meet a level too); the TDX module's identity as Intel's QVL checks it:
//!    MRSIGNER_SEAM and SEAM_ATTRIBUTES against the TCB info's `tdxModule` for major version 0,
//!    against `tdxModuleIdentities` "TDX_<major>" (with its ISVSVN levels) above;
//!
//! and combines the three TCB statuses into one (the QE's or the module's OutOfDate makes an
//! UpToDate platform OutOfDate), with the advisories. The operator decides which statuses to
//! accept; this module only states it.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use p256::ecdsa::signature::Verifier;
use serde::Deserialize;

use super::pck;
use super::quote::Quote;
use crate::pki::Crls;

/// The collateral for one quote, as a PCCS or dcap-qvl hands it out.
#[derive(Debug, Clone, Deserialize)]
pub struct Collateral {
    /// The PEM chain that signed the TCB info (TCB signing certificate, root).
    pub tcb_info_issuer_chain: String,
    /// The TCB info JSON, exactly as signed.
    pub tcb_info: String,
    /// Its signature (r || s, hex).
    pub tcb_info_signature: String,
    /// The PEM chain that signed the QE identity.
    pub qe_identity_issuer_chain: String,
    /// The QE identity JSON, exactly as signed.
    pub qe_identity: String,
    /// Its signature (r || s, hex).
    pub qe_identity_signature: String,
    /// The CRL of the PCK certificate's issuer (Platform or Processor CA): DER in hex (as
    /// dcap-qvl stores it) or PEM.
    #[serde(default)]
    pub pck_crl: Option<String>,
    /// The CRL of Intel's SGX root CA (it revokes Platform/Processor CAs and TCB signing
    /// certificates): DER in hex or PEM.
    #[serde(default)]
    pub root_ca_crl: Option<String>,
}

impl Collateral {
    /// Read the collateral JSON (`{"tcb_info": ..., "tcb_info_signature": ..., ...}`).
    pub fn from_json(bytes: &[u8]) -> Result<Collateral, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("TDX collateral: {e}"))
    }

    /// The CRLs it carries, DER.
    pub fn crls(&self) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        for (text, what) in [(&self.root_ca_crl, "root_ca_crl"), (&self.pck_crl, "pck_crl")] {
            let Some(text) = text else { continue };
            let text = text.trim();
            let der = if text.starts_with("-----BEGIN") {
                let (label, der) = der::pem::decode_vec(text.as_bytes())
                    .map_err(|e| format!("TDX collateral: {what} is not PEM: {e}"))?;
                if label != "X509 CRL" {
                    return Err(format!("TDX collateral: {what} is a PEM {label}, not an X509 CRL"));
                }
                der
            } else {
                hex_bytes(text, what).map_err(|e| format!("TDX collateral: {e}"))?
            };
            out.push(der);
        }
        Ok(out)
    }
}

/// Intel's QE vendor ID (quote header).
pub const INTEL_QE_VENDOR_ID: [u8; 16] =
    [0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07];

/// The status of a platform whose TCB is below every level the TCB info lists.
pub const NOT_SUPPORTED: &str = "TcbNotSupported";

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The combined TCB status (UpToDate, SWHardeningNeeded, ConfigurationNeeded,
    /// ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded, Revoked,
    /// or [`NOT_SUPPORTED`]).
    pub status: String,
    /// The platform TCB level's status.
    pub platform_status: String,
    /// The quoting enclave's.
    pub qe_status: String,
    /// The TDX module identity's, when the module's major version is above 0.
    pub module_status: Option<String>,
    /// A TD report 1.5's current TCB (TEE_TCB_SVN2): its platform level's status.
    pub current_status: Option<String>,
    /// The advisories of the matched levels.
    pub advisory_ids: Vec<String>,
    /// The platform's FMSPC.
    pub fmspc: [u8; 6],
    /// The TCB info's tcbEvaluationDataNumber.
    pub tcb_evaluation_data_number: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbInfo {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    fmspc: String,
    pce_id: String,
    tcb_evaluation_data_number: u64,
    #[serde(default)]
    tdx_module: Option<ModuleBase>,
    #[serde(default)]
    tdx_module_identities: Vec<ModuleIdentity>,
    tcb_levels: Vec<TcbLevel>,
}

/// The TCB info's `tdxModule`: the module identity of major version 0.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModuleBase {
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbLevel {
    tcb: Tcb,
    tcb_status: String,
    #[serde(default, rename = "advisoryIDs")]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
struct Tcb {
    sgxtcbcomponents: Vec<Component>,
    pcesvn: u16,
    tdxtcbcomponents: Vec<Component>,
}

#[derive(Deserialize)]
struct Component {
    svn: u8,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModuleIdentity {
    id: String,
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
    tcb_levels: Vec<IsvLevel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IsvLevel {
    tcb: IsvSvn,
    tcb_status: String,
    #[serde(default, rename = "advisoryIDs")]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
struct IsvSvn {
    isvsvn: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QeIdentity {
    id: String,
    issue_date: String,
    next_update: String,
    miscselect: String,
    miscselect_mask: String,
    attributes: String,
    attributes_mask: String,
    mrsigner: String,
    isvprodid: u16,
    tcb_levels: Vec<IsvLevel>,
}

/// Seconds since the epoch of an RFC 3339 UTC time as Intel writes it
/// ("2025-06-19T10:16:03Z", optionally with fractional seconds).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a time of the form YYYY-MM-DDTHH:MM:SSZ");
    let b = s.as_bytes();
    // ASCII only, so that the byte positions below are character boundaries.
    if !s.is_ascii() || b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':'
    {
        return Err(bad());
    }
    let fraction = &s[19..s.len() - 1];
    if !s.ends_with('Z')
        || !(fraction.is_empty()
            || fraction.len() > 1 && fraction.strip_prefix('.').is_some_and(|f| f.bytes().all(|c| c.is_ascii_digit())))
    {
        return Err(bad());
    }
    // Digits only: `parse` alone would take "+6" as a month.
    let num = |r: core::ops::Range<usize>| {
        s.get(r).filter(|t| t.bytes().all(|c| c.is_ascii_digit())).and_then(|t| t.parse::<u64>().ok()).ok_or_else(bad)
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&m) || !(1..=month_days).contains(&d) || hh > 23 || mm > 59 || ss > 60 || y < 1970 {
        return Err(bad());
    }
    // Days from the civil date (proleptic Gregorian), March-based years.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn hex_bytes(s: &str, what: &str) -> Result<Vec<u8>, String> {
    hex::decode(s).map_err(|_| format!("{what} is not hex"))
}

/// Where a collateral document's signer is checked: the pinned root, the time, the CRLs.
struct Anchor<'a> {
    root: &'a [u8],
    now: u64,
    crls: &'a [Vec<u8>],
    missing: Crls,
}

/// Check a collateral document: its issuer chain (Intel's TCB signing certificate, issued by
/// the root), the signature over the exact JSON, and parse it.
fn signed_json<'a, T: Deserialize<'a>>(
    json: &'a str,
    signature: &str,
    chain: &str,
    anchor: &Anchor<'_>,
    what: &str,
) -> Result<T, String> {
    let certs = pck::verify_chain(
        chain.as_bytes(),
        anchor.root,
        anchor.now,
        anchor.crls,
        anchor.missing,
        &pck::TCB_SIGNING_PROFILE,
    )
    .map_err(|e| format!("{what} issuer chain: {e}"))?;
    let key = pck::p256_key(&certs[0])?;
    let sig = p256::ecdsa::Signature::from_slice(&hex_bytes(signature, what)?)
        .map_err(|_| format!("{what}: a malformed signature"))?;
    key.verify(json.as_bytes(), &sig).map_err(|_| format!("{what}: Intel's signature does not verify"))?;
    serde_json::from_str(json).map_err(|e| format!("{what}: {e}"))
}

fn within(issue: &str, next: &str, now: u64, what: &str) -> Result<(), String> {
    let (from, until) = (parse_time(issue)?, parse_time(next)?);
    if now < from {
        return Err(format!("{what} was issued at {issue}, after the verification time"));
    }
    if now > until {
        return Err(format!("{what} expired at {next} (its nextUpdate): fetch current collateral"));
    }
    Ok(())
}

/// The values of the PCK certificate's SGX extensions the TCB evaluation uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PckTcb {
    /// SGX TCB component SVNs 1-16.
    pub components: [u8; 16],
    /// PCESVN.
    pub pcesvn: u16,
    /// FMSPC.
    pub fmspc: [u8; 6],
    /// PCE-ID.
    pub pce_id: [u8; 2],
}

/// Combine a platform status with the QE's or the module's (Intel's QVL rules: an OutOfDate
/// component makes the platform's status out of date, keeping a configuration need).
fn merge(platform: &str, other: &str) -> String {
    match (other, platform) {
        ("Revoked", _) | (_, "Revoked") => "Revoked",
        ("OutOfDate", "UpToDate" | "SWHardeningNeeded" | "OutOfDate") => "OutOfDate",
        ("OutOfDate", "ConfigurationNeeded" | "ConfigurationAndSWHardeningNeeded" | "OutOfDateConfigurationNeeded") => {
            "OutOfDateConfigurationNeeded"
        }
        _ => platform,
    }
    .to_string()
}

fn isv_level<'a>(levels: &'a [IsvLevel], svn: u16, what: &str) -> Result<&'a IsvLevel, String> {
    levels
        .iter()
        .find(|l| l.tcb.isvsvn <= svn)
        .ok_or_else(|| format!("{what} ISVSVN {svn} is below every TCB level Intel lists"))
}

fn masked_eq(value: &[u8], want: &str, mask: &str, what: &str) -> Result<(), String> {
    let (want, mask) = (hex_bytes(want, what)?, hex_bytes(mask, what)?);
    if want.len() != value.len() || mask.len() != value.len() {
        return Err(format!("{what}: a field of the wrong length"));
    }
    if value.iter().zip(&mask).map(|(v, m)| v & m).ne(want.iter().zip(&mask).map(|(w, m)| w & m)) {
        return Err(format!("{what} does not match Intel's identity"));
    }
    Ok(())
}

/// The first (highest) TCB level the platform meets: the PCK certificate's SGX components and
/// PCESVN, and the quote's TEE_TCB_SVN against the TDX components. With a TDX module of major
/// version > 0 (TEE_TCB_SVN[1]) its first two SVN bytes are judged by the module identity
/// instead.
fn platform_level<'a>(levels: &'a [TcbLevel], pck: &PckTcb, tee: &[u8; 16]) -> Option<&'a TcbLevel> {
    let first_tdx = if tee[1] > 0 { 2 } else { 0 };
    levels.iter().find(|l| {
        l.tcb.sgxtcbcomponents.len() == 16
            && l.tcb.tdxtcbcomponents.len() == 16
            && pck.pcesvn >= l.tcb.pcesvn
            && l.tcb.sgxtcbcomponents.iter().zip(pck.components).all(|(c, have)| have >= c.svn)
            && l.tcb.tdxtcbcomponents.iter().zip(tee).skip(first_tdx).all(|(c, have)| *have >= c.svn)
    })
}

/// The DCAP verdict on `quote` (raw bytes) at `now` (seconds since the epoch), with Intel's SGX
/// root CA `root` (PEM or DER) pinned; the collateral's CRLs are required unless `missing`
/// allows them to be absent.
pub fn verify(
    quote_bytes: &[u8],
    c: &Collateral,
    root: &[u8],
    now: u64,
    missing: Crls,
) -> Result<(Quote, Verdict), String> {
    let quote = super::quote::parse(quote_bytes).map_err(String::from)?;
    // 1. The PCK chain and the quote's signatures.
    let (kind, chain) = &quote.certification;
    if *kind != 5 {
        return Err(format!("certification data type {kind}: not a PCK certificate chain (type 5)"));
    }
    let crls = c.crls()?;
    let certs = pck::verify_chain(chain, root, now, &crls, missing, &pck::PCK_PROFILE)
        .map_err(|e| format!("PCK chain: {e}"))?;
    let pck_key = pck::p256_key(&certs[0])?;
    quote.verify_signatures(pck_key.to_sec1_point(false).as_bytes()).map_err(String::from)?;
    let pck_tcb = pck::sgx_extensions(&certs[0])?;

    // 2. The TCB info and the QE identity.
    let anchor = Anchor { root, now, crls: &crls, missing };
    let tcb: TcbInfo = signed_json(&c.tcb_info, &c.tcb_info_signature, &c.tcb_info_issuer_chain, &anchor, "TCB info")?;
    if tcb.id != "TDX" || tcb.version < 3 {
        return Err(format!("TCB info {} version {}: not TDX TCB info (version 3)", tcb.id, tcb.version));
    }
    within(&tcb.issue_date, &tcb.next_update, now, "the TCB info")?;
    let qe: QeIdentity =
        signed_json(&c.qe_identity, &c.qe_identity_signature, &c.qe_identity_issuer_chain, &anchor, "QE identity")?;
    if qe.id != "TD_QE" {
        return Err(format!("QE identity {}: not the TD quoting enclave's", qe.id));
    }
    within(&qe.issue_date, &qe.next_update, now, "the QE identity")?;

    // 3. The quoting enclave (its report: an SGX report body), Intel's.
    if quote.qe_vendor_id != INTEL_QE_VENDOR_ID {
        return Err(format!("the QE vendor ID {} is not Intel's", hex::encode(quote.qe_vendor_id)));
    }
    let r = &quote.qe_report;
    masked_eq(&r[16..20], &qe.miscselect, &qe.miscselect_mask, "the QE's MISCSELECT")?;
    masked_eq(&r[48..64], &qe.attributes, &qe.attributes_mask, "the QE's ATTRIBUTES")?;
    if hex_bytes(&qe.mrsigner, "QE identity mrsigner")? != r[128..160] {
        return Err(String::from("the QE's MRSIGNER is not Intel's"));
    }
    let prodid = u16::from_le_bytes([r[256], r[257]]);
    if prodid != qe.isvprodid {
        return Err(format!("the QE's ISVPRODID {prodid} is not the TD QE's {}", qe.isvprodid));
    }
    let qe_level = isv_level(&qe.tcb_levels, u16::from_le_bytes([r[258], r[259]]), "the QE's")?;

    // 4. The platform.
    if hex_bytes(&tcb.fmspc, "TCB info fmspc")? != pck_tcb.fmspc {
        return Err(format!(
            "the PCK certificate's FMSPC {} is not the TCB info's {}: collateral for another platform",
            hex::encode(pck_tcb.fmspc),
            tcb.fmspc
        ));
    }
    if hex_bytes(&tcb.pce_id, "TCB info pceId")? != pck_tcb.pce_id {
        return Err(String::from("the PCK certificate's PCE-ID is not the TCB info's"));
    }
    let tee = quote.body.tee_tcb_svn;
    // Below every level Intel lists: the TCB is not supported (Intel's QVL says the same).
    let (platform_status, mut advisory_ids) = match platform_level(&tcb.tcb_levels, &pck_tcb, &tee) {
        Some(level) => (level.tcb_status.clone(), level.advisory_ids.clone()),
        None => (String::from(NOT_SUPPORTED), Vec::new()),
    };
    let mut status = merge(&platform_status, &qe_level.tcb_status);
    advisory_ids.extend(qe_level.advisory_ids.iter().cloned());
    // The TDX module: its signer and attributes for every major version (Intel's QVL), its
    // ISVSVN level for major versions above 0.
    let module_identity = if tee[1] > 0 {
        let id = format!("TDX_{:02X}", tee[1]);
        let m = tcb
            .tdx_module_identities
            .iter()
            .find(|m| m.id.eq_ignore_ascii_case(&id))
            .ok_or_else(|| format!("the TCB info lists no TDX module identity {id}"))?;
        (id, m.mrsigner.as_str(), m.attributes.as_str(), m.attributes_mask.as_str(), Some(&m.tcb_levels))
    } else {
        let m =
            tcb.tdx_module.as_ref().ok_or("the TCB info has no tdxModule (the identity of module major version 0)")?;
        (String::from("tdxModule"), m.mrsigner.as_str(), m.attributes.as_str(), m.attributes_mask.as_str(), None)
    };
    let (id, mrsigner, attributes, mask, levels) = module_identity;
    if hex_bytes(mrsigner, "module mrsigner")? != quote.body.mr_signer_seam {
        return Err(format!(
            "the TDX module's MRSIGNER_SEAM {} is not {id}'s {mrsigner}",
            hex::encode(quote.body.mr_signer_seam)
        ));
    }
    // As Intel's QVL (QuoteVerifier.cpp): the attributes under the mask equal the identity's;
    // a bit outside the mask is one Intel declares not to matter.
    masked_eq(&quote.body.seam_attributes, attributes, mask, "the TDX module's SEAM_ATTRIBUTES")?;
    let mut module_status = None;
    if let Some(levels) = levels {
        let ml = isv_level(levels, u16::from(tee[0]), &format!("the TDX module ({id})"))?;
        status = merge(&status, &ml.tcb_status);
        advisory_ids.extend(ml.advisory_ids.iter().cloned());
        module_status = Some(ml.tcb_status.clone());
    }
    // A TD report 1.5 names the current TCB too: it must meet a level (as Intel's QVL requires);
    // below every level, the verdict is not supported.
    let current_status = quote.body.tee_tcb_svn2.map(|current| {
        platform_level(&tcb.tcb_levels, &pck_tcb, &current)
            .map(|l| l.tcb_status.clone())
            .unwrap_or_else(|| String::from(NOT_SUPPORTED))
    });
    if current_status.as_deref() == Some(NOT_SUPPORTED) {
        status = String::from(NOT_SUPPORTED);
    }
    advisory_ids.sort();
    advisory_ids.dedup();
    Ok((
        quote,
        Verdict {
            status,
            platform_status,
            qe_status: qe_level.tcb_status.clone(),
            module_status,
            current_status,
            advisory_ids,
            fmspc: pck_tcb.fmspc,
            tcb_evaluation_data_number: tcb.tcb_evaluation_data_number,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_unix_seconds() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2025-06-19T10:16:03Z"), Ok(1_750_328_163));
        assert_eq!(parse_time("2024-02-29T23:59:59Z"), Ok(1_709_251_199));
        assert_eq!(parse_time("2025-06-19T10:16:03.123Z"), Ok(1_750_328_163));
        assert!(parse_time("2025-06-19 10:16:03").is_err());
        assert!(parse_time("2025-13-19T10:16:03Z").is_err());
        assert!(parse_time("2025-06-19T10:16:03xZ").is_err());
        // Each separator wrong on its own, each field one past its range, a fraction without
        // digits, no Z: each refused with the form it should have.
        for bad in [
            "2025x06-19T10:16:03Z",
            "2025-06x19T10:16:03Z",
            "2025-06-19x10:16:03Z",
            "2025-06-19T10x16:03Z",
            "2025-06-19T10:16x03Z",
            "2025-06-19T10:16:03.Z",
            "2025-06-19T10:16:03xyZ",
            "2025-06-19T10:16:03.1aZ",
            "2025-06-19T10:16:03.1",
            "2025-06-19T10:16:03.12",
            "2025-06-19T10:16:03é",
            "2025-06-19T10:16:0é",
            "2025-06-19T10:16:03.é",
            "2025-00-19T10:16:03Z",
            "2025-06-00T10:16:03Z",
            "2025-06-32T10:16:03Z",
            "2025-06-19T24:16:03Z",
            "2025-06-19T10:60:03Z",
            "2025-06-19T10:16:61Z",
            "1969-12-31T23:59:59Z",
            "2025-06-19T10:16:0Z",
            "2025-+6-19T10:16:03Z",
            "2025-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2025-04-31T00:00:00Z",
        ] {
            assert_eq!(parse_time(bad), Err(format!("{bad:?} is not a time of the form YYYY-MM-DDTHH:MM:SSZ")));
        }
        // The edges inside the ranges: a leap second, the last minute and hour, month 12, day 31.
        assert_eq!(parse_time("2016-12-31T23:59:60Z"), Ok(1_483_228_800));
        assert_eq!(parse_time("2025-01-31T00:00:00Z"), Ok(1_738_281_600));
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Ok(951_782_400));
        assert_eq!(parse_time("2025-04-30T00:00:00Z"), Ok(1_745_971_200));
    }

    #[test]
    fn crls_are_read_from_hex_or_an_x509_crl_pem() {
        let with = |root: &str, pck: &str| Collateral {
            tcb_info_issuer_chain: String::new(),
            tcb_info: String::new(),
            tcb_info_signature: String::new(),
            qe_identity_issuer_chain: String::new(),
            qe_identity: String::new(),
            qe_identity_signature: String::new(),
            root_ca_crl: Some(root.to_string()),
            pck_crl: Some(pck.to_string()),
        };
        // "AQID" is base64 of 01 02 03 (RFC 7468's textual encoding, written out).
        let pem = |label: &str| format!("-----BEGIN {label}-----\nAQID\n-----END {label}-----\n");
        assert_eq!(with(&pem("X509 CRL"), " 0405\n").crls(), Ok(vec![vec![1, 2, 3], vec![4, 5]]));
        assert_eq!(
            with(&pem("CERTIFICATE"), "0405").crls(),
            Err(String::from("TDX collateral: root_ca_crl is a PEM CERTIFICATE, not an X509 CRL"))
        );
        assert_eq!(with("0405", "04x5").crls(), Err(String::from("TDX collateral: pck_crl is not hex")));
        assert!(
            with("-----BEGIN X509 CRL-----\n", "")
                .crls()
                .unwrap_err()
                .starts_with("TDX collateral: root_ca_crl is not PEM: ")
        );
    }

    #[test]
    fn the_first_level_the_platform_meets_decides() {
        let level = |sgx: u8, pce: u16, tdx: u8, status: &str| {
            serde_json::json!({
                "tcb": {
                    "sgxtcbcomponents": (0..16).map(|i| serde_json::json!({"svn": if i == 7 { sgx } else { 1 }})).collect::<Vec<_>>(),
                    "pcesvn": pce,
                    "tdxtcbcomponents": (0..16).map(|i| serde_json::json!({"svn": if i == 2 { tdx } else { 0 }})).collect::<Vec<_>>(),
                },
                "tcbStatus": status,
                "advisoryIDs": [format!("INTEL-SA-{status}")],
            })
        };
        let levels: Vec<TcbLevel> = serde_json::from_value(serde_json::json!([
            level(5, 13, 3, "UpToDate"),
            level(5, 11, 2, "SWHardeningNeeded"),
            level(3, 5, 0, "OutOfDate"),
        ]))
        .unwrap();
        let pck = |sgx: u8, pcesvn: u16| PckTcb {
            components: core::array::from_fn(|i| if i == 7 { sgx } else { 1 }),
            pcesvn,
            fmspc: [0; 6],
            pce_id: [0; 2],
        };
        let tee = |v0: u8, v1: u8, c2: u8| -> [u8; 16] {
            core::array::from_fn(|i| [v0, v1, c2][..].get(i).copied().unwrap_or(0))
        };
        let status = |p: &PckTcb, t: &[u8; 16]| platform_level(&levels, p, t).map(|l| l.tcb_status.as_str());
        assert_eq!(status(&pck(5, 13), &tee(0, 0, 3)), Some("UpToDate"));
        assert_eq!(status(&pck(5, 13), &tee(0, 0, 2)), Some("SWHardeningNeeded"), "TDX component 3 below level 1");
        assert_eq!(status(&pck(5, 12), &tee(0, 0, 3)), Some("SWHardeningNeeded"), "PCESVN below level 1");
        assert_eq!(status(&pck(4, 13), &tee(0, 0, 3)), Some("OutOfDate"), "an SGX component below levels 1-2");
        assert_eq!(status(&pck(2, 13), &tee(0, 0, 3)), None, "below every level: not supported");
        // Module version 1: the first two TDX bytes are not compared with the levels.
        assert_eq!(status(&pck(5, 13), &tee(0, 1, 3)), Some("UpToDate"));
        assert_eq!(levels[2].advisory_ids, ["INTEL-SA-OutOfDate"]);
        let mut module_svn: Vec<TcbLevel> =
            serde_json::from_value(serde_json::json!([level(5, 13, 3, "UpToDate")])).unwrap();
        module_svn[0].tcb.tdxtcbcomponents[0].svn = 5;
        assert!(platform_level(&module_svn, &pck(5, 13), &tee(0, 1, 3)).is_some(), "judged by the module identity");
        assert!(platform_level(&module_svn, &pck(5, 13), &tee(0, 0, 3)).is_none(), "module version 0: compared");
    }

    #[test]
    fn statuses_merge_as_intels_verifier_does() {
        assert_eq!(merge("UpToDate", "UpToDate"), "UpToDate");
        assert_eq!(merge("UpToDate", "OutOfDate"), "OutOfDate");
        assert_eq!(merge("ConfigurationNeeded", "OutOfDate"), "OutOfDateConfigurationNeeded");
        assert_eq!(merge("SWHardeningNeeded", "UpToDate"), "SWHardeningNeeded");
        assert_eq!(merge("UpToDate", "Revoked"), "Revoked");
    }
}
