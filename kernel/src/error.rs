//! The firmware's one error type. Stages return `BootError`, which keeps agent's typed errors
//! as they are and adds the firmware's own refusals with their values; it becomes text only
//! where the boot fails and prints it (`arch::exit::fail`). `.at(place)` names where an error
//! happened (a partition, a disk, a protocol step) without flattening it.
//!
//! Layer: above `arch`, below `devices` (tools/xtask/src/layers.rs); it names nothing else in
//! this crate, so every layer may return it. fw_cfg's own error lives here for that reason.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use veil_agent::acpi_loader::LoaderError;
use veil_agent::bundle::BundleError;
use veil_agent::gpt::GptError;
use veil_agent::io::IoError;
use veil_agent::kbs::client::KbsError;
use veil_agent::kbs::frame::RelayError;
use veil_agent::keys::KeyError;
use veil_agent::linux::LinuxError;
use veil_agent::luks2::Luks2Error;
use veil_agent::snp::SnpError;
use veil_agent::snp::memory::MemoryError;
use veil_agent::tpm::command::TpmError;
use veil_agent::tpm::tis::TisError;
use veil_agent::xts::XtsError;

veil_agent::boxed_error! {
    /// Why a boot stage failed: a [`BootErrorKind`] behind one pointer.
    ///
    /// Every stage returns `Result<_, BootError>`, and every `?` in the firmware moves the error
    /// it forwards. Boxed, that move is one register; as the enum itself (56 bytes) it was seven
    /// loads and stores at each of a few hundred `?` sites in the ROM.
    pub struct BootError(BootErrorKind);
}

impl fmt::Debug for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.kind(), f)
    }
}

/// Why a boot stage failed.
#[derive(Debug)]
pub enum BootErrorKind {
    /// fw_cfg failed.
    FwCfg(FwCfgError),
    /// The TPM's TIS interface failed.
    Tis(TisError),
    /// A TPM command failed.
    Tpm(TpmError),
    /// Remote key release failed.
    Kbs(KbsError),
    /// The relay channel failed.
    Relay(RelayError),
    /// The disk's partition table.
    Gpt(GptError),
    /// A LUKS2 volume.
    Luks2(Luks2Error),
    /// A disk read or write.
    Io(IoError),
    /// The boot bundle.
    Bundle(BundleError),
    /// A key derivation or the master secret's format.
    Key(KeyError),
    /// The XTS cipher.
    Xts(XtsError),
    /// The kernel image or the boot protocol.
    Linux(LinuxError),
    /// QEMU's ACPI table loader script.
    AcpiLoader(LoaderError),
    /// An SEV-SNP structure (CPUID or secrets page, SEV hash table).
    Snp(SnpError),
    /// SEV-SNP memory validation or sharing.
    SnpMemory(MemoryError),
    /// An SEV-SNP guest request (report, derived key).
    SnpAttest(veil_agent::snp::attest::AttestError),
    /// An ACPI table could not be added: why.
    AcpiTable(&'static str),
    /// A TDCALL or TDG.VP.VMCALL failed.
    Tdcall(veil_agent::tdx::tdcall::TdcallError),
    /// The TD HOB is malformed.
    TdHob(veil_agent::tdx::hob::HobError),
    /// TDX GetQuote gave no quote.
    GetQuote(veil_agent::tdx::getquote::GetQuoteError),
    /// QEMU's MADT cannot take the TDX wakeup mailbox.
    Madt(veil_agent::tdx::wakeup::MadtError),
    /// TDX application processors did not reach the wakeup mailbox: (arrived, expected).
    ApsMissing(u32, u32),
    /// The launch is not bound to this disk's boot target: why.
    LaunchBinding(String),
    /// SEV-SNP memory out of the firmware's reach: the heap above 4 GiB, RAM above 128 TiB
    /// (what its page tables map): where it ends.
    UnsupportedRam(u64),
    /// TDX: memory that must lie below 4 GiB does not: what, where it ends.
    AboveFourGib(&'static str, u64),
    /// Memory to accept (TDX) or validate (SEV-SNP), `[start, end)`, overlaps a range the
    /// launch added (or validated): what was asked ("TDX: accepting"), the range, the launch's.
    OverLaunch(&'static str, (u64, u64), (u64, u64)),
    /// TDX: memory to accept, `[start, end)`, that the TD HOB does not list as unaccepted.
    NotInTdHob((u64, u64)),
    /// A sealed-secret token (`veil-tpm2`) or its payload: the parser's reason.
    Token(String),
    /// `source`, where it happened (`veil-boot`, `disk 00:01.0`, `remote key release`).
    At {
        /// The place.
        place: String,
        /// What failed there.
        source: BootError,
    },
    /// Out of memory for an allocation of this many bytes.
    OutOfMemory(usize),
    /// No free RAM for the kernel's `init_size` bytes at an address it accepts.
    NoRamForKernel(u64),
    /// The initrd is larger than half of the firmware heap.
    InitrdTooLarge(usize),
    /// QEMU's kernel setup part has a size no bzImage has.
    SetupSize(u32),
    /// QEMU's command line is larger than any kernel accepts.
    CmdlineSize(u32),
    /// The TPM has no active PCR bank the firmware knows.
    NoKnownPcrBank,
    /// QEMU's ACPI tables have no TPM event log area.
    NoTpmLogArea,
    /// The event log does not fit into the ACPI log area.
    EventLogTooLarge {
        /// The log's size.
        log: usize,
        /// The area's size.
        area: usize,
    },
    /// The clear-text manifest that was measured differs from the MAC'd one.
    ManifestDiffersFromToken,
    /// The GPT has no `veil-boot` partition.
    NoBootPartition,
    /// The GPT has a `veil-boot` partition, but its LUKS2 header does not load (both copies
    /// damaged or torn): nothing on it can be measured or opened.
    BootVolumeUnreadable(Luks2Error),
    /// A header write past the end of its partition.
    HeaderWriteOutOfRange,
    /// The development key source on a confidential platform.
    DevKeyRefused(&'static str),
    /// No key source opened the sealed master secret: every token's reason, and the
    /// broker's when one was asked.
    SealedSecretUnopened {
        /// (token, why) for each sealed token.
        tokens: Vec<(String, BootError)>,
        /// Why remote release failed too, if a broker was asked.
        broker: Option<BootError>,
    },
    /// Remote release failed and there was no sealed secret to fall back on.
    BrokerRefused(BootError),
    /// A boot volume that names no boot target (why), where a root of trust could bind one.
    UnboundBootVolume(&'static str),
    /// The clear `veil-bundle` token's measurement salt is not the one the MAC'd manifest binds.
    MeasurementSaltDiffers,
    /// A master secret from outside (where from) that does not open `veil-boot`: why.
    SecretDoesNotOpen(&'static str, BootError),
    /// An event log with no ACPI tables to hand it over in: which log.
    NoAcpiForLog(&'static str),
    /// A `veil-boot` disk and no source for its master secret: the root of trust's name, or
    /// None without one.
    NoKeySource(Option<&'static str>),
}

impl fmt::Display for BootErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootErrorKind::FwCfg(e) => write!(f, "{e}"),
            BootErrorKind::Tis(e) => write!(f, "{e}"),
            BootErrorKind::Tpm(e) => write!(f, "{e}"),
            BootErrorKind::Kbs(e) => write!(f, "{e}"),
            BootErrorKind::Relay(e) => write!(f, "relay: {e}"),
            BootErrorKind::Gpt(e) => write!(f, "{e}"),
            BootErrorKind::Luks2(e) => write!(f, "{e}"),
            BootErrorKind::Io(e) => write!(f, "{e}"),
            BootErrorKind::Bundle(e) => write!(f, "{e}"),
            BootErrorKind::Key(e) => write!(f, "{e}"),
            BootErrorKind::Xts(e) => write!(f, "{e}"),
            BootErrorKind::Linux(e) => write!(f, "{e}"),
            BootErrorKind::AcpiLoader(e) => write!(f, "{e}"),
            BootErrorKind::Snp(e) => write!(f, "{e}"),
            BootErrorKind::SnpMemory(e) => write!(f, "SEV-SNP memory: {e}"),
            BootErrorKind::SnpAttest(e) => write!(f, "SEV-SNP: {e}"),
            BootErrorKind::LaunchBinding(why) => write!(f, "launch binding: {why}"),
            BootErrorKind::Tdcall(e) => write!(f, "TDX: {e}"),
            BootErrorKind::AcpiTable(why) => write!(f, "ACPI tables: {why}"),
            BootErrorKind::TdHob(e) => write!(f, "{e}"),
            BootErrorKind::Madt(e) => write!(f, "ACPI tables: {e}"),
            BootErrorKind::GetQuote(e) => write!(f, "TDX: {e}"),
            BootErrorKind::ApsMissing(arrived, expected) => write!(
                f,
                "TDX: {arrived} of {expected} application processors reached the wakeup mailbox (the VMM did not run the others)"
            ),
            BootErrorKind::UnsupportedRam(at) => {
                write!(f, "SEV-SNP: memory up to {at:#x} is out of reach (heap: below 4 GiB, RAM: 128 TiB)")
            }
            BootErrorKind::AboveFourGib(what, at) => write!(f, "TDX: {what} must lie below 4 GiB (ends at {at:#x})"),
            BootErrorKind::OverLaunch(what, (a, b), (x, y)) => write!(
                f,
                "{what} {a:#x}-{:#x} would overlap {x:#x}-{:#x}, which the launch added: refusing it",
                b - 1,
                y - 1
            ),
            BootErrorKind::NotInTdHob((a, b)) => {
                write!(f, "TDX: {a:#x}-{:#x} is not unaccepted in the TD HOB: refusing it", b - 1)
            }
            BootErrorKind::Token(why) => write!(f, "{why}"),
            BootErrorKind::At { place, source } => write!(f, "{place}: {source}"),
            BootErrorKind::OutOfMemory(n) => write!(f, "out of memory for {n} bytes (the VM needs more RAM: -m)"),
            BootErrorKind::NoRamForKernel(n) => {
                write!(f, "no free RAM for the kernel's {n} bytes (init_size) at an aligned address")
            }
            BootErrorKind::InitrdTooLarge(n) => write!(f, "initrd of {n} bytes does not fit in the firmware heap"),
            BootErrorKind::SetupSize(n) => write!(f, "kernel setup part of {n} bytes is not a bzImage's"),
            BootErrorKind::CmdlineSize(n) => write!(f, "command line of {n} bytes is absurd"),
            BootErrorKind::NoKnownPcrBank => {
                write!(f, "the TPM has no active PCR bank veilboot knows (SHA-1/256/384/512)")
            }
            BootErrorKind::NoTpmLogArea => {
                write!(f, "QEMU's ACPI tables have no TPM log area (etc/tpm/log); Linux will not see the event log")
            }
            BootErrorKind::EventLogTooLarge { log, area } => {
                write!(f, "the event log ({log} bytes) exceeds the ACPI log area ({area} bytes)")
            }
            BootErrorKind::ManifestDiffersFromToken => write!(
                f,
                "boot bundle: the manifest in the veil-bundle token (what was measured) differs from the MAC'd manifest in the volume; refusing to boot"
            ),
            BootErrorKind::NoBootPartition => write!(f, "disk: the GPT has no partition named veil-boot"),
            BootErrorKind::BootVolumeUnreadable(e) => write!(
                f,
                "veil-boot: {e}; the boot volume cannot be read, so the firmware stops here (the key broker was not asked)"
            ),
            BootErrorKind::HeaderWriteOutOfRange => write!(f, "veil-boot: header write beyond the partition"),
            BootErrorKind::DevKeyRefused(platform) => {
                write!(f, "the development key source is refused on {platform}: it exists only for plain test VMs")
            }
            BootErrorKind::SealedSecretUnopened { tokens, broker } => {
                write!(f, "the sealed master secret does not open with this boot's measurements (")?;
                for (i, (token, why)) in tokens.iter().enumerate() {
                    write!(f, "{}{token}: {why}", if i > 0 { "; " } else { "" })?;
                }
                match broker {
                    Some(e) => write!(f, "), and {e}: refusing to boot"),
                    None => write!(f, ") and no key broker is configured: refusing to boot"),
                }
            }
            BootErrorKind::BrokerRefused(e) => write!(f, "{e}: refusing to boot"),
            BootErrorKind::UnboundBootVolume(why) => write!(
                f,
                "veil-boot is not bound to a boot target: {why}; with a root of trust (TPM, SEV-SNP, TDX) such a volume is refused before any secret is asked for or unsealed (make the image with `veil image build`, which writes the veil-bundle token and its init-data)"
            ),
            BootErrorKind::MeasurementSaltDiffers => write!(
                f,
                "boot bundle: the measurement salt in the veil-bundle token is not the one the MAC'd manifest binds (the clusterID would be the host's choice); refusing to boot"
            ),
            BootErrorKind::SecretDoesNotOpen(from, why) => write!(
                f,
                "the master secret from {from} does not open this disk ({why}); no token was written or removed: refusing to boot"
            ),
            BootErrorKind::NoAcpiForLog(what) => write!(f, "{what}: no ACPI tables to hand it over in"),
            BootErrorKind::NoKeySource(rot) => {
                write!(f, "the disk has a veil-boot volume but no key source gave its master secret (")?;
                match rot {
                    Some(name) => write!(f, "{name}: no sealed token, and no key broker relay")?,
                    None => write!(f, "no TPM, no key broker relay, no development secret")?,
                }
                write!(
                    f,
                    "). The three key sources: 1. a token sealed in veil-boot, opened by the TPM (QEMU -device tpm-tis on swtpm, see qemu/plain-tpm.sh; `veil seal` seals one offline, a first boot through the broker seals one) or by the SEV-SNP AMD-SP; 2. a key broker: `veil kbs serve` on the host and `veil kbs relay` on a virtio-console (needs a TPM or SEV-SNP/TDX evidence); 3. development only: the dev ROM (cargo xtask build-dev) with -fw_cfg name=opt/veil/dev-master-secret,file=SECRET. Refusing to boot"
                )
            }
        }
    }
}

/// Name the place an error happened.
pub trait At<T> {
    /// Wrap the error as `BootErrorKind::At { place, .. }`.
    fn at(self, place: impl Into<String>) -> Result<T, BootError>;
}

impl<T, E: Into<BootError>> At<T> for Result<T, E> {
    fn at(self, place: impl Into<String>) -> Result<T, BootError> {
        self.map_err(|e| BootErrorKind::At { place: place.into(), source: e.into() }.into())
    }
}

macro_rules! from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for BootError {
            #[cold]
            #[inline(never)]
            fn from(e: $ty) -> Self {
                BootErrorKind::$variant(e).into()
            }
        })*
    };
}

from!(
    FwCfg(FwCfgError),
    Tis(TisError),
    Tpm(TpmError),
    Kbs(KbsError),
    Relay(RelayError),
    Gpt(GptError),
    Luks2(Luks2Error),
    Io(IoError),
    Bundle(BundleError),
    Key(KeyError),
    Xts(XtsError),
    Linux(LinuxError),
    AcpiLoader(LoaderError),
    Snp(SnpError),
    SnpMemory(MemoryError),
);

/// Why fw_cfg could not be used.
#[derive(Debug)]
pub enum FwCfgError {
    /// No "QEMU" signature: no fw_cfg device.
    Missing,
    /// The device reported a DMA error.
    Dma,
    /// The device did not complete a DMA transfer in the time allowed.
    DmaTimeout,
    /// Writing needs the DMA interface.
    NoDmaWrite,
    /// A write outside its file.
    WriteRange {
        /// The file.
        name: alloc::string::String,
    },
    /// The directory is malformed.
    Directory(veil_agent::fwcfg::FwCfgError),
    /// A file is larger than the caller allows.
    TooLarge {
        /// The file.
        name: alloc::string::String,
        /// Its size.
        size: u32,
        /// The caller's limit.
        limit: usize,
    },
}

impl core::fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FwCfgError::Missing => write!(f, "fw_cfg: no device (signature is not \"QEMU\")"),
            FwCfgError::Dma => write!(f, "fw_cfg: the DMA transfer reported an error"),
            FwCfgError::DmaTimeout => write!(
                f,
                "fw_cfg: the device did not complete a DMA transfer (QEMU completes them at once: the host could not reach the memory, or will not)"
            ),
            FwCfgError::NoDmaWrite => write!(f, "fw_cfg: writing needs the DMA interface, which this device lacks"),
            FwCfgError::WriteRange { name } => write!(f, "fw_cfg: write outside the file {name}"),
            FwCfgError::Directory(e) => write!(f, "{e}"),
            FwCfgError::TooLarge { name, size, limit } => {
                write!(f, "fw_cfg: {name} is {size} bytes, more than the {limit} allowed")
            }
        }
    }
}
