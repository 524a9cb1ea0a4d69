//! `cargo xtask bench rom`: where the ROM's bytes go. The ROM bytes used by each veilboot ROM
//! (release, SEV-SNP model, TDX model) beside the firmware QEMU ships (qboot, SeaBIOS, OVMF),
//! and, from the release firmware's ELF symbol table (`nm --size-sort`, demangled), the
//! largest crates and functions of .text and .rodata.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// (size in bytes, demangled name) of every code and read-only data symbol of `elf`.
fn symbols(elf: &Path) -> Result<Vec<(u64, String)>> {
    let out = Command::new("nm").args(["--size-sort", "-S", "-C"]).arg(elf).output().context("running nm")?;
    if !out.status.success() {
        bail!("nm {}: {}", elf.display(), String::from_utf8_lossy(&out.stderr));
    }
    let mut syms = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(_addr), Some(size), Some(kind), Some(name)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !matches!(kind, "t" | "T" | "r" | "R") {
            continue;
        }
        if let Ok(size) = u64::from_str_radix(size, 16) {
            syms.push((size, name.to_string()));
        }
    }
    Ok(syms)
}

/// The crate a demangled symbol belongs to: the first path segment of the item (for
/// `<T as Trait>::f`, of T), or "(other)".
pub fn crate_of(name: &str) -> String {
    let s = name.trim_start_matches('<').trim_start_matches('&').trim_start_matches("mut ").trim_start_matches("dyn ");
    let s = s.trim_start_matches('[').trim_start_matches('(');
    match s.split_once("::") {
        Some((first, _)) if !first.is_empty() && first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            first.to_string()
        }
        _ => String::from("(other)"),
    }
}

/// The BENCHMARKS.md section.
pub fn section(elf: &Path, ours: &[(&str, &Path)]) -> Result<String> {
    let mut out = String::from(
        "## ROM size\n\nCommand: `cargo xtask bench rom`. ROM bytes used: veilboot's from the first non-erased byte to the end\n(`cargo xtask build` prints the same figure); the others are the files QEMU's Debian packages ship.\n\n| firmware | file | bytes used |\n|---|---|---:|\n",
    );
    for (name, path) in ours {
        let rom = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let shown = path.strip_prefix(crate::root()).unwrap_or(path);
        out.push_str(&format!("| {name} | `{}` | {} KiB |\n", shown.display(), crate::rom::used(&rom) / 1024));
    }
    for (name, path) in [
        ("qboot", "/usr/share/qemu/qboot.rom"),
        ("SeaBIOS", "/usr/share/seabios/bios-256k.bin"),
        ("OVMF (code and variables)", "/usr/share/ovmf/OVMF.fd"),
    ] {
        if let Ok(m) = std::fs::metadata(path) {
            out.push_str(&format!("| {name} | `{path}` | {} KiB (file) |\n", m.len() / 1024));
        }
    }
    let syms = symbols(elf)?;
    let mut by_crate: BTreeMap<String, u64> = BTreeMap::new();
    for (size, name) in &syms {
        *by_crate.entry(crate_of(name)).or_default() += size;
    }
    let mut crates: Vec<(String, u64)> = by_crate.into_iter().collect();
    crates.sort_by_key(|c| std::cmp::Reverse(c.1));
    let total: u64 = syms.iter().map(|(s, _)| s).sum();
    out.push_str(&format!(
        "\nThe release firmware's code and read-only data by crate (symbols of `{}`, {} KiB in all):\n\n| crate | KiB |\n|---|---:|\n",
        elf.strip_prefix(crate::root()).unwrap_or(elf).display(),
        total / 1024
    ));
    for (name, size) in crates.iter().take(15) {
        out.push_str(&format!("| `{name}` | {:.1} |\n", *size as f64 / 1024.0));
    }
    let mut largest = syms.clone();
    largest.sort_by_key(|s| std::cmp::Reverse(s.0));
    out.push_str("\nThe largest functions and tables:\n\n| symbol | KiB |\n|---|---:|\n");
    for (size, name) in largest.iter().take(15) {
        let short: String = name.chars().take(110).collect();
        out.push_str(&format!("| `{}` | {:.1} |\n", short.replace('|', "\\|"), *size as f64 / 1024.0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_attributed_to_their_crates() {
        assert_eq!(crate_of("veil_agent::luks2::validate"), "veil_agent");
        assert_eq!(crate_of("<sha2::core_api::Sha512VarCore as digest::core_api::UpdateCore>::update_blocks"), "sha2");
        assert_eq!(
            crate_of("<&mut serde_json::de::Deserializer<R> as serde::Deserializer>::deserialize_any"),
            "serde_json"
        );
        assert_eq!(crate_of("veil_main"), "(other)");
    }
}
