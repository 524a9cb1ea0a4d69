//! The firmware's GDT, TSS and IDT, and its exception handler.
//!
//! Every CPU exception (vectors 0-31) prints the vector, error code, RIP, CR2 and a short
//! stack dump on the serial console and stops the machine with a failure status. Double
//! faults run on IST1, page faults, NMIs and machine checks on IST2, so a stack overflow into
//! the guard page still gets reported. The handlers use no vector registers.
//!
//! Three exceptions have handlers that others install ([`set_handler`]) and that may resume:
//! #VC (vector 29, SEV-SNP), whose CPUID cause the SNP platform answers from the PSP-validated
//! CPUID page; #VE (vector 20, TDX), which the TDX platform explains before the report; and,
//! in the model test ROMs only, #UD (vector 6) on VMGEXIT, PVALIDATE or TDCALL, which the model
//! answers. A handler that resumes edits the saved registers in [`Frame`]; the stub then
//! restores them and returns with IRETQ. This layer names no platform and no model.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::arch::layout::{IST1_TOP, IST2_TOP, firmware_owned};

/// Register state pushed by the entry stubs (lowest address first).
#[repr(C)]
#[allow(missing_docs)] // the registers of the interrupted code, by name
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// Entry stubs: push a zero error code where the CPU pushes none, then the vector, then the
// general registers, and call the Rust handler with a pointer to the frame. The CPU aligned
// the stack to 16 before its 5 pushes; 2 + 15 more pushes keep the call 16-byte aligned.
macro_rules! stubs {
    ($($n:literal $err:ident),*) => {
        global_asm!(
            // Named: module asm inherits whatever section the asm before it ended in.
            ".section .text.veil_isr, \"ax\"",
            $(
                concat!("veil_isr_", $n, ":"),
                stubs!(@push $err),
                concat!("push ", $n),
                "jmp veil_isr_common",
            )*
            "veil_isr_common:",
            "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
            "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
            "mov rdi, rsp",
            "call {handler}",
            // The handler returned: it resolved the exception; resume the interrupted code.
            "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
            "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
            "add rsp, 16",
            "iretq",
            // The stubs' addresses, for the IDT.
            ".pushsection .rodata.veil_isr_table, \"a\"",
            ".p2align 3",
            ".global veil_isr_table",
            "veil_isr_table:",
            $( concat!(".quad veil_isr_", $n), )*
            ".popsection",
            handler = sym exception_handler,
        );
    };
    (@push noerr) => { "push 0" };
    (@push err) => { "" };
}

stubs!(0 noerr, 1 noerr, 2 noerr, 3 noerr, 4 noerr, 5 noerr, 6 noerr, 7 noerr,
       8 err, 9 noerr, 10 err, 11 err, 12 err, 13 err, 14 err, 15 noerr,
       16 noerr, 17 err, 18 noerr, 19 noerr, 20 noerr, 21 err, 22 noerr, 23 noerr,
       24 noerr, 25 noerr, 26 noerr, 27 noerr, 28 noerr, 29 err, 30 err, 31 noerr);

unsafe extern "C" {
    /// Entry stub addresses, one per vector (defined in the global_asm above).
    static veil_isr_table: [u64; 32];
}

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization exception",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security exception",
    "reserved",
];

/// The exceptions whose handling someone else installs.
#[derive(Clone, Copy)]
pub enum Resumable {
    /// #UD (6): the model ROMs answer the SNP/TDX instructions TCG does not know.
    InvalidOpcode,
    /// #VE (20): TDX.
    VirtualizationException,
    /// #VC (29): SEV-ES/SNP.
    VmmCommunication,
}

impl Resumable {
    fn of(vector: u64) -> Option<Resumable> {
        match vector {
            6 => Some(Resumable::InvalidOpcode),
            20 => Some(Resumable::VirtualizationException),
            29 => Some(Resumable::VmmCommunication),
            _ => None,
        }
    }
}

/// An installed handler: true when it resolved the cause and the faulting code may resume,
/// false to report the exception and stop.
pub struct Handler {
    /// The handler.
    pub handle: fn(&mut Frame) -> bool,
}

static HANDLERS: [AtomicPtr<Handler>; 3] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 3];

/// Install `handler` for `exception` (replacing any).
pub fn set_handler(exception: Resumable, handler: &'static Handler) {
    HANDLERS[exception as usize].store(core::ptr::from_ref(handler).cast_mut(), Ordering::SeqCst);
}

extern "C" fn exception_handler(frame: &mut Frame) {
    if let Some(exception) = Resumable::of(frame.vector) {
        let handler = HANDLERS[exception as usize].load(Ordering::SeqCst);
        // SAFETY: only `&'static Handler` values are ever stored (set_handler).
        if !handler.is_null() && (unsafe { &*handler }.handle)(frame) {
            return;
        }
    }
    report(frame)
}

fn report(frame: &Frame) -> ! {
    let name = NAMES.get(frame.vector as usize).copied().unwrap_or("?");
    crate::log!("EXCEPTION vector={} ({name}) error={:#x}", frame.vector, frame.error_code);
    crate::log!(
        "  rip={:#018x} cs={:#x} rflags={:#x} rsp={:#018x} cr2={:#018x}",
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        crate::arch::cpu::read_cr2()
    );
    crate::log!(
        "  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp
    );
    crate::log!(
        "  r8={:#x} r9={:#x} r10={:#x} r11={:#x} r12={:#x} r13={:#x} r14={:#x} r15={:#x}",
        frame.r8,
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12,
        frame.r13,
        frame.r14,
        frame.r15
    );
    if firmware_owned(frame.rsp, 8 * 8) {
        for i in 0..8u64 {
            let addr = frame.rsp + i * 8;
            // SAFETY: firmware_owned checked that the 8 words lie in mapped firmware memory.
            let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
            crate::log!("  stack[{:#018x}] = {:#018x}", addr, v);
        }
    } else {
        crate::log!("  stack dump skipped: rsp is outside firmware memory");
    }
    crate::log!("halted after exception {}", frame.vector);
    crate::arch::exit::exit(crate::arch::exit::Status::Failure)
}

#[repr(C, packed)]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct IdtEntry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    _reserved: u32,
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

const CODE64: u16 = 0x08;
const TSS_SELECTOR: u16 = 0x18;

static mut TSS: Tss = Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [IST1_TOP, IST2_TOP, 0, 0, 0, 0, 0],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: core::mem::size_of::<Tss>() as u16,
};
static mut GDT: [u64; 5] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0, 0];
static mut IDT: [IdtEntry; 32] =
    [IdtEntry { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, _reserved: 0 }; 32];

/// Load the GDT (with the TSS and its interrupt stacks) and the IDT.
pub fn init() {
    // SAFETY: runs once, single-threaded, before interrupts could use these tables; the
    // statics live in the identity-mapped RAM image, and `&raw mut` avoids references to
    // mutable statics.
    unsafe {
        let tss = &raw const TSS as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        let gdt = &raw mut GDT;
        (*gdt)[3] = (limit & 0xFFFF) | ((tss & 0xFF_FFFF) << 16) | (0x89 << 40) | (((tss >> 24) & 0xFF) << 56);
        (*gdt)[4] = tss >> 32;
        let idt = &raw mut IDT;
        let table = &raw const veil_isr_table;
        for v in 0..32usize {
            let addr = (*table)[v];
            let ist = match v {
                8 => 1,
                2 | 14 | 18 => 2,
                _ => 0,
            };
            (*idt)[v] = IdtEntry {
                offset_low: addr as u16,
                selector: CODE64,
                ist,
                type_attr: 0x8E,
                offset_mid: (addr >> 16) as u16,
                offset_high: (addr >> 32) as u32,
                _reserved: 0,
            };
        }
        let gdtr = DescriptorPointer { limit: (core::mem::size_of::<[u64; 5]>() - 1) as u16, base: gdt as u64 };
        let idtr = DescriptorPointer { limit: (core::mem::size_of::<[IdtEntry; 32]>() - 1) as u16, base: idt as u64 };
        asm!(
            "lgdt [{gdtr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, 0x10",
            "mov ds, {tmp:e}",
            "mov es, {tmp:e}",
            "mov ss, {tmp:e}",
            "ltr {tss:x}",
            "lidt [{idtr}]",
            gdtr = in(reg) &gdtr,
            idtr = in(reg) &idtr,
            cs = const CODE64 as u64,
            tss = in(reg) TSS_SELECTOR,
            tmp = out(reg) _,
        );
    }
}
