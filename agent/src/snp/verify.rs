//! On the host (a key broker, `veil verify`): an SEV-SNP attestation report checked the way
//! Trustee's SNP verifier does it, with virtee's `sev` crate (the same crate, whose serde form
//! of the report is Trustee's SNP evidence format): the report's ECDSA P-384 signature by the
//! VCEK or VLEK, that key's certificate signed by the ASK (or ASVK), the ASK by the ARK, and the
//! ARK equal to AMD's own for the product (Milan, Genoa, Turin), built into `sev`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

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

/// What a verifier accepts besides a valid signature chain.
#[derive(Debug, Clone, Default)]
pub struct SnpPolicy {
    /// Acceptable launch measurements (`veil measure --platform snp --out`); empty: any (the
    /// caller says so in its output).
    pub measurements: Vec<[u8; 48]>,
    /// Certificates to use when the evidence carries none (`--snp-certs DIR`).
    pub offline_certs: Vec<(CertType, Vec<u8>)>,
    /// A root other than AMD's (PEM or DER): tests only, and the caller says so loudly.
    pub test_root: Option<Vec<u8>>,
    /// Refuse guests whose policy allows SMT.
    pub refuse_smt: bool,
    /// The HOST_DATA the launch must carry, if any.
    pub host_data: Option<[u8; 32]>,
}

/// A report that passed every check.
#[derive(Debug)]
pub struct Verified {
    /// The report's bytes.
    pub raw: Vec<u8>,
    /// Each check, in words (for logs and `veil verify`).
    pub checks: Vec<String>,
}

use super::evidence::CertType;

/// Field offsets of ATTESTATION_REPORT (SNP firmware ABI, table "ATTESTATION_REPORT").
mod at {
    pub const VERSION: usize = 0x00;
    pub const POLICY: usize = 0x08;
    pub const VMPL: usize = 0x30;
    pub const SIG_ALGO: usize = 0x34;
    pub const KEY_INFO: usize = 0x48;
    pub const MEASUREMENT: usize = 0x90;
    pub const HOST_DATA: usize = 0xC0;
    pub const REPORTED_TCB: usize = 0x180;
    pub const CPUID_FAM: usize = 0x188;
    pub const CPUID_MOD: usize = 0x189;
    pub const CHIP_ID: usize = 0x1A0;
}

/// The AMD KDS certificate extensions (VCEK/VLEK), by OID arc under 1.3.6.1.4.1.3704.
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

/// The extensions of a VCEK/VLEK certificate: OID -> the DER value inside extnValue.
fn kds_extensions(cert: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    use der::Decode;
    let der = if cert.starts_with(b"-----BEGIN") {
        let (_, doc) = der::Document::from_pem(core::str::from_utf8(cert).map_err(|_| "VEK: not PEM text")?)
            .map_err(|e| format!("VEK: {e}"))?;
        doc.as_bytes().to_vec()
    } else {
        cert.to_vec()
    };
    let c = x509_cert::Certificate::from_der(&der).map_err(|e| format!("VEK: not a certificate: {e}"))?;
    Ok(c.tbs_certificate()
        .extensions()
        .map(|exts| exts.iter().map(|e| (e.extn_id.to_string(), e.extn_value.as_bytes().to_vec())).collect::<Vec<_>>())
        .unwrap_or_default())
}

/// A small DER INTEGER's value.
fn der_uint(v: &[u8]) -> Option<u64> {
    match v {
        [0x02, len, rest @ ..] if usize::from(*len) == rest.len() && rest.len() <= 9 => {
            Some(rest.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        }
        _ => None,
    }
}

/// The product line a report (version 3 and later: CPUID family and model) comes from.
fn product_of(raw: &[u8]) -> Option<Product> {
    if u32::from_le_bytes(raw[0..4].try_into().expect("4 bytes")) < 3 {
        return None;
    }
    match (raw[at::CPUID_FAM], raw[at::CPUID_MOD]) {
        (0x19, 0x00..=0x0F) => Some(Product::Milan),
        (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Product::Genoa),
        (0x1A, _) => Some(Product::Turin),
        _ => None,
    }
}

/// Verify a raw report (1184 bytes) with `certs` (the evidence's, else the policy's offline
/// ones): signature, chain to AMD's root (or the policy's test root), TCB against the
/// certificate, guest policy, VMPL, measurement and HOST_DATA. Report data is the caller's
/// (it depends on the protocol).
pub fn verify_snp(raw: &[u8], certs: &[(CertType, Vec<u8>)], policy: &SnpPolicy) -> Result<Verified, String> {
    let mut checks = Vec::new();
    verify_snp_logged(raw, certs, policy, &mut checks)?;
    Ok(Verified { raw: raw.to_vec(), checks })
}

/// [`verify_snp`], adding each check that passed to `checks` as it goes, so that a refusal
/// can be shown with what passed before it (`veil verify --json`).
pub fn verify_snp_logged(
    raw: &[u8],
    certs: &[(CertType, Vec<u8>)],
    policy: &SnpPolicy,
    checks: &mut Vec<String>,
) -> Result<(), String> {
    if raw.len() != super::evidence::REPORT_LEN {
        return Err(format!("the report is {} bytes, not 1184", raw.len()));
    }
    let find =
        |t: CertType| certs.iter().chain(policy.offline_certs.iter()).find(|(c, _)| *c == t).map(|(_, d)| d.as_slice());
    let signing_key = (raw[at::KEY_INFO] >> 2) & 7; // 0 VCEK, 1 VLEK
    let (vek, vek_name) = match signing_key {
        0 => (find(CertType::Vcek).ok_or("no VCEK certificate (the evidence carries none); give a directory of AMD KDS certificates: veil verify --certs DIR, veil kbs serve --snp-certs DIR")?, "VCEK"),
        1 => (find(CertType::Vlek).ok_or("no VLEK certificate (the evidence carries none); give a directory of AMD KDS certificates: veil verify --certs DIR, veil kbs serve --snp-certs DIR")?, "VLEK"),
        k => return Err(format!("the report is signed by key {k}, neither VCEK nor VLEK")),
    };
    let ask = find(CertType::Ask).ok_or("no ASK certificate; give a directory of AMD KDS certificates: veil verify --certs DIR, veil kbs serve --snp-certs DIR")?;
    let ark = find(CertType::Ark).ok_or("no ARK certificate; give a directory of AMD KDS certificates: veil verify --certs DIR, veil kbs serve --snp-certs DIR")?;
    if u32::from_le_bytes(raw[at::SIG_ALGO..at::SIG_ALGO + 4].try_into().expect("4 bytes")) != 1 {
        return Err(String::from("the report's signature algorithm is not ECDSA P-384 with SHA-384"));
    }
    let parsed = AttestationReport::from_bytes(raw).map_err(|e| format!("attestation report: {e}"))?;
    let ark_cert = certificate(ark, "ARK")?;
    let ark_der = ark_cert.to_der().map_err(|e| format!("ARK: {e}"))?;
    let root = match &policy.test_root {
        Some(test) => {
            if ark_der != certificate(test, "test root")?.to_der().map_err(|e| format!("test root: {e}"))? {
                return Err(String::from("the ARK is not the test root given"));
            }
            String::from("the TEST root given on the command line (not AMD's)")
        }
        None => {
            let candidates: Vec<Product> = match product_of(raw) {
                Some(p) => alloc::vec![p],
                None => alloc::vec![Product::Milan, Product::Genoa, Product::Turin],
            };
            let mut matched = None;
            for p in candidates {
                if p.builtin_ark()?.to_der().map_err(|e| format!("built-in ARK: {e}"))? == ark_der {
                    matched = Some(p);
                }
            }
            let p = matched.ok_or("the ARK is not AMD's root key for the report's product line")?;
            format!("AMD's {p:?} root key")
        }
    };
    let chain =
        Chain { ca: ca::Chain { ark: ark_cert, ask: certificate(ask, "ASK")? }, vek: certificate(vek, vek_name)? };
    (&chain, &parsed).verify().map_err(|e| format!("signature chain: {e}"))?;
    checks.push(format!("signature: by the {vek_name}, certified by the ASK, certified by {root}"));

    // The TCB the report states must be the one the VEK was issued for.
    let ext = kds_extensions(vek)?;
    let get = |oid: &str| ext.iter().find(|(o, _)| o == oid).map(|(_, v)| v.as_slice());
    let tcb = &raw[at::REPORTED_TCB..at::REPORTED_TCB + 8];
    let turin = raw[at::CPUID_FAM] == 0x1A && product_of(raw).is_some();
    let fields: Vec<(&str, &str, u8)> = if turin {
        alloc::vec![
            ("FMC", OID_FMC_SPL, tcb[0]),
            ("bootloader", OID_BL_SPL, tcb[1]),
            ("TEE", OID_TEE_SPL, tcb[2]),
            ("SNP", OID_SNP_SPL, tcb[3]),
            ("microcode", OID_UCODE_SPL, tcb[7])
        ]
    } else {
        alloc::vec![
            ("bootloader", OID_BL_SPL, tcb[0]),
            ("TEE", OID_TEE_SPL, tcb[1]),
            ("SNP", OID_SNP_SPL, tcb[6]),
            ("microcode", OID_UCODE_SPL, tcb[7])
        ]
    };
    for (name, oid, reported) in &fields {
        let cert = get(oid).and_then(der_uint).ok_or_else(|| format!("the {vek_name} has no {name} SPL extension"))?;
        if cert != u64::from(*reported) {
            return Err(format!("reported TCB {name} SVN {reported} differs from the {vek_name}'s {cert}"));
        }
    }
    checks.push(format!(
        "TCB: {} equal the {vek_name}'s",
        fields.iter().map(|(n, _, v)| format!("{n} {v}")).collect::<Vec<_>>().join(", ")
    ));
    if signing_key == 0 && raw[at::KEY_INFO] & 2 == 0 {
        let hwid = get(OID_HWID).ok_or("the VCEK has no hwID extension")?;
        let id = hwid.strip_prefix(&[0x04, 0x40][..]).unwrap_or(hwid);
        if id != &raw[at::CHIP_ID..at::CHIP_ID + 64] {
            return Err(String::from("CHIP_ID differs from the VCEK's hwID (another chip's key)"));
        }
        checks.push(String::from("chip: CHIP_ID equals the VCEK's hwID"));
    }

    let guest_policy = u64::from_le_bytes(raw[at::POLICY..at::POLICY + 8].try_into().expect("8 bytes"));
    if guest_policy & (1 << 19) != 0 {
        return Err(String::from("the guest policy allows debugging (DEBUG, bit 19): its memory is not confidential"));
    }
    if guest_policy & (1 << 18) != 0 {
        return Err(String::from("the guest policy allows a migration agent (MIGRATE_MA, bit 18)"));
    }
    if policy.refuse_smt && guest_policy & (1 << 16) != 0 {
        return Err(String::from("the guest policy allows SMT (bit 16), which this verifier refuses"));
    }
    checks.push(format!("policy: {guest_policy:#x} (no debugging, no migration agent)"));
    let vmpl = u32::from_le_bytes(raw[at::VMPL..at::VMPL + 4].try_into().expect("4 bytes"));
    if vmpl != 0 {
        return Err(format!("the report was requested at VMPL {vmpl}, not 0 (the firmware's)"));
    }
    checks.push(String::from("VMPL: 0"));
    let measurement = &raw[at::MEASUREMENT..at::MEASUREMENT + 48];
    if policy.measurements.is_empty() {
        checks.push(format!("measurement: {} (no reference values given: not checked)", hex::encode(measurement)));
    } else if policy.measurements.iter().any(|m| m[..] == *measurement) {
        checks.push(format!("measurement: {} is a reference value", hex::encode(measurement)));
    } else {
        return Err(format!("the launch measurement {} is not among the reference values", hex::encode(measurement)));
    }
    if let Some(want) = policy.host_data {
        let got = &raw[at::HOST_DATA..at::HOST_DATA + 32];
        if got != want {
            return Err(format!("HOST_DATA {} is not the expected {}", hex::encode(got), hex::encode(want)));
        }
        checks.push(format!("HOST_DATA: {}", hex::encode(got)));
    }
    let _ = at::VERSION;
    Ok(())
}

/// Trustee's `snp` evidence (`{"attestation_report": <virtee serde>, "cert_chain": ...}`): the
/// report's bytes and the certificates it carries.
pub fn from_evidence(evidence: &serde_json::Value) -> Result<(Vec<u8>, Vec<(CertType, Vec<u8>)>), String> {
    let report: AttestationReport = serde_json::from_value(evidence["attestation_report"].clone())
        .map_err(|e| format!("the evidence's attestation_report: {e}"))?;
    let mut raw = Vec::new();
    report.write_bytes(&mut raw).map_err(|e| format!("the evidence's attestation_report: {e}"))?;
    let mut certs = Vec::new();
    if let Some(list) = evidence["cert_chain"].as_array() {
        for c in list {
            let t = match c["cert_type"].as_str() {
                Some("VCEK") => CertType::Vcek,
                Some("VLEK") => CertType::Vlek,
                Some("ASK") => CertType::Ask,
                Some("ARK") => CertType::Ark,
                _ => continue,
            };
            let data: Vec<u8> =
                serde_json::from_value(c["data"].clone()).map_err(|e| format!("the evidence's cert_chain: {e}"))?;
            certs.push((t, data));
        }
    }
    Ok((raw, certs))
}

/// Verify a certificate chain alone: the ARK is AMD's root for some product line, it signs
/// the ASK (or ASVK), which signs the VEK. Returns the product line.
pub fn verify_chain(vek: &[u8], ask: &[u8], ark: &[u8]) -> Result<Product, String> {
    let ark_cert = certificate(ark, "ARK")?;
    let ark_der = ark_cert.to_der().map_err(|e| format!("ARK: {e}"))?;
    let mut product = None;
    for p in [Product::Milan, Product::Genoa, Product::Turin] {
        if p.builtin_ark()?.to_der().map_err(|e| format!("built-in ARK: {e}"))? == ark_der {
            product = Some(p);
        }
    }
    let product = product.ok_or("the ARK is not one of AMD's root keys")?;
    let chain = Chain { ca: ca::Chain { ark: ark_cert, ask: certificate(ask, "ASK")? }, vek: certificate(vek, "VEK")? };
    chain.verify().map_err(|e| format!("certificate chain: {e}"))?;
    Ok(product)
}
