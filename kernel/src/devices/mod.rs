//! Layer 2, the devices the firmware drives: QEMU's fw_cfg (with DMA), the ACPI tables built
//! from its table loader, PCI configuration (q35 ECAM), MMIO through the platform's route,
//! virtio (blk for the disks; `relay.rs`, the console carrying the key broker's frames), and
//! the LUKS2 volumes on those disks before any key (`volume.rs`: `veil-boot` found and its
//! header read and written). The TPM's TIS interface is driven by the TPM root of trust
//! (`platform::tpm`).
//!
//! May call: `arch`, `error`. Memory shared with the host for DMA is asked of the platform
//! through the hook it installs (`virtio::set_dma_sharer`).

pub mod acpi;
pub mod fwcfg;
pub mod mmio;
pub mod pci;
pub mod relay;
pub mod virtio;
pub mod volume;
