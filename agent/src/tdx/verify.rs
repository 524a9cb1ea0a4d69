//! On the host (the key broker, `veil verify --platform tdx`): what is accepted of a TD's
//! evidence. [`verify_tdx`] runs the DCAP verdict (`collateral`: PCK chain to Intel's root or
//! a test root, signatures, QE identity, TCB status), refuses TCB statuses the operator did not
//! allow (default: UpToDate only) and debug TDs, compares MRTD and RTMR0-3 with reference values
//! (`veil measure --platform tdx --out`), and replays the CC event log, when sent, to the quoted
//! RTMRs. Binding to a session (REPORTDATA) and to the boot target (MRCONFIGID = the init-data
//! digest) are the caller's, which knows the session and the init-data.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::collateral::{self, Collateral, Verdict};
use super::quote::Quote;
use crate::pki::Crls;
use crate::tpm::{Bank, eventlog};

/// Intel's SGX Root CA (the anchor of every PCK and TCB signing chain), as Intel publishes it
/// (https://certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.pem).
pub const INTEL_SGX_ROOT_CA: &str = "-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
";

/// Reference values: what MRTD and the RTMRs may be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TdxReference {
    /// Accepted MRTDs (one per ROM, or per page order).
    pub mrtd: Vec<[u8; 48]>,
    /// RTMR0-3 as they must be at attestation (None: not checked; RTMR0 depends on the VMM).
    pub rtmr: [Option<[u8; 48]>; 4],
}

impl TdxReference {
    /// Read `veil measure --platform tdx --out` files (several: their MRTDs are all accepted,
    /// their RTMRs must agree).
    pub fn from_json(docs: &[serde_json::Value]) -> Result<TdxReference, String> {
        let mut r = TdxReference::default();
        for (i, v) in docs.iter().enumerate() {
            if v["platform"] != "tdx" {
                return Err(format!("reference {i}: not a TDX reference-values file (platform is not \"tdx\")"));
            }
            let field = |k: &str| -> Result<Option<[u8; 48]>, String> {
                match v.get(k).and_then(serde_json::Value::as_str) {
                    None => Ok(None),
                    Some(h) => hex::decode(h)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .map(Some)
                        .ok_or_else(|| format!("reference {i}: {k} is not 48 bytes of hex")),
                }
            };
            r.mrtd.push(field("mrtd")?.ok_or_else(|| format!("reference {i}: no mrtd"))?);
            for n in 0..4 {
                if let Some(value) = field(&format!("rtmr{n}"))? {
                    match r.rtmr[n] {
                        Some(have) if have != value => {
                            return Err(format!("reference files disagree on RTMR{n}"));
                        }
                        _ => r.rtmr[n] = Some(value),
                    }
                }
            }
        }
        Ok(r)
    }
}

/// What the verifier accepts.
#[derive(Debug, Clone)]
pub struct TdxPolicy {
    /// The root every chain must reach (PEM or DER): Intel's, or a test root.
    pub root: Vec<u8>,
    /// Whether `root` is a test root (said in every log line).
    pub test_root: bool,
    /// Intel's collateral for the platform.
    pub collateral: Collateral,
    /// TCB statuses accepted.
    pub allowed_status: Vec<String>,
    /// Reference values (None: print, do not check — `veil verify` only).
    pub reference: Option<TdxReference>,
    /// Accept collateral without the root CA CRL or the PCK CRL (`--allow-missing-crl`): the
    /// CRLs it does carry are still checked.
    pub allow_missing_crl: bool,
    /// Accept a TD bound to service TDs (`--allow-service-td`): a non-zero MRSERVICETD (TD
    /// report 1.5) and the SERVTD_EXT attribute.
    pub allow_service_td: bool,
}

/// TD attributes the TDX module ABI reserves (must be zero; Intel TDX Module ABI 348551-008US,
/// TD attributes table): bits 1-3, 7-15, 23-26 and 32-61.
const TD_ATTRIBUTES_RESERVED: u64 = 0b1110 | (0x1FF << 7) | (0xF << 23) | (((1u64 << 30) - 1) << 32);

/// The TD attributes a verifier accepts (the checks Intel's QVL and dcap-qvl make): not a debug
/// TD, no profiling (TUD bits 4-6), no reserved bit, not migratable, SEPT_VE_DISABLE set (the
/// VMM cannot inject #VE on pending pages), SERVTD_EXT only when service TDs are allowed.
pub fn check_td_attributes(attributes: u64, allow_service_td: bool) -> Result<(), String> {
    if attributes & 1 != 0 {
        return Err(String::from("a debug TD (TD attributes bit 0): its memory is open to the host"));
    }
    if attributes & 0x70 != 0 {
        return Err(format!("TD attributes {attributes:#018x}: profiling is enabled (TUD bits 4-6)"));
    }
    if attributes & TD_ATTRIBUTES_RESERVED != 0 {
        return Err(format!(
            "TD attributes {attributes:#018x}: reserved bits {:#x} are set",
            attributes & TD_ATTRIBUTES_RESERVED
        ));
    }
    if attributes & (1 << 29) != 0 {
        return Err(String::from("a migratable TD (TD attributes bit 29, MIGRATABLE)"));
    }
    if attributes & (1 << 17) != 0 && !allow_service_td {
        return Err(String::from("TD attributes SERVTD_EXT (bit 17) is set and service TDs are not allowed"));
    }
    if attributes & (1 << 28) == 0 {
        return Err(String::from(
            "TD attributes SEPT_VE_DISABLE (bit 28) is clear: the VMM could inject #VE on pending private pages",
        ));
    }
    Ok(())
}

/// A verified quote: its fields, the verdict, and the checks that passed.
#[derive(Debug, Clone)]
pub struct TdxVerified {
    /// The quote.
    pub quote: Quote,
    /// The DCAP verdict.
    pub verdict: Verdict,
    /// What was checked, for logs.
    pub checks: Vec<String>,
}

/// Verify `quote` (and the CC event log, if sent) at `now` (seconds since the epoch).
pub fn verify_tdx(quote: &[u8], ccel: Option<&[u8]>, p: &TdxPolicy, now: u64) -> Result<TdxVerified, String> {
    let mut checks = Vec::new();
    let (quote, verdict) = verify_tdx_logged(quote, ccel, p, now, &mut checks)?;
    Ok(TdxVerified { quote, verdict, checks })
}

/// [`verify_tdx`], adding each check that passed to `checks` as it goes, so that a refusal
/// can be shown with what passed before it (`veil verify --json`).
pub fn verify_tdx_logged(
    quote: &[u8],
    ccel: Option<&[u8]>,
    p: &TdxPolicy,
    now: u64,
    checks: &mut Vec<String>,
) -> Result<(Quote, Verdict), String> {
    let missing = if p.allow_missing_crl { Crls::AllowMissing } else { Crls::Required };
    let (quote, verdict) = collateral::verify(quote, &p.collateral, &p.root, now, missing)?;
    checks.push(format!(
        "quote v{} signed by a PCK chain to {} ({})",
        quote.version,
        if p.test_root { "a TEST root (not Intel's)" } else { "Intel's SGX root CA" },
        match (p.collateral.pck_crl.is_some(), p.collateral.root_ca_crl.is_some()) {
            (true, true) => "not revoked: root CA CRL and PCK CRL checked",
            (true, false) => "PCK CRL checked; NO root CA CRL (allowed)",
            (false, true) => "root CA CRL checked; NO PCK CRL (allowed)",
            (false, false) => "NO CRL: revocation not checked (allowed)",
        }
    ));
    if !p.allowed_status.iter().any(|s| s == &verdict.status) {
        return Err(format!(
            "TCB status {} (platform {}, QE {}{}{}) is not among the accepted: {}",
            verdict.status,
            verdict.platform_status,
            verdict.qe_status,
            verdict.module_status.as_ref().map(|m| format!(", TDX module {m}")).unwrap_or_default(),
            if verdict.advisory_ids.is_empty() {
                String::new()
            } else {
                format!("; advisories {}", verdict.advisory_ids.join(", "))
            },
            p.allowed_status.join(", ")
        ));
    }
    checks.push(format!(
        "TCB status {} (FMSPC {}, TCB evaluation {})",
        verdict.status,
        hex::encode(verdict.fmspc),
        verdict.tcb_evaluation_data_number
    ));
    check_td_attributes(quote.body.attributes(), p.allow_service_td)?;
    checks.push(format!(
        "not a debug TD; TD attributes {:#018x} (SEPT_VE_DISABLE, no reserved bit)",
        quote.body.attributes()
    ));
    if let Some(service) = quote.body.mr_service_td {
        if service != [0u8; 48] && !p.allow_service_td {
            return Err(format!(
                "MRSERVICETD {} is not zero: the TD is bound to service TDs, which are not allowed",
                hex::encode(service)
            ));
        }
        checks.push(format!(
            "TD report 1.5: MRSERVICETD {}, current TEE_TCB_SVN2 {} ({})",
            hex::encode(service),
            hex::encode(quote.body.tee_tcb_svn2.unwrap_or_default()),
            verdict.current_status.as_deref().unwrap_or("-")
        ));
    }
    if let Some(log) = ccel {
        let (banks, events) = eventlog::parse(log).map_err(|e| format!("the CC event log: {e}"))?;
        if !banks.contains(&Bank::Sha384) {
            return Err(String::from("the CC event log has no SHA-384 digests"));
        }
        let replayed = eventlog::replay(&events, Bank::Sha384);
        for i in 0..4u32 {
            let want = replayed.get(&(i + 1)).cloned().unwrap_or_else(|| alloc::vec![0u8; 48]);
            if quote.body.rtmr[i as usize][..] != want[..] {
                return Err(format!(
                    "the CC event log replays RTMR{i} to {}, the quote holds {}: the log is not this TD's",
                    hex::encode(&want),
                    hex::encode(quote.body.rtmr[i as usize])
                ));
            }
        }
        checks.push(format!("the CC event log ({} events) replays to the quoted RTMR0-3", events.len()));
    }
    if let Some(r) = &p.reference {
        if !r.mrtd.contains(&quote.body.mr_td) {
            return Err(format!("MRTD {} is not among the reference values", hex::encode(quote.body.mr_td)));
        }
        checks.push(format!("MRTD {} is a reference value", hex::encode(quote.body.mr_td)));
        for (i, want) in r.rtmr.iter().enumerate() {
            if let Some(want) = want {
                if quote.body.rtmr[i] != *want {
                    return Err(format!(
                        "RTMR{i} {} is not the reference {}",
                        hex::encode(quote.body.rtmr[i]),
                        hex::encode(want)
                    ));
                }
                checks.push(format!("RTMR{i} is the reference value"));
            }
        }
    } else {
        checks.push(format!("MRTD {} and RTMR0-3 not checked (no reference values)", hex::encode(quote.body.mr_td)));
    }
    Ok((quote, verdict))
}
