//! Layer 4, the boot stages `veil_main` (lib.rs) runs in order: the heap, the key source
//! (launch binding, unseal, key broker, seal), the encrypted boot disk and the state disk, the
//! secrets wiped at hand-off, and the Linux hand-off.
//!
//! May call: `arch`, `error`, `devices`, `platform` (through the `Platform` and `RootOfTrust`
//! traits, never by platform name).

pub mod diskboot;
pub mod heap;
pub mod keysource;
pub mod linux;
pub mod secrets;
pub mod statedisk;
