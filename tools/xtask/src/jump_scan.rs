//! Guest RAM at the jump to Linux (issue 29): QEMU starts paused with its gdbstub, a
//! breakpoint is set on the firmware's `jmp r8` into Linux (found in the ROM by its bytes,
//! after the stacks were zeroed), guest RAM is saved through the monitor when the CPU stops
//! there, and the guest goes on. [`check_handed_over_keys`] then asserts that each handed-over
//! key (the root volume's, the state disk's) occurs exactly once, as the data of its file in the
//! hand-off cpio inside the initrd that boot_params names, and nowhere else in RAM, raw or as hex.
//!
//! Nothing here uses the firmware's code: the breakpoint comes from the instruction bytes, the
//! initrd from the x86 boot protocol's fields of the zero page RSI points to, the file from the
//! newc cpio layout.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The end of `linux::jump`: `xor eax, eax; rep stosb` (the stacks zeroed), `xor ebp, ebp`,
/// the other general-purpose registers zeroed (ebx, edx, edi, r9d-r15d; issue 35), then
/// `jmp r8` (Linux's 64-bit entry). The breakpoint is on the `jmp`.
const JUMP_TAIL: [u8; 36] = [
    0x31, 0xC0, 0xF3, 0xAA, 0x31, 0xED, 0x31, 0xDB, 0x31, 0xD2, 0x31, 0xFF, 0x45, 0x31, 0xC9, 0x45, 0x31, 0xD2, 0x45,
    0x31, 0xDB, 0x45, 0x31, 0xE4, 0x45, 0x31, 0xED, 0x45, 0x31, 0xF6, 0x45, 0x31, 0xFF, 0x41, 0xFF, 0xE0,
];
const JMP_OFFSET: usize = 33;
/// Where the ROM's payload runs (linker/veilboot.ld FW_RAM): the ROM's first byte is there.
const FW_RAM: u64 = 0xA0_0000;

/// The guest-physical address of the firmware's jump into Linux in `rom`.
pub fn jump_address(rom: &Path) -> Result<u64> {
    let bytes = std::fs::read(rom)?;
    let hits: Vec<usize> = memchr::memmem::find_iter(&bytes, &JUMP_TAIL).collect();
    match hits[..] {
        [at] => Ok(FW_RAM + (at + JMP_OFFSET) as u64),
        _ => bail!("{}: the jump into Linux occurs {} times in the ROM (expected once)", rom.display(), hits.len()),
    }
}

/// A boot whose RAM is saved at the jump: the QEMU arguments to add, and the thread that
/// drives the gdbstub and the monitor.
pub struct JumpScan {
    /// `-S`, the gdbstub and the monitor on UNIX sockets.
    pub args: Vec<String>,
    dump: PathBuf,
    thread: JoinHandle<Result<Registers>>,
}

/// What the CPU held at the breakpoint, and the virtio devices then.
#[derive(Clone, Debug)]
struct Registers {
    rsi: u64,
    r8: u64,
    virtio: Vec<VirtioDevice>,
}

/// A virtio device as QEMU's monitor describes it (`info virtio`, `info virtio-status`).
#[derive(Clone, Debug, PartialEq)]
pub struct VirtioDevice {
    /// Its QOM path, e.g. /machine/peripheral-anon/device[0]/virtio-backend.
    pub path: String,
    /// virtio-blk, virtio-serial, ...
    pub kind: String,
    /// The device status bits the driver set (VIRTIO_CONFIG_S_DRIVER_OK, ...); none once reset.
    pub status: Vec<String>,
}

/// The guest RAM saved at the jump and the registers there.
pub struct AtJump {
    /// Guest-physical memory from 0.
    pub memory: Vec<u8>,
    /// The zero page (RSI at the jump).
    pub boot_params: u64,
    /// Linux's entry (R8).
    pub entry: u64,
    /// Every virtio device of the machine, as it was at the jump.
    pub virtio: Vec<VirtioDevice>,
}

impl JumpScan {
    /// Prepare a boot of `rom` named `name` with `ram` bytes of RAM (all below 4 GiB), its
    /// sockets and dump in `dir`; `timeout` bounds the wait for the jump.
    pub fn new(rom: &Path, name: &str, dir: &Path, ram: u64, timeout: Duration) -> Result<JumpScan> {
        let jump = jump_address(rom)?;
        // The sockets in a short directory of their own: a UNIX socket's path has at most 107
        // bytes, which a run directory in a deep checkout exceeds (connect then fails, and the
        // paused guest would wait out its whole time limit).
        let sockets = std::env::temp_dir().join(format!("veil-jump-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&sockets);
        std::fs::create_dir_all(&sockets).with_context(|| format!("creating {}", sockets.display()))?;
        let gdb = sockets.join("gdb.sock");
        let monitor = sockets.join("monitor.sock");
        for p in [&gdb, &monitor] {
            if p.as_os_str().len() > 100 {
                bail!("{}: too long for a UNIX socket's path (TMPDIR is too deep)", p.display());
            }
        }
        let dump = dir.join(format!("{name}.jump.mem"));
        let _ = std::fs::remove_file(&dump);
        let args = vec![
            "-S".to_string(),
            "-gdb".into(),
            format!("unix:{},server=on,wait=off", gdb.display()),
            "-monitor".into(),
            format!("unix:{},server=on,wait=off", monitor.display()),
        ];
        let timeout = crate::qemu::scaled(timeout)?;
        let d = dump.clone();
        let thread = std::thread::spawn(move || drive(&gdb, &monitor, &d, jump, ram, timeout));
        Ok(JumpScan { args, dump, thread })
    }

    /// Once QEMU has run: the RAM saved at the jump.
    pub fn finish(self) -> Result<AtJump> {
        let regs = self.thread.join().map_err(|_| anyhow::anyhow!("the gdbstub thread panicked"))??;
        let memory = std::fs::read(&self.dump).with_context(|| format!("reading {}", self.dump.display()))?;
        let _ = std::fs::remove_file(&self.dump);
        Ok(AtJump { memory, boot_params: regs.rsi, entry: regs.r8, virtio: regs.virtio })
    }
}

fn connect(path: &Path, deadline: Instant) -> Result<UnixStream> {
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => bail!("connecting to {}: {e}", path.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One GDB remote-protocol packet (`$data#checksum`), answered with its reply's data.
fn packet(s: &mut UnixStream, data: &str) -> Result<String> {
    let sum = data.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    write!(s, "${data}#{sum:02x}")?;
    reply(s)
}

/// The next packet from the stub (acknowledged), skipping `+` acks.
fn reply(s: &mut UnixStream) -> Result<String> {
    let mut byte = [0u8; 1];
    loop {
        s.read_exact(&mut byte).context("the gdbstub closed the connection")?;
        if byte[0] == b'$' {
            break;
        }
    }
    let mut data = Vec::new();
    loop {
        s.read_exact(&mut byte)?;
        if byte[0] == b'#' {
            break;
        }
        data.push(byte[0]);
    }
    let mut sum = [0u8; 2];
    s.read_exact(&mut sum)?;
    s.write_all(b"+")?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// Little-endian register `n` (8 bytes each) of a `g` reply.
fn register(g: &str, n: usize) -> Result<u64> {
    let hex = g.get(n * 16..n * 16 + 16).context("short register reply")?;
    let bytes = hex::decode(hex)?;
    Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
}

fn drive(gdb: &Path, monitor: &Path, dump: &Path, jump: u64, ram: u64, timeout: Duration) -> Result<Registers> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let connected = connect(gdb, deadline).and_then(|g| Ok((g, connect(monitor, deadline)?)));
    if let Some(dir) = gdb.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    let (mut g, mut m) = connected.inspect_err(|e| eprintln!("xtask: jump scan: {e:#}"))?;
    let r = stop_and_save(&mut g, &mut m, dump, jump, ram, timeout);
    if let Err(e) = &r {
        // Said now, not when the boot's time limit ends: the guest may be paused for good.
        eprintln!("xtask: jump scan: {e:#}; stopping QEMU");
        let _ = writeln!(m, "quit");
    }
    r
}

/// Break at `jump`, run the guest there, save `ram` bytes of its memory to `dump`, and let it go
/// on into Linux.
fn stop_and_save(
    g: &mut UnixStream,
    m: &mut UnixStream,
    dump: &Path,
    jump: u64,
    ram: u64,
    timeout: Duration,
) -> Result<Registers> {
    let reply_to_break = packet(g, &format!("Z0,{jump:x},1"))?;
    if reply_to_break != "OK" {
        bail!("the gdbstub answered {reply_to_break:?} to a breakpoint at {jump:#x}, not OK");
    }
    g.write_all(b"$c#63")?;
    g.set_read_timeout(Some(timeout))?;
    let stop = reply(g).with_context(|| format!("waiting {} s for the jump into Linux", timeout.as_secs()))?;
    g.set_read_timeout(None)?;
    if !stop.starts_with('T') && !stop.starts_with('S') {
        bail!("the gdbstub stopped with {stop:?}, not at the breakpoint");
    }
    // x86-64 `g` layout: rax rbx rcx rdx rsi rdi rbp rsp r8..r15 rip ...
    let regs = packet(g, "g")?;
    let rip = register(&regs, 16)?;
    if rip != jump {
        bail!("stopped at {rip:#x}, not at the jump into Linux ({jump:#x})");
    }
    m.set_read_timeout(Some(Duration::from_secs(120)))?;
    crate::qemu::pmemsave(m, ram, dump)?;
    let r = Registers { rsi: register(&regs, 4)?, r8: register(&regs, 8)?, virtio: virtio_devices(m)? };
    // Detaching removes the breakpoint and lets the guest run on into Linux.
    packet(g, &format!("z0,{jump:x},1"))?;
    packet(g, "D")?;
    Ok(r)
}

/// Every virtio device QEMU has, with its status bits.
fn virtio_devices(m: &mut UnixStream) -> Result<Vec<VirtioDevice>> {
    let list = crate::qemu::monitor_command(m, "info virtio")?;
    let mut devices = Vec::new();
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (path, kind) = line
            .split_once(" [")
            .and_then(|(p, k)| Some((p, k.strip_suffix(']')?)))
            .with_context(|| format!("`info virtio` line {line:?}"))?;
        let answer = crate::qemu::monitor_command(m, &format!("info virtio-status {path}"))?;
        let status = status_bits(&answer).with_context(|| format!("`info virtio-status {path}`: {answer:?}"))?;
        devices.push(VirtioDevice { path: path.to_string(), kind: kind.to_string(), status });
    }
    Ok(devices)
}

/// The names of the status bits in QEMU 7.2's `info virtio-status` answer (hmp_virtio_dump_status):
/// the tab-indented lines under `status:`, and `unknown-statuses(...)` for bits it has no name
/// for; none when the device is reset (an empty line, then `Guest features:`). None when the
/// answer has no `status:` or anything else stands under it: a QEMU that prints it another way
/// must fail this check, not pass it.
fn status_bits(answer: &str) -> Option<Vec<String>> {
    let mut lines = answer.lines().skip_while(|l| l.trim() != "status:");
    lines.next()?;
    let mut bits = Vec::new();
    for line in lines {
        if let Some(bit) = line.strip_prefix('\t') {
            bits.push(bit.split(':').next().unwrap_or("").trim().to_string());
        } else if line.trim_start().starts_with("unknown-statuses") {
            bits.push(line.trim().to_string());
        } else if line.trim().is_empty() || line.trim_start().starts_with("Guest features:") {
            return Some(bits);
        } else {
            return None;
        }
    }
    None
}

/// Every virtio device must be reset at the jump into Linux (status 0): a device still live
/// has its queues in memory that is now Linux's, which the host goes on reading and writing.
/// `expected` names the kinds the boot drove (a kind twice for two devices), all of which QEMU
/// must list.
pub fn check_devices_reset(at: &AtJump, expected: &[&str]) -> Result<()> {
    for kind in expected {
        let want = expected.iter().filter(|k| k == &kind).count();
        let have = at.virtio.iter().filter(|d| d.kind == *kind).count();
        if have < want {
            bail!(
                "QEMU listed {have} {kind} device(s) at the jump into Linux, this boot has {want}: {:?}",
                at.virtio.iter().map(|d| &d.path).collect::<Vec<_>>()
            );
        }
    }
    for d in &at.virtio {
        if !d.status.is_empty() {
            bail!(
                "the {} at {} is still live at the jump into Linux (status {}): its queues are in memory Linux \
                 now owns",
                d.kind,
                d.path,
                d.status.join(", ")
            );
        }
    }
    Ok(())
}

/// Where the file `name` of a newc cpio lies in `memory[range]`: the offset of its data and
/// its size, for each entry of that name.
fn cpio_files(memory: &[u8], (start, end): (usize, usize), name: &str) -> Vec<(usize, usize)> {
    let mut needle = name.as_bytes().to_vec();
    needle.push(0);
    let mut out = Vec::new();
    for at in memchr::memmem::find_iter(&memory[start..end], &needle).map(|i| start + i) {
        // The name follows the 110-byte header ("070701" and 13 hex fields).
        let Some(h) = at.checked_sub(110) else { continue };
        let field = |n: usize| {
            std::str::from_utf8(&memory[h + 6 + 8 * n..h + 14 + 8 * n])
                .ok()
                .and_then(|f| u32::from_str_radix(f, 16).ok())
        };
        if &memory[h..h + 6] != b"070701" || field(11) != Some(needle.len() as u32) {
            continue;
        }
        let Some(size) = field(6) else { continue };
        let data = (at + needle.len()).next_multiple_of(4);
        out.push((data, size as usize));
    }
    out
}

fn u32_at(m: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(m.get(at..at + 4).context("boot_params out of the dump")?.try_into().expect("4")))
}

/// Each of `keys` (name, bytes, the hand-off file that carries it) must occur in RAM exactly
/// once, raw, as the data of its file in the hand-off cpio inside the initrd the zero page
/// names, and never as hex.
pub fn check_handed_over_keys(at: &AtJump, keys: &[(&str, &[u8], &str)]) -> Result<()> {
    let m = &at.memory;
    let bp = usize::try_from(at.boot_params)?;
    // struct boot_params: hdr.ramdisk_image at 0x218, hdr.ramdisk_size at 0x21c,
    // ext_ramdisk_image at 0xc0, ext_ramdisk_size at 0xc4.
    let initrd = u64::from(u32_at(m, bp + 0x218)?) | u64::from(u32_at(m, bp + 0xc0)?) << 32;
    let size = u64::from(u32_at(m, bp + 0x21c)?) | u64::from(u32_at(m, bp + 0xc4)?) << 32;
    let range = (usize::try_from(initrd)?, usize::try_from(initrd + size)?);
    if range.0 == 0 || range.1 > m.len() {
        bail!("the zero page at {:#x} names no initrd within RAM ({initrd:#x}, {size} bytes)", at.boot_params);
    }
    for (name, key, file) in keys {
        let hex_lower = hex::encode(key);
        for needle in [hex_lower.as_bytes(), hex_lower.to_uppercase().as_bytes()] {
            if let Some(i) = memchr::memmem::find(m, needle) {
                bail!("guest RAM at the jump into Linux holds the {name} as hex at {i:#x}");
            }
        }
        let found: Vec<usize> = memchr::memmem::find_iter(m, key).collect();
        let files = cpio_files(m, range, file);
        let [(data, len)] = files[..] else {
            bail!("the initrd at {initrd:#x} holds {} hand-off files named {file} (expected one)", files.len());
        };
        if len != key.len() || found != [data] {
            let list: Vec<String> = found.iter().map(|i| format!("{i:#x}")).collect();
            bail!(
                "guest RAM at the jump into Linux holds the {name} at [{}]; only the hand-off file {file} at {data:#x} \
                 ({len} bytes, in the initrd at {initrd:#x}) may hold it",
                list.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's `info virtio-status` of a live virtio-blk (as SeaBIOS leaves it) and of a
    /// reset virtio-serial.
    #[test]
    fn a_live_virtio_device_at_the_jump_is_refused() {
        let live = "/machine/peripheral-anon/device[0]/virtio-backend:\n  device_name:             virtio-blk \n  \
            started:                 true\n  status:\n\tVIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found,\n\
            \tVIRTIO_CONFIG_S_DRIVER: Guest OS compatible with device,\n\tVIRTIO_CONFIG_S_FEATURES_OK: Feature \
            negotiation complete,\n\tVIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready\n  Guest features:\n\
            \tVIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)\n";
        let reset = "/machine/peripheral-anon/device[1]/virtio-backend:\n  endianness:              little\n  \
            status:\n\n  Guest features:\n\n  Host features:\n\tVIRTIO_RING_F_EVENT_IDX: Used & avail.\n";
        let bits = status_bits(live).unwrap();
        assert_eq!(bits[0], "VIRTIO_CONFIG_S_ACKNOWLEDGE");
        assert_eq!(bits[3], "VIRTIO_CONFIG_S_DRIVER_OK");
        assert_eq!(bits.len(), 4);
        assert_eq!(status_bits(reset), Some(Vec::new()));
        assert_eq!(status_bits("no such device"), None);
        // Bits QEMU cannot name are still bits; a layout it never printed is no verdict.
        let unknown = "  status:\n  unknown-statuses(0x0000000000000040)\n  Guest features:\n";
        assert_eq!(status_bits(unknown).unwrap().len(), 1);
        assert_eq!(status_bits("  status:\n    VIRTIO_CONFIG_S_DRIVER_OK: ready\n  Guest features:\n"), None);
        assert_eq!(status_bits("  status:\n"), None, "cut short");
        let device =
            |kind: &str, status: Vec<String>| VirtioDevice { path: format!("/{kind}"), kind: kind.into(), status };
        let mut at = AtJump { memory: Vec::new(), boot_params: 0, entry: 0, virtio: Vec::new() };
        let e = check_devices_reset(&at, &["virtio-blk"]).unwrap_err().to_string();
        assert!(e.contains("listed 0 virtio-blk"), "{e}");
        at.virtio = vec![device("virtio-blk", Vec::new()), device("virtio-serial", Vec::new())];
        check_devices_reset(&at, &["virtio-blk", "virtio-serial"]).unwrap();
        let e = check_devices_reset(&at, &["virtio-blk", "virtio-blk"]).unwrap_err().to_string();
        assert!(e.contains("listed 1 virtio-blk device(s) at the jump into Linux, this boot has 2"), "{e}");
        at.virtio[1].status = bits;
        let e = check_devices_reset(&at, &["virtio-blk"]).unwrap_err().to_string();
        assert!(e.contains("virtio-serial at /virtio-serial is still live") && e.contains("DRIVER_OK"), "{e}");
    }

    #[test]
    fn a_key_is_allowed_only_as_its_hand_off_file() {
        let key = [0x5Au8; 32];
        let mut archive = veil_agent::cpio::CpioWriter::new();
        archive.dir("cryptroot", 0o700).file("cryptroot/keyfiles/veil-root.key", 0o400, &key);
        let archive = archive.finish();
        let mut memory = vec![0u8; 0x10000];
        let (bp, initrd) = (0x1000usize, 0x4000usize);
        memory[initrd..initrd + archive.len()].copy_from_slice(&archive);
        memory[bp + 0x218..bp + 0x21c].copy_from_slice(&(initrd as u32).to_le_bytes());
        memory[bp + 0x21c..bp + 0x220].copy_from_slice(&(archive.len() as u32).to_le_bytes());
        let keys = [("root key", &key[..], "cryptroot/keyfiles/veil-root.key")];
        let at = AtJump { memory: memory.clone(), boot_params: bp as u64, entry: 0, virtio: Vec::new() };
        check_handed_over_keys(&at, &keys).unwrap();
        // A copy elsewhere (the stack, the heap) fails; so does a hex copy.
        let mut stray = memory.clone();
        stray[0x9000..0x9020].copy_from_slice(&key);
        let err = check_handed_over_keys(
            &AtJump { memory: stray, boot_params: bp as u64, entry: 0, virtio: Vec::new() },
            &keys,
        );
        assert!(err.unwrap_err().to_string().contains("0x9000"));
        let mut hexed = memory;
        hexed[0x9000..0x9040].copy_from_slice(hex::encode(key).as_bytes());
        assert!(
            check_handed_over_keys(
                &AtJump { memory: hexed, boot_params: bp as u64, entry: 0, virtio: Vec::new() },
                &keys
            )
            .is_err()
        );
    }
}
