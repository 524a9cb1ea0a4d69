//! On the host (a key broker, `veil verify`): a TD quote verified with Phala's dcap-qvl (the
//! maintained Rust DCAP verifier; RustCrypto backend): the PCK certificate chain in the quote up
//! to Intel's SGX root CA, the quoting enclave's report and identity, the TCB status from PCS or
//! PCCS collateral at a given time; then the status checked against what the operator allows
//! (by default only UpToDate) and debug TDs refused. The TD's measurements come back for the
//! broker's own checks (MRTD, RTMRs, MRCONFIGID, REPORTDATA).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// What a verified quote says about the TD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    /// The platform's TCB status (UpToDate, SWHardeningNeeded, OutOfDate, ...).
    pub status: String,
    /// Intel security advisories that apply.
    pub advisory_ids: Vec<String>,
    /// MRTD.
    pub mr_td: [u8; 48],
    /// RTMR0-3.
    pub rtmr: [[u8; 48]; 4],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TD attributes.
    pub td_attributes: u64,
}

/// The TCB statuses accepted when the operator names none.
pub const DEFAULT_ALLOWED: [&str; 1] = ["UpToDate"];

/// Verify `quote` with `collateral` (dcap-qvl's QuoteCollateralV3 JSON: the PCS/PCCS
/// collateral) at `now` (Unix seconds), allowing the TCB statuses in `allowed`.
pub fn verify_quote(quote: &[u8], collateral: &[u8], now: u64, allowed: &[&str]) -> Result<VerifiedQuote, String> {
    let collateral: dcap_qvl::QuoteCollateralV3 =
        serde_json::from_slice(collateral).map_err(|e| format!("TDX collateral: {e}"))?;
    let verified =
        dcap_qvl::verify::rustcrypto::verify(quote, &collateral, now).map_err(|e| format!("TD quote: {e:#}"))?;
    if !allowed.contains(&verified.status.as_str()) {
        return Err(format!(
            "TD quote: the platform's TCB status is {} (advisories {:?}); allowed: {}",
            verified.status,
            verified.advisory_ids,
            allowed.join(", ")
        ));
    }
    let td = verified.report.as_td10().ok_or("TD quote: it carries no TD report (an SGX quote?)")?;
    let td_attributes = u64::from_le_bytes(td.td_attributes);
    if td_attributes & crate::tdx::report::ATTRIBUTE_DEBUG != 0 {
        return Err(String::from("TD quote: a debug TD (its memory is not protected)"));
    }
    Ok(VerifiedQuote {
        status: verified.status.clone(),
        advisory_ids: verified.advisory_ids.clone(),
        mr_td: td.mr_td,
        rtmr: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
        mr_config_id: td.mr_config_id,
        report_data: td.report_data,
        td_attributes,
    })
}
