//! ACPI tables: run QEMU's table loader (fw_cfg `etc/table-loader`) so that Linux finds the
//! RSDP and, through it, the MADT, FADT, MCFG and the rest. Parsing and linking are
//! veil_agent::acpi_loader; here the blobs get memory and the write-pointers go back to QEMU.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::alloc::Layout;

use veil_agent::acpi_loader::{self, Linked};

use crate::devices::fwcfg::FwCfg;
use crate::error::{BootError, BootErrorKind};

/// Largest loader command list and blob accepted.
const MAX_LOADER: usize = 128 * 1024;
const MAX_BLOB: usize = 16 << 20;

/// The installed tables.
pub struct Tables {
    /// Address of the RSDP (0 if QEMU provided none).
    pub rsdp: u64,
    /// Memory the blobs occupy (page-rounded), to be reported to the kernel as reserved.
    pub ranges: Vec<(u64, u64)>,
    /// Number of blobs.
    pub blobs: usize,
    /// The fw_cfg files the loader consumed, as QEMU supplied them (before linking), for
    /// measurement: the command list first, then each blob. Empty unless asked for.
    pub inputs: Vec<(String, Vec<u8>)>,
    /// The TPM event log area QEMU's TPM2 table points at (`etc/tpm/log`): address and size.
    pub tpm_log: Option<(u64, usize)>,
    /// The CC event log area of the CCEL table the firmware added (TDX): address and size.
    pub ccel_log: Option<(u64, usize)>,
    /// Memory Linux must keep as ACPI NVS (start, length).
    pub nvs: Vec<(u64, u64)>,
}

/// The ACPI blob QEMU allocates for the TPM event log (LASA/LAML of the TPM2 table).
const TPM_LOG_BLOB: &str = "etc/tpm/log";

/// The byte that makes `bytes` sum to zero (ACPI checksums).
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Memory for a blob: page-aligned (or more), never freed.
fn place(len: usize, align: u32) -> Option<u64> {
    let layout = Layout::from_size_align(len.div_ceil(4096) * 4096, (align as usize).max(4096)).ok()?;
    // SAFETY: a non-zero-size layout; the block is intentionally leaked (the OS owns it).
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    (!p.is_null()).then_some(p as u64)
}

/// Run the table loader; with `keep_inputs`, also keep a copy of every fw_cfg file it read
/// (for the TPM). None when QEMU offers no tables.
pub fn install(cfg: &FwCfg, keep_inputs: bool) -> Result<Option<Tables>, BootError> {
    let Some(loader) = cfg.read_file("etc/table-loader", MAX_LOADER)? else {
        return Ok(None);
    };
    let commands = acpi_loader::parse(&loader)?;
    let mut read_error = None;
    let mut inputs = Vec::new();
    if keep_inputs {
        inputs.push((String::from("etc/table-loader"), loader.clone()));
    }
    let linked: Linked = acpi_loader::link(
        &commands,
        &mut |name| match cfg.read_file(name, MAX_BLOB) {
            Ok(data) => {
                if let (true, Some(d)) = (keep_inputs, &data) {
                    inputs.push((name.to_string(), d.clone()));
                }
                data
            }
            Err(e) => {
                read_error = Some(e);
                None
            }
        },
        &mut place,
    )
    .map_err(|e| match read_error.take() {
        // The loader fails because a file did not read: that is the cause to report.
        Some(read) => BootErrorKind::FwCfg(read),
        None => BootErrorKind::AcpiLoader(e),
    })?;
    let mut ranges = Vec::new();
    for blob in &linked.blobs {
        // SAFETY: `place` allocated at least data.len() bytes at blob.addr, identity mapped,
        // owned by nothing else.
        let dst = unsafe { core::slice::from_raw_parts_mut(blob.addr as *mut u8, blob.data.len()) };
        dst.copy_from_slice(&blob.data);
        ranges.push((blob.addr, (blob.data.len().max(1) as u64).div_ceil(4096) * 4096));
    }
    for w in &linked.write_backs {
        cfg.write_file(&w.file, w.offset, &w.bytes)?;
        crate::log!("acpi: wrote a pointer back to QEMU's {} (fw_cfg WRITE_POINTER)", w.file);
    }
    let tpm_log = linked.blobs.iter().find(|b| b.name == TPM_LOG_BLOB).map(|b| (b.addr, b.data.len()));
    Ok(Some(Tables {
        rsdp: linked.address_of("etc/acpi/rsdp").unwrap_or(0),
        ranges,
        blobs: linked.blobs.len(),
        inputs,
        tpm_log,
        ccel_log: None,
        nvs: Vec::new(),
    }))
}

impl Tables {
    /// The root table (the XSDT if the RSDP has one, else the RSDT): address, length and the
    /// size of its entries.
    fn root(&self) -> Result<(u64, usize, usize), BootError> {
        if self.rsdp == 0 {
            return Err(BootErrorKind::AcpiTable("no RSDP").into());
        }
        // SAFETY: the RSDP the loader placed (36 bytes for revision 2, 20 before), in memory
        // the firmware allocated and reports to Linux as ACPI data.
        let rsdp = unsafe { core::slice::from_raw_parts(self.rsdp as *const u8, 36) };
        let xsdt = u64::from_le_bytes(rsdp[24..32].try_into().expect("8 bytes"));
        let (root, entry) = if rsdp[15] >= 2 && xsdt != 0 {
            (xsdt, 8)
        } else {
            (u64::from(u32::from_le_bytes(rsdp[16..20].try_into().expect("4 bytes"))), 4)
        };
        let len = self.table_len(root).ok_or(BootErrorKind::AcpiTable("a root table outside the loaded tables"))?;
        if !(36..=64 * 1024).contains(&len) {
            return Err(BootErrorKind::AcpiTable("a root table of impossible length").into());
        }
        Ok((root, len, entry))
    }

    /// The length of the table at `addr`, if its header and all of it lie in the memory the
    /// loader filled (table addresses are pointers QEMU's loader commands patched).
    fn table_len(&self, addr: u64) -> Option<usize> {
        let inside = |a: u64, n: u64| self.ranges.iter().any(|(s, l)| a >= *s && a.saturating_add(n) <= s + l);
        if !inside(addr, 36) {
            return None;
        }
        // SAFETY: 36 bytes at `addr` lie in a blob the firmware placed (checked above).
        let len = unsafe { core::ptr::read_unaligned((addr + 4) as *const u32) } as usize;
        inside(addr, len as u64).then_some(len)
    }

    /// Point the root table at a copy of itself with `change` applied to its entries area,
    /// and the RSDP at the copy (checksums updated).
    fn rewrite_root(&mut self, extra: usize, change: impl FnOnce(&mut [u8], usize)) -> Result<(), BootError> {
        let (root, len, entry) = self.root()?;
        let new_len = len + extra;
        let new_root = place(new_len, 16).ok_or(BootErrorKind::OutOfMemory(new_len))?;
        // SAFETY: `place` allocated new_len bytes; the old root has `len` (checked by root()).
        let new = unsafe {
            core::ptr::copy_nonoverlapping(root as *const u8, new_root as *mut u8, len);
            core::slice::from_raw_parts_mut(new_root as *mut u8, new_len)
        };
        change(new, entry);
        new[4..8].copy_from_slice(&(new_len as u32).to_le_bytes());
        new[9] = 0;
        new[9] = checksum(new);
        self.ranges.push((new_root, (new_len as u64).div_ceil(4096) * 4096));
        // SAFETY: as in root().
        let rsdp = unsafe { core::slice::from_raw_parts_mut(self.rsdp as *mut u8, 36) };
        if entry == 8 {
            rsdp[24..32].copy_from_slice(&new_root.to_le_bytes());
            rsdp[32] = 0;
            rsdp[32] = checksum(&rsdp[..36]);
        } else {
            rsdp[16..20].copy_from_slice(&(new_root as u32).to_le_bytes());
        }
        rsdp[8] = 0;
        rsdp[8] = checksum(&rsdp[..20]);
        Ok(())
    }

    /// Add a table (header and checksum complete) to the root table (XSDT, else RSDT): the
    /// root is copied with one more entry and the RSDP points at the copy.
    pub fn add_table(&mut self, table: &[u8]) -> Result<u64, BootError> {
        let at = place(table.len(), 16).ok_or(BootErrorKind::OutOfMemory(table.len()))?;
        // SAFETY: `place` allocated table.len() bytes at `at`.
        unsafe { core::ptr::copy_nonoverlapping(table.as_ptr(), at as *mut u8, table.len()) };
        self.ranges.push((at, (table.len() as u64).div_ceil(4096) * 4096));
        let (_, len, entry) = self.root()?;
        self.rewrite_root(entry, |new, entry| new[len..].copy_from_slice(&at.to_le_bytes()[..entry]))?;
        Ok(at)
    }

    /// Give the MADT a multiprocessor wakeup structure for `mailbox` (TDX): a copy of QEMU's
    /// MADT with the structure appended replaces it in the root table.
    pub fn add_mp_wakeup(&mut self, mailbox: u64) -> Result<(), BootError> {
        let (root, len, entry) = self.root()?;
        // SAFETY: the root table, `len` bytes inside the loaded tables (root()).
        let entries = unsafe { core::slice::from_raw_parts((root + 36) as *const u8, len - 36) };
        let mut found = None;
        for (i, e) in entries.chunks_exact(entry).enumerate() {
            let mut a = [0u8; 8];
            a[..entry].copy_from_slice(e);
            let addr = u64::from_le_bytes(a);
            let Some(tlen) = self.table_len(addr) else { continue };
            // SAFETY: `tlen` bytes at `addr` lie in the loaded tables (table_len).
            let table = unsafe { core::slice::from_raw_parts(addr as *const u8, tlen) };
            if &table[..4] == b"APIC" {
                found = Some((i, table.to_vec()));
                break;
            }
        }
        let (index, madt) = found.ok_or(BootErrorKind::AcpiTable("no MADT to add the TDX wakeup mailbox to"))?;
        let new = veil_agent::tdx::wakeup::madt_with_wakeup(&madt, mailbox).map_err(BootErrorKind::Madt)?;
        let at = place(new.len(), 16).ok_or(BootErrorKind::OutOfMemory(new.len()))?;
        // SAFETY: `place` allocated new.len() bytes at `at`.
        unsafe { core::ptr::copy_nonoverlapping(new.as_ptr(), at as *mut u8, new.len()) };
        self.ranges.push((at, (new.len() as u64).div_ceil(4096) * 4096));
        self.rewrite_root(0, |t, entry| {
            let off = 36 + index * entry;
            t[off..off + entry].copy_from_slice(&at.to_le_bytes()[..entry]);
        })
    }

    /// Memory the firmware sets aside for Linux to keep as ACPI NVS (TDX: the wakeup mailbox
    /// and the APs' page tables), page-aligned and zeroed.
    pub fn nvs_pages(&mut self, pages: usize) -> Result<u64, BootError> {
        let len = pages * 4096;
        let at = place(len, 4096).ok_or(BootErrorKind::OutOfMemory(len))?;
        self.nvs.push((at, len as u64));
        Ok(at)
    }

    /// Add a CCEL table (TDX CC event log) with a log area of `area` bytes.
    pub fn add_ccel(&mut self, area: usize) -> Result<(), BootError> {
        let lasa = place(area, 4096).ok_or(BootErrorKind::OutOfMemory(area))?;
        self.ranges.push((lasa, (area as u64).div_ceil(4096) * 4096));
        let mut t = [0u8; 56];
        t[0..4].copy_from_slice(b"CCEL");
        t[4..8].copy_from_slice(&56u32.to_le_bytes());
        t[8] = 1; // revision
        t[10..16].copy_from_slice(b"VEILBT");
        t[16..24].copy_from_slice(b"VEILBOOT");
        t[24..28].copy_from_slice(&1u32.to_le_bytes());
        t[28..32].copy_from_slice(b"VEIL");
        t[32..36].copy_from_slice(&1u32.to_le_bytes());
        t[36] = 2; // CC type: Intel TDX
        t[40..48].copy_from_slice(&(area as u64).to_le_bytes()); // LAML
        t[48..56].copy_from_slice(&lasa.to_le_bytes()); // LASA
        t[9] = checksum(&t);
        self.add_table(&t)?;
        self.ccel_log = Some((lasa, area));
        Ok(())
    }

    /// Write the CC event log into the CCEL table's area.
    pub fn write_ccel_log(&self, log: &[u8]) -> Result<(), BootError> {
        let Some((addr, size)) = self.ccel_log else {
            return Err(BootErrorKind::AcpiTable("no CCEL table").into());
        };
        if log.len() > size {
            return Err(BootErrorKind::EventLogTooLarge { log: log.len(), area: size }.into());
        }
        // SAFETY: the area add_ccel allocated, reported to Linux as ACPI data.
        let area = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, size) };
        area[..log.len()].copy_from_slice(log);
        area[log.len()..].fill(0xFF); // the log ends where the records do (CCEL convention)
        Ok(())
    }

    /// Copy the TPM event log into the log area QEMU's TPM2 table points at.
    pub fn write_tpm_log(&self, log: &[u8]) -> Result<(), BootError> {
        let Some((addr, size)) = self.tpm_log else {
            return Err(BootErrorKind::NoTpmLogArea.into());
        };
        if log.len() > size {
            return Err(BootErrorKind::EventLogTooLarge { log: log.len(), area: size }.into());
        }
        // SAFETY: `place` allocated `size` bytes at `addr` for this blob (see install); the
        // memory is reported to Linux as ACPI data and nothing else uses it.
        let area = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, size) };
        area[..log.len()].copy_from_slice(log);
        area[log.len()..].fill(0);
        Ok(())
    }
}
