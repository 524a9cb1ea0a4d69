//! Booting Linux: the kernel, initrd and command line QEMU offers over fw_cfg (-kernel,
//! -initrd, -append) are loaded per the x86 boot protocol (veil_agent::linux), a cpio archive
//! with /veil/handoff.json is appended to the initrd, and the CPU jumps to the 64-bit entry
//! point with RSI = boot_params, under the firmware's identity map.

use crate::error::{BootError, BootErrorKind};
use alloc::vec::Vec;
use core::alloc::Layout;
use core::arch::asm;

use veil_agent::fwcfg::{E820Entry, E820Kind, is_ram, reserve};
use veil_agent::linux::{ENTRY_64_OFFSET, Handoff, SetupHeader, boot_params};

use crate::arch::layout::{FIRMWARE_RANGE, KERNEL_WINDOW};
use crate::devices::fwcfg::{FwCfg, sel};

/// Bounds on what the host may hand over.
const MAX_SETUP: u32 = 64 * 1024;
const MAX_CMDLINE: u32 = 1 << 20;

/// Everything prepared for the jump.
pub struct Prepared {
    /// 64-bit entry point.
    pub entry: u64,
    /// The zero page.
    pub boot_params: u64,
    /// Where the kernel was loaded and how much it may use.
    pub kernel: (u64, u64),
    /// Initrd address and size (appended archive included).
    pub initrd: (u64, u64),
    /// Protocol version.
    pub version: u16,
}

/// Do `[a.0, a.0 + a.1)` and `[b.0, b.0 + b.1)` overlap? (Ends saturate: never wraps.)
fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

/// For a disk boot, before its bundle is read: when the kernel's preferred window `[load
/// address, + max(init_size, kernel_size))` overlaps the heap (a small VM), take a window from
/// the heap now, while it is still in one piece (after the bundle's buffers it may not be).
/// `hdr` comes from an early, unverified read; [`prepare`] checks the window against the
/// verified header. None when the preferred window is clear or the heap lacks the room
/// (`prepare` then places the kernel, or says why it cannot).
pub fn reserve_window(hdr: &SetupHeader, kernel_size: u64) -> Option<(u64, u64)> {
    let (at, end) = hdr.kernel_range(KERNEL_WINDOW.0, kernel_size).ok()?;
    let need = end - at;
    let heap = crate::boot::heap::main_range();
    if !overlaps((at, need), heap) {
        return None;
    }
    heap_window(need, u64::from(hdr.kernel_alignment), hdr.load_address(0).ok()?).map(|at| (at, need))
}

/// A window of `need` bytes for the (relocatable) kernel taken from the heap and never freed:
/// at its `align`ment and not below `floor`, its preferred address (a kernel loaded lower
/// moves itself up to it, over whatever lies there). Its address, or None without the room.
fn heap_window(need: u64, align: u64, floor: u64) -> Option<u64> {
    let (heap_start, _) = crate::boot::heap::main_range();
    // First without room to climb to `floor` (the heap's free RAM is usually above it by
    // now), then with it.
    for extra in [0, floor.saturating_sub(heap_start)] {
        let len = need.checked_add(extra)?;
        let layout = Layout::from_size_align(usize::try_from(len).ok()?, usize::try_from(align).ok()?).ok()?;
        // SAFETY: non-zero size; a block that fits is deliberately never freed (the kernel
        // gets it), one that does not is freed with the same layout.
        let block = unsafe { alloc::alloc::alloc(layout) };
        if block.is_null() {
            continue;
        }
        let fits = (block as u64).max(floor).checked_next_multiple_of(align).filter(|start| {
            start.checked_add(need).is_some_and(|end| end <= block as u64 + len && end <= 0x1_0000_0000)
        });
        if let Some(start) = fits {
            return Some(start);
        }
        // SAFETY: allocated just above with this layout, not used.
        unsafe { alloc::alloc::dealloc(block, layout) };
    }
    None
}

/// A leaked, page-aligned, zeroed buffer of `len` bytes.
fn leak(len: usize) -> Result<&'static mut [u8], BootError> {
    let layout =
        Layout::from_size_align(len.max(1).div_ceil(4096) * 4096, 4096).map_err(|_| BootErrorKind::OutOfMemory(len))?;
    // SAFETY: non-zero size; the block is deliberately never freed (the OS gets it).
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return Err(BootErrorKind::OutOfMemory(len).into());
    }
    // SAFETY: freshly allocated, zeroed, exclusively ours.
    Ok(unsafe { core::slice::from_raw_parts_mut(p, len) })
}

/// Where the kernel, initrd and command line come from: QEMU's fw_cfg (-kernel/-initrd/
/// -append) or a verified boot bundle from the encrypted disk.
pub trait Source {
    /// The real-mode setup part (with the setup header), or None if there is no kernel.
    fn setup(&mut self) -> Result<Option<Vec<u8>>, BootError>;
    /// Size of the protected-mode kernel.
    fn kernel_size(&mut self) -> Result<usize, BootError>;
    /// Copy the protected-mode kernel into `dst` (exactly kernel_size bytes).
    fn read_kernel(&mut self, dst: &mut [u8]) -> Result<(), BootError>;
    /// Size of the initrd.
    fn initrd_size(&mut self) -> Result<usize, BootError>;
    /// The initrd (`size` bytes, as initrd_size said) followed at a 4-byte boundary by `extra`,
    /// in a buffer the firmware never frees (Linux gets it).
    fn initrd(&mut self, size: usize, extra: &[u8]) -> Result<&'static mut [u8], BootError>;
    /// A kernel window reserved in the heap before the kernel was read ([`reserve_window`]):
    /// address and length.
    fn reserved_window(&self) -> Option<(u64, u64)> {
        None
    }
    /// The command line without its NUL.
    fn cmdline(&mut self) -> Result<Vec<u8>, BootError>;
}

/// What a direct boot (QEMU's -kernel) needs before the heap is chosen: where the kernel will
/// sit, `[load address, + max(init_size, kernel size))`, and the initrd's size. Ok(None)
/// without a kernel, or when its header does not parse (the boot reports that later,
/// precisely). A range the header's values would wrap or push past 4 GiB is refused here,
/// before it can steer the heap (crate::arch::layout's invariants).
pub fn direct_boot_need(cfg: &FwCfg) -> Result<Option<((u64, u64), u64)>, BootError> {
    let (Ok(kernel_size), Ok(setup_size)) = (cfg.read_u32(sel::KERNEL_SIZE), cfg.read_u32(sel::SETUP_SIZE)) else {
        return Ok(None);
    };
    if kernel_size == 0 || setup_size < 0x270 {
        return Ok(None);
    }
    // The setup header only (the early arena is small): its fields end before 0x270.
    let mut head = [0u8; 0x270];
    if cfg.read_selector(sel::SETUP_DATA, &mut head).is_err() {
        return Ok(None);
    }
    let Ok(hdr) = SetupHeader::parse(&head) else { return Ok(None) };
    let range = hdr.kernel_range(KERNEL_WINDOW.0, u64::from(kernel_size))?;
    let Ok(initrd) = cfg.read_u32(sel::INITRD_SIZE) else { return Ok(None) };
    Ok(Some((range, u64::from(initrd))))
}

/// QEMU's -kernel/-initrd/-append over fw_cfg.
pub struct FwCfgSource<'a>(pub &'a FwCfg);

impl Source for FwCfgSource<'_> {
    fn setup(&mut self) -> Result<Option<Vec<u8>>, BootError> {
        let kernel_size = self.0.read_u32(sel::KERNEL_SIZE)?;
        let setup_size = self.0.read_u32(sel::SETUP_SIZE)?;
        if kernel_size == 0 && setup_size == 0 {
            return Ok(None);
        }
        if !(1024..=MAX_SETUP).contains(&setup_size) {
            return Err(BootErrorKind::SetupSize(setup_size).into());
        }
        let mut setup = alloc::vec![0u8; setup_size as usize];
        self.0.read_selector(sel::SETUP_DATA, &mut setup)?;
        Ok(Some(setup))
    }
    fn kernel_size(&mut self) -> Result<usize, BootError> {
        Ok(self.0.read_u32(sel::KERNEL_SIZE)? as usize)
    }
    fn read_kernel(&mut self, dst: &mut [u8]) -> Result<(), BootError> {
        self.0.read_selector(sel::KERNEL_DATA, dst).map_err(BootError::from)
    }
    fn initrd_size(&mut self) -> Result<usize, BootError> {
        Ok(self.0.read_u32(sel::INITRD_SIZE)? as usize)
    }
    fn initrd(&mut self, size: usize, extra: &[u8]) -> Result<&'static mut [u8], BootError> {
        let padded = size.div_ceil(4) * 4;
        let initrd = leak(padded + extra.len())?;
        if size > 0 {
            self.0.read_selector(sel::INITRD_DATA, &mut initrd[..size])?;
        }
        initrd[padded..].copy_from_slice(extra);
        Ok(initrd)
    }
    fn cmdline(&mut self) -> Result<Vec<u8>, BootError> {
        let size = self.0.read_u32(sel::CMDLINE_SIZE)?;
        if size > MAX_CMDLINE {
            return Err(BootErrorKind::CmdlineSize(size).into());
        }
        let mut cmdline = alloc::vec![0u8; size as usize];
        self.0.read_selector(sel::CMDLINE_DATA, &mut cmdline)?;
        while cmdline.last() == Some(&0) {
            cmdline.pop();
        }
        Ok(cmdline)
    }
}

/// Where a kernel goes and what it is handed.
pub struct Target<'a> {
    /// The machine's memory map.
    pub e820: &'a [E820Entry],
    /// The firmware heap (start, size): not for the kernel.
    pub heap: (u64, u64),
    /// QEMU's ACPI tables, if installed.
    pub acpi: Option<&'a crate::devices::acpi::Tables>,
    /// A cpio archive appended to the initrd (the hand-off files).
    pub extra_cpio: &'a [u8],
    /// What the platform adds (e820 reservations, setup_data).
    pub extras: crate::platform::HandoffExtras,
}

/// Load a kernel from `src`. Ok(None) when there is none. With `launch_check` (QEMU's
/// -kernel/-initrd/-append, i.e. `src` is fw_cfg), the platform checks the blobs against what
/// the launch measured before any of them is used.
pub fn prepare(
    src: &mut dyn Source,
    target: &Target<'_>,
    launch_check: Option<&mut dyn crate::platform::Platform>,
) -> Result<Option<Prepared>, BootError> {
    let (e820, heap, acpi, extra_cpio) = (target.e820, target.heap, target.acpi, target.extra_cpio);
    let Some(setup) = src.setup()? else { return Ok(None) };
    let hdr = SetupHeader::parse(&setup)?;
    let kernel_size = src.kernel_size()?;
    let cmdline = src.cmdline()?;
    hdr.check_cmdline(&cmdline)?;

    // The kernel: at its preferred address if that is free RAM, else above the heap, else in
    // a window from the heap (reserved before the bundle was read, or now).
    let need = u64::from(hdr.init_size).max(kernel_size as u64);
    // Every candidate range is checked (SetupHeader::kernel_range): the header is the host's.
    let fits = |at: Result<u64, _>| {
        let addr = at.ok()?;
        let end = addr.checked_add(need).filter(|end| *end <= 0x1_0000_0000)?;
        (is_ram(e820, addr, need)
            && !overlaps((addr, need), heap)
            && !overlaps((addr, end - addr), (FIRMWARE_RANGE.0, FIRMWARE_RANGE.1 - FIRMWARE_RANGE.0)))
        .then_some(addr)
    };
    let floor = hdr.load_address(0)?;
    hdr.kernel_range(0, kernel_size as u64)?;
    // A window reserved earlier must still fit this (verified) header: the disk could have
    // answered the early read of the header with other bytes.
    let align = u64::from(hdr.kernel_alignment);
    let reserved = src
        .reserved_window()
        .filter(|(at, len)| *len >= need && at.is_multiple_of(align) && *at >= floor)
        .map(|(at, _)| at);
    let above_heap = heap.0.checked_add(heap.1).map_or(Err(()), |end| hdr.load_address(end).map_err(|_| ()));
    let addr = match fits(hdr.load_address(KERNEL_WINDOW.0).map_err(|_| ())).or_else(|| fits(above_heap)) {
        Some(addr) => addr,
        None => {
            let addr =
                reserved.or_else(|| heap_window(need, align, floor)).ok_or(BootErrorKind::NoRamForKernel(need))?;
            crate::log!("linux: the kernel's window is taken from the heap (a small VM)");
            addr
        }
    };
    // SAFETY: [addr, addr + need) is RAM per e820, identity mapped, and either disjoint from
    // the heap and the firmware's own memory (checked by `fits`) or a heap block leaked to the
    // kernel (heap_window), so nothing else uses it.
    let dst = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, kernel_size) };
    src.read_kernel(dst)?;

    // The initrd, with the firmware's archive appended (4-byte aligned, as Linux wants).
    let initrd_size = src.initrd_size()?;
    if initrd_size as u64 > heap.1 {
        return Err(BootErrorKind::InitrdTooLarge(initrd_size).into());
    }
    let initrd = src.initrd(initrd_size, extra_cpio)?;
    // The launch's measurements are checked before any of it is used (the appended archive
    // is the firmware's own and lies past initrd_size).
    if let Some(plat) = launch_check {
        plat.verify_direct_boot(&setup, dst, &initrd[..initrd_size], &cmdline)?;
    }
    let initrd_range = (initrd.as_ptr() as u64, initrd.len() as u64);
    hdr.check_initrd(initrd_range.0, initrd_range.1)?;

    let cmdline_buf = leak(cmdline.len() + 1)?;
    cmdline_buf[..cmdline.len()].copy_from_slice(&cmdline);

    // The memory map Linux gets: the legacy VGA/ROM hole and the ACPI tables reserved.
    let mut map = reserve(e820, 0xA_0000, 0x6_0000, E820Kind::Reserved);
    for (start, len) in &target.extras.reserve {
        map = reserve(&map, *start, *len, E820Kind::Reserved);
    }
    let setup_data = match target.extras.setup_data.is_empty() {
        true => 0,
        false => {
            let node = leak(target.extras.setup_data.len())?;
            node.copy_from_slice(&target.extras.setup_data);
            node.as_ptr() as u64
        }
    };
    let mut rsdp = 0;
    if let Some(t) = acpi {
        for (start, len) in &t.ranges {
            map = reserve(&map, *start, *len, E820Kind::Acpi);
        }
        for (start, len) in &t.nvs {
            map = reserve(&map, *start, *len, E820Kind::Nvs);
        }
        rsdp = t.rsdp;
    }
    let handoff =
        Handoff { cmdline_addr: cmdline_buf.as_ptr() as u64, initrd: initrd_range, e820: map, rsdp, setup_data };
    let params = boot_params(&hdr, &handoff)?;
    let bp = leak(params.len())?;
    bp.copy_from_slice(&params);
    Ok(Some(Prepared {
        entry: addr + ENTRY_64_OFFSET,
        boot_params: bp.as_ptr() as u64,
        kernel: (addr, need),
        initrd: initrd_range,
        version: hdr.version,
    }))
}

/// The GDT Linux's 64-bit entry expects: __BOOT_CS = 0x10 and __BOOT_DS = 0x18, flat; 0x08
/// stays a code segment so the firmware's IDT still works until Linux installs its own.
static HANDOFF_GDT: [u64; 4] = [0, 0x00AF_9B00_0000_FFFF, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

#[repr(C, packed)]
struct Gdtr {
    limit: u16,
    base: u64,
}

/// Jump to the kernel. Interrupts are off, the identity map stays, RSI = boot_params. The
/// boot and interrupt stacks, `[STACK_BOTTOM, IST2_TOP)`, are zeroed on the way, after the
/// last use of the stack: whatever a callee left there by value (keys moved through
/// registers and frames, issue 34) does not reach Linux, which gets that memory as RAM. So are
/// the vector registers and every general-purpose register but RSI, RSP and the entry's
/// (issue 35).
pub fn jump(p: &Prepared) -> ! {
    use crate::arch::layout::{IST2_TOP, STACK_BOTTOM};
    crate::arch::paging::allow_execute_everywhere();
    crate::arch::vector::scrub();
    let gdtr = Gdtr { limit: (core::mem::size_of_val(&HANDOFF_GDT) - 1) as u16, base: HANDOFF_GDT.as_ptr() as u64 };
    // SAFETY: the kernel image, boot_params and command line were placed in identity-mapped
    // RAM by `prepare`; the GDT above is static; this is the boot protocol's documented
    // 64-bit entry state. The stacks are zeroed only after the far return, the last use of
    // the stack (interrupts are off; Linux sets up its own stack before using one). The
    // firmware does not continue.
    unsafe {
        asm!(
            "cli",
            "lgdt [rdx]",
            "push 0x10",
            "lea rax, [rip + 2f]",
            "push rax",
            "retfq",
            "2:",
            "mov eax, 0x18",
            "mov ds, eax",
            "mov es, eax",
            "mov ss, eax",
            "cld",
            "xor eax, eax",
            "rep stosb",
            "xor ebp, ebp",
            "xor ebx, ebx",
            "xor edx, edx",
            "xor edi, edi",
            "xor r9d, r9d",
            "xor r10d, r10d",
            "xor r11d, r11d",
            "xor r12d, r12d",
            "xor r13d, r13d",
            "xor r14d, r14d",
            "xor r15d, r15d",
            "jmp r8",
            in("rdx") &gdtr,
            in("r8") p.entry,
            in("rsi") p.boot_params,
            in("rdi") STACK_BOTTOM,
            in("rcx") IST2_TOP - STACK_BOTTOM,
            options(noreturn),
        );
    }
}
