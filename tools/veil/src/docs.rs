//! `veil completions SHELL` and `veil man`: shell completion scripts (clap_complete) and
//! manual pages (clap_mangen), generated from the same command definitions the parser uses,
//! so they cannot drift from it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use clap_complete::Shell;

use crate::outfile::{self, Access};

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell. E.g. `veil completions bash >
    /// ~/.local/share/bash-completion/completions/veil`.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Write veil.1 and veil-<command>.1 (one per command and subcommand) into DIR, e.g.
    /// ~/.local/share/man/man1. Without it, veil(1) goes to stdout.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Replace pages that exist in DIR.
    #[arg(long, requires = "dir")]
    force: bool,
}

pub fn completions(args: CompletionsArgs, mut cmd: clap::Command) -> Result<()> {
    clap_complete::generate(args.shell, &mut cmd, "veil", &mut std::io::stdout());
    Ok(())
}

/// Render one page.
fn render(cmd: &clap::Command) -> Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page).context("rendering the manual page")?;
    Ok(page)
}

/// Each command's page, named as man(1) finds it: veil.1, veil-luks.1, veil-luks-format.1.
fn pages(cmd: &clap::Command, name: &str, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    // A subcommand's page is titled with its full name (veil-luks-format), as git's are.
    let titled = cmd.clone().name(name.to_string()).bin_name(name.replace('-', " "));
    out.push((format!("{name}.1"), render(&titled)?));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        pages(sub, &format!("{name}-{}", sub.get_name()), out)?;
    }
    Ok(())
}

pub fn man(args: ManArgs, mut cmd: clap::Command) -> Result<()> {
    cmd.build();
    match &args.dir {
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&render(&cmd)?).context("writing to stdout")
        }
        Some(dir) => {
            let mut all = Vec::new();
            pages(&cmd, "veil", &mut all)?;
            // Check every name first, so a refusal leaves no page behind.
            for (name, _) in &all {
                outfile::check_free(&dir.join(name), args.force, "--force")?;
            }
            for (name, page) in &all {
                outfile::write(&dir.join(name), args.force, Access::Public, page)?;
            }
            eprintln!("veil: {} manual pages in {}", all.len(), Path::new(dir).display());
            Ok(())
        }
    }
}
