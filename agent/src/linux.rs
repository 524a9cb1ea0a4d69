//! The Linux x86 boot protocol (Documentation/arch/x86/boot.rst): parse a bzImage's setup
//! header and build the zero page (`struct boot_params`) for the 64-bit entry point.
//!
//! veilboot requires protocol 2.12 or newer with XLF_KERNEL_64 (64-bit entry) and a
//! relocatable kernel, and fills: the setup header copy, type_of_loader, cmd_line_ptr
//! (+ ext_cmd_line_ptr), ramdisk_image/size (+ ext_ fields), the e820 table and, from 2.14,
//! acpi_rsdp_addr. Every field read from the (untrusted) image is range-checked.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::fwcfg::E820Entry;

/// Size of the zero page.
pub const BOOT_PARAMS_SIZE: usize = 4096;
/// Offset of the setup header in the image and in boot_params.
pub const SETUP_HEADER_OFFSET: usize = 0x1F1;
/// Entry point offset from the load address for the 64-bit protocol.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// Most e820 entries boot_params holds.
pub const E820_MAX: usize = 128;

const MIN_VERSION: u16 = 0x020C;
const XLF_KERNEL_64: u16 = 1 << 0;
const LOADED_HIGH: u8 = 1 << 0;

/// Why a kernel or its arguments were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinuxError {
    /// Too short, no 0xAA55 boot flag or no "HdrS" magic.
    NotBzImage(&'static str),
    /// Boot protocol older than 2.12.
    TooOld(u16),
    /// No 64-bit entry point (XLF_KERNEL_64) or not loaded high.
    No64BitEntry,
    /// The kernel cannot be relocated.
    NotRelocatable,
    /// Alignment that is not a power of two of at least 4 KiB.
    BadAlignment(u32),
    /// The command line is longer than the kernel accepts.
    CmdlineTooLong {
        /// Length with its NUL.
        len: usize,
        /// The kernel's cmdline_size + 1.
        max: usize,
    },
    /// The initrd ends above initrd_addr_max.
    InitrdTooHigh {
        /// Where it would end.
        end: u64,
        /// The kernel's limit.
        max: u64,
    },
    /// More memory map entries than boot_params holds.
    TooManyE820(usize),
    /// The preferred load address rounded up to the alignment leaves the 64-bit address space.
    LoadAddressOverflow {
        /// pref_address (or the loader's floor, when higher).
        pref: u64,
        /// kernel_alignment.
        align: u32,
    },
    /// The kernel's range, `[at, at + need)`, reaches past 4 GiB (or past the end of the
    /// address space): the firmware maps, and loads the kernel, only below 4 GiB.
    KernelPastFourGib {
        /// The load address.
        at: u64,
        /// max(init_size, kernel size).
        need: u64,
    },
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinuxError::NotBzImage(why) => write!(f, "kernel is not a bzImage: {why}"),
            LinuxError::TooOld(v) => {
                write!(f, "kernel boot protocol {}.{:02} is too old (veilboot needs 2.12 or newer)", v >> 8, v & 0xff)
            }
            LinuxError::No64BitEntry => {
                write!(f, "kernel has no 64-bit entry point (XLF_KERNEL_64) or is not loaded high")
            }
            LinuxError::NotRelocatable => write!(f, "kernel is not relocatable"),
            LinuxError::BadAlignment(a) => write!(f, "kernel alignment {a:#x} is not a power of two >= 4 KiB"),
            LinuxError::CmdlineTooLong { len, max } => {
                write!(f, "command line of {len} bytes exceeds the kernel's limit of {max} (with NUL)")
            }
            LinuxError::InitrdTooHigh { end, max } => {
                write!(f, "initrd would end at {end:#x}, above the kernel's initrd_addr_max {max:#x}")
            }
            LinuxError::TooManyE820(n) => write!(f, "{n} memory map entries; boot_params holds {E820_MAX}"),
            LinuxError::LoadAddressOverflow { pref, align } => write!(
                f,
                "kernel setup header: preferred address {pref:#x} rounded up to its alignment {align:#x} overflows 64 bits"
            ),
            LinuxError::KernelPastFourGib { at, need } => write!(
                f,
                "kernel setup header: {need:#x} bytes (init_size or kernel size) from load address {at:#x} reach past 4 GiB"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for LinuxError {}

/// What veilboot needs from a setup header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupHeader {
    /// Boot protocol version (0x020f = 2.15).
    pub version: u16,
    /// Size of the real-mode setup code (setup_sects + 1 sectors).
    pub setup_size: usize,
    /// Required physical alignment of the kernel.
    pub kernel_alignment: u32,
    /// Preferred load address.
    pub pref_address: u64,
    /// Memory the kernel needs from its load address until it has set itself up.
    pub init_size: u32,
    /// Highest address the initrd may occupy.
    pub initrd_addr_max: u32,
    /// Longest command line (without its NUL).
    pub cmdline_size: u32,
    /// The raw setup header bytes (copied into boot_params).
    pub raw: Vec<u8>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl SetupHeader {
    /// Parse the setup header from the start of a bzImage (at least its first sector and
    /// the header; QEMU's fw_cfg "setup" item is exactly the real-mode part).
    pub fn parse(image: &[u8]) -> Result<Self, LinuxError> {
        if image.len() < 0x268 {
            return Err(LinuxError::NotBzImage("shorter than a setup header"));
        }
        if u16_at(image, 0x1FE) != 0xAA55 {
            return Err(LinuxError::NotBzImage("no 0xAA55 boot flag"));
        }
        if &image[0x202..0x206] != b"HdrS" {
            return Err(LinuxError::NotBzImage("no \"HdrS\" header magic"));
        }
        let version = u16_at(image, 0x206);
        if version < MIN_VERSION {
            return Err(LinuxError::TooOld(version));
        }
        let xloadflags = u16_at(image, 0x236);
        if xloadflags & XLF_KERNEL_64 == 0 || image[0x211] & LOADED_HIGH == 0 {
            return Err(LinuxError::No64BitEntry);
        }
        if image[0x234] == 0 {
            return Err(LinuxError::NotRelocatable);
        }
        let kernel_alignment = u32_at(image, 0x230);
        if !kernel_alignment.is_power_of_two() || kernel_alignment < 4096 {
            return Err(LinuxError::BadAlignment(kernel_alignment));
        }
        let setup_sects = match image[0x1F1] {
            0 => 4,
            n => usize::from(n),
        };
        // The header ends at 0x202 + the jump offset byte at 0x201.
        let end = (0x202 + usize::from(image[0x201])).clamp(0x268, BOOT_PARAMS_SIZE);
        if image.len() < end {
            return Err(LinuxError::NotBzImage("setup header runs past the setup code"));
        }
        Ok(SetupHeader {
            version,
            setup_size: (setup_sects + 1) * 512,
            kernel_alignment,
            pref_address: u64_at(image, 0x258),
            init_size: u32_at(image, 0x260),
            initrd_addr_max: u32_at(image, 0x22C),
            cmdline_size: u32_at(image, 0x238),
            raw: image[SETUP_HEADER_OFFSET..end].to_vec(),
        })
    }

    /// The load address: the preferred one rounded up to the alignment, or `floor` rounded
    /// up if that is higher. Refused when the rounding leaves the address space (a
    /// `pref_address` near 2^64 would otherwise wrap to a low address).
    pub fn load_address(&self, floor: u64) -> Result<u64, LinuxError> {
        let pref = self.pref_address.max(floor);
        pref.checked_next_multiple_of(u64::from(self.kernel_alignment))
            .ok_or(LinuxError::LoadAddressOverflow { pref, align: self.kernel_alignment })
    }

    /// The range `[at, end)` the kernel occupies when loaded at [`Self::load_address`]`(floor)`:
    /// `need` = max(init_size, `kernel_size`) bytes, all of it below 4 GiB (the firmware's
    /// identity map, and where it loads kernels). Every step checked: the host chooses
    /// pref_address, kernel_alignment, init_size and the kernel's size.
    pub fn kernel_range(&self, floor: u64, kernel_size: u64) -> Result<(u64, u64), LinuxError> {
        let at = self.load_address(floor)?;
        let need = u64::from(self.init_size).max(kernel_size);
        match at.checked_add(need) {
            Some(end) if end <= 1 << 32 => Ok((at, end)),
            _ => Err(LinuxError::KernelPastFourGib { at, need }),
        }
    }

    /// Check a command line (without NUL) against cmdline_size.
    pub fn check_cmdline(&self, cmdline: &[u8]) -> Result<(), LinuxError> {
        let max = self.cmdline_size as usize + 1;
        if cmdline.len() + 1 > max {
            return Err(LinuxError::CmdlineTooLong { len: cmdline.len() + 1, max });
        }
        Ok(())
    }

    /// Check an initrd placement against initrd_addr_max.
    pub fn check_initrd(&self, addr: u64, len: u64) -> Result<(), LinuxError> {
        let end = addr.saturating_add(len).saturating_sub(1);
        if end > u64::from(self.initrd_addr_max) {
            return Err(LinuxError::InitrdTooHigh { end, max: u64::from(self.initrd_addr_max) });
        }
        Ok(())
    }
}

/// Where things are for the zero page.
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    /// Physical address of the NUL-terminated command line.
    pub cmdline_addr: u64,
    /// Physical address and size of the initrd (0, 0 for none).
    pub initrd: (u64, u64),
    /// The memory map to give the kernel.
    pub e820: Vec<E820Entry>,
    /// ACPI RSDP address (0 if none).
    pub rsdp: u64,
    /// Physical address of the first setup_data node (0 for none). Always written: a loader's
    /// value in the header copied from the kernel file would point at memory nobody filled.
    pub setup_data: u64,
}

/// Build the zero page.
pub fn boot_params(hdr: &SetupHeader, h: &Handoff) -> Result<Vec<u8>, LinuxError> {
    if h.e820.len() > E820_MAX {
        return Err(LinuxError::TooManyE820(h.e820.len()));
    }
    let mut bp = vec![0u8; BOOT_PARAMS_SIZE];
    bp[SETUP_HEADER_OFFSET..SETUP_HEADER_OFFSET + hdr.raw.len()].copy_from_slice(&hdr.raw);
    let put32 = |bp: &mut [u8], o: usize, v: u32| bp[o..o + 4].copy_from_slice(&v.to_le_bytes());
    bp[0x210] = 0xFF; // type_of_loader: undefined bootloader
    bp[0x211] |= LOADED_HIGH;
    put32(&mut bp, 0x228, h.cmdline_addr as u32);
    put32(&mut bp, 0x0C8, (h.cmdline_addr >> 32) as u32);
    put32(&mut bp, 0x218, h.initrd.0 as u32);
    put32(&mut bp, 0x21C, h.initrd.1 as u32);
    put32(&mut bp, 0x0C0, (h.initrd.0 >> 32) as u32);
    put32(&mut bp, 0x0C4, (h.initrd.1 >> 32) as u32);
    if hdr.version >= 0x020E {
        bp[0x070..0x078].copy_from_slice(&h.rsdp.to_le_bytes());
    }
    if hdr.version >= 0x0209 {
        bp[0x250..0x258].copy_from_slice(&h.setup_data.to_le_bytes());
    }
    bp[0x1E8] = h.e820.len() as u8;
    for (i, e) in h.e820.iter().enumerate() {
        let o = 0x2D0 + i * 20;
        bp[o..o + 8].copy_from_slice(&e.addr.to_le_bytes());
        bp[o + 8..o + 16].copy_from_slice(&e.len.to_le_bytes());
        put32(&mut bp, o + 16, e.kind.to_u32());
    }
    Ok(bp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwcfg::E820Kind;

    /// A synthetic setup header of a modern x86-64 kernel.
    pub fn fake_setup() -> Vec<u8> {
        let mut s = vec![0u8; 40 * 512];
        s[0x1F1] = 39;
        s[0x1FE] = 0x55;
        s[0x1FF] = 0xAA;
        s[0x201] = 0x6A; // header ends at 0x26C
        s[0x202..0x206].copy_from_slice(b"HdrS");
        s[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        s[0x211] = 1;
        s[0x22C..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        s[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
        s[0x234] = 1;
        s[0x236..0x238].copy_from_slice(&0x7Fu16.to_le_bytes());
        s[0x238..0x23C].copy_from_slice(&2047u32.to_le_bytes());
        s[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
        s[0x260..0x264].copy_from_slice(&0x337_7000u32.to_le_bytes());
        s
    }

    #[test]
    fn parse_and_build() {
        let hdr = SetupHeader::parse(&fake_setup()).unwrap();
        assert_eq!((hdr.version, hdr.setup_size, hdr.init_size), (0x020F, 40 * 512, 0x337_7000));
        assert_eq!(hdr.load_address(0), Ok(0x100_0000));
        assert_eq!(hdr.load_address(0x100_0001), Ok(0x120_0000));
        assert_eq!(hdr.kernel_range(0, 0x100), Ok((0x100_0000, 0x100_0000 + 0x337_7000)));
        let h = Handoff {
            cmdline_addr: 0x2_0000_1000,
            initrd: (0x800_0000, 0x1234),
            e820: vec![E820Entry { addr: 0, len: 0x9_F000, kind: E820Kind::Ram }],
            rsdp: 0xF_0000,
            setup_data: 0x90_5000,
        };
        let mut raw = fake_setup();
        raw[0x250..0x258].copy_from_slice(&0xDEAD_0000u64.to_le_bytes()); // a loader's stale pointer
        let hdr = SetupHeader::parse(&raw).unwrap();
        let bp = boot_params(&hdr, &h).unwrap();
        assert_eq!(u64_at(&bp, 0x250), 0x90_5000);
        assert_eq!(&bp[0x202..0x206], b"HdrS");
        assert_eq!(bp[0x210], 0xFF);
        assert_eq!(u32_at(&bp, 0x228), 0x1000);
        assert_eq!(u32_at(&bp, 0x0C8), 2);
        assert_eq!((u32_at(&bp, 0x218), u32_at(&bp, 0x21C)), (0x800_0000, 0x1234));
        assert_eq!(u64_at(&bp, 0x070), 0xF_0000);
        assert_eq!(bp[0x1E8], 1);
        assert_eq!(u64_at(&bp, 0x2D0 + 8), 0x9_F000);
        assert_eq!(u32_at(&bp, 0x2D0 + 16), 1);
    }

    #[test]
    fn refusals() {
        let good = fake_setup();
        assert!(matches!(SetupHeader::parse(&good[..0x200]), Err(LinuxError::NotBzImage(_))));
        let mut b = good.clone();
        b[0x1FE] = 0;
        assert_eq!(SetupHeader::parse(&b), Err(LinuxError::NotBzImage("no 0xAA55 boot flag")));
        let mut b = good.clone();
        b[0x202] = b'X';
        assert!(matches!(SetupHeader::parse(&b), Err(LinuxError::NotBzImage(_))));
        let mut b = good.clone();
        b[0x206..0x208].copy_from_slice(&0x020Bu16.to_le_bytes());
        let e = SetupHeader::parse(&b).unwrap_err();
        assert_eq!(e, LinuxError::TooOld(0x020B));
        assert!(e.to_string().contains("2.11 is too old"));
        let mut b = good.clone();
        b[0x236] = 0;
        assert_eq!(SetupHeader::parse(&b), Err(LinuxError::No64BitEntry));
        let mut b = good.clone();
        b[0x234] = 0;
        assert_eq!(SetupHeader::parse(&b), Err(LinuxError::NotRelocatable));
        let mut b = good.clone();
        b[0x230..0x234].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(SetupHeader::parse(&b), Err(LinuxError::BadAlignment(3)));
        let hdr = SetupHeader::parse(&good).unwrap();
        assert!(hdr.check_cmdline(&[b'a'; 2047]).is_ok());
        assert_eq!(hdr.check_cmdline(&[b'a'; 2048]), Err(LinuxError::CmdlineTooLong { len: 2049, max: 2048 }));
        assert!(hdr.check_initrd(0x7000_0000, 0x0fff_ffff).is_ok());
        assert!(matches!(hdr.check_initrd(0x7000_0000, 0x1000_0001), Err(LinuxError::InitrdTooHigh { .. })));
        let many =
            Handoff { e820: vec![E820Entry { addr: 0, len: 1, kind: E820Kind::Ram }; 129], ..Default::default() };
        assert_eq!(boot_params(&hdr, &many), Err(LinuxError::TooManyE820(129)));
    }

    /// Issue 34: host-chosen pref_address, kernel_alignment and init_size whose unchecked
    /// arithmetic wrapped to a low address (0, or 0x400000: the firmware's page tables) are
    /// refused, each with its values.
    #[test]
    fn wrapping_load_addresses_and_lengths_are_refused() {
        let with = |pref: u64, init_size: u32| {
            let mut s = fake_setup();
            s[0x258..0x260].copy_from_slice(&pref.to_le_bytes());
            s[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
            SetupHeader::parse(&s).unwrap()
        };
        // u64::MAX rounded up to 2 MiB was 0.
        let e = with(u64::MAX, 0x60_0000).kernel_range(0x100_0000, 0x1000).unwrap_err();
        assert_eq!(e, LinuxError::LoadAddressOverflow { pref: u64::MAX, align: 0x20_0000 });
        assert!(e.to_string().contains("preferred address 0xffffffffffffffff"), "{e}");
        // 0xFFFF_FFFF_FFE0_0000 + 6 MiB was 0x400000.
        let e = with(0xFFFF_FFFF_FFE0_0000, 0x60_0000).kernel_range(0x100_0000, 0x1000).unwrap_err();
        assert_eq!(e, LinuxError::KernelPastFourGib { at: 0xFFFF_FFFF_FFE0_0000, need: 0x60_0000 });
        // A huge init_size from an ordinary address: past 4 GiB.
        let e = with(0x100_0000, 0xFFFF_F000).kernel_range(0x100_0000, 0x1000).unwrap_err();
        assert_eq!(e, LinuxError::KernelPastFourGib { at: 0x100_0000, need: 0xFFFF_F000 });
        assert!(e.to_string().contains("reach past 4 GiB"), "{e}");
        // ... and a huge kernel size likewise; up to 4 GiB exactly is fine.
        assert!(with(0x100_0000, 0).kernel_range(0x100_0000, u64::MAX).is_err());
        assert_eq!(with(0x100_0000, 0).kernel_range(0, 0xFF00_0000), Ok((0x100_0000, 1 << 32)));
    }
}
