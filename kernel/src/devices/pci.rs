//! PCI: switch on the q35 ECAM window (the MCH's PCIEXBAR) and list the devices on bus 0.

use alloc::vec::Vec;

use crate::arch::cpu::port::{inl, outl};

/// Where the firmware places ECAM (QEMU's q35 default).
pub const ECAM_BASE: u64 = 0xB000_0000;
const PCIEXBAR: u8 = 0x60;

/// One PCI function.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    /// Bus.
    pub bus: u8,
    /// Device.
    pub dev: u8,
    /// Function.
    pub func: u8,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class, subclass.
    pub class: (u8, u8),
}

fn legacy_address(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
    0x8000_0000 | u32::from(bus) << 16 | u32::from(dev) << 11 | u32::from(func) << 8 | u32::from(reg & 0xFC)
}

fn legacy_read(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
    // SAFETY: 0xCF8 only selects a configuration register; no device accesses memory.
    unsafe { outl(0xCF8, legacy_address(bus, dev, func, reg)) };
    inl(0xCFC)
}

/// The registers `legacy_write` may change: (device, register) of the host bridge's PCIEXBAR
/// (both halves) and the LPC bridge's PMBASE and ACPI_CNTL. None lets a device access memory.
const LEGACY_WRITABLE: [(u8, u8); 4] = [(0, PCIEXBAR), (0, PCIEXBAR + 4), (0x1F, 0x40), (0x1F, 0x44)];

fn legacy_write(bus: u8, dev: u8, func: u8, reg: u8, v: u32) {
    assert!(bus == 0 && func == 0 && LEGACY_WRITABLE.contains(&(dev, reg)), "PCI config write outside LEGACY_WRITABLE");
    // SAFETY: the assert limits the write to LEGACY_WRITABLE: an address window and ACPI
    // decoding, never a command register, so no device gains access to memory.
    unsafe {
        outl(0xCF8, legacy_address(bus, dev, func, reg));
        outl(0xCFC, v);
    }
}

/// ACPI power-management I/O base the firmware gives the ICH9 LPC bridge (as SeaBIOS does).
pub const ACPI_PM_BASE: u16 = 0x600;

/// Give the q35 ICH9 LPC bridge (00:1f.0) its ACPI PM I/O base and enable ACPI decoding.
/// QEMU builds the FADT's PM1a/PM timer addresses from this when the tables are read, and
/// Linux needs them to enter ACPI mode and to power off.
fn enable_acpi_pm() {
    if legacy_read(0, 0x1F, 0, 0) != 0x2918_8086 {
        return;
    }
    legacy_write(0, 0x1F, 0, 0x40, u32::from(ACPI_PM_BASE) | 1); // PMBASE
    let ctl = legacy_read(0, 0x1F, 0, 0x44);
    legacy_write(0, 0x1F, 0, 0x44, ctl | 0x80); // ACPI_CNTL: ACPI_EN
}

/// Configuration space access.
pub enum Config {
    /// Memory-mapped (q35).
    Ecam(u64),
    /// Ports 0xCF8/0xCFC (other machines).
    Legacy,
}

impl Config {
    /// Enable ECAM on a q35 MCH (8086:29c0); otherwise use the legacy ports.
    pub fn init() -> Config {
        let id = legacy_read(0, 0, 0, 0);
        if id == 0x29C0_8086 {
            legacy_write(0, 0, 0, PCIEXBAR + 4, (ECAM_BASE >> 32) as u32);
            // Bit 0 enables; bits 2:1 = 0 select 256 buses (256 MiB).
            legacy_write(0, 0, 0, PCIEXBAR, ECAM_BASE as u32 | 1);
            enable_acpi_pm();
            Config::Ecam(ECAM_BASE)
        } else {
            Config::Legacy
        }
    }

    /// Read a 32-bit config register.
    pub fn read32(&self, bus: u8, dev: u8, func: u8, reg: u16) -> u32 {
        match self {
            Config::Ecam(base) => {
                let addr =
                    base | u64::from(bus) << 20 | u64::from(dev) << 15 | u64::from(func) << 12 | u64::from(reg & 0xFFC);
                // SAFETY: ECAM is enabled at `base` and identity mapped; the address is inside
                // the 256 MiB window by construction.
                unsafe { crate::devices::mmio::read_u32(addr as *const u32) }
            }
            Config::Legacy => legacy_read(bus, dev, func, reg as u8),
        }
    }

    /// List the functions on bus 0.
    pub fn scan_bus0(&self) -> Vec<Device> {
        let mut found = Vec::new();
        for dev in 0..32u8 {
            for func in 0..8u8 {
                let id = self.read32(0, dev, func, 0);
                if id & 0xFFFF == 0xFFFF {
                    if func == 0 {
                        break;
                    }
                    continue;
                }
                let class = self.read32(0, dev, func, 8);
                found.push(Device {
                    bus: 0,
                    dev,
                    func,
                    vendor: id as u16,
                    device: (id >> 16) as u16,
                    class: ((class >> 24) as u8, (class >> 16) as u8),
                });
                let header = self.read32(0, dev, func, 0xC) >> 16 & 0xFF;
                if func == 0 && header & 0x80 == 0 {
                    break; // single-function device
                }
            }
        }
        found
    }
}

/// A short name for a PCI class.
pub fn class_name(class: (u8, u8)) -> &'static str {
    match class {
        (0x01, 0x00) => "SCSI storage",
        (0x01, 0x06) => "SATA controller",
        (0x01, 0x08) => "NVMe",
        (0x01, _) => "mass storage",
        (0x02, _) => "network",
        (0x03, _) => "display",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, _) => "bridge",
        (0x07, _) => "communication",
        (0x0C, 0x05) => "SMBus",
        (0x0C, _) => "serial bus",
        (0x00, 0xFF) | (0xFF, _) => "unassigned",
        _ => "other",
    }
}
