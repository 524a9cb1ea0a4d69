//! The register-dump stand-in kernel (issue 35, the register scrub before the hand-off): a
//! bzImage whose 64-bit entry is `regdump.S` (assembled here with binutils), and the check of
//! the line it prints. Only RSI (boot_params), RSP and R8 (the entry address the firmware
//! jumps through) may be non-zero when Linux starts; every other general-purpose register and
//! every vector register the CPU has enabled must be zero, or the firmware's data (the XTS
//! round keys of `veil-boot` among them) reaches the kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The line the stand-in kernel prints before its hex dump.
pub const PREFIX: &str = "veil-regdump: ";

/// The general-purpose registers in the order `regdump.S` stores them.
const GPRS: [&str; 16] =
    ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
/// Those the boot protocol gives a value (RSI = boot_params) or that cannot be zero (RSP; R8,
/// the entry address the firmware's last instruction jumps through).
const MAY_BE_SET: [&str; 3] = ["rsp", "rsi", "r8"];
/// Bytes of the save area (see `regdump.S`).
const AREA: usize = 2184;

/// Assemble `regdump.S` and wrap it in a bzImage (boot protocol 2.15, 64-bit entry,
/// relocatable) in `dir`; returns its path.
pub fn kernel(dir: &Path) -> Result<PathBuf> {
    crate::ensure_package("as", "binutils")?;
    crate::ensure_package("objcopy", "binutils")?;
    let source = crate::root().join("tools/xtask/src/regdump.S");
    let object = dir.join("regdump.o");
    let code = dir.join("regdump.bin");
    crate::run(Command::new("as").arg("--64").arg("-o").arg(&object).arg(&source))?;
    crate::run(Command::new("objcopy").args(["-O", "binary", "-j", ".text"]).arg(&object).arg(&code))?;
    let code = std::fs::read(&code)?;
    // Documentation/arch/x86/boot.rst: one setup sector after the boot sector, then the
    // protected-mode kernel, whose 64-bit entry is at its start + 0x200.
    let mut image = vec![0u8; 2 * 512 + 0x200];
    let put = |image: &mut [u8], at: usize, bytes: &[u8]| image[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut image, 0x1F1, &[1]); // setup_sects
    put(&mut image, 0x1FE, &0xAA55u16.to_le_bytes()); // boot_flag
    put(&mut image, 0x201, &[0x66]); // the jump over the header: it ends at 0x268
    put(&mut image, 0x202, b"HdrS");
    put(&mut image, 0x206, &0x020Fu16.to_le_bytes()); // version 2.15
    put(&mut image, 0x211, &[0x01]); // loadflags: LOADED_HIGH
    put(&mut image, 0x22C, &0x7FFF_FFFFu32.to_le_bytes()); // initrd_addr_max
    put(&mut image, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment: 2 MiB
    put(&mut image, 0x234, &[1]); // relocatable_kernel
    put(&mut image, 0x236, &0x0001u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(&mut image, 0x238, &2048u32.to_le_bytes()); // cmdline_size
    put(&mut image, 0x258, &0x100_0000u64.to_le_bytes()); // pref_address: 16 MiB
    put(&mut image, 0x260, &0x40_0000u32.to_le_bytes()); // init_size: 4 MiB
    image.extend_from_slice(&code);
    let syssize = (image.len() - 1024).div_ceil(16) as u32;
    put(&mut image, 0x1F4, &syssize.to_le_bytes());
    let path = dir.join("regdump.bzImage");
    std::fs::write(&path, &image)?;
    Ok(path)
}

/// Check the dump in `log`: every register but [`MAY_BE_SET`] zero (the vector registers as far
/// as XCR0 enables them). Returns what was checked, for the test's line.
pub fn check(log: &str) -> Result<String> {
    let line = log
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(PREFIX))
        .with_context(|| format!("the stand-in kernel printed no `{PREFIX}` line:\n{log}"))?;
    let area = hex::decode(line).context("the register dump is not hex")?;
    if area.len() != AREA {
        bail!("the register dump has {} bytes, not {AREA}", area.len());
    }
    let word = |at: usize| u64::from_le_bytes(area[at..at + 8].try_into().expect("8 bytes"));
    let xcr0 = word(2176);
    let mut set = Vec::new();
    for (i, name) in GPRS.iter().enumerate() {
        let v = word(i * 8);
        if v != 0 && !MAY_BE_SET.contains(name) {
            set.push(format!("{name}={v:#x}"));
        }
    }
    if word(6 * 8) == 0 || word(8 * 8) == 0 {
        bail!(
            "the dump shows RSI or R8 zero: it did not capture the hand-off (rsi={:#x}, r8={:#x})",
            word(48),
            word(64)
        );
    }
    let avx = xcr0 & 0b110 == 0b110;
    let avx512 = avx && xcr0 & 0xE0 == 0xE0;
    let mut vector = |name: String, bytes: &[u8]| {
        if bytes.iter().any(|&b| b != 0) {
            set.push(format!("{name}={}", hex::encode(bytes)));
        }
    };
    for n in 0..16 {
        vector(format!("xmm{n}"), &area[128 + n * 16..][..16]);
        if avx {
            vector(format!("ymm{n}[255:128]"), &area[384 + n * 16..][..16]);
        }
        if avx512 {
            vector(format!("zmm{n}[511:256]"), &area[640 + n * 32..][..32]);
            vector(format!("zmm{}", n + 16), &area[1152 + n * 64..][..64]);
        }
    }
    if !set.is_empty() {
        bail!("registers the firmware left set at the hand-off to Linux: {}", set.join(", "));
    }
    Ok(format!(
        "13 general-purpose registers, xmm0-15{}{} zero (XCR0 {xcr0:#x})",
        if avx { ", ymm0-15" } else { "" },
        if avx512 { ", zmm0-31" } else { "" }
    ))
}
