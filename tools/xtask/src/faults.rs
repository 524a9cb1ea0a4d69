//! Power cuts during the firmware's writes (`cargo xtask test faults`): QEMU is SIGKILLed at
//! swept points around the seal into `veil-boot` and around the state-disk format, header
//! copies are torn by hand, and the next boot's outcome is asserted for each case and printed
//! as a table (cut, what the disk held, booted, needed the broker, bricked).
//!
//! The points are the virtio-blk requests themselves, seen through QEMU's trace events
//! (`virtio_blk_handle_write` when a write is taken, `virtio_blk_req_complete` when any
//! request completes: a completion with no read or write behind it is a flush): QEMU is killed
//! the moment the trace line arrives, so the guest may or may not have got further; what
//! the disk then holds is read back and shown. A SIGKILL loses nothing QEMU already handed
//! the host kernel: the torn copies a host power cut with a writeback cache leaves are built
//! by hand. The same trace checks the flushes: every write the firmware makes is followed by a
//! flush before its next one.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use veil_agent::luks2::{BIN_LEN, BinaryHeader, Volume};

use crate::{DemoDisk, demo_image, qemu, tpm_test};

/// One write-side virtio-blk event, in the order QEMU traced them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Io {
    /// A write of `sectors` 512-byte sectors at `sector` was taken.
    Write { disk: usize, sector: u64, sectors: u64 },
    /// That write completed.
    WriteDone { disk: usize },
    /// A flush completed.
    FlushDone { disk: usize },
}

/// Where a run is cut.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// When the serial log first shows this.
    Serial(&'static str),
    /// At the nth (from 1) write-side event.
    Io(usize),
}

/// How a run ended.
struct Ran {
    log: String,
    io: Vec<Io>,
    /// The cut happened (QEMU was SIGKILLed there).
    cut: bool,
}

/// Parse one trace line (`[pid@time:]event vdev P req P rest`) into (event, vdev, req, rest).
fn trace_line(line: &str) -> Option<(&str, &str, &str, &str)> {
    let body = line.rsplit(':').next()?;
    let (event, rest) = body.split_once(" vdev ")?;
    let (vdev, rest) = rest.split_once(" req ")?;
    let (req, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((event, vdev, req, rest))
}

fn field(rest: &str, name: &str) -> Option<u64> {
    rest.split_whitespace().skip_while(|w| *w != name).nth(1)?.parse().ok()
}

/// Follow QEMU's trace on `stderr`: the write-side events in order (and the lines that are
/// not trace events). At the `nth` event QEMU is SIGKILLed from here, as soon as its line is
/// read, so the guest gets as little further as the host's scheduling allows.
fn follow(stderr: ChildStderr, child: Arc<Mutex<Child>>, nth: Option<usize>) -> (Vec<Io>, bool, String) {
    let mut disks: Vec<String> = Vec::new();
    let mut pending: HashMap<String, bool> = HashMap::new();
    let (mut io, mut killed, mut other) = (Vec::new(), false, String::new());
    for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
        let Some((event, vdev, req, rest)) = trace_line(&line) else {
            other.push_str(&line);
            other.push('\n');
            continue;
        };
        let disk = disks.iter().position(|d| d == vdev).unwrap_or_else(|| {
            disks.push(vdev.to_string());
            disks.len() - 1
        });
        let event = match event.trim() {
            "virtio_blk_handle_write" => {
                pending.insert(req.to_string(), true);
                Some(Io::Write {
                    disk,
                    sector: field(rest, "sector").unwrap_or(0),
                    sectors: field(rest, "nsectors").unwrap_or(0),
                })
            }
            "virtio_blk_handle_read" => {
                pending.insert(req.to_string(), false);
                None
            }
            "virtio_blk_req_complete" => match pending.remove(req) {
                Some(true) => Some(Io::WriteDone { disk }),
                Some(false) => None,
                None => Some(Io::FlushDone { disk }),
            },
            _ => None,
        };
        if let Some(e) = event
            && !killed
        {
            io.push(e);
            if Some(io.len()) == nth {
                let _ = child.lock().map(|mut c| c.kill());
                killed = true;
            }
        }
    }
    (io, killed, other)
}

/// Boot `rom` with `args` (SIGKILL at `cut`, else at `stage=handoff`, when the firmware is
/// done writing, or when QEMU exits on its own).
fn run(rom: &Path, dir: &Path, name: &str, args: &[String], cut: Option<Cut>) -> Result<Ran> {
    let log_path = dir.join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log_path);
    let mut all = qemu::base_args(rom, &log_path);
    all.extend(["-accel", "tcg", "-cpu", "max"].map(String::from));
    for event in ["virtio_blk_handle_write", "virtio_blk_handle_read", "virtio_blk_req_complete"] {
        all.extend(["-trace".to_string(), event.to_string()]);
    }
    all.extend(args.iter().cloned());
    let mut child = Command::new("qemu-system-x86_64")
        .args(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stderr = child.stderr.take().context("QEMU's stderr")?;
    let child = Arc::new(Mutex::new(child));
    let nth = match cut {
        Some(Cut::Io(n)) => Some(n),
        _ => None,
    };
    let follower = {
        let child = child.clone();
        std::thread::spawn(move || follow(stderr, child, nth))
    };
    let kill = || {
        let _ = child.lock().map(|mut c| c.kill());
    };
    let limit = qemu::scaled(Duration::from_secs(300))?;
    let start = Instant::now();
    let mut serial_cut = false;
    loop {
        if child.lock().map_err(|_| anyhow::anyhow!("QEMU's handle"))?.try_wait()?.is_some() {
            break;
        }
        let log = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
        if let Some(Cut::Serial(needle)) = cut
            && log.contains(needle)
        {
            kill();
            serial_cut = true;
            break;
        }
        if log.contains("stage=handoff") {
            kill();
            break;
        }
        if start.elapsed() > limit {
            kill();
            bail!("{name}: {}; serial log {}:\n{log}", qemu::timed_out(limit, &log), log_path.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.lock().map(|mut c| c.wait());
    let (io, io_cut, other) = follower.join().map_err(|_| anyhow::anyhow!("the trace follower panicked"))?;
    let log = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
    if nth.is_some() && !io_cut {
        bail!("{name}: the run ended before its cut ({cut:?}) with {} write events: {io:?}\n{other}{log}", io.len());
    }
    Ok(Ran { log, io, cut: serial_cut || io_cut })
}

/// Every write is followed by its completion and then a completed flush before the next
/// write on the same disk: the firmware's writes are durable in order.
fn check_flushed(name: &str, io: &[Io]) -> Result<usize> {
    let mut writes = 0;
    let mut state: HashMap<usize, u8> = HashMap::new();
    for e in io {
        let (disk, expect, next) = match *e {
            Io::Write { disk, .. } => (disk, 0, 1),
            Io::WriteDone { disk } => (disk, 1, 2),
            Io::FlushDone { disk } => (disk, 2, 0),
        };
        let s = state.entry(disk).or_insert(0);
        if *s != expect {
            bail!("{name}: the firmware's writes are not each flushed before the next: {io:?}");
        }
        *s = next;
        writes += usize::from(matches!(e, Io::Write { .. }));
    }
    if state.values().any(|s| *s != 0) {
        bail!("{name}: the last write was not flushed: {io:?}");
    }
    Ok(writes)
}

/// What the two header copies of the LUKS2 volume at `start` of `image` hold: each copy's
/// sequence id, or why it is not valid.
fn copies(image: &Path, start: u64) -> Result<String> {
    let f = std::fs::File::open(image)?;
    let mut out = Vec::new();
    for (name, offset, secondary) in [("primary", 0u64, false), ("secondary", 0x4000, true)] {
        let mut raw = [0u8; BIN_LEN];
        f.read_exact_at(&mut raw, start + offset)?;
        let state = match BinaryHeader::parse(&raw, offset, secondary) {
            Err(e) => format!("{e}"),
            Ok(h) => {
                let mut area = vec![0u8; h.hdr_size as usize - BIN_LEN];
                f.read_exact_at(&mut area, start + offset + BIN_LEN as u64)?;
                match h.verify_checksum(&raw, &area) {
                    Ok(()) => format!("seqid {}", h.seqid),
                    Err(e) => format!("seqid {} {e}", h.seqid),
                }
            }
        };
        out.push(format!("{name} {state}"));
    }
    Ok(out.join(", "))
}

/// Both header copies of the volume at `start` are valid and equal (nothing stale is left).
fn consistent(image: &Path, start: u64, len: u64) -> Result<bool> {
    let mut f = std::fs::File::open(image)?;
    let mut win = veil_agent::io::Window { dev: &mut f, start, len };
    Ok(Volume::load(&mut win).is_ok_and(|v| !v.other_copy_stale))
}

/// One row of the table.
struct Row {
    case: String,
    left: String,
    booted: bool,
    broker: Option<bool>,
    note: String,
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| case | what the disk held after the cut | next boot | needed the broker | bricked | notes |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.case,
            r.left,
            if r.booted { "booted" } else { "stopped" },
            r.broker.map_or("-", |b| if b { "yes" } else { "no" }),
            if r.booted { "no" } else { "yes" },
            r.note
        ));
    }
    let kills = rows.iter().filter(|r| r.case.contains(": kill")).count();
    let booted = rows.iter().filter(|r| r.booted).count();
    let broker = rows.iter().filter(|r| r.broker == Some(true)).count();
    t.push_str(&format!(
        "\n{} cases ({kills} SIGKILLs): {booted} booted on the next try, {broker} of them through the broker, {} bricked.\n",
        rows.len(),
        rows.len() - booted
    ));
    t
}

/// Read `len` bytes at `offset` of `image`.
fn read_range(image: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    std::fs::File::open(image)?.read_exact_at(&mut b, offset)?;
    Ok(b)
}

fn write_range(image: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
    std::fs::OpenOptions::new().write(true).open(image)?.write_all_at(bytes, offset)?;
    Ok(())
}

/// `veil kbs relay` for one boot, and the QEMU arguments of its virtio-console.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay(veil: &Path, dir: &Path, broker: &tpm_test::KeyBroker) -> Result<(Relay, Vec<String>)> {
    let sock = qemu::socket_path(dir, "relay.sock")?;
    let child = Command::new(veil)
        .args(["kbs", "relay", "--socket"])
        .arg(&sock)
        .args(["--broker", &broker.url])
        .spawn()
        .context("starting veil kbs relay")?;
    Ok((Relay(child), qemu::relay_console_args(&sock)))
}

/// Copy the TPM state directory `from` to `to` (emptied first).
fn copy_state(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() && e.file_name() != "swtpm.sock" {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// The seal into veil-boot (release ROM, swtpm, the broker behind the relay): SIGKILLs swept
/// from the broker's release to after the "sealed" line, and hand-torn header copies.
fn seal_cases(disk: &DemoDisk, rom: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let DemoDisk { veil, dir, secret, image } = disk;
    let part = {
        let mut f = std::fs::File::open(image)?;
        veil_agent::gpt::Gpt::read(&mut f)?.by_name("veil-boot").context("veil-boot")?.clone()
    };
    let (start, len) = (part.offset(), part.size());
    let header_len = 2 * 0x4000usize;
    let pristine_header = read_range(image, start, header_len)?;
    let pristine_tpm = dir.join("faults-tpm-pristine");
    tpm_test::provision(&pristine_tpm)?;
    let tpm_dir = dir.join("faults-tpm");
    // The broker releases only to a registered TPM: this one's AK, read from a copy of its state.
    copy_state(&pristine_tpm, &tpm_dir)?;
    let broker = tpm_test::start_broker(veil, rom, image, secret, &tpm_dir, dir)?;
    let boot = |name: &str, cut: Option<Cut>| -> Result<Ran> {
        let tpm = tpm_test::start(&tpm_dir)?;
        let (_relay, mut args) = relay(veil, dir, &broker)?;
        args.extend(demo_image::disk_args(image));
        args.extend(tpm.qemu_args());
        run(rom, dir, name, &args, cut)
    };

    eprintln!("xtask: faults: the seal into veil-boot, uncut: each header copy written and flushed in turn");
    copy_state(&pristine_tpm, &tpm_dir)?;
    let whole = boot("faults-seal-whole", None)?;
    if !whole.log.contains("tpm: sealed the master secret") || !whole.log.contains("stage=handoff") {
        bail!("the uncut seal run did not seal and reach the hand-off:\n{}", whole.log);
    }
    let writes = check_flushed("the seal", &whole.io)?;
    if writes != 2 {
        bail!("the seal made {writes} writes, expected the two header copies: {:?}", whole.io);
    }
    let sealed_header = read_range(image, start, header_len)?;
    let sealed_tpm = dir.join("faults-tpm-sealed");
    copy_state(&tpm_dir, &sealed_tpm)?;
    let events = whole.io.len();

    // The SIGKILL sweep, each from the pristine disk and TPM.
    let mut cuts = vec![("seal: kill at the broker's release".to_string(), Cut::Serial("kbs: the broker verified"))];
    let names = ["write taken", "write done", "flush done"];
    for n in 1..=events {
        let copy = if n <= 3 { "primary" } else { "secondary" };
        cuts.push((format!("seal: kill at {copy} copy: {}", names[(n - 1) % 3]), Cut::Io(n)));
    }
    cuts.push(("seal: kill after the \"sealed\" line".to_string(), Cut::Serial("tpm: sealed the master secret")));
    for (i, (case, cut)) in cuts.into_iter().enumerate() {
        eprintln!("xtask: faults: {case}");
        write_range(image, start, &pristine_header)?;
        copy_state(&pristine_tpm, &tpm_dir)?;
        let ran = boot(&format!("faults-seal-cut-{i}"), Some(cut))?;
        if !ran.cut {
            bail!("{case}: the run ended before the cut:\n{}", ran.log);
        }
        let left = copies(image, start)?;
        let next = boot(&format!("faults-seal-next-{i}"), None)?;
        rows.push(seal_row(case, left, &next, image, (start, len))?);
    }

    // Torn copies: a copy half written, the sealed header's bytes over the pristine one's:
    // its binary header (first 8 sectors) new and its JSON area old, or the other way round.
    let halves =
        [("binary header new, JSON area old", 0..BIN_LEN), ("binary header old, JSON area new", BIN_LEN..0x4000)];
    for (h, (half, range)) in halves.into_iter().enumerate() {
        for which in ["primary", "secondary", "both"] {
            let case = format!("seal torn: {which} {}, {half}", if which == "both" { "copies" } else { "copy" });
            eprintln!("xtask: faults: {case}");
            // A copy is torn while it is written: the copies before it are new, after it old.
            let mut header = match which {
                "primary" => pristine_header.clone(),
                _ => sealed_header.clone(),
            };
            let copy_at = |c: &str| if c == "primary" { 0 } else { 0x4000 };
            let torn: Vec<&str> = if which == "both" { vec!["primary", "secondary"] } else { vec![which] };
            for c in &torn {
                let at = copy_at(c);
                header[at..at + 0x4000].copy_from_slice(&pristine_header[at..at + 0x4000]);
                header[at + range.start..at + range.end]
                    .copy_from_slice(&sealed_header[at + range.start..at + range.end]);
            }
            let unchanged = torn.iter().all(|c| {
                let at = copy_at(c);
                header[at..at + 0x4000] == pristine_header[at..at + 0x4000]
                    || header[at..at + 0x4000] == sealed_header[at..at + 0x4000]
            });
            write_range(image, start, &header)?;
            copy_state(&sealed_tpm, &tpm_dir)?;
            let left = copies(image, start)?;
            let next = boot(&format!("faults-torn-{h}-{which}"), None)?;
            let mut row = seal_row(case, left, &next, image, (start, len))?;
            if unchanged {
                row.note = format!("the half holds the same bytes in both headers; {}", row.note);
            }
            if which == "both" && !unchanged {
                if row.booted {
                    bail!("both copies torn, yet the volume booted:\n{}", next.log);
                }
                for want in ["veil-boot: no valid LUKS2 header", "the key broker was not asked"] {
                    if !next.log.contains(want) {
                        bail!("both copies torn: expected `{want}` in the log:\n{}", next.log);
                    }
                }
                if next.log.contains("kbs: asking") {
                    bail!("both copies torn: the broker was asked:\n{}", next.log);
                }
            } else if !row.booted {
                bail!("{}: the next boot did not reach the hand-off:\n{}", row.case, next.log);
            }
            rows.push(row);
        }
    }
    write_range(image, start, &pristine_header)?;
    Ok(())
}

/// The row of a seal case from the next boot, which must boot (the both-torn cases are
/// checked by the caller) and leave both header copies consistent.
fn seal_row(case: String, left: String, next: &Ran, image: &Path, part: (u64, u64)) -> Result<Row> {
    let booted = next.log.contains("stage=handoff");
    let broker = next.log.contains("kbs: asking");
    let mut note = String::new();
    if next.log.contains("LUKS2 header copy was missing, damaged or older; rewrote it") {
        note.push_str("other copy rewritten");
    }
    if booted {
        if !consistent(image, part.0, part.1)? {
            bail!("{case}: after the next boot the header copies still differ ({})", copies(image, part.0)?);
        }
    } else if !case.contains("both") {
        bail!("{case}: the next boot did not reach the hand-off:\n{}", next.log);
    }
    Ok(Row { case, left, booted, broker: Some(broker), note })
}

/// The state-disk format (development ROM, no TPM): SIGKILLs at each of its writes and
/// flushes, and the header that reached the disk without its keyslot area.
fn state_cases(disk: &DemoDisk, rom: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let DemoDisk { veil, dir, secret, image } = disk;
    let state = dir.join("faults-state.img");
    let blank = |p: &Path| -> Result<()> {
        let _ = std::fs::remove_file(p);
        std::fs::File::create(p)?.set_len(64 << 20)?;
        Ok(())
    };
    let args = demo_image::boot_args_with_state(image, secret, &state);

    eprintln!("xtask: faults: the state-disk format, uncut: keyslot area, primary, secondary, each flushed");
    blank(&state)?;
    let whole = run(rom, dir, "faults-state-whole", &args, None)?;
    whole_state_ok(&whole.log)?;
    let writes = check_flushed("the state-disk format", &whole.io)?;
    if writes != 3 {
        bail!("the format made {writes} writes, expected keyslot area, primary, secondary: {:?}", whole.io);
    }
    let formatted = std::fs::read(&state)?;

    let names = ["write taken", "write done", "flush done"];
    let parts = ["keyslot area", "primary copy", "secondary copy"];
    let mut cuts: Vec<(String, Cut)> = (1..=whole.io.len())
        .map(|n| (format!("state disk: kill at {}: {}", parts[(n - 1) / 3], names[(n - 1) % 3]), Cut::Io(n)))
        .collect();
    cuts.push(("state disk: kill after the \"formatted\" line".into(), Cut::Serial("formatted LUKS2 volume")));
    for (i, (case, cut)) in cuts.into_iter().enumerate() {
        eprintln!("xtask: faults: {case}");
        blank(&state)?;
        let ran = run(rom, dir, &format!("faults-state-cut-{i}"), &args, Some(cut))?;
        if !ran.cut {
            bail!("{case}: the run ended before the cut:\n{}", ran.log);
        }
        let left = describe_state(&state)?;
        let next = run(rom, dir, &format!("faults-state-next-{i}"), &args, None)?;
        let booted = next.log.contains("stage=handoff");
        let handed = whole_state_ok(&next.log).is_ok();
        if !booted || !handed {
            bail!("{case}: the next boot did not hand the state disk's key over:\n{}", next.log);
        }
        // The volume whose key was handed over opens with it, and its copies agree.
        crate::run(
            Command::new(veil).args(["luks", "open", "--secret"]).arg(secret).arg(&state).stdout(Stdio::null()),
        )?;
        if !consistent(&state, 0, 64 << 20)? {
            bail!("{case}: after the next boot the state disk's header copies differ");
        }
        let note = if next.log.contains("interrupted format") {
            "formatted again"
        } else if next.log.contains("blank; formatted") {
            "formatted (it was blank)"
        } else if next.log.contains("rewrote it") {
            "kept; other copy rewritten"
        } else {
            "kept"
        };
        rows.push(Row { case, left, booted, broker: None, note: note.into() });
    }

    eprintln!("xtask: faults: state disk: both header copies on the disk, its keyslot area not");
    let mut reordered = formatted.clone();
    let (area_at, area_len) = veil_agent::statedisk::Footprint::of_format().keyslot_area;
    reordered[area_at as usize..(area_at + area_len) as usize].fill(0);
    std::fs::write(&state, &reordered)?;
    let next = run(rom, dir, "faults-state-reordered", &args, None)?;
    let want = "refused, its key not handed over: both LUKS2 header copies are there but the area of keyslot 0 holds only zeros";
    if !next.log.contains(want) || !next.log.contains("stage=handoff") {
        bail!("headers without their keyslot area: expected `{want}` and a boot:\n{}", next.log);
    }
    if std::fs::read(&state)? != reordered {
        bail!("the firmware changed a state disk it refused");
    }
    rows.push(Row {
        case: "state disk: headers written, keyslot area lost (writes reordered)".into(),
        left: "both copies valid, keyslot area zero".into(),
        booted: true,
        broker: None,
        note: "booted; state volume refused precisely, not handed over, left as it was".into(),
    });
    let _ = std::fs::remove_file(&state);
    Ok(())
}

/// The log says the state disk's key is handed over (formatted now or kept).
fn whole_state_ok(log: &str) -> Result<()> {
    if ["blank; formatted LUKS2 volume", "formatted LUKS2 volume", "opens with its disk key"]
        .iter()
        .any(|w| log.contains(w))
        && log.contains("stage=handoff")
    {
        return Ok(());
    }
    bail!("the state disk's key was not handed over:\n{log}")
}

fn describe_state(state: &Path) -> Result<String> {
    let mut f = std::fs::File::open(state)?;
    if let Ok(v) = Volume::load(&mut f) {
        return Ok(format!("a volume ({})", if v.other_copy_stale { "one copy missing" } else { "both copies" }));
    }
    let size = f.metadata()?.len();
    let probes: Vec<Vec<u8>> = veil_agent::statedisk::probes(size)
        .iter()
        .map(|(o, l)| read_range(state, *o, *l as usize))
        .collect::<Result<_>>()?;
    Ok(match veil_agent::statedisk::classify(size, &probes[0], &probes[1], &probes[2]) {
        veil_agent::statedisk::Found::Blank => "blank".into(),
        veil_agent::statedisk::Found::InterruptedFormat(what) => what,
        veil_agent::statedisk::Found::Foreign(why) => format!("foreign?! {why}"),
    })
}

/// Run every case; print and return the table.
pub fn tests(disk: &DemoDisk, release: &Path, dev: &Path) -> Result<String> {
    crate::tpm_test::ensure_tools()?;
    let mut rows = Vec::new();
    state_cases(disk, dev, &mut rows)?;
    seal_cases(disk, release, &mut rows)?;
    let t = table(&rows);
    eprintln!("xtask: faults: every case as expected:\n{t}");
    Ok(t)
}
