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
    // A monitor of our own (beside any the test brings: QEMU opens one per -monitor): a boot
    // killed at its limit says where the CPU was (a hang in Linux leaves nothing on a quiet
    // console to say it).
    let monitor = socket_path(session_dir()?, &format!("{name}.monitor"))?;
    let at = args.iter().position(|a| a == "-monitor").context("base_args has -monitor")?;
    args[at + 1] = format!("unix:{},server=on,wait=off", monitor.display());
    for stale in ["cpu.txt", "dmesg.txt"] {
        let _ = std::fs::remove_file(log_path.with_extension(stale));
    }
    args.extend(extra.iter().cloned());
    // QEMU's own messages go to a file beside the log: a pipe nobody reads would stop QEMU
    // at its first 64 KiB of warnings, and they say what went wrong on the host's side.
    let stderr_path = log_path.with_extension("stderr.txt");
    let stderr = File::create(&stderr_path).with_context(|| format!("creating {}", stderr_path.display()))?;
    let mut child = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let start = Instant::now();
    let (code, killed_after) = loop {
        if let Some(status) = child.try_wait()? {
            break (status.code(), None);
        }
        if start.elapsed() > timeout {
            save_cpu_state(&monitor, &log_path.with_extension("cpu.txt"));
            // Linux was running: its log is in its memory even when `quiet` kept it off the
            // console.
            let log = std::fs::read(&log_path).unwrap_or_default();
            if memchr::memmem::find(&log, b"stage=handoff").is_some() {
                save_kernel_log(&monitor, guest_ram(&args), &log_path.with_extension("dmesg.txt"));
            }
            let _ = child.kill();
            let _ = child.wait();
            break (None, Some(timeout));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = std::fs::remove_file(&monitor);
    let log = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
    if let Some(t) = killed_after {
        eprintln!("xtask: {name}: {}", timed_out(t, &log));
        let said = qemu_said(&log_path);
        if !said.is_empty() {
            eprintln!("xtask: {name}: {said}");
        }
        let cpu = log_path.with_extension("cpu.txt");
        if let Ok(dmesg) = std::fs::read_to_string(log_path.with_extension("dmesg.txt")) {
            let lines: Vec<&str> = dmesg.lines().collect();
            eprintln!("xtask: {name}: the end of Linux's log, read from guest memory:\n{}", last(&lines, 40));
        }
        match std::fs::read_to_string(&cpu) {
            Ok(state) => {
                // The general registers, CR0-CR4 and the instructions at RIP of each sample; the
                // file has the rest (segments, FPU and vector registers).
                let keep = ["CPU#", "RAX=", "RSI=", "R8 =", "R12=", "RIP=", "EIP=", "CR0=", "0x", "(qemu) info"];
                let brief: Vec<&str> = state.lines().filter(|l| keep.iter().any(|k| l.starts_with(k))).collect();
                eprintln!("xtask: {name}: the CPU when QEMU was killed ({}):\n{}", cpu.display(), brief.join("\n"))
            }
            Err(_) => eprintln!("xtask: {name}: the monitor did not give the CPU's state"),
        }
    }
    Ok(Run { code, killed_after, log, log_path })
}

/// What QEMU wrote on stderr during the boot whose serial log is `log_path` (its
/// `.stderr.txt`), without the socket chardev's "waiting for connection" notice.
pub fn host_messages(log_path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log_path.with_extension("stderr.txt")).unwrap_or_default();
    text.lines().filter(|l| !l.contains("info: QEMU waiting for connection")).map(String::from).collect()
}

/// "QEMU said (<file>): <its last messages>", or "" when [`host_messages`] has none.
fn qemu_said(log_path: &Path) -> String {
    let messages = host_messages(log_path);
    let lines: Vec<&str> = messages.iter().map(String::as_str).collect();
    match lines.is_empty() {
        true => String::new(),
        false => format!("QEMU said ({}):\n{}", log_path.with_extension("stderr.txt").display(), last(&lines, 20)),
    }
}

/// The last `n` of `lines`, one per line.
fn last(lines: &[&str], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A human-monitor transcript without its line editor's echo: the monitor redraws a command
/// after each typed character (`i ESC[K ESC[D in ...`); only the last drawing is kept.
fn without_echo(transcript: &str) -> String {
    let lines = transcript.split('\n').map(|line| {
        let line = line.trim_end_matches('\r');
        match line.rsplit_once("\x1b[D") {
            Some((_, typed)) => format!("(qemu) {}", typed.replace("\x1b[K", "")),
            None => line.replace("\x1b[K", ""),
        }
    });
    lines.collect::<Vec<_>>().join("\n")
}

/// The instruction pointer and halt flag of each CPU in each `info registers` answer of a
/// monitor transcript, e.g. "CPU#0 RIP=ffffffff81e2d2c4 HLT=1, CPU#1 RIP=ffffffff81e2d2c4 HLT=1".
pub fn cpu_summary(state: &str) -> String {
    let field = |line: &str, key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).map(str::to_string);
    let mut cpu = "CPU#?";
    let mut samples = Vec::new();
    for line in state.lines() {
        if line.starts_with("CPU#") {
            cpu = line.trim();
        } else if line.starts_with("RIP=") || line.starts_with("EIP=") {
            let (ip, at) = line.split_at(3);
            let at = field(at, "=").unwrap_or_default();
            samples.push(format!("{cpu} {ip}={at} HLT={}", field(line, "HLT=").unwrap_or_else(|| "?".into())));
        }
    }
    samples.join(", ")
}

impl Run {
    /// Fail with the log if `needle` is not in it.
    pub fn expect(&self, needle: &str) -> Result<&Self> {
        if !self.log.contains(needle) {
            bail!(
                "expected `{needle}` in the serial log {}{}:\n{}{}",
                self.log_path.display(),
                self.killed(),
                self.log,
                self.host_side()
            );
        }
        Ok(self)
    }

    /// Fail with the log unless QEMU exited with `code`.
    pub fn expect_exit(&self, code: i32) -> Result<&Self> {
        if self.code != Some(code) {
            bail!(
                "QEMU exited with {:?}, expected {code}{}; serial log {}:\n{}{}",
                self.code,
                self.killed(),
                self.log_path.display(),
                self.log,
                self.host_side()
            );
        }
        Ok(self)
    }
}

impl Run {
    /// What QEMU itself said, after a line break, if it said anything worth reading.
    fn host_side(&self) -> String {
        let said = qemu_said(&self.log_path);
        if said.is_empty() { said } else { format!("\n{said}") }
    }

    /// ", <why it was killed and how far it got>" for a killed boot, else "".
    fn killed(&self) -> String {
        let cpu = std::fs::read_to_string(self.log_path.with_extension("cpu.txt")).map(|s| cpu_summary(&s));
        let cpu = match cpu {
            Ok(c) if !c.is_empty() => format!("; the CPU then: {c}"),
            _ => String::new(),
        };
        self.killed_after.map(|t| format!(" ({}{cpu})", timed_out(t, &self.log))).unwrap_or_default()
    }
}

/// Send `command` to the human monitor `m` and return its answer, without the echo and the
/// next prompt. The answer is framed by the command's own echo (the line editor draws the
/// whole line last), so a banner or prompt not yet read before it is skipped.
pub fn monitor_command(m: &mut std::os::unix::net::UnixStream, command: &str) -> Result<String> {
    use std::io::{Read, Write};
    writeln!(m, "{command}")?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // The answer starts after the line break that ends the echo, and ends with the prompt.
        let answer = memchr::memmem::find(&seen, command.as_bytes())
            .and_then(|at| memchr::memchr(b'\n', &seen[at..]).map(|nl| at + nl + 1))
            .filter(|&from| seen[from..].ends_with(b"(qemu) "));
        if let Some(from) = answer {
            return Ok(without_echo(&String::from_utf8_lossy(&seen[from..seen.len() - b"(qemu) ".len()])));
        }
        let n = m.read(&mut buf).with_context(|| format!("the monitor's answer to {command:?}"))?;
        if n == 0 {
            bail!("the monitor closed before answering {command:?}");
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Ask the human monitor on `sock` for every CPU's registers and the instructions at the first's RIP,
/// three times a quarter second apart (a loop and a halt look different), and write the
/// answers to `out`. Best effort: a monitor that does not answer within seconds is left.
fn save_cpu_state(sock: &Path, out: &Path) {
    let ask = || -> Result<String> {
        let mut m = std::os::unix::net::UnixStream::connect(sock)?;
        m.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut transcript = String::new();
        for round in 0..3 {
            if round > 0 {
                std::thread::sleep(Duration::from_millis(250));
            }
            for command in ["info registers -a", "x/4i $pc"] {
                let answer = monitor_command(&mut m, command)?;
                transcript.push_str(&format!("(qemu) {command}\n{answer}"));
            }
        }
        Ok(transcript)
    };
    if let Ok(state) = ask() {
        let _ = std::fs::write(out, state);
    }
}

/// The guest RAM `-m` gives (QEMU's default suffix is MiB), or QEMU's default of 128 MiB.
fn guest_ram(args: &[String]) -> u64 {
    let m = args.iter().rposition(|a| a == "-m").and_then(|i| args.get(i + 1));
    let m = m.map(|v| v.split(',').next().unwrap_or("").trim().to_ascii_uppercase());
    let parse = |v: &str| -> Option<u64> {
        let (digits, shift) = match v.as_bytes().last()? {
            b'G' => (&v[..v.len() - 1], 30),
            b'M' => (&v[..v.len() - 1], 20),
            b'K' => (&v[..v.len() - 1], 10),
            _ => (v, 20),
        };
        digits.parse::<u64>().ok().map(|n| n << shift)
    };
    m.as_deref().and_then(parse).unwrap_or(128 << 20)
}

/// Linux's log as it lies in a dump of guest RAM: the printk ring's text follows the record
/// "Linux version ..." (the one that "Command line: " soon follows; the banner in .rodata has
/// no such neighbour), one record after another, each behind its binary id. The printable runs
/// from there up to the first long stretch of zeros, one per line; None when there is no log.
pub fn kernel_log_in(ram: &[u8]) -> Option<String> {
    let start = memchr::memmem::find_iter(ram, b"Linux version ").find(|&at| {
        let near = &ram[at..ram.len().min(at + 4096)];
        memchr::memmem::find(near, b"Command line: ").is_some()
    })?;
    let mut lines = Vec::new();
    let mut run = String::new();
    let mut zeros = 0;
    for &b in ram[start..].iter().take(4 << 20) {
        zeros = if b == 0 { zeros + 1 } else { 0 };
        if zeros >= 4096 {
            break;
        }
        if b == b'\t' || (0x20..0x7f).contains(&b) {
            run.push(b as char);
        } else if b == b'\n' {
            // A record's own line breaks (and a dev_printk's dictionary) stay lines.
            lines.push(std::mem::take(&mut run));
        } else {
            if run.len() >= 3 {
                lines.push(std::mem::take(&mut run));
            }
            run.clear();
        }
    }
    if run.len() >= 3 {
        lines.push(run);
    }
    Some(lines.join("\n"))
}

/// Save guest RAM (the first `ram` bytes, at most 2 GiB) through the monitor on `sock`, and
/// write Linux's log found in it to `out`; the dump itself is deleted. Best effort.
fn save_kernel_log(sock: &Path, ram: u64, out: &Path) {
    let dump = out.with_extension("ram");
    let saved = std::os::unix::net::UnixStream::connect(sock).map_err(anyhow::Error::from).and_then(|mut m| {
        m.set_read_timeout(Some(Duration::from_secs(60)))?;
        pmemsave(&mut m, ram.min(2 << 30), &dump)
    });
    if saved.is_ok()
        && let Some(text) = mapped(&dump, kernel_log_in)
    {
        let _ = std::fs::write(out, text);
    }
    let _ = std::fs::remove_file(&dump);
}

/// `f` of the file at `path`, mapped read-only (a guest's RAM need not be copied into ours);
/// None when it cannot be mapped.
fn mapped<T>(path: &Path, f: impl FnOnce(&[u8]) -> Option<T>) -> Option<T> {
    use std::os::fd::AsRawFd;
    let file = File::open(path).ok()?;
    let len = usize::try_from(file.metadata().ok()?.len()).ok().filter(|&l| l > 0)?;
    // SAFETY: a private read-only mapping of a file we just wrote and nobody else changes;
    // unmapped below, after its last use.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `p` maps `len` readable bytes until the munmap below.
    let r = f(unsafe { std::slice::from_raw_parts(p as *const u8, len) });
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(p, len) };
    r
}

/// Save `len` bytes of guest RAM from address 0 to `dump` through the QEMU monitor `m` (a
/// human monitor on a UNIX socket), and wait until it is written: the prompt after the
/// command's answer means the file is complete.
pub fn pmemsave(m: &mut std::os::unix::net::UnixStream, len: u64, dump: &Path) -> Result<()> {
    // Quoted: the monitor would read an unquoted `/` after the size as a division.
    let answer = monitor_command(m, &format!("pmemsave 0 {len:#x} \"{}\"", dump.display()))?;
    if !answer.trim().is_empty() {
        bail!("pmemsave to {}: {}", dump.display(), answer.trim());
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

    /// QEMU 7.2's answer to `info registers` and `x/4i $pc`, echo and all (SeaBIOS halted).
    #[test]
    fn a_monitor_transcript_gives_where_the_cpu_was() {
        let transcript = "QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) i\x1b[K\x1b[Din\x1b[K\
            \x1b[D\x1b[Dinfo registers\x1b[K\r\n\r\nCPU#0\r\nEAX=00000000 EBX=00000000\r\n\
            EIP=0000b7b9 EFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\nCR0=00000010\r\n\
            (qemu) x\x1b[K\x1b[Dx/4i $pc\x1b[K\r\n0x000fb7b9:  fa   cli\r\n(qemu) i\x1b[K\
            \x1b[Dinfo registers\x1b[K\r\nRIP=ffffffff81e2d2c4 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n";
        let clean = without_echo(transcript);
        assert!(clean.contains("\n(qemu) info registers\n\nCPU#0\n"), "{clean:?}");
        assert!(clean.contains("\n(qemu) x/4i $pc\n0x000fb7b9:"), "{clean:?}");
        assert!(!clean.contains('\x1b') && !clean.contains('\r'), "{clean:?}");
        assert_eq!(cpu_summary(&clean), "CPU#0 EIP=0000b7b9 HLT=1, CPU#0 RIP=ffffffff81e2d2c4 HLT=0");
        let two = "CPU#0\nRIP=ffffffff81000000 RFL=00000246 HLT=0\nCPU#1\nRIP=ffffffff81000010 RFL=00000246 HLT=1\n";
        assert_eq!(cpu_summary(two), "CPU#0 RIP=ffffffff81000000 HLT=0, CPU#1 RIP=ffffffff81000010 HLT=1");
        assert_eq!(cpu_summary("no registers"), "");
    }

    /// A monitor as QEMU 7.2 answers: banner and prompt first, the typed line redrawn per
    /// character, the answer in pieces. The answer is what lies between the echo and the next
    /// prompt, whether or not the banner was read before; a monitor that closes is an error.
    #[test]
    fn a_monitor_command_gets_its_own_answer() {
        use std::io::{BufRead, Write};
        let (mut ours, qemu) = std::os::unix::net::UnixStream::pair().unwrap();
        let fake = std::thread::spawn(move || {
            let mut w = qemu.try_clone().unwrap();
            w.write_all(b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) ").unwrap();
            let mut lines = std::io::BufReader::new(qemu).lines();
            let typed = lines.next().unwrap().unwrap();
            assert_eq!(typed, "info virtio");
            w.write_all(b"i\x1b[K\x1b[Din\x1b[K\x1b[D\x1b[Dinfo virtio\x1b[K\r\n\r\n/machine/peripheral-anon/")
                .unwrap();
            w.write_all(b"device[0]/virtio-backend [virtio-blk]\r\n(qemu) ").unwrap();
            assert_eq!(lines.next().unwrap().unwrap(), "pmemsave 0 0x1000 \"/nowhere/dump\"");
            w.write_all(b"pmemsave 0 0x1000 \"/nowhere/dump\"\x1b[K\r\nCould not open '/nowhere/dump'\r\n(qemu) ")
                .unwrap();
            assert_eq!(lines.next().unwrap().unwrap(), "info registers -a");
        });
        assert_eq!(
            monitor_command(&mut ours, "info virtio").unwrap(),
            "\n/machine/peripheral-anon/device[0]/virtio-backend [virtio-blk]\n"
        );
        let e = pmemsave(&mut ours, 0x1000, Path::new("/nowhere/dump")).unwrap_err().to_string();
        assert_eq!(e, "pmemsave to /nowhere/dump: Could not open '/nowhere/dump'");
        let e = monitor_command(&mut ours, "info registers -a").unwrap_err().to_string();
        assert!(e.contains("the monitor closed before answering"), "{e}");
        fake.join().unwrap();
    }

    /// A printk ring as Linux 6.1 lays it out (an 8-byte id before each record's text, blocks
    /// padded to 8 bytes), behind the .rodata banner that has no log after it.
    #[test]
    fn linux_log_is_read_from_guest_memory() {
        let mut ram = vec![0u8; 1 << 16];
        ram[100..100 + 28].copy_from_slice(b"Linux version 6.1.0 (rodata)");
        let mut at = 20_000;
        for (id, text) in [
            (1u64, &b"Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org)"[..]),
            (2, b"Command line: console=ttyS0 panic=-1 quiet"),
            (3, b"smpboot: CPU0: Intel QEMU TCG CPU"),
        ] {
            ram[at..at + 8].copy_from_slice(&id.to_le_bytes());
            ram[at + 8..at + 8 + text.len()].copy_from_slice(text);
            at = (at + 8 + text.len()).next_multiple_of(8);
        }
        let log = kernel_log_in(&ram).unwrap();
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [
                "Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org)",
                "Command line: console=ttyS0 panic=-1 quiet",
                "smpboot: CPU0: Intel QEMU TCG CPU"
            ]
        );
        assert!(kernel_log_in(&ram[..20_000]).is_none(), "the banner alone is no log");
        // As save_kernel_log reads a dump: mapped from its file.
        let dump = std::env::temp_dir().join(format!("veil-dmesg-test-{}.ram", std::process::id()));
        std::fs::write(&dump, &ram).unwrap();
        assert_eq!(mapped(&dump, kernel_log_in).as_deref(), Some(log.as_str()));
        std::fs::write(&dump, b"").unwrap();
        assert_eq!(mapped(&dump, kernel_log_in), None, "an empty dump");
        let _ = std::fs::remove_file(&dump);
        assert_eq!(guest_ram(&["-m".into(), "512M".into()]), 512 << 20);
        assert_eq!(guest_ram(&["-m".into(), "2G".into(), "-m".into(), "1024".into()]), 1 << 30);
        assert_eq!(guest_ram(&[]), 128 << 20);
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
