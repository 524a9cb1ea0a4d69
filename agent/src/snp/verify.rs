//! On the host (a key broker, `veil verify`): an SEV-SNP attestation report checked from its
//! raw bytes. The VCEK's (or VLEK's) certificate chain is validated by [`crate::pki`]
//! (rustls-webpki) up to AMD's ARK for the report's product line (Milan, Genoa, Turin; built
//! into virtee's `sev` crate), with AMD's profile and AMD's CRL; the report's ECDSA P-384
//! signature is checked over the exact signed bytes (0x000-0x29F) with the VEK's key, and every
//! field the SNP ABI reserves (must be zero) inside or beside the signed range is refused when
//! set; the reported, current and launch TCB must be at least the operator's minimum, the
//! reported TCB equal to the VEK's, CHIP_ID equal to the VCEK's hwID as AMD defines it per
//! product line; then the guest policy, VMPL, measurement and HOST_DATA.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use der::Decode;
use der::asn1::ObjectIdentifier;
use sev::certs::snp::builtin;
use sev::firmware::guest::AttestationReport;

use crate::pki::{self, Crls, Profile};

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
    /// AMD's ARK for the product line (DER), as `sev` carries it.
    fn builtin_ark(self) -> Result<Vec<u8>, String> {
        match self {
            Product::Milan => builtin::milan::ark(),
            Product::Genoa => builtin::genoa::ark(),
            Product::Turin => builtin::turin::ark(),
        }
        .and_then(|c| c.to_der())
        .map_err(|e| format!("the built-in ARK: {e}"))
    }
}

/// AMD's VCEK chain: the VCEK, issued by the product line's ASK, issued by its ARK. AMD's CRL
/// (issued by the ARK) revokes ASKs; no CRL covers a VCEK (a VCEK is retired by its TCB).
pub const VCEK_PROFILE: Profile = Profile {
    what: "the VCEK certificate",
    leaf_cn: &["SEV-VCEK"],
    intermediates: &[&["SEV-Milan", "SEV-Genoa", "SEV-Turin"]],
    algorithms: pki::AMD_ALGORITHMS,
    every_certificate_has_a_crl: false,
};

/// AMD's VLEK chain: the VLEK, issued by the product line's ASVK, issued by its ARK.
pub const VLEK_PROFILE: Profile = Profile {
    what: "the VLEK certificate",
    leaf_cn: &["SEV-VLEK"],
    intermediates: &[&["SEV-VLEK-Milan", "SEV-VLEK-Genoa", "SEV-VLEK-Turin"]],
    algorithms: pki::AMD_ALGORITHMS,
    every_certificate_has_a_crl: false,
};

/// The least TCB a verifier accepts, per component (`--snp-min-tcb`). Each of the report's
/// reported, current and launch TCB must reach it in every component (TCB versions are not
/// ordered as numbers: each SPL is compared on its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinTcb {
    /// PSP bootloader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
    /// FMC SPL (Turin and later; ignored for Milan and Genoa, whose TCB has none).
    pub fmc: u8,
}

impl MinTcb {
    /// Parse `bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]` (any subset; omitted: 0).
    pub fn parse(text: &str) -> Result<MinTcb, String> {
        let mut m = MinTcb::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?} is not NAME=VALUE"))?;
            let v = v.trim();
            let n = match v.strip_prefix("0x") {
                Some(h) => u8::from_str_radix(h, 16),
                None => v.parse::<u8>(),
            }
            .map_err(|_| format!("{part:?}: not an SPL from 0 to 255"))?;
            match k.trim() {
                "bootloader" => m.bootloader = n,
                "tee" => m.tee = n,
                "snp" => m.snp = n,
                "microcode" => m.microcode = n,
                "fmc" => m.fmc = n,
                other => {
                    return Err(format!("{other:?} is not a TCB component (bootloader, tee, snp, microcode, fmc)"));
                }
            }
        }
        Ok(m)
    }
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
    /// AMD's CRLs (DER or PEM; `--snp-crl`, or crl.der/crl.pem in `--snp-certs`).
    pub crls: Vec<Vec<u8>>,
    /// Accept a chain without AMD's CRL (`--allow-missing-crl`).
    pub allow_missing_crl: bool,
    /// The least reported, current and launch TCB.
    pub min_tcb: MinTcb,
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
    pub const CURRENT_TCB: usize = 0x38;
    pub const KEY_INFO: usize = 0x48;
    pub const MEASUREMENT: usize = 0x90;
    pub const HOST_DATA: usize = 0xC0;
    pub const REPORTED_TCB: usize = 0x180;
    pub const CPUID_FAM: usize = 0x188;
    pub const CPUID_MOD: usize = 0x189;
    pub const CHIP_ID: usize = 0x1A0;
    pub const COMMITTED_TCB: usize = 0x1E0;
    pub const LAUNCH_TCB: usize = 0x1F0;
    pub const SIGNATURE: usize = 0x2A0;
}

/// The AMD KDS certificate extensions (VCEK/VLEK), by OID arc under 1.3.6.1.4.1.3704.
const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
const OID_HWID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");

/// A KDS extension's value (the DER inside extnValue).
fn kds_extension(cert: &x509_cert::Certificate, oid: ObjectIdentifier) -> Option<&[u8]> {
    cert.tbs_certificate().extensions()?.iter().find(|e| e.extn_id == oid).map(|e| e.extn_value.as_bytes())
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

/// A TCB_VERSION's components by name, in the product line's layout (SNP ABI: Milan and
/// Genoa [0] bootloader, [1] TEE, [6] SNP, [7] microcode; Turin [0] FMC, [1] bootloader, [2]
/// TEE, [3] SNP, [7] microcode), and its reserved bytes.
fn tcb_components(tcb: &[u8], turin: bool) -> (Vec<(&'static str, ObjectIdentifier, u8)>, core::ops::Range<usize>) {
    if turin {
        (
            alloc::vec![
                ("FMC", OID_FMC_SPL, tcb[0]),
                ("bootloader", OID_BL_SPL, tcb[1]),
                ("TEE", OID_TEE_SPL, tcb[2]),
                ("SNP", OID_SNP_SPL, tcb[3]),
                ("microcode", OID_UCODE_SPL, tcb[7]),
            ],
            4..7,
        )
    } else {
        (
            alloc::vec![
                ("bootloader", OID_BL_SPL, tcb[0]),
                ("TEE", OID_TEE_SPL, tcb[1]),
                ("SNP", OID_SNP_SPL, tcb[6]),
                ("microcode", OID_UCODE_SPL, tcb[7]),
            ],
            2..6,
        )
    }
}

/// The report's reserved fields (SNP ABI: must be zero), by version; the first one set is a
/// refusal. `turin` selects the TCB layout whose reserved bytes are checked.
fn reserved_fields_are_zero(raw: &[u8], turin: bool) -> Result<(), String> {
    let version = u32::from_le_bytes(raw[at::VERSION..at::VERSION + 4].try_into().expect("4 bytes"));
    let mut zero: Vec<(usize, usize, &str)> = alloc::vec![
        (0x04C, 0x050, "reserved (0x04C)"),
        (0x18B, 0x1A0, "reserved (0x18B)"),
        (0x1EB, 0x1EC, "reserved (0x1EB)"),
        (0x1EF, 0x1F0, "reserved (0x1EF)"),
        (0x208, 0x2A0, "reserved (0x208)"),
        // The signature: R and S are 48-byte values in 72-byte little-endian fields.
        (at::SIGNATURE + 48, at::SIGNATURE + 72, "the signature's R padding"),
        (at::SIGNATURE + 72 + 48, at::SIGNATURE + 144, "the signature's S padding"),
        (at::SIGNATURE + 144, 0x4A0, "reserved (after the signature)"),
    ];
    if version < 3 {
        zero.push((0x188, 0x18B, "CPUID_FAM/MOD/STEP (reserved before version 3)"));
    }
    if version < 5 {
        zero.push((0x1F8, 0x208, "LAUNCH/CURRENT_MIT_VECTOR (reserved before version 5)"));
    }
    for (name, offset) in [
        ("CURRENT_TCB", at::CURRENT_TCB),
        ("REPORTED_TCB", at::REPORTED_TCB),
        ("COMMITTED_TCB", at::COMMITTED_TCB),
        ("LAUNCH_TCB", at::LAUNCH_TCB),
    ] {
        let (_, reserved) = tcb_components(&raw[offset..offset + 8], turin);
        if raw[offset + reserved.start..offset + reserved.end].iter().any(|b| *b != 0) {
            return Err(format!(
                "{name} has its reserved bytes set (offset {:#x}): not a report AMD's firmware writes",
                offset + reserved.start
            ));
        }
    }
    if u32::from_le_bytes(raw[at::KEY_INFO..at::KEY_INFO + 4].try_into().expect("4 bytes")) >> 5 != 0 {
        return Err(String::from("the report's key information has reserved bits set (offset 0x48)"));
    }
    for (from, to, what) in zero {
        if let Some(i) = raw[from..to].iter().position(|b| *b != 0) {
            return Err(format!("the report's {what} is not zero at offset {:#x}", from + i));
        }
    }
    Ok(())
}

/// The report's signature (ECDSA P-384 with SHA-384, R and S little-endian) over its first
/// 0x2A0 bytes, exactly as received, with the VEK's public key.
fn verify_signature(raw: &[u8], vek: &x509_cert::Certificate, vek_name: &str) -> Result<(), String> {
    use p384::ecdsa::signature::Verifier;
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(
        vek.tbs_certificate().subject_public_key_info().subject_public_key.raw_bytes(),
    )
    .map_err(|_| format!("the {vek_name}'s key is not a P-384 point"))?;
    let big_endian = |offset: usize| {
        let mut b = [0u8; 48];
        b.copy_from_slice(&raw[offset..offset + 48]);
        b.reverse();
        b
    };
    let sig = p384::ecdsa::Signature::from_scalars(big_endian(at::SIGNATURE), big_endian(at::SIGNATURE + 72))
        .map_err(|_| String::from("the report's signature is not a valid ECDSA signature"))?;
    key.verify(&raw[..at::SIGNATURE], &sig)
        .map_err(|_| format!("the report's signature does not verify with the {vek_name}'s key"))
}

/// Verify a raw report (1184 bytes) with `certs` (the evidence's, else the policy's offline
/// ones) at `now` (seconds since the epoch): the VEK chain to AMD's root (or the policy's test
/// root) with AMD's CRL, the signature over the raw bytes, the reserved fields, the TCB against
/// the minimum and the certificate, CHIP_ID, guest policy, VMPL, measurement and HOST_DATA.
/// Report data is the caller's (it depends on the protocol).
pub fn verify_snp(raw: &[u8], certs: &[(CertType, Vec<u8>)], policy: &SnpPolicy, now: u64) -> Result<Verified, String> {
    let mut checks = Vec::new();
    verify_snp_logged(raw, certs, policy, now, &mut checks)?;
    Ok(Verified { raw: raw.to_vec(), checks })
}

/// [`verify_snp`], adding each check that passed to `checks` as it goes, so that a refusal
/// can be shown with what passed before it (`veil verify --json`).
pub fn verify_snp_logged(
    raw: &[u8],
    certs: &[(CertType, Vec<u8>)],
    policy: &SnpPolicy,
    now: u64,
    checks: &mut Vec<String>,
) -> Result<(), String> {
    if raw.len() != super::evidence::REPORT_LEN {
        return Err(format!("the report is {} bytes, not 1184", raw.len()));
    }
    let version = u32::from_le_bytes(raw[at::VERSION..at::VERSION + 4].try_into().expect("4 bytes"));
    if !(2..=5).contains(&version) {
        return Err(format!("report version {version}: not a layout this verifier knows (2 to 5)"));
    }
    let find =
        |t: CertType| certs.iter().chain(policy.offline_certs.iter()).find(|(c, _)| *c == t).map(|(_, d)| d.as_slice());
    let signing_key = (raw[at::KEY_INFO] >> 2) & 7; // 0 VCEK, 1 VLEK
    let (vek, vek_name, profile) = match signing_key {
        0 => (
            find(CertType::Vcek).ok_or(
                "no VCEK certificate (the evidence carries none); give a directory of AMD KDS certificates: \
                 veil verify --certs DIR, veil kbs serve --snp-certs DIR",
            )?,
            "VCEK",
            &VCEK_PROFILE,
        ),
        1 => (
            find(CertType::Vlek).ok_or(
                "no VLEK certificate (the evidence carries none); give a directory of AMD KDS certificates: \
                 veil verify --certs DIR, veil kbs serve --snp-certs DIR",
            )?,
            "VLEK",
            &VLEK_PROFILE,
        ),
        k => return Err(format!("the report is signed by key {k}, neither VCEK nor VLEK")),
    };
    let ask = find(CertType::Ask).ok_or(
        "no ASK certificate; give a directory of AMD KDS certificates: veil verify --certs DIR, veil kbs serve --snp-certs DIR",
    )?;
    let ark = find(CertType::Ark).ok_or(
        "no ARK certificate; give a directory of AMD KDS certificates: veil verify --certs DIR, veil kbs serve --snp-certs DIR",
    )?;
    if u32::from_le_bytes(raw[at::SIG_ALGO..at::SIG_ALGO + 4].try_into().expect("4 bytes")) != 1 {
        return Err(String::from("the report's signature algorithm is not ECDSA P-384 with SHA-384"));
    }
    let ark_der = pki::to_der(ark).map_err(|e| format!("ARK: {e}"))?;
    let (anchor, root) = match &policy.test_root {
        Some(test) => {
            let test = pki::to_der(test).map_err(|e| format!("test root: {e}"))?;
            if ark_der != test {
                return Err(String::from("the ARK is not the test root given"));
            }
            (test, String::from("the TEST root given on the command line (not AMD's)"))
        }
        None => {
            let candidates: Vec<Product> = match product_of(raw) {
                Some(p) => alloc::vec![p],
                None => alloc::vec![Product::Milan, Product::Genoa, Product::Turin],
            };
            let mut matched = None;
            for p in candidates {
                if p.builtin_ark()? == ark_der {
                    matched = Some(p);
                }
            }
            let p = matched.ok_or("the ARK is not AMD's root key for the report's product line")?;
            (ark_der, format!("AMD's {p:?} root key"))
        }
    };
    let crls = policy.crls.iter().map(|c| crl_der(c)).collect::<Result<Vec<_>, _>>()?;
    let missing = if policy.allow_missing_crl { Crls::AllowMissing } else { Crls::Required };
    let vek_der = pki::to_der(vek).map_err(|e| format!("{vek_name}: {e}"))?;
    let ask_der = pki::to_der(ask).map_err(|e| format!("ASK: {e}"))?;
    let chain = pki::validate(&vek_der, &[ask_der], &anchor, now, &crls, missing, profile)
        .map_err(|e| format!("certificate chain: {e}"))?;
    let vek_cert = &chain[0];
    verify_signature(raw, vek_cert, vek_name)?;
    checks.push(format!(
        "signature: over the report's bytes by the {vek_name}, certified by the ASK, certified by {root}; {}",
        if crls.is_empty() { "NO CRL: revocation not checked (allowed)" } else { "the ASK is not on AMD's CRL" }
    ));
    let turin = product_of(raw) == Some(Product::Turin);
    reserved_fields_are_zero(raw, turin)?;
    checks.push(String::from("reserved fields: zero"));

    // The TCB the report states must be the one the VEK was issued for, and every TCB the
    // report names at least the operator's minimum.
    let (reported, _) = tcb_components(&raw[at::REPORTED_TCB..at::REPORTED_TCB + 8], turin);
    for (name, oid, value) in &reported {
        let cert = kds_extension(vek_cert, *oid)
            .and_then(|v| u64::from_der(v).ok())
            .ok_or_else(|| format!("the {vek_name} has no {name} SPL extension"))?;
        if cert != u64::from(*value) {
            return Err(format!("reported TCB {name} SVN {value} differs from the {vek_name}'s {cert}"));
        }
    }
    let m = policy.min_tcb;
    let floor = |name: &str| match name {
        "FMC" => m.fmc,
        "bootloader" => m.bootloader,
        "TEE" => m.tee,
        "SNP" => m.snp,
        _ => m.microcode,
    };
    for (which, offset) in [("reported", at::REPORTED_TCB), ("current", at::CURRENT_TCB), ("launch", at::LAUNCH_TCB)] {
        let (components, _) = tcb_components(&raw[offset..offset + 8], turin);
        for (name, _, value) in components {
            if value < floor(name) {
                return Err(format!(
                    "the {which} TCB's {name} SPL {value} is below the minimum {} (--snp-min-tcb)",
                    floor(name)
                ));
            }
        }
    }
    checks.push(format!(
        "TCB: {} equal the {vek_name}'s; reported, current and launch TCB at least bootloader {}, TEE {}, SNP {}, microcode {}{}",
        reported.iter().map(|(n, _, v)| format!("{n} {v}")).collect::<Vec<_>>().join(", "),
        m.bootloader,
        m.tee,
        m.snp,
        m.microcode,
        if turin { format!(", FMC {}", m.fmc) } else { String::new() }
    ));
    if signing_key == 0 && raw[at::KEY_INFO] & 2 == 0 {
        // AMD KDS writes the hwID as the extension's OCTET STRING itself (its bytes are the ID):
        // Milan and Genoa VCEKs carry the whole 64-byte CHIP_ID; from Turin on, the hwID is 8
        // bytes and the chip's CHIP_ID is those 8 bytes followed by zeros.
        let hwid = kds_extension(vek_cert, OID_HWID).ok_or("the VCEK has no hwID extension")?;
        let chip = &raw[at::CHIP_ID..at::CHIP_ID + 64];
        let same = match hwid.len() {
            64 if !turin => hwid == chip,
            8 if turin => hwid == &chip[..8] && chip[8..].iter().all(|b| *b == 0),
            n => {
                return Err(format!(
                    "the VCEK's hwID is {n} bytes, not what AMD issues for a {} chip",
                    if turin { "Turin (8)" } else { "Milan or Genoa (64)" }
                ));
            }
        };
        if !same {
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
    Ok(())
}

/// A CRL in DER or PEM, as DER.
fn crl_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (label, der) = der::pem::decode_vec(bytes.trim_ascii()).map_err(|e| format!("AMD's CRL: not PEM: {e}"))?;
        if label != "X509 CRL" {
            return Err(format!("AMD's CRL: a PEM {label}, not an X509 CRL"));
        }
        Ok(der)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Trustee's `snp` evidence (`{"attestation_report": <virtee serde>, "cert_chain": ...}`): the
/// report's bytes and the certificates it carries. The serde form has no reserved bytes: they
/// are written as zeros, which is what AMD signed.
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

/// Validate a VCEK chain alone at `now`: the ARK is AMD's root for some product line, it
/// issues the ASK, which issues the VCEK (AMD's profile, validity, `crls`). Returns the product
/// line.
pub fn verify_chain(
    vcek: &[u8],
    ask: &[u8],
    ark: &[u8],
    now: u64,
    crls: &[Vec<u8>],
    missing: Crls,
) -> Result<Product, String> {
    let ark_der = pki::to_der(ark)?;
    let mut product = None;
    for p in [Product::Milan, Product::Genoa, Product::Turin] {
        if p.builtin_ark()? == ark_der {
            product = Some(p);
        }
    }
    let product = product.ok_or("the ARK is not one of AMD's root keys")?;
    let crls = crls.iter().map(|c| crl_der(c)).collect::<Result<Vec<_>, _>>()?;
    pki::validate(&pki::to_der(vcek)?, &[pki::to_der(ask)?], &ark_der, now, &crls, missing, &VCEK_PROFILE)
        .map_err(|e| format!("certificate chain: {e}"))?;
    Ok(product)
}
