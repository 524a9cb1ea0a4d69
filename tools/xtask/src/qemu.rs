//! Booting the ROM in QEMU (TCG) and checking what it printed on the serial console.
//!
//! Every boot's time limit is multiplied by `$VEIL_TEST_TIMEOUT_SCALE` (default 1; e.g. 3 on a
//! machine busier than CI), and a boot that QEMU had to be killed for says so in every failure
//! message, with the last `stage=` timeline mark the firmware reached (or its last serial line).
//!
//! Files a boot uses (disks, sockets, logs, patched kernels) live in directories of their own:
//! each xtask process takes a session directory `target/qemu-runs/<n>` that no other running
//! xtask holds (a lock file), and each test a [`run_dir`] inside it, so two tests, or two
//! `cargo xtask test` sets run at once, never share a disk image, a relay socket or a log.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// QEMU's exit code when the firmware reports success through isa-debug-exit.
pub const EXIT_SUCCESS: i32 = 33;
/// ... and failure.
pub const EXIT_FAILURE: i32 = 35;

/// The plain-VM machine: q35, TCG, the debug-exit device, serial to a file. The same
/// recipe as qemu/plain.sh.
pub fn base_args(rom: &Path, serial_log: &Path) -> Vec<String> {
    [
        "-machine",
        "q35",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["-bios".into(), rom.display().to_string(), "-serial".into(), format!("file:{}", serial_log.display())])
    .collect()
}

/// QEMU arguments for a virtio-console whose chardev listens on the UNIX socket `sock`: the
/// relay channel to a key broker. `wait=on`: QEMU starts the guest only once the relay has
/// connected (a socket chardev without a client drops what the guest writes, so a relay that
/// connects late would lose the firmware's first frame).
pub fn relay_console_args(sock: &Path) -> Vec<String> {
    vec![
        "-device".to_string(),
        "virtio-serial-pci".to_string(),
        "-chardev".to_string(),
        format!("socket,id=relay,path={},server=on,wait=on", sock.display()),
        "-device".to_string(),
        "virtconsole,chardev=relay".to_string(),
    ]
}

/// This process's session directory, `target/qemu-runs/<n>` for the lowest `n` whose lock file
/// (`<n>.lock`) no other process holds; emptied when taken, kept after the run (the logs a
/// failure names are there), and reused by the next run that finds it free.
pub fn session_dir() -> Result<&'static Path> {
    static SESSION: OnceLock<(PathBuf, File)> = OnceLock::new();
    if let Some((dir, _)) = SESSION.get() {
        return Ok(dir);
    }
    let base = crate::target_dir().join("qemu-runs");
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    for n in 1..=64u32 {
        let lock_path = base.join(format!("{n}.lock"));
        let lock = File::options().create(true).truncate(false).write(true).open(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => return Err(e).context(format!("locking {}", lock_path.display())),
        }
        let dir = base.join(n.to_string());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        // The lock is held (the file kept open) until this process exits.
        let (dir, _) = SESSION.get_or_init(|| (dir, lock));
        return Ok(dir);
    }
    bail!("64 xtask processes hold {}/<n>.lock; none is free", base.display())
}

/// A directory of its own for one test (or one group of boots that share files): `name` in
/// this process's [`session_dir`], emptied. Each test names its own; no other test or
/// concurrent xtask writes there.
pub fn run_dir(name: &str) -> Result<PathBuf> {
    let dir = session_dir()?.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Longest path a UNIX socket can be bound at (`sun_path` is 108 bytes with its NUL).
const SOCKET_PATH_MAX: usize = 107;

/// Where the UNIX socket `name` of the test whose run directory is `dir` lives: in `dir` when
/// the path fits a socket's 107 bytes, else (a deep checkout) in a directory of its own under
/// TMPDIR named after `dir`, so two runs never share it. Any stale socket there is removed.
pub fn socket_path(dir: &Path, name: &str) -> Result<PathBuf> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    let mut path = dir.join(name);
    if path.as_os_str().len() > SOCKET_PATH_MAX {
        let id = BuildHasherDefault::<DefaultHasher>::default().hash_one(&dir);
        let short = std::env::temp_dir().join(format!("veil-{id:016x}"));
        std::fs::create_dir_all(&short).with_context(|| format!("creating {}", short.display()))?;
        path = short.join(name);
        if path.as_os_str().len() > SOCKET_PATH_MAX {
            bail!("{}: too long for a UNIX socket's path (TMPDIR is too deep)", path.display());
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(path)
}

/// Where [`boot`] writes the serial log of the boot called `name`.
pub fn log_path(name: &str) -> Result<PathBuf> {
    Ok(session_dir()?.join(format!("{name}.log")))
}

/// Replace `path` with `bytes` by writing a sibling and renaming it over: a QEMU (of this or
/// another xtask) that has the old file open, or opens it meanwhile, reads a whole file,
/// never a truncated one. For files shared across runs (ROMs, the cached test initramfs).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().context("a file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The factor every test's time limit is multiplied by (`$VEIL_TEST_TIMEOUT_SCALE`, default
/// 1; a value that is not a positive number is refused rather than ignored).
pub fn timeout_scale() -> Result<f64> {
    match std::env::var("VEIL_TEST_TIMEOUT_SCALE") {
        Err(_) => Ok(1.0),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
            _ => bail!("VEIL_TEST_TIMEOUT_SCALE={v:?} is not a positive number"),
        },
    }
}

/// `t` scaled by [`timeout_scale`].
pub fn scaled(t: Duration) -> Result<Duration> {
    Ok(t.mul_f64(timeout_scale()?))
}

/// The last `stage=` timeline mark in a serial log (`veil: t=<us> stage=<name>`).
pub fn last_stage(log: &str) -> Option<&str> {
    log.lines().rev().find_map(|l| l.split_once("stage=")).map(|(_, s)| s.split_whitespace().next().unwrap_or(""))
}

/// How far a boot got: its last `stage=` mark, and its last serial line when that is not the
/// mark's (Linux, an initramfs or a refusal printed after it), or that the log is empty.
pub fn progress(log: &str) -> String {
    let last_line = log.lines().rev().map(str::trim).find(|l| !l.is_empty());
    let mut s = last_stage(log).map(|s| format!("stage={s}")).unwrap_or_else(|| String::from("no stage= mark"));
    match last_line {
        None => s.push_str(", the serial log is empty"),
        Some(l) if last_stage(l).is_some() => {}
        Some(l) => {
            let l: String = l.chars().take(200).collect();
            s.push_str(&format!("; the last serial line: {l:?}"));
        }
    }
    s
}

/// What a boot killed at its (scaled) limit `t` says: the limit, the knob, and how far the
/// firmware got. For every runner that kills QEMU at a limit, not only [`boot`].
pub fn timed_out(t: Duration, log: &str) -> String {
    format!(
        "QEMU was killed after {:.0} s (the limit times VEIL_TEST_TIMEOUT_SCALE); the last stage reached: {}",
        t.as_secs_f64(),
        progress(log)
    )
}

/// One finished run.
pub struct Run {
    /// QEMU's exit code (None if it had to be killed).
    pub code: Option<i32>,
    /// The (scaled) limit QEMU was killed at, if it was.
    pub killed_after: Option<Duration>,
    /// The serial log.
    pub log: String,
    /// Where the log is.
    pub log_path: PathBuf,
}

/// Boot with extra arguments; kill QEMU after `timeout` (scaled by [`timeout_scale`]).
pub fn boot(rom: &Path, name: &str, extra: &[String], timeout: Duration) -> Result<Run> {
    let timeout = scaled(timeout)?;
    let log_path = log_path(name)?;
    let _ = std::fs::remove_file(&log_path);
    let mut args = base_args(rom, &log_path);
    for (flag, default) in [("-m", "256M"), ("-smp", "1"), ("-accel", "tcg"), ("-cpu", "max")] {
        if !extra.iter().any(|a| a == flag) {
            args.extend([flag.to_string(), default.to_string()]);
        }
    }
    args.extend(extra.iter().cloned());
    let mut child = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let start = Instant::now();
    let (code, killed_after) = loop {
        if let Some(status) = child.try_wait()? {
            break (status.code(), None);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break (None, Some(timeout));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let log = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
    if let Some(t) = killed_after {
        eprintln!("xtask: {name}: {}", timed_out(t, &log));
    }
    Ok(Run { code, killed_after, log, log_path })
}

impl Run {
    /// Fail with the log if `needle` is not in it.
    pub fn expect(&self, needle: &str) -> Result<&Self> {
        if !self.log.contains(needle) {
            bail!("expected `{needle}` in the serial log {}{}:\n{}", self.log_path.display(), self.killed(), self.log);
        }
        Ok(self)
    }

    /// Fail with the log unless QEMU exited with `code`.
    pub fn expect_exit(&self, code: i32) -> Result<&Self> {
        if self.code != Some(code) {
            bail!(
                "QEMU exited with {:?}, expected {code}{}; serial log {}:\n{}",
                self.code,
                self.killed(),
                self.log_path.display(),
                self.log
            );
        }
        Ok(self)
    }
}

impl Run {
    /// ", <why it was killed and how far it got>" for a killed boot, else "".
    fn killed(&self) -> String {
        self.killed_after.map(|t| format!(" ({})", timed_out(t, &self.log))).unwrap_or_default()
    }
}

/// Save `len` bytes of guest RAM from address 0 to `dump` through the QEMU monitor `m` (a
/// human monitor on a UNIX socket), and wait until it is written: the monitor echoes each
/// command, and its prompt after pmemsave's line means the file is complete.
pub fn pmemsave(m: &mut std::os::unix::net::UnixStream, len: u64, dump: &Path) -> Result<()> {
    use std::io::{Read, Write};
    // Quoted: the monitor would read an unquoted `/` after the size as a division.
    writeln!(m, "pmemsave 0 {len:#x} \"{}\"", dump.display())?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("pmemsave") || !seen.ends_with(b"(qemu) ") {
        let n = m.read(&mut buf)?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run directory too deep for a UNIX socket's path gets its sockets under TMPDIR, one
    /// directory per run directory; a shallow one keeps them.
    #[test]
    fn sockets_fit_a_unix_path() {
        let base = std::env::temp_dir().join(format!("veil-socket-test-{}", std::process::id()));
        let deep = base.join("d".repeat(120));
        std::fs::create_dir_all(&deep).unwrap();
        let shallow = super::socket_path(&base, "relay.sock").unwrap();
        assert_eq!(shallow, std::fs::canonicalize(&base).unwrap().join("relay.sock"));
        let moved = super::socket_path(&deep, "relay.sock").unwrap();
        assert!(moved.as_os_str().len() <= 107, "{}", moved.display());
        assert!(moved.parent().unwrap().is_dir());
        assert_eq!(super::socket_path(&deep, "relay.sock").unwrap(), moved, "the same run, the same socket");
        let other = base.join("e".repeat(120));
        std::fs::create_dir_all(&other).unwrap();
        assert_ne!(super::socket_path(&other, "relay.sock").unwrap(), moved, "another run, another socket");
        let _ = std::fs::remove_dir_all(moved.parent().unwrap());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn the_last_stage_mark_is_found() {
        let log = "veil: t=10 stage=reset\nnoise\nveil: t=20 stage=memmap extra\nveil: refused\n";
        assert_eq!(last_stage(log), Some("memmap"));
        assert_eq!(last_stage("nothing"), None);
        let message = timed_out(Duration::from_secs(90), log);
        assert!(message.contains("after 90 s") && message.contains("stage=memmap;"), "{message}");
        assert!(message.ends_with("the last serial line: \"veil: refused\""), "{message}");
        assert!(timed_out(Duration::from_secs(1), "veil: t=3 stage=disk\n").ends_with("stage=disk"));
        assert_eq!(progress(""), "no stage= mark, the serial log is empty");
        assert_eq!(
            progress("[    1.0] Linux version\n"),
            "no stage= mark; the last serial line: \"[    1.0] Linux version\""
        );
    }

    #[test]
    fn run_dirs_are_distinct_and_emptied() {
        let a = run_dir("unit-a").unwrap();
        std::fs::write(a.join("left-over"), b"x").unwrap();
        let again = run_dir("unit-a").unwrap();
        assert_eq!(a, again);
        assert!(!again.join("left-over").exists());
        assert_ne!(run_dir("unit-b").unwrap(), a);
        assert_eq!(log_path("x").unwrap(), session_dir().unwrap().join("x.log"));
    }
}
