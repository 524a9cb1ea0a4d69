//! ACPI tables: run QEMU's table loader (fw_cfg `etc/table-loader`) so that Linux finds the
//! RSDP and, through it, the MADT, FADT, MCFG and the rest. Parsing and linking are
//! veil_agent::acpi_loader; here the blobs get memory and the write-pointers go back to QEMU.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::alloc::Layout;

use veil_agent::acpi_loader::{self, Linked};

use crate::error::BootError;
use crate::fwcfg::FwCfg;

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
}

/// The ACPI blob QEMU allocates for the TPM event log (LASA/LAML of the TPM2 table).
const TPM_LOG_BLOB: &str = "etc/tpm/log";

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
        Some(read) => BootError::FwCfg(read),
        None => BootError::AcpiLoader(e),
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
    }
    let tpm_log = linked.blobs.iter().find(|b| b.name == TPM_LOG_BLOB).map(|b| (b.addr, b.data.len()));
    Ok(Some(Tables {
        rsdp: linked.address_of("etc/acpi/rsdp").unwrap_or(0),
        ranges,
        blobs: linked.blobs.len(),
        inputs,
        tpm_log,
    }))
}

impl Tables {
    /// Copy the TPM event log into the log area QEMU's TPM2 table points at.
    pub fn write_tpm_log(&self, log: &[u8]) -> Result<(), BootError> {
        let Some((addr, size)) = self.tpm_log else {
            return Err(BootError::NoTpmLogArea);
        };
        if log.len() > size {
            return Err(BootError::EventLogTooLarge { log: log.len(), area: size });
        }
        // SAFETY: `place` allocated `size` bytes at `addr` for this blob (see install); the
        // memory is reported to Linux as ACPI data and nothing else uses it.
        let area = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, size) };
        area[..log.len()].copy_from_slice(log);
        area[log.len()..].fill(0);
        Ok(())
    }
}
