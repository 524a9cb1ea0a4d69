//! `veil verify --platform snp`: the key broker's checks of an SEV-SNP attestation report as a
//! command, for researchers and CI. It reads the raw 1184-byte report or Trustee's `snp`
//! evidence JSON, verifies it with the code the broker uses (veil_agent::snp::verify), prints
//! each check that passed or the refusal, and exits non-zero on a refusal.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
pub enum Platform {
    /// An AMD SEV-SNP attestation report.
    Snp,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Which platform's evidence.
    #[arg(long, value_enum)]
    platform: Platform,
    /// The report: raw ATTESTATION_REPORT (1184 bytes) or Trustee's snp evidence JSON
    /// (`{"attestation_report": ..., "cert_chain": ...}`, as the firmware sends it).
    #[arg(long)]
    report: PathBuf,
    /// Certificates to verify with when the evidence carries none: a directory with vcek.der
    /// or vcek.pem (or vlek.*), ask.pem and ark.pem (AMD KDS).
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,
    /// Reference values (`veil measure --platform snp --out`; repeat): the measurement must be
    /// one of them. Without, the measurement is printed, not checked.
    #[arg(long = "reference", value_name = "FILE")]
    reference: Vec<PathBuf>,
    /// TESTS ONLY: accept this ARK (PEM) instead of AMD's roots.
    #[arg(long, value_name = "PEM")]
    test_root: Option<PathBuf>,
    /// The HOST_DATA the launch must carry (64 hex digits).
    #[arg(long, value_name = "HEX")]
    host_data: Option<String>,
    /// Print the result as JSON ({"verified": bool, "checks": [...], "refusal": ...}).
    #[arg(long)]
    json: bool,
}

pub fn run(args: VerifyArgs) -> Result<()> {
    let Platform::Snp = args.platform;
    let bytes = std::fs::read(&args.report).with_context(|| format!("reading {}", args.report.display()))?;
    let (raw, certs) = if bytes.first() == Some(&b'{') {
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", args.report.display()))?;
        veil_agent::snp::verify::from_evidence(&v).map_err(|e| anyhow::anyhow!("{}: {e}", args.report.display()))?
    } else {
        (bytes, Vec::new())
    };
    let snp = crate::snp::SnpArgs {
        reference: args.reference.clone(),
        certs: args.certs.clone(),
        test_root: args.test_root.clone(),
        refuse_smt: false,
    };
    let mut policy = snp.policy_allowing_no_reference()?;
    if let Some(h) = &args.host_data {
        let b = hex::decode(h).context("--host-data is not hex")?;
        policy.host_data = Some(b.try_into().map_err(|_| anyhow::anyhow!("--host-data is not 32 bytes"))?);
    }
    let result = veil_agent::snp::verify::verify_snp(&raw, &certs, &policy);
    if args.json {
        let doc = match &result {
            Ok(v) => serde_json::json!({"verified": true, "checks": v.checks}),
            Err(e) => serde_json::json!({"verified": false, "checks": [], "refusal": e}),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        match &result {
            Ok(v) => {
                for c in &v.checks {
                    println!("ok   {c}");
                }
                println!("VERIFIED");
            }
            Err(e) => println!("REFUSED: {e}"),
        }
    }
    if let Err(e) = result {
        bail!("the report is refused: {e}");
    }
    Ok(())
}
