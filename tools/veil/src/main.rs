//! `veil`: veilboot's host tool. Creates and inspects Constellation master secrets, derives
//! the keys the firmware derives, makes and opens LUKS2 volumes and boot images, predicts
//! measurements (`veil measure`, with the material a Trustee KBS operator loads), seals,
//! recovers, and runs the key broker and its relay (`veil kbs`).
//!
//! Exit status: 0 success, 1 failure (one line on stderr, sometimes a hint after it), 2 usage
//! error (clap's, or an argument that parsed but cannot be used: cli_error::UsageError).

mod cli_error;
mod derive;
mod distro;
mod docs;
mod image;
mod initrd_check;
mod inspect;
mod kbs;
mod luks;
mod measure;
mod outfile;
mod report;
mod seal;
mod secret;
mod snp;
mod tdx;
mod tpm;
mod trustee;
mod verify;
mod volfile;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// veilboot host tool: master secrets and the Constellation key tree.
#[derive(Parser)]
#[command(name = "veil", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or inspect a cluster master secret (constellation-mastersecret.json).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Derive keys from a master secret exactly as Constellation and the firmware do.
    #[command(subcommand)]
    Derive(derive::DeriveCommand),
    /// LUKS2 volumes in image files: format, dump, open, add-key, token, encrypt, decrypt.
    #[command(subcommand)]
    Luks(luks::LuksCommand),
    /// Disk images veilboot boots from.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Decrypt a volume of a veilboot disk with the master secret (disaster recovery), or
    /// print its disk key.
    Recover(image::RecoverArgs),
    /// Predict the measurements a veilboot ROM produces: TPM PCRs booting an image
    /// (Constellation's measurements JSON), the SEV-SNP launch digest, or TDX's MRTD and RTMRs.
    Measure(measure::MeasureArgs),
    /// Seal the master secret for a VM's TPM from its storage key's public part alone, into
    /// the image's veil-boot header.
    Seal(seal::SealArgs),
    /// The key broker (Trustee KBS protocol) and the relay between a VM and it.
    #[command(subcommand)]
    Kbs(kbs::KbsCommand),
    /// The VM's TPM as the firmware uses it (the attestation key, for a Trustee KBS).
    #[command(subcommand)]
    Tpm(tpm::TpmCommand),
    /// Turn a firmware serial log into a table of boot phase durations (and an SVG chart).
    BootReport(report::ReportArgs),
    /// Verify attestation evidence as the key broker does (SEV-SNP reports, TD quotes),
    /// printing each check; exits 1 on a refusal.
    Verify(verify::VerifyArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(docs::CompletionsArgs),
    /// Write the manual pages (veil.1 and one per command) into a directory, or print veil(1).
    Man(docs::ManArgs),
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing to a closed pipe (`veil measure ... | head -1`) would
    // panic; the default action ends the process quietly, as other command-line tools do.
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Secret(cmd) => secret::run(cmd),
        Command::Derive(cmd) => derive::run(cmd),
        Command::Luks(cmd) => luks::run(cmd),
        Command::BootReport(args) => report::run(args),
        Command::Image(image::ImageCommand::Build(args)) => image::build(args),
        Command::Image(image::ImageCommand::Inspect(args)) => inspect::run(args),
        Command::Recover(args) => image::recover(args),
        Command::Measure(args) => measure::run(args),
        Command::Seal(args) => seal::run(args),
        Command::Kbs(cmd) => kbs::run(cmd),
        Command::Tpm(cmd) => tpm::run(cmd),
        Command::Verify(args) => verify::run(args),
        Command::Completions(args) => docs::completions(args, Cli::command()),
        Command::Man(args) => docs::man(args, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, outermost first; then what usually causes it.
            eprintln!("veil: error: {err:#}");
            if let Some(hint) = cli_error::hint(&err) {
                eprintln!("veil: hint: {hint}");
            }
            let code = cli_error::exit_code(&err);
            if code == 2 {
                eprintln!("For more information, try '--help'.");
            }
            ExitCode::from(code)
        }
    }
}
