//! `veil secret new|show`: master secret files in Constellation's format.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use veil_agent::keys::{self, MasterSecret};
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Generate a new random master secret (32-byte key, 32-byte salt) and write it as
    /// constellation-mastersecret.json, readable only by its owner (mode 0600). Refuses to
    /// overwrite an existing file.
    New {
        /// Where to write the secret.
        #[arg(long, default_value = "constellation-mastersecret.json")]
        out: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a master secret (a file, JSON or kms://cluster-kms URI, or the URI inline) and print what is public
    /// about it: key and salt lengths and, given the measurement salt, the clusterID and the
    /// PCR 15 value it produces. Never prints secret bytes.
    Show {
        /// The master secret file.
        file: PathBuf,
        /// Constellation's measurementSalt (hex), needed to compute the clusterID.
        #[arg(long, value_name = "HEX")]
        measurement_salt: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: SecretCommand) -> Result<()> {
    match cmd {
        SecretCommand::New { out, json } => new(&out, json),
        SecretCommand::Show { file, measurement_salt, json } => show(&file, measurement_salt.as_deref(), json),
    }
}

/// Read and parse a master secret: a file (constellation-mastersecret.json or a kms:// URI in a
/// file), or a `kms://cluster-kms?key=...&salt=...` URI given inline. The raw bytes are
/// zeroized afterwards. A file others can read is used, with a warning.
pub fn load(path: &Path) -> Result<MasterSecret> {
    if is_inline(path) {
        return MasterSecret::parse(path.as_os_str().as_encoded_bytes()).context("the inline kms:// URI");
    }
    if path.as_os_str().as_encoded_bytes().trim_ascii_start().starts_with(b"{") {
        // Never echo it: it is probably the secret itself.
        crate::usage_bail!("the master secret is given as JSON text; give the file's name, or a kms:// URI");
    }
    let bytes = Zeroizing::new(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?);
    let secret = MasterSecret::parse(&bytes).with_context(|| format!("{}", path.display()))?;
    warn_if_readable(path);
    Ok(secret)
}

/// A master secret given inline (a kms:// URI), not a file name.
pub fn is_inline(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().starts_with(b"kms://")
}

/// How to name a master secret argument in messages: never the inline URI, which is secret.
pub fn display_name(path: &Path) -> String {
    if is_inline(path) { String::from("the inline kms:// URI") } else { path.display().to_string() }
}

/// Warn when a file holding a secret can be read by its group or others.
pub fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.is_file()
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "veil: warning: {} holds a secret but is readable by others (mode {:04o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o7777
        );
    }
}

fn new(out: &Path, json: bool) -> Result<()> {
    let mut key = Zeroizing::new([0u8; keys::DEFAULT_LEN]);
    let mut salt = Zeroizing::new([0u8; keys::DEFAULT_LEN]);
    getrandom::fill(key.as_mut()).context("the system random number generator failed")?;
    getrandom::fill(salt.as_mut()).context("the system random number generator failed")?;
    let secret = MasterSecret::new(key.as_ref(), salt.as_ref())?;

    let mut file = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; refusing to overwrite a master secret", out.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", out.display())),
    };
    let written = file.write_all(secret.to_json().as_bytes()).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Do not leave a truncated secret behind.
        let _ = std::fs::remove_file(out);
        return Err(e).with_context(|| format!("cannot write {}", out.display()));
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "file": out.display().to_string(), "key_len": keys::DEFAULT_LEN, "salt_len": keys::DEFAULT_LEN })
        );
    } else {
        println!("wrote new master secret to {} (mode 0600)", out.display());
        println!("keep it safe: it unlocks every volume of the cluster");
    }
    Ok(())
}

fn show(path: &Path, measurement_salt: Option<&str>, json: bool) -> Result<()> {
    let secret = load(path)?;
    let name = display_name(path);
    let cluster = match measurement_salt {
        Some(hex_salt) => {
            let salt = hex::decode(hex_salt.trim())
                .map_err(|e| crate::cli_error::usage(format!("--measurement-salt is not hex: {e}")))?;
            Some(secret.cluster_id(&salt))
        }
        None => None,
    };
    if json {
        let mut doc = serde_json::json!({
            "file": name,
            "key_len": secret.key().len(),
            "salt_len": secret.salt().len(),
        });
        if let Some(id) = cluster {
            doc["cluster_id"] = hex::encode(id.0).into();
            doc["expected_pcr15"] = hex::encode(id.expected_pcr15()).into();
        }
        println!("{doc}");
    } else {
        println!("master secret {name}: valid");
        println!("  key:  {} bytes", secret.key().len());
        println!("  salt: {} bytes", secret.salt().len());
        match cluster {
            Some(id) => {
                println!("clusterID:       {}", hex::encode(id.0));
                println!("expected PCR 15: {}", hex::encode(id.expected_pcr15()));
            }
            None => println!("clusterID: pass --measurement-salt HEX to compute it"),
        }
    }
    Ok(())
}
