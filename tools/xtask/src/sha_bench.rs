//! `cargo xtask bench sha`: the SHA-2 code the ROM ships, run on this machine's CPU beside
//! OpenSSL. Every boot hashes its kernel and initrd (SHA-384) and, with a TPM, its ROM
//! (SHA-256), so the backend the firmware builds SHA-2 with is a boot-time choice as well as
//! a ROM-size one.
//!
//! The firmware cannot run on the host, but its hash functions are position-dependent leaf
//! code with no hardware access: the benchmark maps the firmware ELF's loadable segments at
//! their link addresses in this process and calls `sha2::sha256::compress256` and
//! `sha2::sha512::compress512` there, so what is timed is the very machine code in the ROM,
//! compiled for the soft-float firmware target. Each is first checked against the host's
//! `sha2` on the same blocks. Beside it: the firmware built with SHA-2's unrolled backend at
//! the firmware's opt-level (what the ROM shipped before), and OpenSSL (`openssl speed`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::rom_size::Symbol;

/// Bytes hashed per timed pass, and passes per figure (the best is reported: the machine is a
/// shared VM, and the best pass is the one least disturbed).
const PASS_BYTES: usize = 16 << 20;
const PASSES: usize = 6;
/// Rounds in which the shipped and the unrolled build take turns.
const ROUNDS: usize = 4;

/// The firmware's segments live below this address; the reset-vector page at the top of
/// 4 GiB holds no hash code and is left out.
const LOW_SEGMENTS_END: u64 = 0x4000_0000;

/// The firmware ELF's loadable segments, mapped at their link addresses for as long as this
/// lives.
struct MappedFirmware {
    maps: Vec<(usize, usize)>,
    symbols: Vec<Symbol>,
}

impl MappedFirmware {
    fn map(elf_path: &Path) -> Result<MappedFirmware> {
        let elf = std::fs::read(elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
        let mut mapped = MappedFirmware { maps: Vec::new(), symbols: crate::rom_size::symbols(elf_path)? };
        for segment in crate::rom::load_segments(&elf)? {
            if segment.vaddr >= LOW_SEGMENTS_END || segment.memsz == 0 {
                continue;
            }
            let start = segment.vaddr & !0xfff;
            let len = ((segment.vaddr + segment.memsz + 0xfff) & !0xfff) - start;
            // SAFETY: an anonymous private mapping at a fixed address that must be free
            // (MAP_FIXED_NOREPLACE fails rather than replace anything of this process).
            let at = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if at != start as *mut libc::c_void {
                bail!("cannot map the firmware's segment at {start:#x} in this process");
            }
            mapped.maps.push((start as usize, len as usize));
            let bytes = crate::rom::segment_bytes(&elf, &segment);
            // SAFETY: the destination was mapped writable above and holds memsz >= filesz bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), segment.vaddr as *mut u8, bytes.len()) };
        }
        ensure!(!mapped.maps.is_empty(), "{}: no loadable segment", elf_path.display());
        Ok(mapped)
    }

    /// The code symbol whose demangled name is `name`.
    fn symbol(&self, name: &str) -> Result<&Symbol> {
        self.symbols.iter().find(|s| s.name == name).with_context(|| format!("the firmware has no function {name}"))
    }

    /// The address of the function whose demangled name is `name`.
    fn function(&self, name: &str) -> Result<usize> {
        let address = self.symbol(name)?.address;
        ensure!(self.maps.iter().any(|(s, l)| (*s..s + l).contains(&(address as usize))), "{name} is not mapped");
        Ok(address as usize)
    }

    fn compress256(&self) -> Result<fn(&mut [u32; 8], &[[u8; 64]])> {
        let address = self.function("sha2::sha256::compress256")?;
        // SAFETY: the ROM's own `sha2::sha256::compress256`, built by the same compiler for the
        // same signature (the soft-float target passes these pointer and length arguments as
        // the host does); checked against the host's compress256 before it is timed.
        Ok(unsafe { std::mem::transmute::<usize, fn(&mut [u32; 8], &[[u8; 64]])>(address) })
    }

    fn compress512(&self) -> Result<fn(&mut [u64; 8], &[[u8; 128]])> {
        let address = self.function("sha2::sha512::compress512")?;
        // SAFETY: as for compress256.
        Ok(unsafe { std::mem::transmute::<usize, fn(&mut [u64; 8], &[[u8; 128]])>(address) })
    }
}

impl Drop for MappedFirmware {
    fn drop(&mut self) {
        for (start, len) in &self.maps {
            // SAFETY: unmaps exactly what `map` mapped; no function pointer into it outlives
            // the benchmark of this firmware.
            unsafe { libc::munmap(*start as *mut libc::c_void, *len) };
        }
    }
}

/// Best MB/s of `pass` over PASSES passes of PASS_BYTES.
fn best_rate(mut pass: impl FnMut()) -> f64 {
    (0..PASSES)
        .map(|_| {
            let start = std::time::Instant::now();
            pass();
            PASS_BYTES as f64 / 1e6 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// (SHA-256 MB/s, SHA-384 MB/s, bytes of the two compress functions) of the firmware ELF at
/// `elf`.
fn firmware_rates(elf: &Path) -> Result<(f64, f64, u64)> {
    let firmware = MappedFirmware::map(elf)?;
    let code = firmware.symbol("sha2::sha256::compress256")?.size + firmware.symbol("sha2::sha512::compress512")?.size;
    let (c256, c512) = (firmware.compress256()?, firmware.compress512()?);
    let data: Vec<u8> = (0..PASS_BYTES).map(|i| (i * 131 + i / 4093) as u8).collect();
    let blocks64: Vec<[u8; 64]> = data.chunks_exact(64).map(|c| c.try_into().unwrap()).collect();
    let blocks128: Vec<[u8; 128]> = data.chunks_exact(128).map(|c| c.try_into().unwrap()).collect();

    // The ROM's code against the host's, on a few blocks, before either is timed.
    let (mut ours, mut host) = ([0x6a09e667u32; 8], [0x6a09e667u32; 8]);
    c256(&mut ours, &blocks64[..33]);
    sha2::block_api::compress256(&mut host, &blocks64[..33]);
    ensure!(ours == host, "{}: the firmware's compress256 disagrees with sha2's", elf.display());
    let (mut ours, mut host) = ([0x6a09e667f3bcc908u64; 8], [0x6a09e667f3bcc908u64; 8]);
    c512(&mut ours, &blocks128[..17]);
    sha2::block_api::compress512(&mut host, &blocks128[..17]);
    ensure!(ours == host, "{}: the firmware's compress512 disagrees with sha2's", elf.display());

    let mut state256 = [0u32; 8];
    let sha256 = best_rate(|| c256(&mut state256, std::hint::black_box(&blocks64)));
    let mut state512 = [0u64; 8];
    let sha384 = best_rate(|| c512(&mut state512, std::hint::black_box(&blocks128)));
    std::hint::black_box((state256, state512));
    Ok((sha256, sha384, code))
}

/// `openssl speed` for 16 KiB blocks: MB/s of `algorithm`.
fn openssl_rate(algorithm: &str) -> Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-bytes", "16384", "-seconds", "2", "-evp", algorithm])
        .output()
        .context("running openssl speed")?;
    ensure!(out.status.success(), "openssl speed {algorithm}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with(algorithm)).context("openssl speed printed no result")?;
    let kilobytes =
        line.split_whitespace().last().and_then(|v| v.strip_suffix('k')).context("openssl speed's figure")?;
    Ok(kilobytes.parse::<f64>().context("openssl speed's figure")? / 1000.0)
}

/// The firmware rebuilt with SHA-2's unrolled backend at the firmware's opt-level "z" (what
/// the ROM carried before): its ELF, in its own target directory.
fn build_unrolled_variant() -> Result<PathBuf> {
    let config =
        std::fs::read_to_string(crate::root().join(".cargo/config.toml")).context("reading .cargo/config.toml")?;
    let flags = rustflags(&config)?;
    let compact = flags.iter().position(|f| f == "sha2_backend_soft=\"compact\"");
    let Some(at) = compact.filter(|at| *at > 0 && flags[at - 1] == "--cfg") else {
        bail!(".cargo/config.toml no longer selects SHA-2's compact backend; update this benchmark");
    };
    let mut variant = flags.clone();
    variant.drain(at - 1..=at);
    variant.extend(crate::registry_path_remaps()?);
    let dir = crate::target_dir().join("bench-sha");
    crate::run(
        crate::cargo()
            .args(["build", "--profile", "firmware", "-p", "veilboot-kernel", "--target", crate::FIRMWARE_TARGET])
            .args(["--config", "profile.firmware.package.sha2.opt-level=\"z\""])
            .env("CARGO_TARGET_DIR", &dir)
            .env("CARGO_ENCODED_RUSTFLAGS", variant.join("\x1f")),
    )?;
    Ok(dir.join(crate::FIRMWARE_TARGET).join("firmware/veilboot"))
}

/// The strings of the `rustflags = [...]` array in .cargo/config.toml.
fn rustflags(config: &str) -> Result<Vec<String>> {
    let start = config.find("rustflags = [").context(".cargo/config.toml has no rustflags")?;
    let body = &config[start + "rustflags = [".len()..];
    let mut flags = Vec::new();
    for line in body.lines() {
        let line = line.trim();
        if line.starts_with(']') {
            return Ok(flags);
        }
        if line.starts_with('#') {
            continue;
        }
        let mut rest = line;
        while let Some(open) = rest.find(['"', '\'']) {
            let quote = rest.as_bytes()[open] as char;
            let close = rest[open + 1..].find(quote).context("unterminated string in rustflags")? + open + 1;
            flags.push(rest[open + 1..close].to_string());
            rest = &rest[close + 1..];
        }
    }
    bail!(".cargo/config.toml: rustflags is not closed")
}

/// The BENCHMARKS.md section.
pub fn bench() -> Result<String> {
    crate::build_firmware()?;
    let shipped = crate::target_dir().join("bench-sha-shipped.elf");
    std::fs::copy(crate::target_dir().join("x86_64-unknown-none/firmware/veilboot"), &shipped)?;
    let unrolled = build_unrolled_variant()?;
    // The two builds map at the same addresses, so they take turns: ROUNDS rounds of each, the
    // best figure of each kept, so that this shared VM's drift favours neither.
    let (mut ours256, mut ours384, mut ours_code) = (0.0f64, 0.0f64, 0);
    let (mut old256, mut old384, mut old_code) = (0.0f64, 0.0f64, 0);
    for _ in 0..ROUNDS {
        let (a, b, code) = firmware_rates(&shipped)?;
        (ours256, ours384, ours_code) = (ours256.max(a), ours384.max(b), code);
        let (a, b, code) = firmware_rates(&unrolled)?;
        (old256, old384, old_code) = (old256.max(a), old384.max(b), code);
    }
    let (ssl256, ssl384) = (openssl_rate("sha256")?, openssl_rate("sha384")?);
    let kib = |bytes: u64| format!("{:.1}", bytes as f64 / 1024.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "this machine's CPU".into());
    let version = Command::new("openssl").arg("version").output().context("running openssl version")?;
    let version = String::from_utf8_lossy(&version.stdout);
    let openssl = version.split(" (").next().unwrap_or("").split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    Ok(format!(
        "## SHA-2 in the firmware\n\n\
         Command: `cargo xtask bench sha`. The ROM's own `sha2::sha256::compress256` and `compress512` (SHA-384's),\n\
         compiled for the soft-float firmware target, mapped from the firmware ELF at their link addresses and run on\n\
         the host CPU ({cpu}); each first checked against the host's `sha2`. The two builds take turns\n\
         ({ROUNDS} rounds of {PASSES} passes over {} MiB each); the best pass of each is shown.\n\
         OpenSSL (`openssl speed -bytes 16384 -evp`, {openssl}) uses the CPU's SHA extensions where it has them.\n\n\
         | SHA-2 code | ROM bytes (both functions, KiB) | SHA-256 MB/s | SHA-384 MB/s |\n|---|---:|---:|---:|\n\
         | veilboot: compact backend, built at opt-level 3 (shipped) | {} | {ours256:.0} | {ours384:.0} |\n\
         | veilboot: unrolled backend at the firmware's opt-level \"z\" (before) | {} | {old256:.0} | {old384:.0} |\n\
         | OpenSSL | - | {ssl256:.0} | {ssl384:.0} |\n",
        PASS_BYTES >> 20,
        kib(ours_code),
        kib(old_code),
    ))
}

#[cfg(test)]
mod tests {
    use super::rustflags;

    #[test]
    fn reads_the_firmware_rustflags() {
        let config = std::fs::read_to_string(crate::root().join(".cargo/config.toml")).unwrap();
        let flags = rustflags(&config).unwrap();
        let pair = flags.windows(2).any(|w| w[0] == "--cfg" && w[1] == "sha2_backend_soft=\"compact\"");
        assert!(pair, "{flags:?}");
        assert!(flags.windows(2).any(|w| w[0] == "-C" && w[1] == "relocation-model=static"), "{flags:?}");
        assert!(flags.iter().all(|f| !f.contains('#')), "a comment was read as a flag: {flags:?}");
    }

    #[test]
    fn refuses_an_unclosed_array() {
        assert!(rustflags("rustflags = [\n  \"-C\", 'x',\n").is_err());
        assert_eq!(
            rustflags("rustflags = [\n  # a 'quoted' comment\n  \"-C\", 'a=\"b\"',\n]\n").unwrap(),
            ["-C", "a=\"b\""]
        );
    }
}
