//! The SNP launch digest against the values upstream's tests assert (sev-snp-measure and
//! virtee/sev, shared/testdata/snp/expected_upstream_tests.json) on real OVMF footers
//! (AmdSevX64 with kernel hashes, OvmfX64 without), for QEMU: 1 and 4 vCPUs, guest features
//! 0x1 and 0x21, with and without kernel hashes, from the ROM itself or from a given digest
//! of the ROM's pages.
mod common;

use common::{testdata, unhex};
use veil_agent::snp::hashes::KernelHashes;
use veil_agent::snp::launch::{self, Launch};

#[test]
fn launch_digests_equal_upstreams() {
    let Some(dir) = testdata("snp") else { return };
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected_upstream_tests.json")).unwrap()).unwrap();
    let mut checked = 0;
    for v in doc["vectors"].as_array().unwrap() {
        // QEMU SNP vectors with an expected value (ec2 and gce VMM types are not QEMU's).
        if v["mode"] != "snp" || !v["vmm_type"].is_null() || v["expected"].is_null() {
            continue;
        }
        let ovmf = v["ovmf"].as_str().unwrap().replace("fixtures/", "ovmf-fixtures/");
        let rom = std::fs::read(dir.join(&ovmf)).unwrap();
        // A /dev/null kernel and initrd: empty files.
        let kernel_hashes =
            v["kernel"].as_str().map(|_| KernelHashes::of(b"", b"", v["append"].as_str().unwrap_or("").as_bytes()));
        let launch = Launch {
            rom: &rom,
            rom_digest: v["snp_ovmf_hash"].as_str().map(|h| unhex(h).try_into().unwrap()),
            vcpus: v["vcpus"].as_u64().unwrap() as u32,
            vcpu_signature: launch::vcpu_signature(v["vcpu_type"].as_str().unwrap()).unwrap(),
            guest_features: v["guest_features"].as_u64().unwrap(),
            kernel_hashes,
        };
        let got = hex::encode(launch::digest(&launch).unwrap());
        assert_eq!(got, v["expected"].as_str().unwrap(), "{v}");
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} vectors checked");
}

#[test]
fn kernel_hashes_need_a_rom_that_takes_them() {
    let Some(dir) = testdata("snp") else { return };
    // OvmfX64 has no SNP_KERNEL_HASHES section: sev-snp-measure refuses that combination too.
    let rom = std::fs::read(dir.join("ovmf-fixtures/ovmf_OvmfX64_suffix.bin")).unwrap();
    let launch = Launch {
        rom: &rom,
        rom_digest: None,
        vcpus: 1,
        vcpu_signature: 0x80_0F12,
        guest_features: 1,
        kernel_hashes: Some(KernelHashes::of(b"", b"", b"")),
    };
    assert_eq!(launch::digest(&launch), Err(veil_agent::snp::SnpError::NoKernelHashesSection));
}
