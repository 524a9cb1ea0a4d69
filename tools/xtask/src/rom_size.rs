//! `cargo xtask bench rom`: where the ROM's bytes go. The ROM bytes used by each veilboot ROM
//! (release, SEV-SNP model, TDX model) beside the firmware QEMU ships (qboot, SeaBIOS, OVMF);
//! from the release firmware's ELF symbol table (`nm -S -C`), the largest
//! crates and functions of .text and .rodata; and, from its DWARF line table with inlining
//! (`objdump --dwarf=decodedline`, `addr2line -i`), the code by the source it came from, which
//! counts code inlined into the pipeline where it was written.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A code or read-only data symbol of the firmware ELF, as `nm -S -C` lists it.
#[derive(Clone)]
pub struct Symbol {
    /// Its address.
    pub address: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its demangled name.
    pub name: String,
}

/// Every code and read-only data symbol of `elf`.
pub fn symbols(elf: &Path) -> Result<Vec<Symbol>> {
    let out = Command::new("nm").args(["-S", "-C"]).arg(elf).output().context("running nm")?;
    if !out.status.success() {
        bail!("nm {}: {}", elf.display(), String::from_utf8_lossy(&out.stderr));
    }
    let mut syms = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(address), Some(size), Some(kind), Some(name)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !matches!(kind, "t" | "T" | "r" | "R") {
            continue;
        }
        if let (Ok(address), Ok(size)) = (u64::from_str_radix(address, 16), u64::from_str_radix(size, 16)) {
            syms.push(Symbol { address, size, name: name.to_string() });
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
    out.push_str(
        "\nrust-hypervisor-firmware is not built here (neither Debian nor crates.io carries it); its own published figure,\n59,272 bytes for the 2019 release build after its size work (LTO, stripped, linker script; before its EFI\nsupport), is from https://github.com/cloud-hypervisor/rust-hypervisor-firmware/pull/20, not from this run.\n",
    );
    let syms = symbols(elf)?;
    let mut by_crate: BTreeMap<String, u64> = BTreeMap::new();
    for sym in &syms {
        *by_crate.entry(crate_of(&sym.name)).or_default() += sym.size;
    }
    let mut crates: Vec<(String, u64)> = by_crate.into_iter().collect();
    crates.sort_by_key(|c| std::cmp::Reverse(c.1));
    let total: u64 = syms.iter().map(|s| s.size).sum();
    out.push_str(&format!(
        "\nThe release firmware's code and read-only data by crate (symbols of `{}`, {} KiB in all):\n\n| crate | KiB |\n|---|---:|\n",
        elf.strip_prefix(crate::root()).unwrap_or(elf).display(),
        total / 1024
    ));
    for (name, size) in crates.iter().take(15) {
        out.push_str(&format!("| `{name}` | {:.1} |\n", *size as f64 / 1024.0));
    }
    let mut largest = syms.clone();
    largest.sort_by_key(|s| std::cmp::Reverse(s.size));
    out.push_str("\nThe largest functions and tables:\n\n| symbol | KiB |\n|---|---:|\n");
    for sym in largest.iter().take(15) {
        let short: String = sym.name.chars().take(110).collect();
        out.push_str(&format!("| `{}` | {:.1} |\n", short.replace('|', "\\|"), sym.size as f64 / 1024.0));
    }
    let sources = code_by_source(elf)?;
    let total: u64 = sources.iter().map(|(_, s)| s).sum();
    out.push_str(&format!(
        "\nThe code by where it was written ({} KiB of .text with line information): each instruction counts for the\ninnermost inlined frame outside Rust's standard library (a crate, or one of veilboot's files), or for the\nstandard library when every frame is in it.\n\n| source | KiB |\n|---|---:|\n",
        total / 1024
    ));
    for (name, size) in sources.iter().take(25) {
        out.push_str(&format!("| `{name}` | {:.1} |\n", *size as f64 / 1024.0));
    }
    let mut by_capability: BTreeMap<&str, u64> = BTreeMap::new();
    for (name, size) in &sources {
        *by_capability.entry(capability_of(name)).or_default() += size;
    }
    let mut capabilities: Vec<(&str, u64)> = by_capability.into_iter().collect();
    capabilities.sort_by_key(|c| std::cmp::Reverse(c.1));
    out.push_str(
        "\nThe same code by the capability it serves (sources grouped by `rom_size::capability_of`; the standard\nlibrary's share is spread over all of them):\n\n| capability | KiB |\n|---|---:|\n",
    );
    for (name, size) in &capabilities {
        out.push_str(&format!("| {name} | {:.1} |\n", *size as f64 / 1024.0));
    }
    Ok(out)
}

/// Bytes of code per source (a crate name with its version, one of veilboot's files, or the
/// standard library), largest first.
fn code_by_source(elf: &Path) -> Result<Vec<(String, u64)>> {
    let lines = Command::new("objdump").arg("--dwarf=decodedline").arg(elf).output().context("running objdump")?;
    // Rows: "file  line  0xaddress  [view] [x]"; every distinct address starts a range that
    // runs to the next one.
    let mut addrs: Vec<u64> = String::from_utf8_lossy(&lines.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, _, addr) = (f.next()?, f.next()?, f.next()?);
            u64::from_str_radix(addr.strip_prefix("0x")?, 16).ok()
        })
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    let spans: Vec<(u64, u64)> =
        addrs.windows(2).map(|w| (w[0], w[1] - w[0])).filter(|(_, len)| *len > 0 && *len < 4096).collect();
    let input: String = spans.iter().map(|(a, _)| format!("{a:#x}\n")).collect();
    let mut child = Command::new("addr2line")
        .args(["-a", "-i", "-e"])
        .arg(elf)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running addr2line")?;
    let mut stdin = child.stdin.take().context("addr2line stdin")?;
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, input.as_bytes()));
    let out = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("addr2line writer"))??;
    // addr2line prints each address, then its frames innermost first ("file:line").
    let mut frames: Vec<Vec<String>> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("0x") {
            frames.push(Vec::new());
        } else if let Some(f) = frames.last_mut() {
            f.push(line.rsplit_once(':').map_or(line, |(file, _)| file).to_string());
        }
    }
    let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
    for ((_, len), files) in spans.iter().zip(&frames) {
        let source = files.iter().find_map(|f| source_of(f)).unwrap_or_else(|| String::from("Rust standard library"));
        *by_source.entry(source).or_default() += len;
    }
    let mut sorted: Vec<(String, u64)> = by_source.into_iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.1));
    Ok(sorted)
}

/// The source a file path belongs to: `crate-x.y.z` for a registry crate, the path within the
/// project for veilboot's own files; None for Rust's standard library (and unknown frames).
pub fn source_of(file: &str) -> Option<String> {
    if file.starts_with("/rustc/") || file.starts_with("??") || file.is_empty() {
        return None;
    }
    if let Some((_, rest)) = file.split_once("/registry/src/") {
        return rest.split('/').nth(1).map(String::from);
    }
    let root = crate::root();
    let rel = Path::new(file).strip_prefix(&root).map(|p| p.display().to_string()).unwrap_or_else(|_| file.to_string());
    // ROM builds cut the registry directory from crate paths (`registry_path_remaps`), which
    // leaves `name-x.y.z/src/...` relative to the project.
    if let Some((first, _)) = rel.split_once('/')
        && is_crate_dir(first)
    {
        return Some(first.to_string());
    }
    Some(rel)
}

/// `name-x.y.z`: a crate's directory in the registry.
fn is_crate_dir(dir: &str) -> bool {
    dir.rsplit_once('-').is_some_and(|(name, version)| {
        !name.is_empty() && version.split('.').count() >= 3 && version.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// What a source is for: the capability its bytes serve (crates by what the firmware uses
/// them for), for the table that says what each part of the firmware costs.
pub fn capability_of(source: &str) -> &'static str {
    let crate_name = if is_crate_dir(source) { source.rsplit_once('-').map_or(source, |(n, _)| n) } else { "" };
    let file = source.trim_end_matches(".rs");
    let in_any = |prefixes: &[&str]| prefixes.iter().any(|p| file.starts_with(p));
    if source == "Rust standard library" {
        "Rust's standard library (formatting, collections, slices, panics)"
    } else if in_any(&["kernel/src/platform/snp", "agent/src/snp", "kernel/src/model/snp"]) {
        "SEV-SNP (GHCB, page validation, guest messages, reports, sealing)"
    } else if in_any(&["kernel/src/platform/tdx", "agent/src/tdx", "kernel/src/model/tdx"]) {
        "TDX (TDCALL, TD HOB, RTMRs and CC event log, MADT wakeup, GetQuote)"
    } else if in_any(&["kernel/src/platform/tpm", "agent/src/tpm"]) || crate_name == "sha1" {
        "TPM (TIS, TPM2 commands, PCRs and event log, seal/unseal, quotes; SHA-1 bank)"
    } else if in_any(&["agent/src/kbs", "kernel/src/boot/kbs", "agent/src/initdata"])
        || [
            "p256",
            "primeorder",
            "primefield",
            "elliptic-curve",
            "crypto-bigint",
            "aes-kw",
            "aes-gcm",
            "ghash",
            "polyval",
        ]
        .contains(&crate_name)
    {
        "Key broker (Trustee RCAR client, relay frames, JWE: P-256 ECDH, AES-KW, AES-GCM)"
    } else if in_any(&[
        "agent/src/luks2",
        "agent/src/gpt",
        "agent/src/bundle",
        "agent/src/disksig",
        "agent/src/io",
        "agent/src/xts",
        "kernel/src/boot/diskboot",
        "kernel/src/boot/statedisk",
        "kernel/src/devices/virtio",
    ]) || ["virtio-drivers", "aes", "crc", "pbkdf2", "safe-mmio"].contains(&crate_name)
    {
        "Encrypted disk (virtio-blk, GPT, LUKS2 read/validate/write, XTS, boot bundle)"
    } else if in_any(&["agent/src/keys", "kernel/src/boot/keysource", "kernel/src/boot/secrets"])
        || ["hkdf", "hmac", "sha2", "digest", "block-buffer"].contains(&crate_name)
    {
        "Keys (master secret, HKDF key tree, key sources; SHA-2 and HMAC)"
    } else if in_any(&["agent/src/json", "agent/src/b64"]) || ["hex", "zeroize"].contains(&crate_name) {
        "JSON, base64, hex (shared by LUKS2, tokens and the broker)"
    } else {
        "Boot (reset, paging, interrupts, fw_cfg, PCI, ACPI, Linux boot protocol, heap, log, errors)"
    }
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

    #[test]
    fn sources_are_crates_files_or_the_standard_library() {
        assert_eq!(
            source_of("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde_json-1.0.154/src/de.rs"),
            Some(String::from("serde_json-1.0.154"))
        );
        assert_eq!(source_of("/rustc/59807616e1fa/library/core/src/result.rs"), None);
        assert_eq!(
            source_of(&crate::root().join("agent/src/gpt.rs").display().to_string()),
            Some("agent/src/gpt.rs".into())
        );
        // A crate path with the registry directory cut (ROM builds).
        assert_eq!(
            source_of(&crate::root().join("virtio-drivers-0.13.0/src/queue.rs").display().to_string()),
            Some(String::from("virtio-drivers-0.13.0"))
        );
        assert_eq!(source_of("sha2-0.11.1/src/sha256.rs"), Some(String::from("sha2-0.11.1")));
    }

    #[test]
    fn capabilities_group_sources() {
        assert!(capability_of("agent/src/snp/ghcb.rs").starts_with("SEV-SNP"));
        assert!(capability_of("kernel/src/platform/tdx/mod.rs").starts_with("TDX"));
        assert!(capability_of("agent/src/tpm/command.rs").starts_with("TPM"));
        assert!(capability_of("sha1-0.11.0").starts_with("TPM"));
        assert!(capability_of("p256-0.14.0").starts_with("Key broker"));
        assert!(capability_of("virtio-drivers-0.13.0").starts_with("Encrypted disk"));
        assert!(capability_of("agent/src/luks2/validate.rs").starts_with("Encrypted disk"));
        assert!(capability_of("sha2-0.11.1").starts_with("Keys"));
        assert!(capability_of("kernel/src/devices/acpi.rs").starts_with("Boot"));
        assert!(capability_of("Rust standard library").starts_with("Rust"));
    }
}
