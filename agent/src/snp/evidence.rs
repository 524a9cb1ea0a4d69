//! SEV-SNP evidence in the form Trustee's SNP verifier reads:
//! `{"attestation_report": <report>, "cert_chain": null | [{"cert_type", "data"}]}`, where the
//! report is not raw bytes but virtee/sev's serde form of `AttestationReport`: numbers for the
//! scalar fields, JSON arrays of numbers for byte arrays, objects for the TCB versions and the
//! firmware versions, `null` for fields the report's version does not have. The firmware
//! builds it here without the `sev` crate (no_std); the host tests check it against `sev`'s own
//! serialization of the same bytes.

use alloc::vec::Vec;

use crate::json;
use crate::json::{Map, Value};

use super::SnpError;

/// Size of ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4A0;

fn u32_at(r: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(r[at..at + 4].try_into().expect("in range"))
}

fn u64_at(r: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(r[at..at + 8].try_into().expect("in range"))
}

fn bytes(r: &[u8], at: usize, n: usize) -> Value {
    Value::Array(r[at..at + n].iter().map(|b| Value::from(*b)).collect())
}

/// A TCB_VERSION in the layout of the report's CPU generation: Milan and Genoa put the
/// bootloader, TEE, SNP and microcode SVNs in bytes 0, 1, 6 and 7; Turin (family 0x1A) adds
/// the FMC SVN in byte 0 and moves the others to 1, 2, 3 and 7.
fn tcb(r: &[u8], at: usize, turin: bool) -> Value {
    let b = &r[at..at + 8];
    if turin {
        json!({"fmc": b[0], "bootloader": b[1], "tee": b[2], "snp": b[3], "microcode": b[7]})
    } else {
        json!({"fmc": null, "bootloader": b[0], "tee": b[1], "snp": b[6], "microcode": b[7]})
    }
}

/// The report in virtee/sev's serde form.
pub fn report_json(r: &[u8]) -> Result<Value, SnpError> {
    if r.len() != REPORT_LEN {
        return Err(SnpError::Report("not 1184 bytes"));
    }
    let version = u32_at(r, 0);
    if !(2..=5).contains(&version) {
        return Err(SnpError::Report("a version outside 2..=5"));
    }
    let has_cpuid = version >= 3;
    let turin = has_cpuid && r[0x188] == 0x1A;
    let opt_u8 = |at: usize| if has_cpuid { Value::from(r[at]) } else { Value::Null };
    let opt_u64 = |at: usize| if version >= 5 { Value::from(u64_at(r, at)) } else { Value::Null };
    let mut m = Map::new();
    m.insert("version".into(), version.into());
    m.insert("guest_svn".into(), u32_at(r, 0x04).into());
    m.insert("policy".into(), u64_at(r, 0x08).into());
    m.insert("family_id".into(), bytes(r, 0x10, 16));
    m.insert("image_id".into(), bytes(r, 0x20, 16));
    m.insert("vmpl".into(), u32_at(r, 0x30).into());
    m.insert("sig_algo".into(), u32_at(r, 0x34).into());
    m.insert("current_tcb".into(), tcb(r, 0x38, turin));
    m.insert("plat_info".into(), u64_at(r, 0x40).into());
    m.insert("key_info".into(), u32_at(r, 0x48).into());
    m.insert("report_data".into(), bytes(r, 0x50, 64));
    m.insert("measurement".into(), bytes(r, 0x90, 48));
    m.insert("host_data".into(), bytes(r, 0xC0, 32));
    m.insert("id_key_digest".into(), bytes(r, 0xE0, 48));
    m.insert("author_key_digest".into(), bytes(r, 0x110, 48));
    m.insert("report_id".into(), bytes(r, 0x140, 32));
    m.insert("report_id_ma".into(), bytes(r, 0x160, 32));
    m.insert("reported_tcb".into(), tcb(r, 0x180, turin));
    m.insert("cpuid_fam_id".into(), opt_u8(0x188));
    m.insert("cpuid_mod_id".into(), opt_u8(0x189));
    m.insert("cpuid_step".into(), opt_u8(0x18A));
    m.insert("chip_id".into(), bytes(r, 0x1A0, 64));
    m.insert("committed_tcb".into(), tcb(r, 0x1E0, turin));
    m.insert("current".into(), json!({"build": r[0x1E8], "minor": r[0x1E9], "major": r[0x1EA]}));
    m.insert("committed".into(), json!({"build": r[0x1EC], "minor": r[0x1ED], "major": r[0x1EE]}));
    m.insert("launch_tcb".into(), tcb(r, 0x1F0, turin));
    m.insert("launch_mit_vector".into(), opt_u64(0x1F8));
    m.insert("current_mit_vector".into(), opt_u64(0x200));
    m.insert("signature".into(), json!({"r": bytes(r, 0x2A0, 72), "s": bytes(r, 0x2E8, 72)}));
    Ok(Value::Object(m))
}

/// A certificate of the host's certificate table, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertType {
    /// AMD Root Key.
    Ark,
    /// AMD SEV Key.
    Ask,
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key.
    Vlek,
}

/// Trustee's `snp` evidence: the report and, when the host provided it, the certificate chain.
pub fn evidence_json(report: &[u8], cert_chain: Option<&[(CertType, Vec<u8>)]>) -> Result<Value, SnpError> {
    let chain = match cert_chain {
        None => Value::Null,
        Some(certs) => Value::Array(
            certs
                .iter()
                .map(|(t, der)| {
                    let name = match t {
                        CertType::Ark => "ARK",
                        CertType::Ask => "ASK",
                        CertType::Vcek => "VCEK",
                        CertType::Vlek => "VLEK",
                    };
                    json!({"cert_type": name, "data": der})
                })
                .collect(),
        ),
    };
    Ok(json!({"attestation_report": report_json(report)?, "cert_chain": chain}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_sizes_and_versions() {
        assert_eq!(report_json(&[0; 100]), Err(SnpError::Report("not 1184 bytes")));
        let mut r = [0u8; REPORT_LEN];
        r[0] = 6;
        assert_eq!(report_json(&r), Err(SnpError::Report("a version outside 2..=5")));
        r[0] = 5;
        r[0x188] = 0x1A;
        r[0x180] = 9; // Turin: FMC in byte 0
        let v = report_json(&r).unwrap();
        assert_eq!(v["reported_tcb"]["fmc"], 9);
        assert_eq!(v["launch_mit_vector"], 0);
        let e = evidence_json(&r, Some(&[(CertType::Vcek, alloc::vec![1, 2])])).unwrap();
        assert_eq!(e["cert_chain"][0], json!({"cert_type": "VCEK", "data": [1, 2]}));
    }
}
