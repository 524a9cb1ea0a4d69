//! `veil tpm ak`: the attestation key (AK) a veilboot firmware attests with, read from the TPM
//! itself at provisioning time, for registering the VM's TPM with a Trustee KBS (reference
//! value `trusted_aks`) or with `veil kbs serve --tpm-registry`; `veil tpm ek`: the TPM's
//! endorsement key (the default RSA-2048 EK template, the key its EK certificate certifies),
//! the other key `--tpm-registry` takes.
//!
//! The firmware's AK is a primary key of the endorsement hierarchy made from a fixed template
//! (RSA-2048, RSASSA-SHA256, restricted signing: agent::tpm::command's attestation-key
//! template). A primary key is a function of the hierarchy's seed and the template, so the
//! same TPM recreates the same key: this command runs the same TPM2_CreatePrimary as the
//! firmware and prints the public part. An operator who runs it where the TPM is reachable
//! (before the VM's first boot, on the host that holds the vTPM) learns the AK without
//! trusting the VM's serial console, which the host controls.

use std::net::TcpStream;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};
use veil_agent::kbs::evidence;
use veil_agent::tpm::command::{DeviceTransport, StreamTransport, Tpm, Transport};

#[derive(Subcommand)]
pub enum TpmCommand {
    /// Print the attestation key the firmware will attest with (PEM), recreated on its TPM.
    Ak(AkArgs),
    /// Print the TPM's endorsement key (PEM): what its EK certificate certifies.
    Ek(AkArgs),
}

#[derive(Args)]
pub struct AkArgs {
    /// A TPM character device: the kernel's resource manager (/dev/tpmrm0) of the machine
    /// whose TPM the VM uses.
    #[arg(long, value_name = "PATH", conflicts_with = "swtpm", required_unless_present = "swtpm")]
    device: Option<PathBuf>,
    /// A swtpm's TCP command port (swtpm socket --server type=tcp,port=PORT), with the VM's TPM
    /// state; the VM must not be running.
    #[arg(long, value_name = "HOST:PORT")]
    swtpm: Option<String>,
    /// Write the PEM here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long, requires = "out")]
    force: bool,
}

pub fn run(cmd: TpmCommand) -> Result<()> {
    match cmd {
        TpmCommand::Ak(args) => key(args, Which::Ak),
        TpmCommand::Ek(args) => key(args, Which::Ek),
    }
}

/// Which of the TPM's two keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Ak,
    Ek,
}

/// The key's DER SubjectPublicKeyInfo, made on `tpm` exactly as the firmware makes it.
fn tpm_key<T: Transport>(tpm: &mut Tpm<T>, which: Which) -> Result<Vec<u8>> {
    tpm.startup_clear().map_err(|e| anyhow!("TPM2_Startup: {e}"))?;
    let (handle, public) = match which {
        Which::Ak => tpm.create_attestation_key().map_err(|e| anyhow!("creating the attestation key: {e}"))?,
        Which::Ek => tpm.create_ek().map_err(|e| anyhow!("creating the endorsement key: {e}"))?,
    };
    let _ = tpm.flush(handle);
    let (modulus, exponent) = veil_agent::tpm::rsa_public_parts(&public).map_err(|e| anyhow!("the TPM's key: {e}"))?;
    Ok(evidence::rsa_spki(&modulus, exponent))
}

/// PEM "PUBLIC KEY" (the DER SPKI in base64, 64 characters a line).
pub fn spki_pem(der: &[u8]) -> String {
    let body = B64.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// The DER of a PEM "PUBLIC KEY".
pub fn spki_from_pem(text: &str) -> Result<Vec<u8>> {
    veil_agent::tpm::ekcert::pem_block(text, "PUBLIC KEY").map_err(|e| anyhow!("{e}"))
}

fn key(args: AkArgs, which: Which) -> Result<()> {
    // HOST:PORT, checked before anything is written or connected to (an argument error, exit 2).
    if let Some(addr) = &args.swtpm
        && addr.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        crate::usage_bail!("--swtpm {addr:?}: expected HOST:PORT, e.g. 127.0.0.1:2321 (swtpm's TCP command port)");
    }
    if let Some(path) = &args.out {
        crate::outfile::check_free(path, args.force, "--force")?;
    }
    let der = match (&args.device, &args.swtpm) {
        (Some(path), _) => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            tpm_key(&mut Tpm::new(DeviceTransport(file)), which)?
        }
        (None, Some(addr)) => {
            let stream = TcpStream::connect(addr).with_context(|| format!("connecting to swtpm at {addr}"))?;
            stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
            tpm_key(&mut Tpm::new(StreamTransport(stream)), which)?
        }
        (None, None) => unreachable!("clap requires --device or --swtpm"),
    };
    let pem = spki_pem(&der);
    match &args.out {
        Some(path) => crate::outfile::write(path, args.force, crate::outfile::Access::Public, pem.as_bytes())?,
        None => print!("{pem}"),
    }
    let fingerprint = hex::encode(Sha256::digest(&der));
    match which {
        Which::Ak => eprintln!(
            "veil tpm ak: register the PEM (veil kbs serve --tpm-registry) or its body, the base64 DER \
             SubjectPublicKeyInfo the firmware sends as ak_public (Trustee: reference value trusted_aks); \
             fingerprint sha256:{fingerprint}"
        ),
        Which::Ek => eprintln!(
            "veil tpm ek: register the PEM with veil kbs serve --tpm-registry; fingerprint sha256:{fingerprint}"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        let der: Vec<u8> = (0..294u32).map(|i| i as u8).collect();
        let pem = spki_pem(&der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(spki_from_pem(&pem).unwrap(), der);
        assert!(spki_from_pem("nothing here").is_err());
    }
}
