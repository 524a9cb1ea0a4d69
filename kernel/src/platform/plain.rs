//! The plain VM: real port I/O, all memory usable as it is. Its root of trust is the TPM
//! (crate::platform::tpm::MeasuredBoot) when a TIS answers at 0xFED40000, else there is none.

use super::rot::RootOfTrust;
use super::seam::Platform;
use crate::error::BootError;
use crate::platform::tpm::MeasuredBoot;

/// A VM without memory encryption, with its TPM once started.
#[derive(Default)]
pub struct Plain {
    tpm: Option<MeasuredBoot>,
}

impl Platform for Plain {
    fn name(&self) -> &'static str {
        "plain"
    }
    fn console_write(&mut self, bytes: &[u8]) {
        crate::arch::serial::write_bytes(bytes);
    }
    fn accept_memory(&mut self, _start: u64, _len: u64) -> Result<(), BootError> {
        Ok(()) // nothing to accept: guest memory is usable as is
    }
    fn start_root_of_trust(&mut self) -> Result<(), BootError> {
        self.tpm = MeasuredBoot::start()?;
        Ok(())
    }
    fn root_of_trust(&mut self) -> Option<&mut dyn RootOfTrust> {
        self.tpm.as_mut().map(|t| t as &mut dyn RootOfTrust)
    }
}
