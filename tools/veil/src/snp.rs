//! What `veil kbs serve` and `veil verify --platform snp` accept of SEV-SNP evidence: the
//! reference launch measurements (`veil measure --platform snp --out`), offline certificates,
//! AMD's CRL, the least TCB, and, for tests only, a root other than AMD's. The checks themselves are
//! veil_agent::snp::verify's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use veil_agent::snp::evidence::CertType;
use veil_agent::snp::verify::{MinTcb, SnpPolicy};

#[derive(Args, Default)]
pub struct SnpArgs {
    /// SEV-SNP: a reference-values file of `veil measure --platform snp --out` (repeat for
    /// several ROMs or vCPU counts). With it, the broker accepts TEE "snp".
    #[arg(long = "snp-reference", value_name = "FILE")]
    pub reference: Vec<PathBuf>,
    /// SEV-SNP: a directory with the certificates to use when the evidence carries none:
    /// vcek.der or vcek.pem (or vlek.*), ask.pem, ark.pem (from AMD's KDS).
    #[arg(long = "snp-certs", value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// SEV-SNP, TESTS ONLY: accept this ARK (PEM) instead of AMD's built-in roots. Anyone
    /// holding its key can forge reports; never use it with a real cluster's secret.
    #[arg(long = "snp-test-root", value_name = "PEM")]
    pub test_root: Option<PathBuf>,
    /// SEV-SNP: refuse guests whose policy allows SMT.
    #[arg(long = "snp-refuse-smt")]
    pub refuse_smt: bool,
    /// SEV-SNP: AMD's CRL for the product line (DER or PEM, from AMD's KDS
    /// `/vcek/v1/<product>/crl`; repeat for several). `crl.der` or `crl.pem` in --snp-certs is
    /// read too. Without one the chain is refused unless --snp-allow-missing-crl.
    #[arg(long = "snp-crl", value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// SEV-SNP: accept chains without AMD's CRL (a revoked ASK then goes unnoticed).
    #[arg(long = "snp-allow-missing-crl")]
    pub allow_missing_crl: bool,
    /// SEV-SNP: the least TCB accepted in the reported, current and launch TCB, per component:
    /// `bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]` (omitted components: 0). Default: 0 in
    /// each, so only the VCEK's own TCB binds; raise it to the values of AMD's latest security
    /// bulletin for the product line.
    #[arg(long = "snp-min-tcb", value_name = "LIST", default_value = "")]
    pub min_tcb: String,
}

/// One reference-values file's launch measurement.
pub fn read_reference(path: &Path) -> Result<[u8; 48]> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    if v["platform"] != "snp" {
        bail!("{}: not an SNP reference-values file (platform is not \"snp\")", path.display());
    }
    let hex = v["launch_measurement"].as_str().ok_or_else(|| anyhow!("{}: no launch_measurement", path.display()))?;
    let bytes = hex::decode(hex).with_context(|| format!("{}: launch_measurement is not hex", path.display()))?;
    bytes.try_into().map_err(|_| anyhow!("{}: launch_measurement is not 48 bytes", path.display()))
}

/// The certificates in `dir` (each optional): VCEK, VLEK, ASK, ARK, as DER or PEM.
pub fn read_cert_dir(dir: &Path) -> Result<Vec<(CertType, Vec<u8>)>> {
    let mut out = Vec::new();
    for (t, stem) in
        [(CertType::Vcek, "vcek"), (CertType::Vlek, "vlek"), (CertType::Ask, "ask"), (CertType::Ark, "ark")]
    {
        for ext in ["der", "pem"] {
            let path = dir.join(format!("{stem}.{ext}"));
            if path.is_file() {
                out.push((t, std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?));
                break;
            }
        }
    }
    if out.is_empty() {
        bail!("{}: none of vcek/vlek/ask/ark .der/.pem", dir.display());
    }
    Ok(out)
}

/// AMD's CRL in `dir` (crl.der or crl.pem), if there.
pub fn read_crl_in_dir(dir: &Path) -> Result<Option<Vec<u8>>> {
    for name in ["crl.der", "crl.pem"] {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(Some(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?));
        }
    }
    Ok(None)
}

impl SnpArgs {
    /// The policy, or None when no SNP option is given.
    pub fn policy(&self) -> Result<Option<SnpPolicy>> {
        if self.reference.is_empty() {
            if self.certs.is_some() || self.test_root.is_some() || !self.crl.is_empty() {
                crate::usage_bail!(
                    "--snp-certs, --snp-crl and --snp-test-root need --snp-reference (the launch measurements to accept)"
                );
            }
            return Ok(None);
        }
        Ok(Some(self.policy_allowing_no_reference()?))
    }

    /// The policy even without reference values (`veil verify` then reports the measurement).
    pub fn policy_allowing_no_reference(&self) -> Result<SnpPolicy> {
        // The argument first (exit 2), before any file is read.
        let min_tcb =
            MinTcb::parse(&self.min_tcb).map_err(|e| crate::cli_error::usage(format!("--snp-min-tcb: {e}")))?;
        Ok(SnpPolicy {
            measurements: self.reference.iter().map(|p| read_reference(p)).collect::<Result<_>>()?,
            offline_certs: self.certs.as_deref().map(read_cert_dir).transpose()?.unwrap_or_default(),
            test_root: self
                .test_root
                .as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()?,
            refuse_smt: self.refuse_smt,
            host_data: None,
            crls: self
                .crl
                .iter()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .chain(self.certs.as_deref().map(read_crl_in_dir).transpose()?.flatten().map(Ok))
                .collect::<Result<_>>()?,
            allow_missing_crl: self.allow_missing_crl,
            min_tcb,
        })
    }
}
