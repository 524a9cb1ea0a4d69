//! Thin wrappers over the x86 instructions the firmware needs: CPUID, MSRs, control
//! registers, XCR0, TSC, port I/O. Each is one instruction; the safety argument is the
//! caller's (documented where it matters) except where the instruction cannot affect memory.

use core::arch::asm;
use core::sync::atomic::{AtomicPtr, Ordering};

/// CPUID result.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpuid {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// CPUID. On SEV-SNP the answer comes from the PSP-validated CPUID page (the instruction
/// would raise #VC and ask the untrusted hypervisor), installed by the platform as the
/// [`CpuidSource`]; elsewhere it is the instruction.
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let source = CPUID_SOURCE.load(Ordering::Acquire);
    if !source.is_null() {
        // SAFETY: only `&'static CpuidSource` values are ever stored (set_cpuid_source).
        let source = unsafe { &*source };
        if let Some(r) = (source.lookup)(leaf, subleaf) {
            return Cpuid { eax: r[0], ebx: r[1], ecx: r[2], edx: r[3] };
        }
    }
    native_cpuid(leaf, subleaf)
}

/// Where CPUID answers come from instead of the instruction (SEV-SNP: the CPUID page).
pub struct CpuidSource {
    /// The answer for (leaf, subleaf), or None to execute the instruction.
    pub lookup: fn(u32, u32) -> Option<[u32; 4]>,
}

static CPUID_SOURCE: AtomicPtr<CpuidSource> = AtomicPtr::new(core::ptr::null_mut());

/// Answer CPUID from `source` from now on (the platform, once its CPUID data is validated).
pub fn set_cpuid_source(source: &'static CpuidSource) {
    CPUID_SOURCE.store(core::ptr::from_ref(source).cast_mut(), Ordering::Release);
}

/// The CPUID instruction itself.
pub fn native_cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    Cpuid { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
}

/// Read an MSR.
///
/// # Safety
/// The MSR must exist on this CPU (otherwise #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR touches no memory.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Write an MSR.
///
/// # Safety
/// The MSR must exist and the value must be one the firmware intends (e.g. EFER bits).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR exists (else #GP) and that the new value keeps
    // the machine running the firmware (# Safety); WRMSR touches no memory.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads the time-stamp counter; it touches no memory.
    unsafe { core::arch::x86_64::_rdtsc() }
}

macro_rules! control_register {
    ($read:ident, $write:ident, $reg:literal) => {
        /// Read the control register.
        pub fn $read() -> u64 {
            let v: u64;
            // SAFETY: reading a control register has no side effects.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
        /// Write the control register.
        ///
        /// # Safety
        /// The value must keep the machine in a state the firmware can run in.
        pub unsafe fn $write(v: u64) {
            // SAFETY: the caller guarantees the value keeps paging, protection and the FPU state
            // the firmware runs with valid (# Safety); the move touches no memory itself.
            unsafe { asm!(concat!("mov ", $reg, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
        }
    };
}
control_register!(read_cr0, write_cr0, "cr0");
control_register!(read_cr3, write_cr3, "cr3");
control_register!(read_cr4, write_cr4, "cr4");

/// CR2: the faulting address of the last page fault.
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Write XCR0.
///
/// # Safety
/// CR4.OSXSAVE must be set and `v` a subset of what CPUID leaf 0xD reports, with x87 set.
pub unsafe fn xsetbv0(v: u64) {
    // SAFETY: CR4.OSXSAVE is set and `v` is a supported XCR0 value (the caller's # Safety),
    // so XSETBV cannot fault; it touches no memory.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack, preserves_flags))
    };
}

/// Stop until the next interrupt (forever, with interrupts off).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI/HLT only stop the CPU; they touch no memory.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Port I/O. On the plain platform these are the real instructions; SNP and TDX route port
/// I/O through their platform module instead.
///
/// A port access itself touches no memory. What a device then does can: of the devices the
/// firmware drives, two write guest memory because of a port write, both through 32-bit
/// writes: fw_cfg's DMA address register (0x514/0x518) and PCI configuration data (0xCFC,
/// e.g. a command register with bus mastering). So `outl` is `unsafe` and its callers own that
/// effect (fwcfg::dma hands the device only its own descriptor and buffer; the PCI writes go to
/// the host and LPC bridges' window and ACPI registers, never a bus-master enable). Byte and
/// word writes go to the serial port, the PIT, debug-exit and the fw_cfg selector, which start
/// no memory access.
pub mod port {
    use core::arch::asm;
    use core::sync::atomic::{AtomicPtr, Ordering};

    /// How a confidential platform reaches the host for what the port and MMIO instructions
    /// would do (SEV-SNP: GHCB exits, where the instructions raise #VC; TDX: TDG.VP.VMCALL,
    /// where they raise #VE). Installed by the platform at bring-up ([`route`]); none on the
    /// plain platform, which uses the instructions.
    pub struct HostRoute {
        /// Port input of `size` bytes.
        pub port_in: fn(u16, u8) -> u32,
        /// Port output of `size` bytes.
        pub port_out: fn(u16, u8, u32),
        /// REP INSB's effect (fw_cfg's data port), or None for a byte loop over `port_in`.
        pub port_in_bytes: Option<fn(u16, &mut [u8])>,
        /// MMIO read of `size` bytes at a device address.
        pub mmio_read: fn(u64, u8) -> u64,
        /// MMIO write of `size` bytes at a device address.
        pub mmio_write: fn(u64, u8, u64),
    }

    static ROUTE: AtomicPtr<HostRoute> = AtomicPtr::new(core::ptr::null_mut());

    /// Send port I/O and MMIO through `to` from now on.
    pub fn route(to: &'static HostRoute) {
        ROUTE.store(core::ptr::from_ref(to).cast_mut(), Ordering::SeqCst);
    }

    /// Back to the instructions (a platform whose host interface failed, about to stop).
    pub fn unroute() {
        ROUTE.store(core::ptr::null_mut(), Ordering::SeqCst);
    }

    /// The route installed, if any.
    pub fn current() -> Option<&'static HostRoute> {
        let to = ROUTE.load(Ordering::SeqCst);
        // SAFETY: only `&'static HostRoute` values are ever stored (route).
        (!to.is_null()).then(|| unsafe { &*to })
    }

    /// Is port I/O routed through a confidential platform's host interface?
    pub fn routed() -> bool {
        current().is_some()
    }

    fn routed_in(port: u16, size: u8) -> Option<u32> {
        current().map(|r| (r.port_in)(port, size))
    }

    fn routed_out(port: u16, size: u8, v: u32) -> bool {
        match current() {
            Some(r) => (r.port_out)(port, size, v),
            None => return false,
        }
        true
    }

    /// Read `buf.len()` bytes from one port (fw_cfg's data port): REP INSB's effect, through
    /// the GHCB's shared buffer on SNP.
    pub fn inb_string(port: u16, buf: &mut [u8]) {
        if let Some(bytes) = current().and_then(|r| r.port_in_bytes) {
            bytes(port, buf);
            return;
        }
        for b in buf {
            *b = inb(port);
        }
    }

    /// Write a byte.
    pub fn outb(port: u16, v: u8) {
        if routed_out(port, 1, u32::from(v)) {
            return;
        }
        // SAFETY: a byte port write starts no memory access by any device the firmware drives
        // (serial, PIT, debug-exit; module doc); the instruction itself touches no memory.
        unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) };
    }
    /// Read a byte.
    pub fn inb(port: u16) -> u8 {
        if let Some(v) = routed_in(port, 1) {
            return v as u8;
        }
        let v: u8;
        // SAFETY: a port read starts no memory access by the devices the firmware drives.
        unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags)) };
        v
    }
    /// Write a 16-bit word.
    pub fn outw(port: u16, v: u16) {
        if routed_out(port, 2, u32::from(v)) {
            return;
        }
        // SAFETY: as for outb (the word port written is fw_cfg's selector, which moves no data).
        unsafe { asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags)) };
    }
    /// Write a 32-bit word.
    ///
    /// # Safety
    /// If the write makes a device access memory (fw_cfg's DMA address, a PCI command
    /// register enabling bus mastering), every address the device is given must be memory the
    /// caller owns, for as long as the device may use it.
    pub unsafe fn outl(port: u16, v: u32) {
        if routed_out(port, 4, v) {
            return;
        }
        // SAFETY: the caller owns whatever memory effect the device has (see # Safety); the
        // instruction itself touches no memory.
        unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags)) };
    }
    /// Read a 32-bit word.
    pub fn inl(port: u16) -> u32 {
        if let Some(v) = routed_in(port, 4) {
            return v;
        }
        let v: u32;
        // SAFETY: as for inb.
        unsafe { asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags)) };
        v
    }
}
