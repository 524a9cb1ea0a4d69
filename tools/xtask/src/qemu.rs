//! Booting the ROM in QEMU (TCG) and checking what it printed on the serial console.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// One finished run.
pub struct Run {
    /// QEMU's exit code (None if it had to be killed).
    pub code: Option<i32>,
    /// The serial log.
    pub log: String,
    /// Where the log is.
    pub log_path: PathBuf,
}

/// Boot with extra arguments; kill QEMU after `timeout`.
pub fn boot(rom: &Path, name: &str, extra: &[String], timeout: Duration) -> Result<Run> {
    let dir = rom.parent().unwrap().join("qemu-runs");
    std::fs::create_dir_all(&dir)?;
    let log_path = dir.join(format!("{name}.log"));
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
    let code = loop {
        if let Some(status) = child.try_wait()? {
            break status.code();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let log = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
    Ok(Run { code, log, log_path })
}

impl Run {
    /// Fail with the log if `needle` is not in it.
    pub fn expect(&self, needle: &str) -> Result<&Self> {
        if !self.log.contains(needle) {
            bail!("expected `{needle}` in the serial log {}:\n{}", self.log_path.display(), self.log);
        }
        Ok(self)
    }

    /// Fail with the log unless QEMU exited with `code`.
    pub fn expect_exit(&self, code: i32) -> Result<&Self> {
        if self.code != Some(code) {
            bail!(
                "QEMU exited with {:?}, expected {code}; serial log {}:\n{}",
                self.code,
                self.log_path.display(),
                self.log
            );
        }
        Ok(self)
    }
}
