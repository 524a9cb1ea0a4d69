//! AMD SEV-SNP: the structures an SNP guest and the tools around it build and check, in safe
//! Rust (the instructions themselves live in the kernel). Facts and their sources:
//! shared/reference/snp-tdx-guest.md, part A.
//!
//! * [`hashes`]: the SEV hash table (measured direct boot): what QEMU installs for
//!   `kernel-hashes=on` and the firmware checks the -kernel, -initrd and -append blobs against.
//! * [`ovmf`]: the OVMF-style ROM metadata a VMM reads (GUID footer table, SEV metadata).
//! * [`launch`]: the launch digest the AMD-SP computes (MEASUREMENT), predicted exactly as
//!   sev-snp-measure does it, for `veil measure --platform snp`.
//! * [`ghcb`]: the GHCB protocol over the instruction seam [`ghcb::SnpCpu`]; [`memory`]:
//!   validating and sharing memory with it; `model` (tests and the `model` feature only): the
//!   hypervisor and RMP on the other side, honest or hostile.
//! * [`pages`]: the CPUID and secrets pages the AMD-SP provides, and the CC blob for Linux.
//! * [`attest`]: guest requests through the GHCB and the host's certificate table;
//! * [`guest_msg`]: VMPCK-encrypted messages to the AMD-SP and their sequence-number rules;
//!   [`requests`]: the report and key requests they carry; [`seal`]: the `veil-snp` token
//!   sealed with a key the AMD-SP derives for the launch.
//! * [`evidence`]: the report in the JSON form Trustee's SNP verifier reads (virtee/sev's serde).
//! * `verify` (host, `std`): attestation reports checked against AMD's certificate chain.

pub mod attest;
pub mod evidence;
pub mod ghcb;
pub mod guest_msg;
pub mod hashes;
pub mod launch;
pub mod memory;
#[cfg(any(test, feature = "model"))]
pub mod model;
pub mod ovmf;
pub mod pages;
#[cfg(any(test, feature = "model"))]
pub mod psp;
pub mod requests;
pub mod seal;
#[cfg(test)]
mod tests;
#[cfg(feature = "std")]
pub mod verify;

use core::fmt;

/// Why an SNP structure was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnpError {
    /// The ROM is not a whole number of 4 KiB pages, or too small to hold a footer table.
    RomSize(usize),
    /// The GUID footer table is missing or malformed: what is wrong.
    FooterTable(&'static str),
    /// The SEV metadata ("ASEV") descriptor is missing or malformed: what is wrong.
    Metadata(&'static str),
    /// A metadata section of an unknown type.
    SectionType(u32),
    /// Kernel hashes were given but the ROM has no SNP_KERNEL_HASHES section or hash-table
    /// GUID to put them in.
    NoKernelHashesSection,
    /// The SEV hash table is malformed: what is wrong.
    HashTable(&'static str),
    /// A blob does not match its SHA-256 in the SEV hash table.
    HashMismatch(&'static str),
    /// No vCPUs.
    NoVcpus,
    /// The CPUID page is malformed: what is wrong.
    CpuidPage(&'static str),
    /// The secrets page is malformed or the request is out of range: what is wrong.
    SecretsPage(&'static str),
    /// An attestation report that cannot be turned into evidence: what is wrong.
    Report(&'static str),
    /// The AMD-SP refused a guest request: its status.
    RequestRefused(&'static str),
}

impl fmt::Display for SnpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnpError::RomSize(n) => {
                write!(f, "a ROM of {n} bytes: not a whole number of 4 KiB pages holding a footer table")
            }
            SnpError::FooterTable(why) => write!(f, "ROM GUID footer table: {why}"),
            SnpError::Metadata(why) => write!(f, "ROM SEV metadata: {why}"),
            SnpError::SectionType(t) => write!(f, "ROM SEV metadata: section type {t:#x} is unknown"),
            SnpError::NoKernelHashesSection => {
                write!(f, "kernel hashes given, but the ROM has no SNP_KERNEL_HASHES section and hash-table GUID")
            }
            SnpError::HashTable(why) => write!(f, "SEV hash table: {why}"),
            SnpError::HashMismatch(what) => {
                write!(f, "the {what} does not match its SHA-256 in the SEV hash table (kernel-hashes): refusing it")
            }
            SnpError::NoVcpus => write!(f, "an SNP guest needs at least one vCPU"),
            SnpError::CpuidPage(why) => write!(f, "SNP CPUID page: {why}"),
            SnpError::SecretsPage(why) => write!(f, "SNP secrets page: {why}"),
            SnpError::Report(why) => write!(f, "SNP attestation report: {why}"),
            SnpError::RequestRefused(why) => write!(f, "the AMD-SP refused the guest request: {why}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SnpError {}
