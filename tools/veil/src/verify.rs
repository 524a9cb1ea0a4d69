//! `veil verify`: the key broker's checks of attestation evidence as a command, for
//! researchers and CI, with the code the broker uses. `--platform snp`: the raw 1184-byte
//! report or Trustee's `snp` evidence JSON (veil_agent::snp::verify). `--platform tdx`: a TD
//! quote (raw, or Trustee's `tdx` evidence JSON with its CC event log) with Intel's collateral
//! at a given time (veil_agent::tdx::verify). Each check that passed is printed, or the
//! refusal; the exit status is non-zero on a refusal.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
pub enum Platform {
    /// An AMD SEV-SNP attestation report.
    Snp,
    /// An Intel TDX quote.
    Tdx,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Which platform's evidence.
    #[arg(long, value_enum)]
    platform: Platform,
    /// SNP: the report: raw ATTESTATION_REPORT (1184 bytes) or Trustee's snp evidence JSON
    /// (`{"attestation_report": ..., "cert_chain": ...}`, as the firmware sends it).
    #[arg(long, required_if_eq("platform", "snp"))]
    report: Option<PathBuf>,
    /// TDX: the quote, raw or Trustee's tdx evidence JSON (`{"quote": ..., "cc_eventlog": ...}`).
    #[arg(long, required_if_eq("platform", "tdx"))]
    quote: Option<PathBuf>,
    /// TDX: Intel's collateral for the platform (PCS/PCCS JSON).
    #[arg(long, required_if_eq("platform", "tdx"))]
    collateral: Option<PathBuf>,
    /// TDX: the CC event log (the CCEL area's bytes) to replay to the quoted RTMRs.
    #[arg(long, value_name = "CCEL")]
    eventlog: Option<PathBuf>,
    /// Verify at this time (RFC 3339, e.g. 2025-06-19T12:00:00Z) instead of now: certificates,
    /// CRLs and (TDX) collateral must be valid then. For recorded evidence.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// TDX: the TCB statuses to accept (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "UpToDate")]
    allow_status: Vec<String>,
    /// Certificates to verify with when the evidence carries none: a directory with vcek.der
    /// or vcek.pem (or vlek.*), ask.pem and ark.pem (AMD KDS).
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,
    /// Reference values (`veil measure --platform snp|tdx --out`; repeat): the measurement
    /// (MRTD) must be one of them. Without, it is printed, not checked.
    #[arg(long = "reference", value_name = "FILE")]
    reference: Vec<PathBuf>,
    /// TESTS ONLY: accept this root (PEM) instead of AMD's ARKs or Intel's SGX root CA.
    #[arg(long, value_name = "PEM")]
    test_root: Option<PathBuf>,
    /// Accept evidence whose CRLs are missing (TDX: the collateral's `pck_crl` or `root_ca_crl`;
    /// SNP: AMD's CRL, `--snp-crl` or `crl.der`/`crl.pem` in `--certs`): a revoked certificate
    /// then goes unnoticed. Without it a missing CRL is a refusal.
    #[arg(long)]
    allow_missing_crl: bool,
    /// TDX: accept a TD bound to service TDs (non-zero MRSERVICETD, SERVTD_EXT).
    #[arg(long)]
    allow_service_td: bool,
    /// SNP: AMD's CRL (DER or PEM; repeat). `crl.der` or `crl.pem` in --certs is read too.
    #[arg(long = "snp-crl", value_name = "FILE")]
    snp_crl: Vec<PathBuf>,
    /// SNP: the least reported, current and launch TCB, `bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]`
    /// (omitted components: 0; default 0 in each).
    #[arg(long = "snp-min-tcb", value_name = "LIST", default_value = "")]
    snp_min_tcb: String,
    /// The HOST_DATA the launch must carry (64 hex digits).
    #[arg(long, value_name = "HEX")]
    host_data: Option<String>,
    /// Print the result as JSON ({"verified": bool, "checks": [...], "refusal": ...}).
    #[arg(long)]
    json: bool,
}

/// Print checks or the refusal (after the checks that passed before it, `passed`), as text
/// or JSON; Err on a refusal.
fn report_result(
    result: Result<Vec<String>, String>,
    passed: &[String],
    json: bool,
    extra: serde_json::Value,
) -> Result<()> {
    if json {
        let mut doc = match &result {
            Ok(checks) => serde_json::json!({"verified": true, "checks": checks}),
            Err(e) => serde_json::json!({"verified": false, "checks": passed, "refusal": e}),
        };
        if let (Some(d), Some(x)) = (doc.as_object_mut(), extra.as_object()) {
            d.extend(x.clone());
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        match &result {
            Ok(checks) => {
                for c in checks {
                    println!("ok   {c}");
                }
                println!("VERIFIED");
            }
            Err(e) => {
                for c in passed {
                    println!("ok   {c}");
                }
                println!("REFUSED: {e}");
            }
        }
    }
    if result.is_err() {
        // The reason is on stdout already (REFUSED: ... or the JSON's "refusal").
        bail!("the evidence is refused");
    }
    Ok(())
}

/// `--at`, or now: seconds since the epoch.
fn verification_time(args: &VerifyArgs) -> Result<u64> {
    Ok(match &args.at {
        Some(t) => {
            veil_agent::tdx::collateral::parse_time(t).map_err(|e| crate::cli_error::usage(format!("--at: {e}")))?
        }
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
    })
}

fn run_tdx(args: &VerifyArgs) -> Result<()> {
    let path = args.quote.as_ref().context("--platform tdx needs --quote")?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (quote, mut log) = if bytes.first() == Some(&b'{') {
        let v = veil_agent::json::from_slice(&bytes).with_context(|| format!("{}: not JSON", path.display()))?;
        veil_agent::tdx::getquote::from_evidence(&v).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    } else {
        (bytes, None)
    };
    if let Some(p) = &args.eventlog {
        log = Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    let tdx = crate::tdx::TdxArgs {
        reference: args.reference.clone(),
        collateral: args.collateral.clone(),
        allow_status: args.allow_status.clone(),
        test_root: args.test_root.clone(),
        allow_missing_crl: args.allow_missing_crl,
        allow_service_td: args.allow_service_td,
    };
    let policy = tdx.policy_with(false)?;
    let now = verification_time(args)?;
    let mut passed = Vec::new();
    let result = veil_agent::tdx::verify::verify_tdx_logged(&quote, log.as_deref(), &policy, now, &mut passed);
    let extra = match &result {
        Ok((quote, verdict)) => {
            let b = &quote.body;
            let fields = serde_json::json!({
                "tcb_status": verdict.status,
                "advisory_ids": verdict.advisory_ids,
                "mrtd": hex::encode(b.mr_td),
                "rtmr0": hex::encode(b.rtmr[0]),
                "rtmr1": hex::encode(b.rtmr[1]),
                "rtmr2": hex::encode(b.rtmr[2]),
                "rtmr3": hex::encode(b.rtmr[3]),
                "mrconfigid": hex::encode(b.mr_config_id),
                "report_data": hex::encode(b.report_data),
                "td_attributes": hex::encode(b.td_attributes),
                "tee_tcb_svn": hex::encode(b.tee_tcb_svn),
                "mr_signer_seam": hex::encode(b.mr_signer_seam),
                "seam_attributes": hex::encode(b.seam_attributes),
                "tee_tcb_svn2": b.tee_tcb_svn2.map(hex::encode),
                "mrservicetd": b.mr_service_td.map(hex::encode),
            });
            if !args.json {
                for (k, val) in fields.as_object().expect("object").iter().filter(|(_, v)| !v.is_null()) {
                    println!("{k:14} {}", val.as_str().map(str::to_string).unwrap_or_else(|| val.to_string()));
                }
            }
            fields
        }
        Err(_) => serde_json::json!({}),
    };
    match result {
        Ok(_) => report_result(Ok(passed), &[], args.json, extra),
        Err(e) => report_result(Err(e), &passed, args.json, extra),
    }
}

pub fn run(args: VerifyArgs) -> Result<()> {
    if let Platform::Tdx = args.platform {
        return run_tdx(&args);
    }
    let report = args.report.as_ref().context("--platform snp needs --report")?;
    let bytes = std::fs::read(report).with_context(|| format!("reading {}", report.display()))?;
    let (raw, certs) = if bytes.first() == Some(&b'{') {
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", report.display()))?;
        veil_agent::snp::verify::from_evidence(&v).map_err(|e| anyhow::anyhow!("{}: {e}", report.display()))?
    } else {
        (bytes, Vec::new())
    };
    let snp = crate::snp::SnpArgs {
        reference: args.reference.clone(),
        certs: args.certs.clone(),
        test_root: args.test_root.clone(),
        refuse_smt: false,
        crl: args.snp_crl.clone(),
        allow_missing_crl: args.allow_missing_crl,
        min_tcb: args.snp_min_tcb.clone(),
    };
    let mut policy = snp.policy_allowing_no_reference()?;
    if let Some(h) = &args.host_data {
        let b = hex::decode(h).map_err(|e| crate::cli_error::usage(format!("--host-data is not hex: {e}")))?;
        policy.host_data = Some(b.try_into().map_err(|_| crate::cli_error::usage("--host-data is not 32 bytes"))?);
    }
    let mut passed = Vec::new();
    let result =
        veil_agent::snp::verify::verify_snp_logged(&raw, &certs, &policy, verification_time(&args)?, &mut passed);
    match result {
        Ok(()) => report_result(Ok(passed), &[], args.json, serde_json::json!({})),
        Err(e) => report_result(Err(e), &passed, args.json, serde_json::json!({})),
    }
}
