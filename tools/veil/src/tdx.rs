//! What `veil kbs serve` and `veil verify --platform tdx` accept of TDX evidence: reference
//! values (`veil measure --platform tdx --out`), Intel's collateral for the platform (offline:
//! the PCS/PCCS JSON), the TCB statuses allowed, and, for tests only, a root other than
//! Intel's. The checks themselves are veil_agent::tdx::verify's.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use veil_agent::tdx::collateral::Collateral;
use veil_agent::tdx::verify::{INTEL_SGX_ROOT_CA, TdxPolicy, TdxReference};

#[derive(Args, Default)]
pub struct TdxArgs {
    /// TDX: a reference-values file of `veil measure --platform tdx --out` (repeat for several
    /// ROMs). With it and --tdx-collateral, the broker accepts TEE "tdx".
    #[arg(id = "tdx_reference", long = "tdx-reference", value_name = "FILE")]
    pub reference: Vec<PathBuf>,
    /// TDX: Intel's collateral for the platform (the PCS/PCCS JSON: tcb_info, qe_identity,
    /// their signatures and issuer chains, as dcap-qvl and a PCCS cache store it).
    #[arg(id = "tdx_collateral", long = "tdx-collateral", value_name = "FILE")]
    pub collateral: Option<PathBuf>,
    /// TDX: the TCB statuses to accept (comma-separated: UpToDate, SWHardeningNeeded,
    /// ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, ...).
    #[arg(
        id = "tdx_allow_status",
        long = "tdx-allow-status",
        value_name = "LIST",
        default_value = "UpToDate",
        value_delimiter = ','
    )]
    pub allow_status: Vec<String>,
    /// TDX, TESTS ONLY: accept this root CA (PEM) instead of Intel's SGX root. Anyone holding
    /// its key can forge quotes; never use it with a real cluster's secret.
    #[arg(id = "tdx_test_root", long = "tdx-test-root", value_name = "PEM")]
    pub test_root: Option<PathBuf>,
    /// TDX: accept collateral without its CRLs (`pck_crl`, `root_ca_crl`); a revoked PCK or
    /// CA certificate then goes unnoticed. Without it a missing CRL is a refusal.
    #[arg(id = "tdx_allow_missing_crl", long = "tdx-allow-missing-crl")]
    pub allow_missing_crl: bool,
    /// TDX: accept TDs bound to service TDs (a TD report 1.5 with a non-zero MRSERVICETD, the
    /// SERVTD_EXT attribute). Without it they are refused.
    #[arg(id = "tdx_allow_service_td", long = "tdx-allow-service-td")]
    pub allow_service_td: bool,
}

impl TdxArgs {
    /// The policy, or None when no TDX option is given.
    pub fn policy(&self) -> Result<Option<TdxPolicy>> {
        if self.reference.is_empty() && self.collateral.is_none() {
            if self.test_root.is_some() {
                bail!("--tdx-test-root needs --tdx-reference and --tdx-collateral");
            }
            return Ok(None);
        }
        if self.reference.is_empty() {
            bail!("--tdx-collateral needs --tdx-reference (the MRTD and RTMRs to accept)");
        }
        self.policy_with(true).map(Some)
    }

    /// The policy; without `need_reference`, missing reference values are allowed (`veil
    /// verify` then prints MRTD and the RTMRs).
    pub fn policy_with(&self, need_reference: bool) -> Result<TdxPolicy> {
        let path =
            self.collateral.as_ref().context("TDX needs Intel's collateral (--tdx-collateral / --collateral)")?;
        let collateral =
            Collateral::from_json(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let docs = self
            .reference
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))
            })
            .collect::<Result<Vec<serde_json::Value>>>()?;
        let reference = match (docs.is_empty(), need_reference) {
            (true, true) => bail!("no TDX reference values"),
            (true, false) => None,
            (false, _) => Some(TdxReference::from_json(&docs).map_err(|e| anyhow::anyhow!("{e}"))?),
        };
        let (root, test_root) = match &self.test_root {
            Some(p) => (std::fs::read(p).with_context(|| format!("reading {}", p.display()))?, true),
            None => (INTEL_SGX_ROOT_CA.as_bytes().to_vec(), false),
        };
        Ok(TdxPolicy {
            root,
            test_root,
            collateral,
            allowed_status: self.allow_status.clone(),
            reference,
            allow_missing_crl: self.allow_missing_crl,
            allow_service_td: self.allow_service_td,
        })
    }
}
