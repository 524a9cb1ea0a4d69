//! Layer 1, the CPU and the earliest services every other layer needs: the x86 instructions
//! (`cpu`), page tables, exceptions, vector state, MTRRs, the firmware's own memory layout,
//! the serial console and `log!`, the TSC timeline, the debug-exit port and the one way a boot
//! fails (`exit::fail`), and RDSEED/RDRAND. Like Linux's arch/x86 (early_printk, reboot), the
//! console and the exit live here because the exception handler needs them.
//!
//! May call: nothing else in this crate. What differs per platform (port I/O and CPUID routed
//! through the GHCB or TDVMCALL, #VC/#VE/#UD handlers, a fatal-exit hook) is installed into
//! this layer by the platform (`cpu::port::route`, `interrupts::set_handler`,
//! `exit::set_failure_hooks`), never called upwards by name.

pub mod cpu;
pub mod exit;
pub mod interrupts;
pub mod layout;
pub mod mtrr;
pub mod paging;
pub mod random;
pub mod serial;
pub mod tsc;
pub mod vector;
