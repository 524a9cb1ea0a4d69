//! Writer for "newc" cpio archives, the format Linux unpacks into its initramfs. The firmware
//! appends one to the initrd it loaded (Linux unpacks concatenated archives) to hand files
//! to the initramfs; the host tools build whole initramfs images with it.
//!
//! Format (Linux Documentation/driver-api/early-userspace/buffer-format.rst): each entry is
//! "070701", 13 eight-digit hex fields (ino, mode, uid, gid, nlink, mtime, filesize,
//! devmajor, devminor, rdevmajor, rdevminor, namesize, check), the NUL-terminated name padded
//! to 4 bytes, then the data padded to 4 bytes; "TRAILER!!!" ends the archive.

use alloc::vec::Vec;
use core::fmt::Write as _;

/// Regular file type bits.
pub const S_IFREG: u32 = 0o100000;
/// Directory type bits.
pub const S_IFDIR: u32 = 0o040000;
/// Symbolic link type bits.
pub const S_IFLNK: u32 = 0o120000;

/// An archive being built.
#[derive(Default)]
pub struct CpioWriter {
    buf: Vec<u8>,
    next_ino: u32,
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

impl CpioWriter {
    /// An empty archive.
    pub fn new() -> Self {
        CpioWriter { buf: Vec::new(), next_ino: 1 }
    }

    /// An empty archive with room for `bytes` (no reallocation below that: no stale copies
    /// of secret file contents left behind in freed memory).
    pub fn with_capacity(bytes: usize) -> Self {
        CpioWriter { buf: Vec::with_capacity(bytes), next_ino: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let name = name.trim_start_matches('/');
        let mut header = alloc::string::String::with_capacity(110);
        let fields = [
            self.next_ino,
            mode,
            0,
            0,
            if mode & S_IFDIR != 0 { 2 } else { 1 },
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        header.push_str("070701");
        for f in fields {
            let _ = write!(header, "{f:08x}");
        }
        self.next_ino += 1;
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        pad4(&mut self.buf);
        self.buf.extend_from_slice(data);
        pad4(&mut self.buf);
    }

    /// Add a directory (its parents must have been added first).
    pub fn dir(&mut self, path: &str, perm: u32) -> &mut Self {
        self.entry(path, S_IFDIR | (perm & 0o7777), &[]);
        self
    }

    /// Add a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> &mut Self {
        self.entry(path, S_IFREG | (perm & 0o7777), data);
        self
    }

    /// Add a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, S_IFLNK | 0o777, target.as_bytes());
        self
    }

    /// Finish with the trailer and return the archive (a multiple of 4 bytes).
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.buf
    }
}

/// The hand-off archive the firmware appends to the initrd: `/veil/handoff.json` (the
/// firmware, the platform and the boot timeline) and `files` (keys, mode 0400, in
/// directories made mode 0700 as their paths need). Zeroized on drop: it may hold keys.
pub fn handoff_archive(
    firmware: &str,
    platform: &str,
    marks: &[(&str, u64)],
    files: &[(&str, &[u8])],
) -> zeroize::Zeroizing<Vec<u8>> {
    let timeline: Vec<crate::json::Value> = marks.iter().map(|(s, t)| crate::json!({"stage": s, "t_us": t})).collect();
    let doc = crate::json!({"firmware": firmware, "platform": platform, "timeline": timeline});
    let json = crate::json::to_string(&doc);
    // Sized up front so that no reallocation leaves copies of keys in freed heap memory.
    let capacity = 2048 + json.len() + files.iter().map(|(p, d)| 512 + p.len() + d.len()).sum::<usize>();
    let mut w = CpioWriter::with_capacity(capacity);
    w.dir("veil", 0o755).file("veil/handoff.json", 0o444, json.as_bytes());
    let mut dirs: Vec<&str> = Vec::new();
    for (path, data) in files {
        // Parent directories first (cryptroot, cryptroot/keyfiles, ...).
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            if !dirs.contains(&dir) && dir != "veil" {
                w.dir(dir, 0o700);
                dirs.push(dir);
            }
            at += i + 1;
        }
        w.file(path, 0o400, data);
    }
    zeroize::Zeroizing::new(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_archive_layout() {
        use crate::handover::{ROOT_KEY, ROOT_UUID, STATE_KEY};
        let files: [(&str, &[u8]); 3] = [(ROOT_KEY, b"k1"), (ROOT_UUID, b"u"), (STATE_KEY, b"k2")];
        let archive = handoff_archive("veilboot 0.1.0", "plain", &[("rust-init", 5), ("handoff", 900)], &files);
        let entries = read(&archive);
        let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "veil",
                "veil/handoff.json",
                "cryptroot",
                "cryptroot/keyfiles",
                "cryptroot/keyfiles/veil-root.key",
                "veil/root.uuid",
                "cryptroot/keyfiles/veil-state.key"
            ]
        );
        for (name, mode, _) in &entries {
            let want = match name.as_str() {
                "veil" => S_IFDIR | 0o755,
                "veil/handoff.json" => S_IFREG | 0o444,
                n if n.ends_with(".key") || n.ends_with(".uuid") => S_IFREG | 0o400,
                _ => S_IFDIR | 0o700,
            };
            assert_eq!(*mode, want, "{name}");
        }
        let doc: crate::json::Value = crate::json::from_slice(&entries[1].2).unwrap();
        assert_eq!(doc["platform"], "plain");
        assert_eq!(doc["timeline"][1], crate::json!({"stage": "handoff", "t_us": 900}));
    }

    /// A minimal reader for the tests: (name, mode, data) of each entry.
    fn read(mut a: &[u8]) -> Vec<(alloc::string::String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let start_len = a.len();
        loop {
            assert_eq!(&a[..6], b"070701");
            let field =
                |i: usize| u32::from_str_radix(core::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap(), 16).unwrap();
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = alloc::string::String::from_utf8(a[110..110 + namesize - 1].to_vec()).unwrap();
            let data_start = (110 + namesize).div_ceil(4) * 4;
            let data = a[data_start..data_start + size].to_vec();
            let next = (data_start + size).div_ceil(4) * 4;
            assert_eq!((start_len - a.len() + next) % 4, 0);
            a = &a[next..];
            if name == "TRAILER!!!" {
                break;
            }
            out.push((name, mode, data));
        }
        assert!(a.is_empty());
        out
    }

    #[test]
    fn archive_round_trip() {
        let mut w = CpioWriter::new();
        w.dir("/veil", 0o755).file("/veil/handoff.json", 0o444, b"{\"a\":1}").symlink("sh", "busybox");
        let archive = w.finish();
        assert_eq!(archive.len() % 4, 0);
        let entries = read(&archive);
        assert_eq!(entries[0], ("veil".into(), S_IFDIR | 0o755, Vec::new()));
        assert_eq!(entries[1], ("veil/handoff.json".into(), S_IFREG | 0o444, b"{\"a\":1}".to_vec()));
        assert_eq!(entries[2], ("sh".into(), S_IFLNK | 0o777, b"busybox".to_vec()));
    }
}
