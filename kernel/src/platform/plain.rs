//! The plain VM: real port I/O, all memory usable as it is. Measurement and sealing on this
//! platform go through the TPM (crate::tpm::MeasuredBoot, found at boot when present).

use super::Platform;
use crate::error::BootError;

/// A VM without memory encryption.
pub struct Plain;

impl Platform for Plain {
    fn name(&self) -> &'static str {
        "plain"
    }
    fn console_write(&mut self, bytes: &[u8]) {
        crate::serial::write_bytes(bytes);
    }
    fn accept_memory(&mut self, _start: u64, _len: u64) -> Result<(), BootError> {
        Ok(()) // nothing to accept: guest memory is usable as is
    }
}
