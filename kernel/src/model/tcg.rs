//! TCG's devices and memory, reached with the real instructions: the machine behind the SNP
//! and TDX models in the model test ROMs (features `snp-model`, `tdx-model`), which do on the
//! guest's behalf what a hypervisor does.

use core::arch::asm;

use veil_agent::snp::model::Machine;

/// TCG's devices, reached with the real instructions.
pub struct Tcg;

impl Machine for Tcg {
    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        let v: u32;
        // SAFETY: port input on TCG's devices; touches no memory.
        unsafe {
            match size {
                1 => asm!("in al, dx", "movzx eax, al", in("dx") port, out("eax") v, options(nomem, nostack)),
                2 => asm!("in ax, dx", "movzx eax, ax", in("dx") port, out("eax") v, options(nomem, nostack)),
                _ => asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack)),
            }
        }
        v
    }

    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        // SAFETY: port output on behalf of the guest code, which owns the effect (as with
        // crate::arch::cpu::port on the plain platform).
        unsafe {
            match size {
                1 => asm!("out dx, al", in("dx") port, in("al") value as u8, options(nomem, nostack)),
                2 => asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nomem, nostack)),
                _ => asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)),
            }
        }
    }

    fn io_in_bytes(&mut self, port: u16, buf: &mut [u8]) {
        for b in buf {
            *b = self.io_in(port, 1) as u8;
        }
    }

    fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        // SAFETY: device memory in the PCI hole (the guest's GHCB code only asks for that),
        // identity mapped.
        unsafe {
            match size {
                1 => u64::from(core::ptr::read_volatile(gpa as *const u8)),
                2 => u64::from(core::ptr::read_volatile(gpa as *const u16)),
                4 => u64::from(core::ptr::read_volatile(gpa as *const u32)),
                _ => core::ptr::read_volatile(gpa as *const u64),
            }
        }
    }

    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) {
        // SAFETY: as for mmio_read.
        unsafe {
            match size {
                1 => core::ptr::write_volatile(gpa as *mut u8, value as u8),
                2 => core::ptr::write_volatile(gpa as *mut u16, value as u16),
                4 => core::ptr::write_volatile(gpa as *mut u32, value as u32),
                _ => core::ptr::write_volatile(gpa as *mut u64, value),
            }
        }
    }

    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = crate::arch::cpu::native_cpuid(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn read_guest(&mut self, gpa: u64, out: &mut [u8]) {
        // SAFETY: a page the guest named in a guest-request exit (its shared request pages),
        // identity mapped; copied as a hypervisor copies guest memory.
        unsafe { core::ptr::copy_nonoverlapping(gpa as *const u8, out.as_mut_ptr(), out.len()) };
    }

    fn write_guest(&mut self, gpa: u64, bytes: &[u8]) {
        // SAFETY: as for read_guest (the response and certificate pages).
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), gpa as *mut u8, bytes.len()) };
    }
}
