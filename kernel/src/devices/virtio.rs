//! virtio-blk (the virtio-console relay channel is crate::devices::relay's) over modern virtio-pci, through the
//! virtio-drivers crate: our PCI configuration
//! access (ECAM), BAR assignment, and a DMA layer (`VeilHal`) whose every buffer the device
//! sees lives in one bounce pool: SEV-SNP and TDX will only have to mark that pool shared.

use alloc::vec::Vec;
use core::ptr::NonNull;

use linked_list_allocator::Heap;

use crate::error::{BootError, BootErrorKind};
use spin::Mutex;
use veil_agent::io::{IoError, ReadAt};
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::transport::pci::bus::{BarInfo, Command, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// Bytes per request to the device: large requests keep QEMU's per-request cost (a TCG exit
/// and a host read each) small beside the decryption.
pub const REQUEST: usize = 256 * 1024;
/// Requests in flight at once (each takes 3 of the queue's 16 descriptors).
pub const DEPTH: usize = 4;
/// The bounce pool: virtqueues plus a few requests' worth of buffers.
const POOL_SIZE: usize = 4 << 20;
/// Where BARs go: the top of the 32-bit PCI hole, below the IOAPIC and LAPIC.
const MMIO_WINDOW: (u64, u64) = (0xC000_0000, 0xFEC0_0000);

static POOL: Mutex<Heap> = Mutex::new(Heap::empty());

/// How memory is made shared with the host for device DMA: installed by the platform
/// (`platform::share_for_dma`); nothing to do until one is.
static DMA_SHARER: Mutex<Option<fn(u64, u64) -> Result<(), BootError>>> = Mutex::new(None);

/// Install the platform's way of sharing memory for DMA (before the first device is driven).
pub fn set_dma_sharer(share: fn(u64, u64) -> Result<(), BootError>) {
    *DMA_SHARER.lock() = Some(share);
}

/// Give the bounce pool its memory on first need (a virtio device to drive, or a
/// [`SharedBuffer`]): 4 MiB leaked from the heap, 2 MiB aligned so that on SEV-SNP and TDX it
/// is made shared as two large pages (the platform's [`set_dma_sharer`]). A boot with no virtio device
/// never takes it: 4 MiB of heap, and on SEV-SNP and TDX the page-state changes to share it
/// and take it back before Linux, for nothing.
pub fn ensure_pool() -> Result<(), BootError> {
    if POOL.lock().size() != 0 {
        return Ok(());
    }
    let layout =
        core::alloc::Layout::from_size_align(POOL_SIZE, 2 << 20).map_err(|_| BootErrorKind::OutOfMemory(POOL_SIZE))?;
    // SAFETY: non-zero size; leaked on purpose: the pool lives as long as the firmware.
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return Err(BootErrorKind::OutOfMemory(POOL_SIZE).into());
    }
    let share = *DMA_SHARER.lock();
    if let Some(share) = share {
        share(p as u64, POOL_SIZE as u64)?;
    }
    // SAFETY: the block is ours alone and handed to the pool allocator once.
    unsafe { POOL.lock().init(p, POOL_SIZE) };
    Ok(())
}

fn pool_alloc(len: usize) -> NonNull<u8> {
    let layout = core::alloc::Layout::from_size_align(len.div_ceil(4096) * 4096, 4096).expect("page layout");
    match POOL.lock().allocate_first_fit(layout) {
        Ok(p) => p,
        Err(()) => crate::arch::exit::fail(format_args!("virtio bounce pool exhausted ({len} bytes wanted)")),
    }
}

fn pool_free(ptr: NonNull<u8>, len: usize) {
    let layout = core::alloc::Layout::from_size_align(len.div_ceil(4096) * 4096, 4096).expect("page layout");
    // SAFETY: `ptr` came from `pool_alloc` with the same length.
    unsafe { POOL.lock().deallocate(ptr, layout) };
}

/// Page-aligned memory from the bounce pool (shared with the host on SEV-SNP and TDX), freed
/// when dropped: for exchanges with the VMM outside virtio (TDX GetQuote).
pub struct SharedBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

impl SharedBuffer {
    /// `len` bytes (rounded up to pages), zeroed; None when the pool cannot be made.
    pub fn new(len: usize) -> Option<SharedBuffer> {
        if let Err(e) = ensure_pool() {
            crate::log!("virtio bounce pool: {e}");
            return None;
        }
        let ptr = pool_alloc(len);
        // SAFETY: pool_alloc returned at least `len` bytes, ours alone.
        unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, len) };
        Some(SharedBuffer { ptr, len })
    }

    /// Its (identity-mapped, private-alias) address.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedBuffer {
    fn drop(&mut self) {
        pool_free(self.ptr, self.len);
    }
}

/// The DMA layer for virtio-drivers. Memory is identity mapped, so physical = virtual.
pub struct VeilHal;

// SAFETY: dma_alloc returns zeroed, page-aligned, exclusively owned pool memory whose
// physical address equals its address; share() hands the device a pool copy that stays
// valid until unshare(); MMIO is identity mapped.
unsafe impl Hal for VeilHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let p = pool_alloc(pages * 4096);
        // SAFETY: freshly allocated block of pages * 4096 bytes.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 0, pages * 4096) };
        (p.as_ptr() as PhysAddr, p)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        pool_free(vaddr, pages * 4096);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("non-null MMIO address")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let len = buffer.len();
        let bounce = pool_alloc(len);
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: the caller's buffer is valid for `len` bytes; the bounce block too.
            unsafe { core::ptr::copy_nonoverlapping(buffer.as_ptr() as *const u8, bounce.as_ptr(), len) };
        }
        bounce.as_ptr() as PhysAddr
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let len = buffer.len();
        let bounce = paddr as *mut u8;
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: `paddr` is the bounce block share() returned for this buffer.
            unsafe { core::ptr::copy_nonoverlapping(bounce, buffer.as_ptr() as *mut u8, len) };
        }
        pool_free(NonNull::new(bounce).expect("non-null"), len);
    }
}

/// PCI configuration access over ECAM.
pub struct Ecam(pub u64);

impl Ecam {
    fn addr(&self, df: DeviceFunction, reg: u8) -> *mut u32 {
        (self.0
            | u64::from(df.bus) << 20
            | u64::from(df.device) << 15
            | u64::from(df.function) << 12
            | u64::from(reg & 0xFC)) as *mut u32
    }
}

impl ConfigurationAccess for Ecam {
    fn read_word(&self, df: DeviceFunction, reg: u8) -> u32 {
        // SAFETY: ECAM is enabled and identity mapped; the address is in its window.
        unsafe { crate::devices::mmio::read_u32(self.addr(df, reg)) }
    }
    fn write_word(&mut self, df: DeviceFunction, reg: u8, data: u32) {
        // SAFETY: as for read_word; virtio-drivers enables bus mastering only once its queues
        // are in the bounce pool.
        unsafe { crate::devices::mmio::write_u32(self.addr(df, reg), data) }
    }
    unsafe fn unsafe_clone(&self) -> Self {
        Ecam(self.0)
    }
}

/// A virtio-blk disk.
pub struct Disk {
    blk: VirtIOBlk<VeilHal, PciTransport>,
    /// Where it is.
    pub location: DeviceFunction,
    /// Size in bytes.
    pub size: u64,
    /// The device offered VIRTIO_BLK_F_FLUSH (the driver negotiates it when offered): a
    /// flush request makes the writes before it durable on the host.
    flush: bool,
}

/// VIRTIO_BLK_F_FLUSH (virtio 1.2, 5.2.3): the device takes VIRTIO_BLK_T_FLUSH requests.
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

/// Next free address in MMIO_WINDOW for BARs (shared by every virtio device we bring up).
static NEXT_MMIO: Mutex<u64> = Mutex::new(MMIO_WINDOW.0);

/// Give `df` its memory BARs, enable it and open its modern virtio-pci transport.
fn bring_up(root: &mut PciRoot<Ecam>, df: DeviceFunction) -> Option<PciTransport> {
    let bars = root.bars(df).ok()?;
    let mut next_mmio = NEXT_MMIO.lock();
    for (i, bar) in bars.iter().enumerate() {
        if let Some(BarInfo::Memory { size, address_type, .. }) = bar {
            let size = (*size).max(4096);
            let at = next_mmio.div_ceil(size) * size;
            if at + size > MMIO_WINDOW.1 {
                crate::log!("virtio: no room for BAR {i} of {df} ({size} bytes)");
                continue;
            }
            match address_type {
                virtio_drivers::transport::pci::bus::MemoryBarType::Width64 => root.set_bar_64(df, i as u8, at),
                _ => root.set_bar_32(df, i as u8, at as u32),
            }
            *next_mmio = at + size;
        }
    }
    drop(next_mmio);
    root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
    match PciTransport::new::<VeilHal, _>(root, df) {
        Ok(t) => Some(t),
        Err(e) => {
            crate::log!("virtio: {df}: not usable as modern virtio-pci: {e:?}");
            None
        }
    }
}

/// The virtio devices of `kind` on bus 0, brought up (the bounce pool is made for the first).
pub(crate) fn find(ecam_base: u64, kind: DeviceType) -> Result<Vec<(DeviceFunction, PciTransport)>, BootError> {
    let mut root = PciRoot::new(Ecam(ecam_base));
    let found: Vec<_> = root.enumerate_bus(0).filter(|(_, info)| virtio_device_type(info) == Some(kind)).collect();
    if !found.is_empty() {
        ensure_pool()?;
    }
    Ok(found.into_iter().filter_map(|(df, _)| bring_up(&mut root, df).map(|t| (df, t))).collect())
}

/// Reset the virtio device at `df` (status 0; virtio 1.2, 2.4): it stops using its queues.
/// Through a second transport on it (its BARs are set already; opening one touches neither the
/// status nor the queues), which virtio-drivers' PciTransport resets when dropped (writes
/// status 0, waits until it reads back 0). Dropping the drivers would reset them too, but adds
/// their drop code to a ROM whose .text had no room left. A device that was brought up opens
/// again, so this fails only for a host that changed the device's config space meanwhile (not
/// logged, for the same ROM bytes); `cargo xtask test disk` checks the reset at the jump into
/// Linux.
pub fn reset(ecam_base: u64, df: DeviceFunction) {
    let _ = PciTransport::new::<VeilHal, _>(&mut PciRoot::new(Ecam(ecam_base)), df);
}

/// Find the virtio-blk devices on bus 0, give them BARs, and bring them up. Fails only when
/// there is a device but no bounce pool for it.
pub fn find_disks(ecam_base: u64) -> Result<Vec<Disk>, BootError> {
    let mut disks = Vec::new();
    for (df, mut transport) in find(ecam_base, DeviceType::Block)? {
        // virtio-drivers negotiates FLUSH whenever the device offers it, but does not say
        // whether it did: its flush() quietly does nothing on a device without it.
        let flush = transport.read_device_features() & VIRTIO_BLK_F_FLUSH != 0;
        match VirtIOBlk::<VeilHal, _>::new(transport) {
            Ok(blk) => {
                let size = blk.capacity() * 512;
                if !flush {
                    crate::log!(
                        "virtio-blk: {df}: no VIRTIO_BLK_F_FLUSH: what the firmware writes is durable only when the host says so"
                    );
                }
                disks.push(Disk { blk, location: df, size, flush });
            }
            Err(e) => crate::log!("virtio: {df}: block device init failed: {e:?}"),
        }
    }
    Ok(disks)
}

impl Disk {
    /// Read `out.len()` bytes from the sector-aligned `offset` with up to DEPTH requests of
    /// REQUEST bytes in flight, handing each chunk to `consume(position, chunk)` in order as
    /// soon as it has arrived, while the following requests are still being served.
    pub fn read_pipelined(
        &mut self,
        offset: u64,
        out: &mut [u8],
        mut consume: impl FnMut(u64, &mut [u8]) -> Result<(), BootError>,
    ) -> Result<(), BootError> {
        if !offset.is_multiple_of(512)
            || !out.len().is_multiple_of(512)
            || offset.checked_add(out.len() as u64).is_none_or(|e| e > self.size)
        {
            return Err(IoError::Device(alloc::format!(
                "read of {} bytes at {offset} is unaligned or past the {}-byte disk",
                out.len(),
                self.size
            ))
            .into());
        }
        let mut chunks: Vec<&mut [u8]> = out.chunks_mut(REQUEST).collect();
        let n = chunks.len();
        // Allocated once: the device holds pointers into these until each request completes.
        let mut reqs: Vec<BlkReq> = (0..n).map(|_| BlkReq::default()).collect();
        let mut resps: Vec<BlkResp> = (0..n).map(|_| BlkResp::default()).collect();
        let mut tokens: Vec<Option<u16>> = alloc::vec![None; n];
        let mut done = alloc::vec![false; n];
        let mut submitted = 0;
        for i in 0..n {
            while submitted < n && submitted < i + DEPTH {
                let sector = (offset + (submitted * REQUEST) as u64) / 512;
                // SAFETY: reqs[submitted], chunks[submitted] and resps[submitted] are not
                // touched again until complete_read_blocks for this token below, and the
                // vectors never reallocate.
                let token = unsafe {
                    self.blk.read_blocks_nb(
                        sector as usize,
                        &mut reqs[submitted],
                        chunks[submitted],
                        &mut resps[submitted],
                    )
                }
                .map_err(|e| IoError::Device(alloc::format!("virtio-blk read at sector {sector}: {e:?}")))?;
                tokens[submitted] = Some(token);
                submitted += 1;
            }
            while !done[i] {
                let Some(token) = self.blk.peek_used() else {
                    core::hint::spin_loop();
                    continue;
                };
                let j = tokens
                    .iter()
                    .position(|t| *t == Some(token))
                    .ok_or_else(|| IoError::Device(alloc::format!("virtio-blk completed unknown request {token}")))?;
                // SAFETY: the same req/buf/resp that were passed for this token.
                unsafe { self.blk.complete_read_blocks(token, &reqs[j], chunks[j], &mut resps[j]) }
                    .map_err(|e| IoError::Device(alloc::format!("virtio-blk read of chunk {j}: {e:?}")))?;
                tokens[j] = None;
                done[j] = true;
            }
            consume((i * REQUEST) as u64, chunks[i])?;
        }
        Ok(())
    }

    /// Write sector-aligned data (the LUKS2 writer's ranges are).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        if !offset.is_multiple_of(512) || !data.len().is_multiple_of(512) {
            return Err(IoError::Device(alloc::format!("unaligned write of {} bytes at {offset}", data.len())));
        }
        if offset.checked_add(data.len() as u64).is_none_or(|e| e > self.size) {
            return Err(IoError::OutOfRange { offset, len: data.len() as u64, size: self.size });
        }
        for (i, chunk) in data.chunks(REQUEST).enumerate() {
            let sector = (offset + (i * REQUEST) as u64) / 512;
            self.blk
                .write_blocks(sector as usize, chunk)
                .map_err(|e| IoError::Device(alloc::format!("virtio-blk write at sector {sector}: {e:?}")))?;
        }
        Ok(())
    }

    /// Make every write completed so far durable (VIRTIO_BLK_T_FLUSH): what a power cut
    /// after it cannot take back. A device without VIRTIO_BLK_F_FLUSH was logged when it was
    /// found; for it this does nothing.
    pub fn flush(&mut self) -> Result<(), IoError> {
        if !self.flush {
            return Ok(());
        }
        self.blk.flush().map_err(|e| IoError::Device(alloc::format!("virtio-blk flush: {e:?}")))
    }

    /// Write sector-aligned data, then flush: the write is durable when this returns, and
    /// nothing written after it can reach the disk before it. Where cryptsetup syncs.
    pub fn write_durably(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        self.write_at(offset, data)?;
        self.flush()
    }
}

impl ReadAt for Disk {
    fn size(&self) -> u64 {
        self.size
    }

    /// Reads in sector-aligned requests of up to REQUEST bytes; unaligned edges go through a
    /// small scratch buffer.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let end = offset.checked_add(buf.len() as u64).filter(|e| *e <= self.size).ok_or(IoError::OutOfRange {
            offset,
            len: buf.len() as u64,
            size: self.size,
        })?;
        let mut pos = offset;
        let mut done = 0usize;
        let mut scratch = alloc::vec![0u8; 512];
        while pos < end {
            let sector = pos / 512;
            let within = (pos % 512) as usize;
            let remaining = (end - pos) as usize;
            if within == 0 && remaining >= 512 {
                let n = remaining.min(REQUEST) / 512 * 512;
                self.blk
                    .read_blocks(sector as usize, &mut buf[done..done + n])
                    .map_err(|e| IoError::Device(alloc::format!("virtio-blk read at sector {sector}: {e:?}")))?;
                done += n;
                pos += n as u64;
            } else {
                self.blk
                    .read_blocks(sector as usize, &mut scratch)
                    .map_err(|e| IoError::Device(alloc::format!("virtio-blk read at sector {sector}: {e:?}")))?;
                let n = (512 - within).min(remaining);
                buf[done..done + n].copy_from_slice(&scratch[within..within + n]);
                done += n;
                pos += n as u64;
            }
        }
        Ok(())
    }
}
