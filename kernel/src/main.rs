//! The `veilboot` binary: the firmware is the library (src/lib.rs: the reset vector, the
//! pipeline in `veil_main`, the panic handler and the allocator); this file only links it.
#![no_std]
#![no_main]

use veilboot_kernel as _;
