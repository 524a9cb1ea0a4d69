//! The GHCB page as the model hypervisor reads and writes it: its own table of the save-area
//! fields, their valid-bitmap bits and the NAE exit codes, written from the GHCB specification
//! and not from the firmware's `ghcb::offset`, `ghcb::exit` or `GhcbPage` bitmap code (issue 37:
//! a misreading shared by both sides of a test is invisible). `ghcb_spec_agrees_with_the_firmware`
//! (snp/tests.rs) checks the two encodings field by field.
//!
//! Sources: AMD 56421, "SEV-ES Guest-Hypervisor Communication Block Standardization", rev. 2.03,
//! its GHCB layout table (the save area at 0x000, the valid bitmap at 0x3F0, the shared buffer
//! at 0x800 of 2032 bytes, protocol version at 0xFFA, usage at 0xFFC; a field's valid bit is
//! its quadword index in the save area) and its NAE event table (exit codes), as transcribed
//! in tianocore edk2 `MdePkg/Include/Register/Amd/Ghcb.h` (`GHCB_SAVE_AREA` with its reserved
//! gaps: Cpl 0x0CB, Dr7 0x160, Rax 0x1F8, Rcx/Rdx/Rbx 0x308/0x310/0x318, SwExitCode..SwScratch
//! 0x390..0x3A8, XCr0 0x3E8, ValidBitmap 0x3F0; `GHCB_REGISTER`, whose values are the bitmap
//! bits: Rax 63, Rcx 97, Rdx 98, Rbx 99, XCr0 125; `SVM_EXITCODE`) and in Linux
//! `arch/x86/include/asm/svm.h` (`struct ghcb_save_area`, `struct ghcb`). The bit numbers below
//! are written out, not computed from the offsets, so that the table checks the firmware's
//! offset/8 rule rather than repeating it.

use super::super::ghcb::GhcbPage;

/// One save-area field: where it is and which valid-bitmap bit says it holds a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The specification's name.
    pub name: &'static str,
    /// Byte offset in the GHCB page.
    pub offset: usize,
    /// Bit of the 128-bit valid bitmap (bit 0 = bit 0 of byte 0x3F0).
    pub bit: u32,
}

/// RAX.
pub const RAX: Field = Field { name: "RAX", offset: 0x1F8, bit: 63 };
/// RCX.
pub const RCX: Field = Field { name: "RCX", offset: 0x308, bit: 97 };
/// RDX.
pub const RDX: Field = Field { name: "RDX", offset: 0x310, bit: 98 };
/// RBX.
pub const RBX: Field = Field { name: "RBX", offset: 0x318, bit: 99 };
/// SW_EXITCODE.
pub const SW_EXITCODE: Field = Field { name: "SW_EXITCODE", offset: 0x390, bit: 114 };
/// SW_EXITINFO1.
pub const SW_EXITINFO1: Field = Field { name: "SW_EXITINFO1", offset: 0x398, bit: 115 };
/// SW_EXITINFO2.
pub const SW_EXITINFO2: Field = Field { name: "SW_EXITINFO2", offset: 0x3A0, bit: 116 };
/// SW_SCRATCH.
pub const SW_SCRATCH: Field = Field { name: "SW_SCRATCH", offset: 0x3A8, bit: 117 };
/// XCR0.
pub const XCR0: Field = Field { name: "XCR0", offset: 0x3E8, bit: 125 };

/// The fields the firmware and the model exchange.
pub const FIELDS: [Field; 9] = [RAX, RCX, RDX, RBX, SW_EXITCODE, SW_EXITINFO1, SW_EXITINFO2, SW_SCRATCH, XCR0];

/// The valid bitmap (16 bytes, little-endian bit order).
pub const VALID_BITMAP: usize = 0x3F0;
/// The shared buffer.
pub const SHARED_BUFFER: usize = 0x800;
/// Its length.
pub const SHARED_BUFFER_LEN: usize = 2032;
/// protocol_version (u16).
pub const PROTOCOL_VERSION: usize = 0xFFA;
/// ghcb_usage (u32).
pub const USAGE: usize = 0xFFC;

/// NAE exit codes (SW_EXITCODE): AMD 56421's NAE event table, edk2 `SVM_EXITCODE`.
pub mod exit_code {
    /// CPUID (SVM_EXIT_CPUID).
    pub const CPUID: u64 = 0x72;
    /// IOIO (SVM_EXIT_IOIO).
    pub const IOIO: u64 = 0x7B;
    /// MSR (SVM_EXIT_MSR).
    pub const MSR: u64 = 0x7C;
    /// MMIO read (VMGEXIT).
    pub const MMIO_READ: u64 = 0x8000_0001;
    /// MMIO write.
    pub const MMIO_WRITE: u64 = 0x8000_0002;
    /// Page state change (SNP).
    pub const PSC: u64 = 0x8000_0010;
    /// SNP guest request.
    pub const GUEST_REQUEST: u64 = 0x8000_0011;
    /// SNP extended guest request.
    pub const EXT_GUEST_REQUEST: u64 = 0x8000_0012;
    /// Hypervisor feature support.
    pub const HV_FEATURES: u64 = 0x8000_FFFD;
}

/// GHCB error codes (SW_EXITINFO2 when SW_EXITINFO1 is 2): AMD 56421, Linux `GHCB_ERR_*`.
pub mod error {
    /// The GHCB GPA was not registered.
    pub const NOT_REGISTERED: u64 = 1;
    /// An unsupported usage or exit.
    pub const INVALID_USAGE: u64 = 2;
    /// SW_SCRATCH does not point into the shared buffer.
    pub const INVALID_SCRATCH_AREA: u64 = 3;
    /// An input the exit needs is not marked valid.
    pub const MISSING_INPUT: u64 = 4;
    /// An input holds a value the exit does not allow.
    pub const INVALID_INPUT: u64 = 5;
}

/// A port-I/O exit as SW_EXITINFO1 describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ioio {
    /// The port (bits 31:16).
    pub port: u16,
    /// Operand size in bytes: SZ8 (bit 4), SZ16 (bit 5) or SZ32 (bit 6), exactly one.
    pub size: u8,
    /// TYPE (bit 0): 1 = IN.
    pub input: bool,
    /// STR (bit 2): INS/OUTS through the shared buffer.
    pub string: bool,
    /// REP (bit 3): SW_EXITINFO2 is the repeat count.
    pub rep: bool,
}

/// Decode SW_EXITINFO1 of an IOIO exit, bit by bit as AMD64 APM vol. 2 (24593), 15.10.2
/// "IN and OUT Behavior", figure "EXITINFO1 for IOIO Intercept", lays it out (AMD 56421 passes
/// it through unchanged): TYPE 0, bit 1 reserved, STR 2, REP 3, SZ8/SZ16/SZ32 4-6, A16/A32/A64
/// 7-9, EFFSEG 12:10, bits 15:13 reserved, PORT 31:16, bits 63:32 reserved. Reserved bits set,
/// no or several operand sizes, no or several address sizes are refused, as a hypervisor
/// should not guess what the guest meant (KVM takes the size from these bits).
pub fn decode_ioio(info1: u64) -> Result<Ioio, &'static str> {
    if info1 >> 32 != 0 || info1 & 0b10 != 0 || info1 & (0b111 << 13) != 0 {
        return Err("reserved bits set");
    }
    let size = match (info1 >> 4) & 0b111 {
        0b001 => 1,
        0b010 => 2,
        0b100 => 4,
        _ => return Err("not exactly one operand size"),
    };
    if !matches!((info1 >> 7) & 0b111, 0b001 | 0b010 | 0b100) {
        return Err("not exactly one address size");
    }
    if (info1 >> 10) & 0b111 > 5 {
        return Err("no such segment");
    }
    Ok(Ioio {
        port: (info1 >> 16) as u16,
        size,
        input: info1 & 1 == 1,
        string: info1 & (1 << 2) != 0,
        rep: info1 & (1 << 3) != 0,
    })
}

fn bitmap(page: &GhcbPage) -> u128 {
    u128::from_le_bytes(page.0[VALID_BITMAP..VALID_BITMAP + 16].try_into().expect("16 bytes"))
}

fn set_bitmap(page: &mut GhcbPage, bits: u128) {
    page.0[VALID_BITMAP..VALID_BITMAP + 16].copy_from_slice(&bits.to_le_bytes());
}

/// The value of `f`, valid or not.
pub fn read(page: &GhcbPage, f: Field) -> u64 {
    u64::from_le_bytes(page.0[f.offset..f.offset + 8].try_into().expect("8 bytes"))
}

/// Is `f` marked valid?
pub fn valid(page: &GhcbPage, f: Field) -> bool {
    bitmap(page) >> f.bit & 1 == 1
}

/// Write `f` and mark it valid.
pub fn write(page: &mut GhcbPage, f: Field, value: u64) {
    write_unmarked(page, f, value);
    set_bitmap(page, bitmap(page) | 1 << f.bit);
}

/// Write `f` without marking it valid (a hypervisor that forgets the bitmap).
pub fn write_unmarked(page: &mut GhcbPage, f: Field, value: u64) {
    page.0[f.offset..f.offset + 8].copy_from_slice(&value.to_le_bytes());
}

/// Clear the valid bitmap (the hypervisor does so after reading the inputs).
pub fn clear_valid(page: &mut GhcbPage) {
    set_bitmap(page, 0);
}

/// The shared buffer.
pub fn shared_buffer(page: &mut GhcbPage) -> &mut [u8] {
    &mut page.0[SHARED_BUFFER..SHARED_BUFFER + SHARED_BUFFER_LEN]
}

/// The inputs exit `code` with SW_EXITINFO1 `info1` must carry valid, as a hypervisor checks
/// them before it acts (AMD 56421's per-exit inputs, as KVM's `sev_es_validate_vmgexit`
/// checks them): beyond SW_EXITCODE and both SW_EXITINFOs, CPUID
/// needs RAX and RCX (and XCR0 for leaf 0xD), an OUT needs RAX, a string IN SW_SCRATCH, RDMSR
/// RCX and WRMSR RCX, RAX, RDX, MMIO and page-state changes SW_SCRATCH, and an extended guest
/// request RAX and RBX.
pub fn missing_input(page: &GhcbPage, code: u64, info1: u64) -> Option<Field> {
    let mut needed: [Option<Field>; 6] = [Some(SW_EXITCODE), Some(SW_EXITINFO1), Some(SW_EXITINFO2), None, None, None];
    let extra: &[Field] = match code {
        exit_code::CPUID if read(page, RAX) == 0xD => &[RAX, RCX, XCR0],
        exit_code::CPUID => &[RAX, RCX],
        exit_code::IOIO if info1 & (1 << 2) != 0 => &[SW_SCRATCH],
        exit_code::IOIO if info1 & 1 == 0 => &[RAX],
        exit_code::MSR if info1 == 1 => &[RCX, RAX, RDX],
        exit_code::MSR => &[RCX],
        exit_code::MMIO_READ | exit_code::MMIO_WRITE | exit_code::PSC => &[SW_SCRATCH],
        exit_code::EXT_GUEST_REQUEST => &[RAX, RBX],
        _ => &[],
    };
    for (slot, f) in needed[3..].iter_mut().zip(extra) {
        *slot = Some(*f);
    }
    needed.into_iter().flatten().find(|f| !valid(page, *f))
}
