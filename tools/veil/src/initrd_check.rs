//! What `veil image build` checks of the initrd it is given, before it writes anything: that
//! the initramfs can open the root volume the way the firmware hands it over. The firmware
//! appends a cpio with the root volume's key to the initrd; the initramfs must have
//! cryptsetup, something in it must read that key file (its init, or the crypttab a stock
//! initramfs-tools or dracut build copied from the root), and a stock initramfs needs `root=`
//! on the command line. A miss is a warning, not a refusal: an initramfs can do what it needs
//! in ways no listing shows (a key path computed at run time, cryptsetup linked into a
//! multi-call binary).
//!
//! The initrd is read as the kernel reads it: concatenated newc cpio archives, uncompressed
//! or compressed (gzip, zstd, xz, lz4, bzip2, lzop: decompressed with the system's tools, as
//! lsinitramfs does).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Where the firmware puts the root volume's key in the initramfs (the hand-over contract,
/// agent::handover), without the leading slash.
pub const HANDED_OVER_ROOT_KEY: &str = veil_agent::handover::ROOT_KEY;

/// Files larger than this are listed but not searched for the key path.
const MAX_SEARCHED: u32 = 1 << 20;

/// The initrd's files: path (no leading `/`) and, for small regular files, the contents.
#[derive(Default)]
pub struct Listing {
    /// Every path, with the contents of the small ones.
    pub files: BTreeMap<String, Option<Vec<u8>>>,
}

impl Listing {
    fn has_suffix(&self, suffixes: &[&str]) -> bool {
        self.files.keys().any(|p| suffixes.iter().any(|s| p == s || p.ends_with(&format!("/{s}"))))
    }
    fn names(&self, text: &str) -> bool {
        let needle = text.as_bytes();
        self.files.values().flatten().any(|data| data.windows(needle.len()).any(|w| w == needle))
    }
}

fn hex_field(h: &[u8], i: usize) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(h.get(6 + 8 * i..14 + 8 * i)?).ok()?, 16).ok()
}

/// Read newc archives from `data` into `out` until the data ends or a compressed stream
/// starts; returns the offset where parsing stopped.
fn read_cpio(data: &[u8], out: &mut Listing) -> Result<usize, String> {
    let mut at = 0usize;
    loop {
        // Zero padding between concatenated archives.
        while data.get(at..at + 4) == Some(&[0u8; 4][..]) {
            at += 4;
        }
        let Some(h) = data.get(at..at + 110) else { return Ok(at.min(data.len())) };
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            return Ok(at);
        }
        let (mode, size, namesize) = match (hex_field(h, 1), hex_field(h, 6), hex_field(h, 11)) {
            (Some(m), Some(s), Some(n)) => (m, s, n),
            _ => return Err(format!("a cpio header at byte {at} with fields that are not hex")),
        };
        let name_start = at + 110;
        let name_end = name_start + namesize as usize;
        let name = data.get(name_start..name_end.saturating_sub(1)).ok_or("a cpio name past the end")?;
        let name = String::from_utf8_lossy(name).trim_start_matches("./").trim_start_matches('/').to_string();
        let data_start = name_end.div_ceil(4) * 4;
        let data_end = data_start + size as usize;
        let body = data.get(data_start..data_end).ok_or("a cpio file past the end")?;
        at = data_end.div_ceil(4) * 4;
        if name == "TRAILER!!!" {
            continue;
        }
        let regular = mode & 0o170000 == 0o100000;
        out.files.insert(name, (regular && size <= MAX_SEARCHED).then(|| body.to_vec()));
    }
}

/// The decompressor for a stream starting with these bytes.
fn decompressor(head: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
        (b"BZh", "bzip2"),
        (&[0x89, b'L', b'Z', b'O'], "lzop"),
    ];
    MAGICS.iter().find(|(m, _)| head.starts_with(m)).map(|(_, tool)| *tool)
}

fn decompress(tool: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new(tool)
        .args(["-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("it is {tool}-compressed and {tool} cannot be run ({e})"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input); // the tool may stop early at trailing padding
    });
    let mut out = Vec::new();
    child.stdout.take().expect("piped").read_to_end(&mut out).map_err(|e| format!("{tool}: {e}"))?;
    let _ = writer.join();
    let _ = child.wait();
    if out.is_empty() {
        return Err(format!("{tool} could not decompress it"));
    }
    Ok(out)
}

/// Every file of an initrd: the uncompressed archives first (early microcode), then the
/// compressed stream that runs to the end, if any.
pub fn list(initrd: &[u8]) -> Result<Listing, String> {
    let mut listing = Listing::default();
    let stop = read_cpio(initrd, &mut listing)?;
    let rest = &initrd[stop..];
    if !rest.is_empty() {
        match decompressor(rest) {
            Some(tool) => {
                read_cpio(&decompress(tool, rest)?, &mut listing)?;
            }
            None if listing.files.is_empty() => return Err(String::from("it is not a cpio archive (newc)")),
            None => {}
        }
    }
    Ok(listing)
}

/// What this initrd lacks to open the root volume as the firmware hands it over.
pub fn problems(listing: &Listing, cmdline: &str) -> Vec<String> {
    let mut found = Vec::new();
    let initramfs_tools = listing.has_suffix(&["scripts/local-top/cryptroot", "conf/initramfs.conf"]);
    let dracut = listing.files.keys().any(|p| p.starts_with("usr/lib/dracut/") || p == "etc/initrd-release");
    if !listing.files.contains_key("init") {
        found.push(String::from("it has no /init, which the kernel runs from an initramfs"));
    }
    // A systemd initrd (dracut's crypt module with systemd) opens volumes with
    // systemd-cryptsetup from crypttab and carries no cryptsetup binary.
    if !listing.has_suffix(&["sbin/cryptsetup", "bin/cryptsetup", "systemd/systemd-cryptsetup"]) {
        found.push(String::from(
            "it has no cryptsetup, so it cannot open the LUKS2 root volume (Debian: install cryptsetup-initramfs in the root and rebuild the initramfs there)",
        ));
    }
    if !listing.names(HANDED_OVER_ROOT_KEY) {
        found.push(format!(
            "nothing in it names /{HANDED_OVER_ROOT_KEY}, the key file the firmware hands over: its init (or the crypttab {} copies from the root) must open the root volume with that key file",
            if dracut { "dracut" } else if initramfs_tools { "initramfs-tools" } else { "a stock initramfs" }
        ));
    }
    if (initramfs_tools || dracut) && !cmdline.split_whitespace().any(|w| w.starts_with("root=")) {
        found.push(String::from(
            "the command line has no root=: a stock initramfs stops with \"No root device specified\" (e.g. --cmdline \"root=/dev/mapper/veil-root console=ttyS0\")",
        ));
    }
    found
}

/// Warn on stderr about each problem of the initrd at `path` (or that it could not be read).
pub fn warn_unless_fit(path: &Path, initrd: &[u8], cmdline: &str) {
    match list(initrd) {
        Ok(listing) => {
            let found = problems(&listing, cmdline);
            for p in &found {
                eprintln!("veil: warning: initrd {}: {p}", path.display());
            }
            if !found.is_empty() {
                eprintln!(
                    "veil: warning: the boot will likely end in the initramfs without the root filesystem (README: \"What the initramfs must do\")"
                );
            }
        }
        Err(e) => eprintln!("veil: warning: initrd {}: cannot look inside: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_agent::cpio::CpioWriter;

    fn cpio(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = CpioWriter::new();
        for (p, d) in files {
            w.file(p, 0o755, d);
        }
        w.finish()
    }

    #[test]
    fn an_initramfs_that_opens_the_root_passes() {
        let init = format!("cryptsetup open --key-file /{HANDED_OVER_ROOT_KEY} $dev root");
        let l = list(&cpio(&[("init", init.as_bytes()), ("sbin/cryptsetup", b"\x7fELF")])).unwrap();
        assert!(problems(&l, "console=ttyS0").is_empty(), "{:?}", problems(&l, ""));
    }

    #[test]
    fn a_stock_initramfs_without_the_contract_is_named() {
        // initramfs-tools without cryptsetup, and no root= on the command line.
        let l = list(&cpio(&[("init", b"#!/bin/sh"), ("conf/initramfs.conf", b"MODULES=most")])).unwrap();
        let p = problems(&l, "console=ttyS0");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("no cryptsetup") && p[1].contains("initramfs-tools") && p[2].contains("no root="));
        assert_eq!(problems(&l, "root=/dev/mapper/veil-root").len(), 2);
    }

    #[test]
    fn a_systemd_initrd_that_opens_the_root_from_crypttab_passes() {
        // dracut with systemd: systemd-cryptsetup (no cryptsetup binary) and the crypttab line
        // veil writes (tools/veil/src/distro.rs), copied into the initrd.
        let crypttab = format!("veil-root UUID=u /{HANDED_OVER_ROOT_KEY} luks,initramfs\n");
        let l = list(&cpio(&[
            ("init", b"\x7fELF"),
            ("usr/lib/systemd/systemd-cryptsetup", b"\x7fELF"),
            ("usr/lib/dracut/modules.txt", b"crypt"),
            ("etc/crypttab", crypttab.as_bytes()),
        ]))
        .unwrap();
        assert!(problems(&l, "root=UUID=f ro").is_empty(), "{:?}", problems(&l, "root=UUID=f ro"));
    }

    #[test]
    fn compressed_and_concatenated_archives_are_read() {
        // An uncompressed first archive (early microcode) and a gzip-compressed main one.
        let mut initrd = cpio(&[("kernel/x86/microcode/GenuineIntel.bin", b"ucode")]);
        let main = cpio(&[("init", b"x"), ("usr/sbin/cryptsetup", b"y")]);
        initrd.extend_from_slice(&compress("gzip", &main));
        let l = list(&initrd).unwrap();
        assert!(l.files.contains_key("kernel/x86/microcode/GenuineIntel.bin"));
        assert!(l.files.contains_key("usr/sbin/cryptsetup"), "{:?}", l.files.keys());
        assert!(list(b"not an initrd at all, just text").is_err());
    }

    /// gzip is essential on Debian: always there.
    fn compress(tool: &str, data: &[u8]) -> Vec<u8> {
        let mut child = Command::new(tool).arg("-c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        child.wait_with_output().unwrap().stdout
    }
}
