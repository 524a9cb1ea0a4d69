//! The SEV hash table of measured direct boot (QEMU `kernel-hashes=on`, edk2's
//! BlobVerifierLibSevHashes layout): QEMU writes it into the page the ROM's SEV metadata names
//! (type SNP_KERNEL_HASHES), so the table is part of the launch digest; the firmware then
//! checks QEMU's -kernel, -initrd and -append blobs against it before using them.
//!
//! Layout (packed, little-endian): header GUID, u16 length of the table; then entries
//! {GUID, u16 length = 50, SHA-256}: cmdline, initrd, kernel, in that order; the table padded
//! with zeros to a multiple of 16 bytes (the length field counts no padding). The kernel hash
//! covers the whole bzImage (setup and kernel), the cmdline hash includes its terminating NUL.

use sha2::{Digest, Sha256};

use super::SnpError;

/// A GUID in EFI byte order (the first three fields little-endian).
pub const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]]
}

/// 9438d606-4f22-4cc9-b479-a793d411fd21: the table header.
pub const TABLE_GUID: [u8; 16] = guid(0x9438_d606, 0x4f22, 0x4cc9, [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21]);
/// 97d02dd8-bd20-4c94-aa78-e7714d36ab2a: the command line entry.
pub const CMDLINE_GUID: [u8; 16] = guid(0x97d0_2dd8, 0xbd20, 0x4c94, [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a]);
/// 44baf731-3a2f-4bd7-9af1-41e29169781d: the initrd entry.
pub const INITRD_GUID: [u8; 16] = guid(0x44ba_f731, 0x3a2f, 0x4bd7, [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d]);
/// 4de79437-abd2-427f-b835-d5b172d2045b: the kernel entry.
pub const KERNEL_GUID: [u8; 16] = guid(0x4de7_9437, 0xabd2, 0x427f, [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b]);

/// One entry: GUID, u16 length, SHA-256.
const ENTRY_LEN: usize = 16 + 2 + 32;
/// The table without padding: header and three entries.
const TABLE_LEN: usize = 16 + 2 + 3 * ENTRY_LEN;
/// The table as installed, padded to 16 bytes.
pub const PADDED_LEN: usize = TABLE_LEN.next_multiple_of(16);

/// The three digests of a direct boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the command line with its terminating NUL.
    pub cmdline: [u8; 32],
    /// SHA-256 of the initrd (of nothing when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the whole bzImage.
    pub kernel: [u8; 32],
}

impl KernelHashes {
    /// The digests of `kernel`, `initrd` and `cmdline` (without its NUL, which is added as
    /// QEMU does).
    pub fn of(kernel: &[u8], initrd: &[u8], cmdline: &[u8]) -> KernelHashes {
        let mut c = Sha256::new();
        c.update(cmdline);
        c.update([0u8]);
        KernelHashes {
            cmdline: c.finalize().into(),
            initrd: Sha256::digest(initrd).into(),
            kernel: Sha256::digest(kernel).into(),
        }
    }

    /// The table as QEMU installs it.
    pub fn table(&self) -> [u8; PADDED_LEN] {
        let mut t = [0u8; PADDED_LEN];
        t[..16].copy_from_slice(&TABLE_GUID);
        t[16..18].copy_from_slice(&(TABLE_LEN as u16).to_le_bytes());
        for (i, (g, h)) in
            [(CMDLINE_GUID, self.cmdline), (INITRD_GUID, self.initrd), (KERNEL_GUID, self.kernel)].iter().enumerate()
        {
            let at = 18 + i * ENTRY_LEN;
            t[at..at + 16].copy_from_slice(g);
            t[at + 16..at + 18].copy_from_slice(&(ENTRY_LEN as u16).to_le_bytes());
            t[at + 18..at + ENTRY_LEN].copy_from_slice(h);
        }
        t
    }

    /// Parse a table read from guest memory (written by the host before launch and measured,
    /// but parsed as untrusted all the same): the header GUID, the length, and each of the
    /// three entries exactly once, in any order.
    pub fn parse(bytes: &[u8]) -> Result<KernelHashes, SnpError> {
        if bytes.len() < 18 || bytes[..16] != TABLE_GUID {
            return Err(SnpError::HashTable("no table header GUID (QEMU was not started with kernel-hashes=on)"));
        }
        let len = usize::from(u16::from_le_bytes([bytes[16], bytes[17]]));
        if len < 18 || len > bytes.len() {
            return Err(SnpError::HashTable("a length that does not fit the table's page"));
        }
        let mut found: [Option<[u8; 32]>; 3] = [None; 3];
        let mut at = 18;
        while at < len {
            let entry = bytes.get(at..at + 18).ok_or(SnpError::HashTable("a truncated entry"))?;
            let entry_len = usize::from(u16::from_le_bytes([entry[16], entry[17]]));
            if entry_len != ENTRY_LEN || at + entry_len > len {
                return Err(SnpError::HashTable("an entry whose length is not 50 or runs past the table"));
            }
            let slot = [CMDLINE_GUID, INITRD_GUID, KERNEL_GUID]
                .iter()
                .position(|g| entry[..16] == *g)
                .ok_or(SnpError::HashTable("an entry with an unknown GUID"))?;
            if found[slot].is_some() {
                return Err(SnpError::HashTable("an entry that appears twice"));
            }
            found[slot] = Some(bytes[at + 18..at + ENTRY_LEN].try_into().expect("32 bytes"));
            at += entry_len;
        }
        match found {
            [Some(cmdline), Some(initrd), Some(kernel)] => Ok(KernelHashes { cmdline, initrd, kernel }),
            _ => Err(SnpError::HashTable("the kernel, initrd or command line entry is missing")),
        }
    }

    /// Check the blobs QEMU offers against the table.
    pub fn verify(&self, kernel: &[u8], initrd: &[u8], cmdline: &[u8]) -> Result<(), SnpError> {
        self.verify_split(&[], kernel, initrd, cmdline)
    }

    /// [`verify`](Self::verify) for a kernel QEMU offers in two fw_cfg items, the setup part
    /// and the rest: the table's kernel digest covers both, in that order (OVMF's "kernel"
    /// blob is the same concatenation).
    pub fn verify_split(&self, setup: &[u8], kernel: &[u8], initrd: &[u8], cmdline: &[u8]) -> Result<(), SnpError> {
        let mut k = Sha256::new();
        k.update(setup);
        k.update(kernel);
        let mut got = KernelHashes::of(&[], initrd, cmdline);
        got.kernel = k.finalize().into();
        // Public data (the table is in the measurement): a plain comparison is fine.
        if got.kernel != self.kernel {
            return Err(SnpError::HashMismatch("kernel"));
        }
        if got.initrd != self.initrd {
            return Err(SnpError::HashMismatch("initrd"));
        }
        if got.cmdline != self.cmdline {
            return Err(SnpError::HashMismatch("command line"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sev-snp-measure 0.0.13 `SevHashes('/dev/null', '/dev/null', '').construct_table()`.
    const EMPTY_TABLE: &str = "06d63894224fc94cb479a793d411fd21a800d82dd09720bd944caa78e7714d36ab2a32006e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d31f7ba442f3ad74b9af141e29169781d3200e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8553794e74dd2ab7f42b835d5b172d2045b3200e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550000000000000000";

    #[test]
    fn table_equals_sev_snp_measure() {
        let h = KernelHashes::of(b"", b"", b"");
        assert_eq!(hex::encode(h.table()), EMPTY_TABLE);
        assert_eq!(KernelHashes::parse(&h.table()), Ok(h));
    }

    #[test]
    fn verify_split_hashes_setup_then_kernel() {
        let image: Vec<u8> = (0..9000u32).map(|i| (i * 7) as u8).collect();
        let h = KernelHashes::of(&image, b"initrd", b"console=ttyS0");
        assert_eq!(h.verify_split(&image[..1024], &image[1024..], b"initrd", b"console=ttyS0"), Ok(()));
        assert_eq!(
            h.verify_split(&image[1024..], &image[..1024], b"initrd", b"console=ttyS0"),
            Err(SnpError::HashMismatch("kernel"))
        );
    }

    #[test]
    fn verify_names_the_blob_that_differs() {
        let h = KernelHashes::of(b"kernel", b"initrd", b"console=ttyS0");
        assert_eq!(h.verify(b"kernel", b"initrd", b"console=ttyS0"), Ok(()));
        assert_eq!(h.verify(b"kernel", b"initrX", b"console=ttyS0"), Err(SnpError::HashMismatch("initrd")));
        assert_eq!(h.verify(b"kernelX", b"initrd", b"console=ttyS0"), Err(SnpError::HashMismatch("kernel")));
        assert_eq!(h.verify(b"kernel", b"initrd", b"console=ttyS1"), Err(SnpError::HashMismatch("command line")));
    }

    #[test]
    fn malformed_tables_are_refused() {
        let good = KernelHashes::of(b"k", b"i", b"c").table();
        let mut page = [0u8; 4096];
        assert!(KernelHashes::parse(&page).is_err(), "an all-zero page (no kernel-hashes)");
        page[..PADDED_LEN].copy_from_slice(&good);
        assert!(KernelHashes::parse(&page).is_ok());
        let mut t = good;
        t[16] = 0xFF; // a length past the end of the buffer
        assert!(KernelHashes::parse(&t).is_err());
        let mut t = good;
        t[18 + 50..18 + 66].copy_from_slice(&CMDLINE_GUID); // cmdline twice, initrd missing
        assert_eq!(KernelHashes::parse(&t), Err(SnpError::HashTable("an entry that appears twice")));
        let mut t = good;
        t[18 + 16] = 49; // an entry length other than 50
        assert!(KernelHashes::parse(&t).is_err());
        let mut t = good;
        t[18] ^= 1; // unknown GUID
        assert_eq!(KernelHashes::parse(&t), Err(SnpError::HashTable("an entry with an unknown GUID")));
        let mut t = good;
        t[16..18].copy_from_slice(&(18 + 2 * 50u16).to_le_bytes()); // kernel entry cut off
        assert_eq!(
            KernelHashes::parse(&t),
            Err(SnpError::HashTable("the kernel, initrd or command line entry is missing"))
        );
    }
}
