//! Intel TDX: not supported by this build yet. Port I/O would raise #VE, so the message goes
//! out through TDG.VP.VMCALL<Instruction.IO> (GHCI specification) before the vCPU stops.

use core::arch::asm;

/// TDG.VP.VMCALL port output of one byte.
fn tdvmcall_outb(port: u16, value: u8) {
    // SAFETY: TDCALL leaf 0 (VMCALL) with R10=0 (GHCI), R11=30 (Instruction.IO), R12=1 byte,
    // R13=1 (write), R14=port, R15=value; RCX exposes R10-R15 to the VMM. No memory is shared.
    unsafe {
        asm!(
            ".byte 0x66, 0x0f, 0x01, 0xcc", // tdcall
            inout("rax") 0u64 => _,
            inout("rcx") 0xFC00u64 => _,
            inout("r10") 0u64 => _,
            inout("r11") 30u64 => _,
            inout("r12") 1u64 => _,
            inout("r13") 1u64 => _,
            inout("r14") u64::from(port) => _,
            inout("r15") u64::from(value) => _,
            options(nostack),
        );
    }
}

/// Print the refusal on COM1 through TDVMCALL and stop.
pub fn halt_unsupported() -> ! {
    for &b in b"\r\nveil: FATAL: Intel TDX detected (CPUID leaf 0x21 \"IntelTDX\"); this veilboot build does not support TDX yet. Halting.\r\n" {
        for _ in 0..1000 {
            // Wait for the UART's transmit register, as on real port I/O.
            core::hint::spin_loop();
        }
        tdvmcall_outb(0x3F8, b);
    }
    crate::cpu::halt_forever()
}
