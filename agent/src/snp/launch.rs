//! The SNP launch digest: what the AMD-SP reports as MEASUREMENT after QEMU has added the
//! ROM, the metadata pages and one VMSA per vCPU (SNP firmware ABI, SNP_LAUNCH_UPDATE and
//! PAGE_INFO), computed the way sev-snp-measure 0.0.13 predicts it for QEMU.
//!
//! Each added page extends the digest: `digest = SHA-384(PAGE_INFO)`, PAGE_INFO being
//! `{digest_cur[48], contents[48], u16 length = 0x70, u8 page_type, u8 imi, u8 vmpl3, vmpl2,
//! vmpl1 permissions, u8 reserved, u64 gpa}` (0x70 bytes), `contents` = SHA-384 of the page for
//! NORMAL and VMSA pages and zero otherwise. The order is QEMU's: the ROM's pages (NORMAL, at
//! 4 GiB - ROM size), then the SEV metadata sections in order (SNP_SEC_MEM as ZERO, the secrets
//! page as SECRETS, the CPUID page as CPUID, SNP_KERNEL_HASHES as NORMAL holding the SEV hash
//! table when kernel-hashes=on and ZERO otherwise), then a VMSA per vCPU at GPA
//! 0xFFFFFFFFF000 (the BSP starting at 0xFFFFFFF0, the others at the ROM's SEV-ES reset address).

use sha2::{Digest, Sha384};

use super::SnpError;
use super::hashes::KernelHashes;
use super::ovmf::{self, SectionKind};

/// Page types of PAGE_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    /// Measured contents.
    Normal = 1,
    /// A vCPU's save area (measured contents).
    Vmsa = 2,
    /// Zero-filled by the AMD-SP.
    Zero = 3,
    /// Unmeasured contents.
    Unmeasured = 4,
    /// The secrets page.
    Secrets = 5,
    /// The CPUID page.
    Cpuid = 6,
}

/// Where QEMU/KVM place the VMSAs in the measurement.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// The BSP's reset address.
pub const BSP_EIP: u32 = 0xFFFF_FFF0;
/// sev-snp-measure's default guest features: SNPActive.
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;

/// A launch digest in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchDigest(pub [u8; 48]);

impl Default for LaunchDigest {
    fn default() -> Self {
        LaunchDigest([0; 48])
    }
}

impl LaunchDigest {
    /// Extend with one page.
    pub fn update(&mut self, page_type: PageType, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.0);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type as u8;
        // imi, the VMPL permissions and the reserved byte stay zero at launch.
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.0 = Sha384::digest(info).into();
    }

    /// NORMAL pages: `data` (a whole number of pages) at `gpa`.
    pub fn normal_pages(&mut self, gpa: u64, data: &[u8]) {
        for (i, page) in data.chunks(4096).enumerate() {
            self.update(PageType::Normal, gpa + 4096 * i as u64, &Sha384::digest(page).into());
        }
    }

    /// Pages of a type without measured contents.
    pub fn typed_pages(&mut self, page_type: PageType, gpa: u64, size: u64) {
        for i in 0..size.div_ceil(4096) {
            self.update(page_type, gpa + 4096 * i, &[0; 48]);
        }
    }
}

/// The initial state QEMU gives a vCPU (its VMSA page) starting at `eip`: real mode with
/// CS.base = eip & 0xFFFF0000 and RIP = eip & 0xFFFF, RDX = the CPUID signature, SEV features
/// as the guest policy asks. Field offsets from the AMD64 APM's VMSA layout (SEV-ES save area).
pub fn vmsa_page(eip: u32, vcpu_signature: u32, guest_features: u64) -> [u8; 4096] {
    let mut p = [0u8; 4096];
    let mut seg = |at: usize, selector: u16, attrib: u16, limit: u32, base: u64| {
        p[at..at + 2].copy_from_slice(&selector.to_le_bytes());
        p[at + 2..at + 4].copy_from_slice(&attrib.to_le_bytes());
        p[at + 4..at + 8].copy_from_slice(&limit.to_le_bytes());
        p[at + 8..at + 16].copy_from_slice(&base.to_le_bytes());
    };
    seg(0x00, 0, 0x93, 0xFFFF, 0); // es
    seg(0x10, 0xF000, 0x9B, 0xFFFF, u64::from(eip & 0xFFFF_0000)); // cs
    for at in [0x20, 0x30, 0x40, 0x50] {
        seg(at, 0, 0x93, 0xFFFF, 0); // ss, ds, fs, gs
    }
    seg(0x60, 0, 0, 0xFFFF, 0); // gdtr
    seg(0x70, 0, 0x82, 0xFFFF, 0); // ldtr
    seg(0x80, 0, 0, 0xFFFF, 0); // idtr
    seg(0x90, 0, 0x8B, 0xFFFF, 0); // tr
    let mut q = |at: usize, v: u64| p[at..at + 8].copy_from_slice(&v.to_le_bytes());
    q(0x0D0, 0x1000); // EFER.SVME
    q(0x148, 0x40); // CR4.MCE
    q(0x158, 0x10); // CR0.ET
    q(0x160, 0x400); // DR7
    q(0x168, 0xFFFF_0FF0); // DR6
    q(0x170, 0x2); // RFLAGS
    q(0x178, u64::from(eip & 0xFFFF)); // RIP
    q(0x268, 0x0007_0406_0007_0406); // G_PAT
    q(0x310, u64::from(vcpu_signature)); // RDX
    q(0x3B0, guest_features); // SEV_FEATURES
    q(0x3E8, 0x1); // XCR0
    q(0x408, 0x1F80); // MXCSR
    q(0x410, 0x037F); // x87 FCW
    p
}

/// The CPUID signature (family/model/stepping, CPUID leaf 1 EAX) QEMU gives a CPU model, for
/// the models sev-snp-measure knows.
pub fn vcpu_signature(model: &str) -> Option<u32> {
    Some(match model {
        "EPYC" | "EPYC-v1" | "EPYC-v2" | "EPYC-IBPB" | "EPYC-v3" | "EPYC-v4" => 0x0080_0F12,
        "EPYC-Rome" | "EPYC-Rome-v1" | "EPYC-Rome-v2" | "EPYC-Rome-v3" => 0x0083_0F10,
        "EPYC-Milan" | "EPYC-Milan-v1" | "EPYC-Milan-v2" => 0x00A0_0F11,
        "EPYC-Genoa" | "EPYC-Genoa-v1" => 0x00A1_0F10,
        "EPYC-Turin" => 0x00B0_0F00,
        _ => return None,
    })
}

/// What a launch is made of.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// The ROM QEMU maps below 4 GiB.
    pub rom: &'a [u8],
    /// The digest after the ROM's pages, when only the ROM's tail is at hand
    /// (sev-snp-measure's --snp-ovmf-hash); None: measure `rom` itself.
    pub rom_digest: Option<[u8; 48]>,
    /// vCPU count.
    pub vcpus: u32,
    /// CPUID signature of the vCPU model ([`vcpu_signature`]).
    pub vcpu_signature: u32,
    /// SEV features of the VMSAs (the guest policy's).
    pub guest_features: u64,
    /// The SEV hash table's digests with kernel-hashes=on.
    pub kernel_hashes: Option<KernelHashes>,
}

/// The launch digest of `launch`.
pub fn digest(launch: &Launch<'_>) -> Result<[u8; 48], SnpError> {
    if launch.vcpus == 0 {
        return Err(SnpError::NoVcpus);
    }
    let meta = ovmf::parse(launch.rom)?;
    let mut ld = LaunchDigest::default();
    match launch.rom_digest {
        Some(d) => ld.0 = d,
        None => ld.normal_pages(0x1_0000_0000 - launch.rom.len() as u64, launch.rom),
    }
    if launch.kernel_hashes.is_some()
        && (meta.hash_table.is_none() || !meta.sections.iter().any(|s| s.kind == SectionKind::KernelHashes))
    {
        return Err(SnpError::NoKernelHashesSection);
    }
    for s in &meta.sections {
        let (gpa, size) = (u64::from(s.gpa), u64::from(s.size));
        match (s.kind, &launch.kernel_hashes) {
            (SectionKind::SecMem | SectionKind::SvsmCaa, _) => ld.typed_pages(PageType::Zero, gpa, size),
            (SectionKind::Secrets, _) => ld.typed_pages(PageType::Secrets, gpa, size),
            (SectionKind::Cpuid, _) => ld.typed_pages(PageType::Cpuid, gpa, size),
            (SectionKind::KernelHashes, None) => ld.typed_pages(PageType::Zero, gpa, size),
            (SectionKind::KernelHashes, Some(h)) => {
                if size != 4096 {
                    return Err(SnpError::Metadata("the SNP_KERNEL_HASHES section is not one page"));
                }
                let (table_gpa, _) = meta.hash_table.expect("checked above");
                let offset = (table_gpa & 0xFFF) as usize;
                let table = h.table();
                let mut page = [0u8; 4096];
                page.get_mut(offset..offset + table.len())
                    .ok_or(SnpError::Metadata("the hash table does not fit its page"))?
                    .copy_from_slice(&table);
                ld.normal_pages(gpa, &page);
            }
        }
    }
    for cpu in 0..launch.vcpus {
        let eip = if cpu == 0 {
            BSP_EIP
        } else {
            meta.ap_reset_eip.ok_or(SnpError::FooterTable("no SEV-ES reset block for the application processors"))?
        };
        let page = vmsa_page(eip, launch.vcpu_signature, launch.guest_features);
        ld.update(PageType::Vmsa, VMSA_GPA, &Sha384::digest(page).into());
    }
    Ok(ld.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The BSP VMSA sev-snp-measure 0.0.13 builds for EPYC-v4 (0x800f12) with guest features
    /// 0x1: its non-zero 8-byte words (offset, little-endian bytes), dumped from
    /// `sevsnpmeasure.vmsa.VMSA(SevMode.SEV_SNP, ap_eip, 0x800f12, 0x1).pages(1)`.
    const BSP_WORDS: [(usize, &str); 23] = [
        (0x0, "00009300ffff0000"),
        (0x10, "00f09b00ffff0000"),
        (0x18, "0000ffff00000000"),
        (0x20, "00009300ffff0000"),
        (0x30, "00009300ffff0000"),
        (0x40, "00009300ffff0000"),
        (0x50, "00009300ffff0000"),
        (0x60, "00000000ffff0000"),
        (0x70, "00008200ffff0000"),
        (0x80, "00000000ffff0000"),
        (0x90, "00008b00ffff0000"),
        (0xd0, "0010000000000000"),
        (0x148, "4000000000000000"),
        (0x158, "1000000000000000"),
        (0x160, "0004000000000000"),
        (0x168, "f00fffff00000000"),
        (0x170, "0200000000000000"),
        (0x178, "f0ff000000000000"),
        (0x268, "0604070006040700"),
        (0x310, "120f800000000000"),
        (0x3b0, "0100000000000000"),
        (0x3e8, "0100000000000000"),
        (0x408, "801f000000000000"),
    ];

    #[test]
    fn vmsa_matches_sev_snp_measure() {
        let page = vmsa_page(BSP_EIP, 0x80_0F12, 1);
        let mut words = BSP_WORDS.to_vec();
        words.push((0x410, "7f03000000000000"));
        for (at, hex_word) in &words {
            assert_eq!(hex::encode(&page[*at..*at + 8]), *hex_word, "offset {at:#x}");
        }
        let nonzero = page.chunks(8).filter(|w| w.iter().any(|b| *b != 0)).count();
        assert_eq!(nonzero, words.len(), "no other non-zero words");
        // An application processor: CS base and RIP from its reset address.
        let ap = vmsa_page(0xFFFF_E123, 0x80_0F12, 1);
        assert_eq!(hex::encode(&ap[0x18..0x20]), "0000ffff00000000");
        assert_eq!(hex::encode(&ap[0x178..0x180]), "23e1000000000000");
    }

    #[test]
    fn page_info_is_0x70_bytes_hashed_with_sha384() {
        // One NORMAL zero page at GPA 0 from a zero digest, computed by hand.
        let mut info = [0u8; 0x70];
        info[48..96].copy_from_slice(&Sha384::digest([0u8; 4096]));
        info[96] = 0x70;
        info[98] = 1;
        let mut ld = LaunchDigest::default();
        ld.normal_pages(0, &[0u8; 4096]);
        assert_eq!(ld.0, <[u8; 48]>::from(Sha384::digest(info)));
    }

    #[test]
    fn refusals() {
        let rom = alloc::vec![0u8; 4096];
        let launch =
            Launch { rom: &rom, rom_digest: None, vcpus: 0, vcpu_signature: 0, guest_features: 1, kernel_hashes: None };
        assert_eq!(digest(&launch), Err(SnpError::NoVcpus));
        let launch = Launch { vcpus: 1, ..launch };
        assert!(matches!(digest(&launch), Err(SnpError::FooterTable(_))));
        assert_eq!(vcpu_signature("EPYC-Milan"), Some(0xA0_0F11));
        assert_eq!(vcpu_signature("Skylake"), None);
    }
}
