//! Random-access reading of a block device or image, the one I/O interface the parsers need.
//!
//! The firmware implements it over virtio-blk; the host tools over a file; tests over a
//! byte slice. Reads past the end are errors, never short reads.

use core::fmt;

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoError {
    /// The read would run past the end of the device.
    OutOfRange {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// Device size.
        size: u64,
    },
    /// The device reported an error.
    Device(alloc::string::String),
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::OutOfRange { offset, len, size } => {
                write!(f, "read of {len} bytes at offset {offset} runs past the end of the {size}-byte device")
            }
            IoError::Device(e) => write!(f, "device error: {e}"),
        }
    }
}

/// A device that can be read at any byte offset.
pub trait ReadAt {
    /// Size of the device in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`; fails rather than returning fewer bytes.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;
}

fn check_range(offset: u64, len: usize, size: u64) -> Result<(), IoError> {
    let len = len as u64;
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(IoError::OutOfRange { offset, len, size }),
    }
}

impl ReadAt for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(offset, buf.len(), self.size())?;
        let start = offset as usize;
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }
}

#[cfg(feature = "std")]
impl ReadAt for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        use std::os::unix::fs::FileExt;
        check_range(offset, buf.len(), ReadAt::size(self))?;
        self.read_exact_at(buf, offset).map_err(|e| IoError::Device(alloc::format!("{e}")))
    }
}

/// A window of a device (a partition), readable at offsets from its start.
pub struct Window<'a, D: ReadAt + ?Sized> {
    /// The device.
    pub dev: &'a mut D,
    /// Start on the device.
    pub start: u64,
    /// Length.
    pub len: u64,
}

impl<D: ReadAt + ?Sized> ReadAt for Window<'_, D> {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > self.len) {
            return Err(IoError::OutOfRange { offset, len: buf.len() as u64, size: self.len });
        }
        self.dev.read_at(self.start + offset, buf)
    }
}
