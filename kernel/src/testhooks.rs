//! Test hooks: the faults, benchmarks and substitutions the QEMU tests ask for through fw_cfg
//! (`opt/veil/test`, `opt/veil/test-e820`, `opt/veil/test-xts-backend`).
//!
//! Compiled only with the `test-hooks` feature (the test ROM `veilboot-test.fd` and the
//! development ROM). In the release ROM [`TestHooks`] is an empty stand-in whose methods do
//! nothing, so no hook, and no hook's name, is in the image; `cargo xtask test` checks the
//! release ROM for the names. The host controls fw_cfg either way, so a hook adds no trust,
//! but a release image should carry no code a user has no use for.
//!
//! May call: every layer but lib.rs (`arch`, `error`, `devices`, `platform`, `boot`, `model`);
//! only lib.rs calls it, at the points `veil_main` names.

#[cfg(feature = "test-hooks")]
use alloc::vec::Vec;

#[cfg(feature = "test-hooks")]
use crate::arch::{exit, layout, tsc};
#[cfg(feature = "test-hooks")]
use crate::boot::secrets;
use crate::devices::fwcfg::FwCfg;
#[cfg(feature = "test-hooks")]
use crate::log;

/// fw_cfg name of the memory map the firmware reads.
const E820: &str = "etc/e820";
/// fw_cfg name of a memory map that replaces it (malformed-map tests).
#[cfg(feature = "test-hooks")]
const TEST_E820: &str = "opt/veil/test-e820";
/// fw_cfg name of a one-word request (`page-fault`, `guard-page`, `secret-canary`,
/// `xts-bench`, `relay-echo`).
#[cfg(feature = "test-hooks")]
const TEST_REQUEST: &str = "opt/veil/test";
/// fw_cfg name of the XTS backend a test forces (`aesni`, `vaes256`, `vaes512`, `rustcrypto`).
#[cfg(feature = "test-hooks")]
const TEST_XTS_BACKEND: &str = "opt/veil/test-xts-backend";

/// The hooks a test asked for, read once from fw_cfg.
pub struct TestHooks {
    #[cfg(feature = "test-hooks")]
    request: Option<Vec<u8>>,
    #[cfg(feature = "test-hooks")]
    xts_backend: Option<Vec<u8>>,
    #[cfg(feature = "test-hooks")]
    test_e820: bool,
}

#[cfg(not(feature = "test-hooks"))]
impl TestHooks {
    /// Nothing to read in a release ROM.
    pub fn read(_cfg: &FwCfg) -> TestHooks {
        TestHooks {}
    }
    /// The memory map's fw_cfg name.
    pub fn e820_file(&self) -> &'static str {
        E820
    }
    /// No early hooks.
    pub fn run_early(&self, _cfg: &FwCfg) {}
    /// No hooks after the PCI scan.
    pub fn run_after_pci(&self, _pci: &crate::devices::pci::Config) {}
    /// No forced XTS backend.
    pub fn xts_backend(&self) -> Option<&str> {
        None
    }
    /// No configuration input of its own to measure.
    pub fn measured_input(&self) -> Option<(&'static str, &[u8])> {
        None
    }
}

#[cfg(feature = "test-hooks")]
impl TestHooks {
    /// Read the hook files QEMU offers.
    pub fn read(cfg: &FwCfg) -> TestHooks {
        TestHooks {
            request: cfg.read_file(TEST_REQUEST, 64).ok().flatten(),
            xts_backend: cfg.read_file(TEST_XTS_BACKEND, 16).ok().flatten(),
            test_e820: cfg.find(TEST_E820).is_some(),
        }
    }

    /// The memory map's fw_cfg name: a test's substitute when it offers one.
    pub fn e820_file(&self) -> &'static str {
        if self.test_e820 {
            log!("test: using {TEST_E820} as the memory map");
            TEST_E820
        } else {
            E820
        }
    }

    fn request(&self) -> Option<&[u8]> {
        self.request.as_deref().map(<[u8]>::trim_ascii)
    }

    /// Requests that need only the heap and fw_cfg: faults, the canary secret, the XTS
    /// benchmark, the kernel setup dump.
    pub fn run_early(&self, cfg: &FwCfg) {
        match self.request() {
            None | Some(b"relay-echo") => {} // relay-echo needs PCI: run_after_pci
            Some(b"page-fault") => {
                log!("test: reading unmapped memory at 0x4000000000");
                // SAFETY: none needed; this is the deliberate fault the test asks for. The
                // address is outside the identity map, so the read faults before anything is
                // returned.
                let v = unsafe { core::ptr::read_volatile(0x40_0000_0000 as *const u64) };
                log!("test: read {v:#x} without a fault");
            }
            Some(b"guard-page") => {
                log!("test: writing the stack guard page");
                // SAFETY: none needed; deliberate write to the unmapped guard page below the
                // stack, which faults.
                unsafe { core::ptr::write_volatile(layout::GUARD_PAGE as *mut u64, 0) };
                log!("test: wrote the guard page without a fault");
            }
            Some(b"secret-canary") => {
                // A stand-in secret that must be gone before the jump (the wipe test).
                let canary: &'static mut [u8] = alloc::vec![0xA5u8; 32].leak();
                secrets::register(canary);
                log!("test: registered a 32-byte canary secret");
            }
            Some(b"xts-bench") => xts_bench(),
            Some(b"kernel-setup") => kernel_setup(cfg),
            Some(other) => log!("test: unknown request {:?} ignored", core::str::from_utf8(other).unwrap_or("?")),
        }
    }

    /// Requests that need the PCI bus: the relay echo.
    pub fn run_after_pci(&self, pci: &crate::devices::pci::Config) {
        if let (Some(b"relay-echo"), crate::devices::pci::Config::Ecam(base)) = (self.request(), pci) {
            relay_echo(*base);
        }
    }

    /// The XTS backend the test forces, if any.
    pub fn xts_backend(&self) -> Option<&str> {
        self.xts_backend.as_deref().and_then(|b| core::str::from_utf8(b.trim_ascii()).ok())
    }

    /// The request file, measured into PCR 1 with the rest of the configuration.
    pub fn measured_input(&self) -> Option<(&'static str, &[u8])> {
        self.request.as_deref().map(|r| (TEST_REQUEST, r))
    }
}

/// `kernel-setup`: print the -kernel setup part exactly as fw_cfg serves it (QEMU rewrites
/// header fields unless it launches an SEV guest), in hex, and stop: the SNP model test builds
/// its SEV hash table from these bytes with sev-snp-measure, so that the firmware's hash of
/// what it reads can match.
#[cfg(feature = "test-hooks")]
fn kernel_setup(cfg: &FwCfg) -> ! {
    use crate::devices::fwcfg::sel;
    let size = cfg.read_u32(sel::SETUP_SIZE).unwrap_or_else(|e| crate::arch::exit::fail(format_args!("{e}")));
    let mut setup = alloc::vec![0u8; size.min(64 * 1024) as usize];
    cfg.read_selector(sel::SETUP_DATA, &mut setup).unwrap_or_else(|e| crate::arch::exit::fail(format_args!("{e}")));
    log!("test: kernel setup {}", hex::encode(&setup));
    exit::exit(exit::Status::Success)
}

/// `relay-echo`: one framed JSON message to the host relay over virtio-console and one framed
/// reply back, printed; the channel remote key release uses.
#[cfg(feature = "test-hooks")]
fn relay_echo(ecam_base: u64) -> ! {
    let found = crate::devices::relay::find_console(ecam_base)
        .unwrap_or_else(|e| crate::arch::exit::fail(format_args!("virtio bounce pool: {e}")));
    let Some(mut console) = found else { crate::arch::exit::fail(format_args!("relay: no virtio-console device")) };
    log!("relay: virtio-console at {}", console.location);
    console.send_frame(br#"{"veil":"relay-echo"}"#).unwrap_or_else(|e| crate::arch::exit::fail(format_args!("{e}")));
    let frame = console.recv_frame(10_000_000).unwrap_or_else(|e| crate::arch::exit::fail(format_args!("{e}")));
    let text = core::str::from_utf8(&frame).unwrap_or("<not UTF-8>");
    log!("relay: reply of {} bytes: {text}", frame.len());
    exit::exit(exit::Status::Success)
}

/// `xts-bench`: XTS throughput of every backend inside the firmware (4096-byte sectors,
/// AES-256, 16 MiB in place), for comparison with the host figures in BENCHMARKS.md.
#[cfg(feature = "test-hooks")]
fn xts_bench() {
    const LEN: usize = 16 << 20;
    let key: [u8; 64] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    let mut buf = alloc::vec![0x5Au8; LEN];
    let Ok(backends) = veil_agent::xts::available_backends(&key) else { return };
    for backend in backends {
        let name = backend.name();
        let Ok(cipher) = veil_agent::xts::SectorCipher::with_backend(backend, 4096) else { continue };
        for (op, encrypt) in [("encrypt", true), ("decrypt", false)] {
            let start = crate::arch::cpu::rdtsc();
            let r = if encrypt { cipher.encrypt_sectors(0, &mut buf) } else { cipher.decrypt_sectors(0, &mut buf) };
            let us = (tsc::micros(crate::arch::cpu::rdtsc()) - tsc::micros(start)).max(1);
            if r.is_ok() {
                log!("xts-bench: backend={name} op={op} bytes={LEN} us={us} MB/s={}", LEN as u64 / us);
            }
        }
    }
}
