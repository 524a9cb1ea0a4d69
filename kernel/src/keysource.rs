//! Where the master secret comes from. In this build: only the insecure development source,
//! fw_cfg `opt/veil/dev-master-secret`, and only in a ROM built with the `insecure-dev-key`
//! feature and only on the plain platform. The attestation issue replaces it.

use veil_agent::keys::MasterSecret;
use zeroize::Zeroizing;

use crate::fwcfg::FwCfg;
use crate::platform::Kind;

const DEV_SECRET: &str = "opt/veil/dev-master-secret";

/// The master secret, if this build and platform have a source for it.
pub fn master_secret(cfg: &FwCfg, kind: Kind) -> Result<Option<MasterSecret>, alloc::string::String> {
    if cfg.find(DEV_SECRET).is_none() {
        return Ok(None);
    }
    if !cfg!(feature = "insecure-dev-key") {
        crate::log!("fw_cfg offers {DEV_SECRET}, but this ROM is not built with insecure-dev-key: ignored");
        return Ok(None);
    }
    if kind != Kind::Plain {
        return Err(alloc::format!("the development key source is refused on {kind:?}: it exists only for plain test VMs"));
    }
    crate::log!("WARNING: INSECURE DEVELOPMENT KEY SOURCE: THE MASTER SECRET CAME FROM THE HOST (FW_CFG {DEV_SECRET}). THIS ROM MUST NEVER BOOT A REAL CLUSTER.");
    let bytes = Zeroizing::new(cfg.read_file(DEV_SECRET, 4096).map_err(|e| alloc::format!("{e}"))?.unwrap_or_default());
    MasterSecret::parse(&bytes).map(Some).map_err(|e| alloc::format!("{DEV_SECRET}: {e}"))
}
