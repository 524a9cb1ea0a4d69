//! A LUKS2 volume in an image file: the whole file, or one named GPT partition of a disk
//! (`--part veil-boot`), read and written at offsets from the volume's start.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use veil_agent::gpt::Gpt;
use veil_agent::io::{IoError, ReadAt};
use veil_agent::luks2::Volume;
use zeroize::Zeroizing;

use crate::cli_error::usage;

/// The bytes of one volume: `len` bytes at `start` of `file`.
pub struct VolumeFile {
    /// The image file.
    pub file: File,
    /// Where the volume starts in it.
    pub start: u64,
    /// The volume's length.
    pub len: u64,
    /// How to name it in messages: `disk.img` or `disk.img, partition veil-boot`.
    pub name: String,
}

impl ReadAt for VolumeFile {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > self.len) {
            return Err(IoError::OutOfRange { offset, len: buf.len() as u64, size: self.len });
        }
        ReadAt::read_at(&mut self.file, self.start + offset, buf)
    }
}

/// The names of a disk's partitions, for messages.
pub fn partition_names(gpt: &Gpt) -> String {
    let names: Vec<&str> = gpt.partitions.iter().map(|p| p.name.as_str()).filter(|n| !n.is_empty()).collect();
    if names.is_empty() { String::from("none named") } else { names.join(", ") }
}

/// Whether `file` starts with a LUKS2 primary header's magic and version.
fn is_luks2_volume(file: &File) -> bool {
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head, 0).is_ok() && head == *b"LUKS\xba\xbe\x00\x02"
}

/// The GPT of the disk `path`; a LUKS2 volume given where a disk belongs is an argument error
/// that says which commands take which.
pub fn read_gpt(file: &mut File, path: &Path) -> Result<Gpt> {
    match Gpt::read(file) {
        Ok(gpt) => Ok(gpt),
        Err(_) if is_luks2_volume(file) => Err(usage(format!(
            "{} is a LUKS2 volume, not a GPT disk: `veil luks` takes it without --part; --part, `veil image \
             inspect`, `veil recover` and `veil seal` take a whole disk made by `veil image build`",
            path.display()
        ))),
        Err(e) => Err(anyhow::Error::new(e).context(format!("{}: not a GPT disk", path.display()))),
    }
}

/// Open `path` (for writing too if `write`), the whole file or its partition `part`.
pub fn open(path: &Path, part: Option<&str>, write: bool) -> Result<VolumeFile> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().with_context(|| format!("cannot open {}", path.display()))?.len();
    match part {
        None => Ok(VolumeFile { file, start: 0, len: size, name: path.display().to_string() }),
        Some(name) => {
            let gpt = read_gpt(&mut file, path)?;
            let p = gpt.by_name(name).ok_or_else(|| {
                usage(format!("{} has no partition named {name:?} (it has: {})", path.display(), partition_names(&gpt)))
            })?;
            Ok(VolumeFile {
                file,
                start: p.offset(),
                len: p.size(),
                name: format!("{}, partition {name}", path.display()),
            })
        }
    }
}

impl VolumeFile {
    /// The volume's header; a whole GPT disk given without --part gets a precise message.
    pub fn load(&mut self) -> Result<Volume> {
        match Volume::load(self) {
            Ok(v) => Ok(v),
            Err(e) => {
                if self.start == 0
                    && let Ok(gpt) = Gpt::read(&mut self.file)
                {
                    return Err(usage(format!(
                        "{} is a GPT disk, not a LUKS2 volume: name a partition with --part ({})",
                        self.name,
                        partition_names(&gpt)
                    )));
                }
                Err(anyhow::Error::new(e).context(self.name.clone()))
            }
        }
    }

    /// Apply a LUKS2 writer's byte ranges (offsets from the volume's start) and sync.
    pub fn write(&self, writes: Vec<(u64, Zeroizing<Vec<u8>>)>) -> Result<()> {
        for (off, bytes) in writes {
            self.file.write_all_at(&bytes, self.start + off).context("writing the LUKS2 header")?;
        }
        self.file.sync_all().context("syncing the image")
    }
}
