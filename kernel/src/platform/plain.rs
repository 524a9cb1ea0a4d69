//! The plain VM: real port I/O, all memory usable as it is. Measurement and sealing on this
//! platform go through the TPM (crate::tpm::MeasuredBoot, found at boot when present), not
//! through these trait calls, which therefore say so instead of pretending.

use alloc::vec::Vec;

use super::{Platform, PlatformError};
use crate::cpu::port;

/// A VM without memory encryption.
pub struct Plain;

#[allow(dead_code)]
const NO_TPM: &str =
    "on the plain platform measurement, evidence and sealing go through the TPM (crate::tpm), not the Platform trait";

impl Platform for Plain {
    fn name(&self) -> &'static str {
        "plain"
    }
    fn console_write(&mut self, bytes: &[u8]) {
        crate::serial::write_bytes(bytes);
    }
    fn outb(&mut self, p: u16, value: u8) {
        port::outb(p, value);
    }
    fn inb(&mut self, p: u16) -> u8 {
        port::inb(p)
    }
    fn accept_memory(&mut self, _start: u64, _len: u64) -> Result<(), PlatformError> {
        Ok(()) // nothing to accept: guest memory is usable as is
    }
    fn extend_measurement(&mut self, _register: u32, _data: &[u8]) -> Result<(), PlatformError> {
        Err(PlatformError::Unavailable(NO_TPM))
    }
    fn attestation_evidence(&mut self, _report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError> {
        Err(PlatformError::Unavailable(NO_TPM))
    }
    fn unseal(&mut self, _sealed: &[u8]) -> Result<Vec<u8>, PlatformError> {
        Err(PlatformError::Unavailable(NO_TPM))
    }
}
