//! Randomness for keys, UUIDs and salts: RDSEED, falling back to RDRAND, each checked through
//! its carry flag with a bounded retry. If neither delivers, the firmware stops rather than
//! use a weaker source (shared/DESIGN.md).

use core::arch::asm;

use crate::arch::cpu::cpuid;

/// One RDSEED (`seed`) or RDRAND value, retried while the carry flag says "not ready".
fn hardware_random(seed: bool) -> Option<u64> {
    for _ in 0..64 {
        let (v, ok): (u64, u8);
        if seed {
            // SAFETY: RDSEED writes a register and CF; no memory.
            unsafe { asm!("rdseed {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack)) };
        } else {
            // SAFETY: RDRAND writes a register and CF; no memory.
            unsafe { asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack)) };
        }
        if ok != 0 {
            return Some(v);
        }
        core::hint::spin_loop();
    }
    None
}

/// Fill `buf` with hardware randomness, or stop the machine.
pub fn fill(buf: &mut [u8]) {
    let has_rdseed = cpuid(0, 0).eax >= 7 && cpuid(7, 0).ebx & (1 << 18) != 0;
    let has_rdrand = cpuid(1, 0).ecx & (1 << 30) != 0;
    for chunk in buf.chunks_mut(8) {
        let v = if has_rdseed { hardware_random(true) } else { None }
            .or_else(|| if has_rdrand { hardware_random(false) } else { None });
        match v {
            Some(v) => chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]),
            None => crate::arch::exit::fail(format_args!(
                "no working RDSEED or RDRAND: refusing to generate keys from a weaker source"
            )),
        }
    }
}
