//! `cargo xtask`: veilboot's build, test, demo and benchmark driver.
//!
//! * `cargo xtask build` - the firmware for x86_64-unknown-none (release);
//! * `cargo xtask test`  - every test: host unit, vector and CLI tests, then the firmware
//!   build for its target (the README's test command; CI runs it);
//! * `cargo xtask demo`  - the main job: build everything and walk through the pipeline;
//! * `cargo xtask bench` - XTS throughput beside OpenSSL, written to BENCHMARKS.md.
//!
//! Debian packages a step needs are installed with apt-get when running as root (the
//! command says what it installs); otherwise it prints the exact apt-get line and stops.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const FIRMWARE_TARGET: &str = "x86_64-unknown-none";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => build_firmware().map(|_| ()),
        Some("test") => test(),
        Some("demo") => demo(),
        Some("bench") => bench(),
        Some("-h" | "--help" | "help") | None => {
            println!("{}", HELP);
            Ok(())
        }
        Some(other) => {
            eprintln!("xtask: unknown command `{other}`\n\n{HELP}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

const HELP: &str = "usage: cargo xtask <command>

commands:
  build   build the firmware (x86_64-unknown-none, release)
  test    run every test (host tests, corpus vectors, CLI, firmware build)
  demo    build the tools and firmware and walk through the key pipeline
  bench   measure XTS throughput beside OpenSSL 3.6 and 3.0; writes BENCHMARKS.md

environment:
  VEIL_TESTDATA          where the shared test corpus lives (default ../shared/testdata)
  VEIL_REQUIRE_TESTDATA  fail, rather than skip loudly, when the corpus is absent (CI)";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("project root")
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", describe(cmd));
    let status = cmd.status().with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// rustup does not auto-install targets on these machines.
fn ensure_target() -> Result<()> {
    run(Command::new("rustup")
        .current_dir(root())
        .args(["target", "add", FIRMWARE_TARGET]))
}

/// Make sure `program` exists, installing Debian `package` when running as root.
#[allow(dead_code)] // used by the QEMU stages
fn ensure_package(program: &str, package: &str) -> Result<()> {
    if which(program) {
        return Ok(());
    }
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false);
    if !is_root {
        bail!("`{program}` is missing; install it with: sudo apt-get install -y {package}");
    }
    eprintln!("xtask: `{program}` is missing; installing Debian package {package}");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends", package]).env("DEBIAN_FRONTEND", "noninteractive"))
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
}

fn build_firmware() -> Result<PathBuf> {
    ensure_target()?;
    run(cargo().args(["build", "--release", "-p", "veilboot-kernel", "--target", FIRMWARE_TARGET]))?;
    Ok(root().join("target").join(FIRMWARE_TARGET).join("release/veilboot"))
}

fn test() -> Result<()> {
    ensure_target()?;
    // Host: unit tests, corpus vectors, property tests, CLI tests.
    run(cargo().args(["test", "--workspace", "--exclude", "veilboot-kernel", "--exclude", "veil-bench"]))?;
    // The agent must stay no_std: build it alone for the firmware target.
    run(cargo().args(["build", "-p", "veil-agent", "--no-default-features", "--target", FIRMWARE_TARGET]))?;
    build_firmware()?;
    eprintln!("xtask: all tests passed");
    Ok(())
}

fn demo() -> Result<()> {
    let firmware = build_firmware()?;
    run(cargo().args(["build", "--release", "-p", "veil"]))?;
    let veil = root().join("target/release/veil");
    let dir = root().join("build/demo");
    std::fs::create_dir_all(&dir)?;
    let secret = dir.join("constellation-mastersecret.json");
    if !secret.exists() {
        run(Command::new(&veil).args(["secret", "new", "--out"]).arg(&secret))?;
    } else {
        eprintln!("xtask: reusing {}", secret.display());
    }
    let measurement_salt = "00".repeat(32);
    run(Command::new(&veil).args(["secret", "show"]).arg(&secret).args(["--measurement-salt", &measurement_salt]))?;
    let uuid = "6b9d2a1e-4f0c-4d3e-9a57-1c2b3d4e5f60";
    eprintln!("xtask: disk key of demo volume {uuid} (the LUKS2 keyslot passphrase):");
    run(Command::new(&veil).args(["derive", "disk-key", "--secret"]).arg(&secret).args(["--uuid", uuid, "--json"]))?;
    let size = std::fs::metadata(&firmware)?.len();
    eprintln!("xtask: firmware built: {} ({} KiB)", firmware.display(), size / 1024);
    Ok(())
}

fn bench() -> Result<()> {
    ensure_package("openssl", "openssl")?;
    // First the software-AES build (what the firmware runs today), in its own target dir so
    // that the RUSTFLAGS change does not rebuild the main one.
    let mut soft = cargo();
    soft.args(["run", "--release", "-p", "veil-bench", "--no-default-features", "--", "--soft-rows"])
        .env("RUSTFLAGS", "--cfg aes_backend=\"soft\"")
        .env("CARGO_TARGET_DIR", root().join("target/bench-soft"));
    eprintln!("xtask: $ {}", describe(&soft));
    let out = soft.output().context("running the software-AES benchmark")?;
    if !out.status.success() {
        bail!("software-AES benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    run(cargo()
        .args(["run", "--release", "-p", "veil-bench", "--", "--write"])
        .arg(root().join("BENCHMARKS.md"))
        .env("VEIL_BENCH_SOFT_ROWS", String::from_utf8_lossy(&out.stdout).as_ref()))
}
