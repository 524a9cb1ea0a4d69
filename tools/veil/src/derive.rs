//! `veil derive ...`: single derivations from a master secret, for scripts and recovery.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use zeroize::Zeroizing;

use crate::secret;

#[derive(Subcommand)]
pub enum DeriveCommand {
    /// Print the disk key of a LUKS2 volume (its keyslot passphrase) as hex on stdout:
    /// HKDF-SHA256(masterKey, masterSalt, "key-" + lowercase UUID, 32 bytes). This is secret:
    /// pipe it, do not store it (e.g. `| xxd -r -p | cryptsetup open --key-file=- ...`).
    DiskKey {
        /// The master secret: a file (JSON or kms://cluster-kms URI) or the URI inline.
        #[arg(long)]
        secret: PathBuf,
        /// The LUKS2 volume's UUID (as `cryptsetup luksUUID` prints it).
        #[arg(long)]
        uuid: String,
        /// Print {"uuid": ..., "disk_key": ...} instead of bare hex.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: DeriveCommand) -> Result<()> {
    match cmd {
        DeriveCommand::DiskKey { secret, uuid, json } => {
            let uuid = veil_agent::keys::normalize_uuid(&uuid)
                .map_err(|e| crate::cli_error::usage(format!("--uuid {uuid:?}: {e}")))?;
            let master = secret::load(&secret)?;
            let key = master.disk_key(&uuid).context("--uuid")?;
            let hex_key = Zeroizing::new(hex::encode(key.as_ref()));
            if json {
                println!("{{\"uuid\":\"{uuid}\",\"disk_key\":\"{}\"}}", hex_key.as_str());
            } else {
                println!("{}", hex_key.as_str());
            }
            Ok(())
        }
    }
}
