//! Ending a run: QEMU's isa-debug-exit device (when present) turns a status into QEMU's exit
//! code, so tests see success or failure; without it the CPU just halts.

use crate::cpu::{halt_forever, port::outb};

const DEBUG_EXIT_PORT: u16 = 0xF4;

/// How a run ended. QEMU exits with `(code << 1) | 1`: 33 for success, 35 for failure.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Status {
    /// Everything worked.
    Success = 0x10,
    /// A precise error was printed.
    Failure = 0x11,
}

/// Stop the machine with a status.
pub fn exit(status: Status) -> ! {
    outb(DEBUG_EXIT_PORT, status as u8);
    if matches!(status, Status::Failure) && crate::platform::snp::active() {
        // An SNP host learns of the failure from the termination request (no debug-exit).
        crate::platform::snp::terminate(crate::platform::snp::Termination::BootFailed);
    }
    halt_forever()
}
