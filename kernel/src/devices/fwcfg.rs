//! QEMU fw_cfg: signature, feature bits, the file directory, file reads over the DMA
//! interface (port I/O as the fallback). Parsing of what it returns is in veil_agent::fwcfg.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{Ordering, compiler_fence};

use veil_agent::fwcfg::{FileEntry, MAX_FILES, SEL_FEATURES, SEL_FILE_DIR, SEL_SIGNATURE, parse_directory};

use crate::arch::cpu::port::{outl, outw};
use crate::error::FwCfgError;

const PORT_SELECTOR: u16 = 0x510;
const PORT_DATA: u16 = 0x511;
const PORT_DMA_HIGH: u16 = 0x514;
const PORT_DMA_LOW: u16 = 0x518;

const DMA_ERROR: u32 = 1 << 0;
const DMA_READ: u32 = 1 << 1;
const DMA_SKIP: u32 = 1 << 2;
const DMA_SELECT: u32 = 1 << 3;
const DMA_WRITE: u32 = 1 << 4;

/// Well-known selectors of QEMU's -kernel/-initrd/-append.
pub mod sel {
    /// Size of the protected-mode kernel.
    pub const KERNEL_SIZE: u16 = 0x08;
    /// Size of the initrd.
    pub const INITRD_SIZE: u16 = 0x0B;
    /// The protected-mode kernel.
    pub const KERNEL_DATA: u16 = 0x11;
    /// The initrd.
    pub const INITRD_DATA: u16 = 0x12;
    /// Size of the command line (with its NUL).
    pub const CMDLINE_SIZE: u16 = 0x14;
    /// The command line.
    pub const CMDLINE_DATA: u16 = 0x15;
    /// Size of the real-mode setup part.
    pub const SETUP_SIZE: u16 = 0x17;
    /// The real-mode setup part (with the setup header).
    pub const SETUP_DATA: u16 = 0x18;
}

/// The fw_cfg device.
pub struct FwCfg {
    dma: bool,
    /// The device offers DMA (used directly on the plain platform, through `bounce` on a
    /// confidential one).
    dma_capable: bool,
    /// Memory shared with the host for DMA (address, length), on SEV-SNP and TDX: the
    /// descriptor and the data go through it.
    bounce: Option<(u64, usize)>,
    files: Vec<FileEntry>,
}

#[repr(C, align(16))]
struct DmaAccess {
    control: u32,
    length: u32,
    address: u64,
}

fn select(sel: u16) {
    outw(PORT_SELECTOR, sel);
}

fn read_pio(buf: &mut [u8]) {
    crate::arch::cpu::port::inb_string(PORT_DATA, buf);
}

impl FwCfg {
    /// Find the device and read its directory.
    pub fn probe() -> Result<FwCfg, FwCfgError> {
        let mut sig = [0u8; 4];
        select(SEL_SIGNATURE);
        read_pio(&mut sig);
        if &sig != b"QEMU" {
            return Err(FwCfgError::Missing);
        }
        let mut features = [0u8; 4];
        select(SEL_FEATURES);
        read_pio(&mut features);
        // DMA needs memory the host can read and write: on SEV-SNP the data goes through the
        // GHCB's shared buffer with string port I/O instead.
        let routed = crate::arch::cpu::port::routed();
        let dma_capable = u32::from_le_bytes(features) & 0b10 != 0;
        let mut cfg = FwCfg { dma: dma_capable && !routed, dma_capable, bounce: None, files: Vec::new() };
        // Read the count first and bound it before reading the entries it announces.
        let mut count = [0u8; 4];
        cfg.read_selector(SEL_FILE_DIR, &mut count)?;
        let n = u32::from_be_bytes(count).min(MAX_FILES + 1) as usize;
        let mut dir = vec![0u8; 4 + 64 * n];
        cfg.read_selector(SEL_FILE_DIR, &mut dir)?;
        cfg.files = parse_directory(&dir).map_err(FwCfgError::Directory)?;
        Ok(cfg)
    }

    /// True if the DMA interface is used.
    pub fn dma(&self) -> bool {
        self.dma
    }

    /// Use DMA through `[addr, addr + len)`, memory the platform shared with the host
    /// (at least two pages): the descriptor in its first page, data chunks in the rest.
    pub fn use_shared_bounce(&mut self, addr: u64, len: usize) {
        if self.dma_capable && len >= 2 * 4096 {
            self.bounce = Some((addr, len));
            self.dma = true;
        }
    }

    /// The file directory.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Look a file up by name.
    pub fn find(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Read a whole file, refusing ones larger than `limit` bytes.
    pub fn read_file(&self, name: &str, limit: usize) -> Result<Option<Vec<u8>>, FwCfgError> {
        let Some(entry) = self.find(name) else { return Ok(None) };
        if entry.size as usize > limit {
            return Err(FwCfgError::TooLarge { name: name.into(), size: entry.size, limit });
        }
        let mut buf = vec![0u8; entry.size as usize];
        self.read_selector(entry.select, &mut buf)?;
        Ok(Some(buf))
    }

    /// A 32-bit little-endian item (the -kernel/-initrd/-append sizes).
    pub fn read_u32(&self, sel: u16) -> Result<u32, FwCfgError> {
        let mut b = [0u8; 4];
        self.read_selector(sel, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Select an item and read `buf.len()` bytes from its start.
    pub fn read_selector(&self, sel: u16, buf: &mut [u8]) -> Result<(), FwCfgError> {
        if !self.dma {
            select(sel);
            read_pio(buf);
            return Ok(());
        }
        if let Some((addr, len)) = self.bounce {
            let data = addr + 4096;
            let mut control = u32::from(sel) << 16 | DMA_SELECT | DMA_READ;
            for chunk in buf.chunks_mut(len - 4096) {
                // SAFETY: the bounce region is the platform's shared memory, owned by fw_cfg
                // for the firmware's lifetime; the descriptor goes in its first page, the
                // chunk after it, and is copied out once the device is done.
                unsafe {
                    dma_with(addr as *mut DmaAccess, control, chunk.len() as u32, data)?;
                    core::ptr::copy_nonoverlapping(data as *const u8, chunk.as_mut_ptr(), chunk.len());
                }
                control = DMA_READ; // the following chunks continue where the last ended
            }
            return Ok(());
        }
        // SAFETY: the device writes buf.len() bytes to `buf`, which this call borrows mutably.
        unsafe { dma(u32::from(sel) << 16 | DMA_SELECT | DMA_READ, buf.len() as u32, buf.as_mut_ptr() as u64) }
    }

    /// Write `bytes` into the fw_cfg file `name` at `offset` (QEMU's write-pointer files). On
    /// SEV-SNP and TDX the descriptor and the bytes go through the shared bounce buffer, as
    /// reads do: the host cannot reach private memory.
    pub fn write_file(&self, name: &str, offset: u32, bytes: &[u8]) -> Result<(), FwCfgError> {
        if !self.dma {
            return Err(FwCfgError::NoDmaWrite);
        }
        let entry = self.find(name).ok_or_else(|| FwCfgError::WriteRange { name: name.into() })?;
        if u64::from(offset) + bytes.len() as u64 > u64::from(entry.size) {
            return Err(FwCfgError::WriteRange { name: name.into() });
        }
        let select = u32::from(entry.select) << 16 | DMA_SELECT | DMA_SKIP;
        if let Some((addr, len)) = self.bounce {
            let data = addr + 4096;
            if bytes.len() > len - 4096 {
                return Err(FwCfgError::WriteRange { name: name.into() });
            }
            // SAFETY: the bounce region is the platform's shared memory, owned by fw_cfg for
            // the firmware's lifetime: the descriptor in its first page, the bytes after it.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), data as *mut u8, bytes.len());
                dma_with(addr as *mut DmaAccess, select, offset, 0)?;
                return dma_with(addr as *mut DmaAccess, DMA_WRITE, bytes.len() as u32, data);
            }
        }
        // SAFETY: a skip moves no data; the write only reads `bytes`, borrowed for the call.
        unsafe {
            dma(select, offset, 0)?;
            dma(DMA_WRITE, bytes.len() as u32, bytes.as_ptr() as u64)
        }
    }
}

/// How many times a DMA descriptor's control word is polled before the transfer is given up.
/// QEMU completes a transfer within the port write that starts it, so the first poll normally
/// sees it done; the bound only turns a host that never completes into an error, not a hang.
const DMA_POLLS: u32 = 1 << 24;

/// One DMA transfer; returns when the device has finished it.
///
/// # Safety
/// For a read, `address..address + length` must be memory the caller may write; for a write,
/// memory it may read; in both cases alive until this returns (the device is done then).
unsafe fn dma(control: u32, length: u32, address: u64) -> Result<(), FwCfgError> {
    let mut access = DmaAccess { control: 0, length: 0, address: 0 };
    // SAFETY: the descriptor lives on this frame for the call; the caller's # Safety covers
    // the buffer.
    unsafe { dma_with(&mut access, control, length, address) }
}

/// [`dma`] with the descriptor at `access` (shared memory on confidential platforms).
///
/// # Safety
/// As for [`dma`], and `access` must be valid, 16-byte aligned memory the device can read and
/// write for the duration of the call.
unsafe fn dma_with(access: *mut DmaAccess, control: u32, length: u32, address: u64) -> Result<(), FwCfgError> {
    // SAFETY: the caller's contract: `access` is valid for the call.
    unsafe {
        access.write_volatile(DmaAccess { control: control.to_be(), length: length.to_be(), address: address.to_be() })
    };
    let addr = access as u64;
    compiler_fence(Ordering::SeqCst);
    // Writing the low half starts the transfer; memory is identity mapped, so the virtual
    // addresses above are the physical ones the device needs.
    // SAFETY: the descriptor lives on this frame until the device clears its control word
    // below; the buffer it names is the caller's (# Safety).
    unsafe {
        outl(PORT_DMA_HIGH, ((addr >> 32) as u32).to_be());
        outl(PORT_DMA_LOW, (addr as u32).to_be());
    }
    for _ in 0..DMA_POLLS {
        // SAFETY: `access` is valid for the whole transfer (the caller's contract); the device
        // clears its control word when done, so it must be read volatile.
        let control = u32::from_be(unsafe { core::ptr::read_volatile(&raw const (*access).control) });
        compiler_fence(Ordering::SeqCst);
        if control & DMA_ERROR != 0 {
            return Err(FwCfgError::Dma);
        }
        if control == 0 {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(FwCfgError::DmaTimeout)
}
