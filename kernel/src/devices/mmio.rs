//! MMIO to device memory: volatile accesses on the plain platform, through the host route the
//! platform installed elsewhere (`arch::cpu::port::HostRoute`): MMIO exits through the GHCB
//! on SEV-SNP, TDG.VP.VMCALL on TDX (the hypervisor performs the access; the firmware never dereferences device
//! memory there, whose mapping would need the C-bit clear and would raise #VC). PCI
//! configuration (ECAM) goes through here, and so does virtio-drivers: safe-mmio's
//! `custom-mmio` backend is this module ([`VeilMmio`]).

use crate::arch::cpu::port;

macro_rules! access {
    ($read:ident, $write:ident, $t:ty, $size:literal) => {
        /// Read device memory at `addr`.
        ///
        /// # Safety
        /// `addr` must be a device register (identity mapped, aligned) whose read has no
        /// effect on memory the firmware uses.
        pub unsafe fn $read(addr: *const $t) -> $t {
            if let Some(route) = port::current() {
                return (route.mmio_read)(addr as u64, $size) as $t;
            }
            // SAFETY: the caller's contract.
            unsafe { addr.read_volatile() }
        }

        /// Write device memory at `addr`.
        ///
        /// # Safety
        /// `addr` must be a device register (identity mapped, aligned); if the write makes the
        /// device access memory, the caller owns that memory for as long as the device uses it.
        pub unsafe fn $write(addr: *mut $t, value: $t) {
            if let Some(route) = port::current() {
                return (route.mmio_write)(addr as u64, $size, value as u64);
            }
            // SAFETY: the caller's contract.
            unsafe { addr.write_volatile(value) }
        }
    };
}

access!(read_u8, write_u8, u8, 1);
access!(read_u16, write_u16, u16, 2);
access!(read_u32, write_u32, u32, 4);
access!(read_u64, write_u64, u64, 8);

/// The MMIO backend of safe-mmio (and so of virtio-drivers' PCI transport).
pub struct VeilMmio;

impl safe_mmio::MmioOps for VeilMmio {
    unsafe fn read_u8(src: *const u8) -> u8 {
        // SAFETY: safe-mmio passes a device register it holds a unique or shared pointer to.
        unsafe { read_u8(src) }
    }
    unsafe fn read_u16(src: *const u16) -> u16 {
        // SAFETY: as for read_u8.
        unsafe { read_u16(src) }
    }
    unsafe fn read_u32(src: *const u32) -> u32 {
        // SAFETY: as for read_u8.
        unsafe { read_u32(src) }
    }
    unsafe fn read_u64(src: *const u64) -> u64 {
        // SAFETY: as for read_u8.
        unsafe { read_u64(src) }
    }
    unsafe fn write_u8(dst: *mut u8, value: u8) {
        // SAFETY: as for read_u8; virtio-drivers owns the memory its device may access.
        unsafe { write_u8(dst, value) }
    }
    unsafe fn write_u16(dst: *mut u16, value: u16) {
        // SAFETY: as for write_u8.
        unsafe { write_u16(dst, value) }
    }
    unsafe fn write_u32(dst: *mut u32, value: u32) {
        // SAFETY: as for write_u8.
        unsafe { write_u32(dst, value) }
    }
    unsafe fn write_u64(dst: *mut u64, value: u64) {
        // SAFETY: as for write_u8.
        unsafe { write_u64(dst, value) }
    }
}

safe_mmio::set_mmio_ops!(VeilMmio);
