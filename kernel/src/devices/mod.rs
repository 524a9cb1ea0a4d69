//! Layer 2, the devices the firmware drives: QEMU's fw_cfg (with DMA), the ACPI tables built
//! from its table loader, PCI configuration (q35 ECAM), MMIO through the platform's route, and
//! virtio (blk for the disk, console for the key-broker relay). The TPM's TIS interface is
//! driven by the TPM root of trust (`platform::tpm`).
//!
//! May call: `arch`. Memory shared with the host for DMA is asked of the platform through the
//! hook it installs (`virtio::set_dma_sharer`).

pub mod acpi;
pub mod fwcfg;
pub mod mmio;
pub mod pci;
pub mod relay;
pub mod virtio;
pub mod volume;
