//! QEMU's ACPI table loader (fw_cfg `etc/table-loader`, hw/acpi/bios-linker-loader.c): a list
//! of 128-byte commands that say which fw_cfg blobs to place in guest memory, which pointers
//! inside them to patch with other blobs' addresses, which checksums to fix, and which
//! addresses to write back to QEMU. Parsing and linking are pure and bounds-checked here;
//! the firmware provides the blobs, the placement and the fw_cfg write-back.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Size of one command.
pub const COMMAND_SIZE: usize = 128;
/// Longest fw_cfg file name the commands carry.
const NAME_LEN: usize = 56;
/// Most commands accepted.
pub const MAX_COMMANDS: usize = 1024;
/// Largest alignment accepted for an allocation.
pub const MAX_ALIGN: u32 = 1 << 20;

/// Memory zone of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// Anywhere below 4 GiB.
    High,
    /// The legacy 0xE0000-0xFFFFF segment (veilboot places it below 4 GiB like High: the
    /// kernel is told the RSDP address, so nothing needs to scan the F segment).
    FSeg,
}

/// One loader command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Place a blob in memory.
    Allocate {
        /// The blob.
        file: String,
        /// Alignment (power of two).
        align: u32,
        /// Zone.
        zone: Zone,
    },
    /// Add the address of `src` to the `size`-byte pointer at `offset` in `dest`.
    AddPointer {
        /// Blob holding the pointer.
        dest: String,
        /// Blob pointed to.
        src: String,
        /// Offset of the pointer in `dest`.
        offset: u32,
        /// Pointer size: 1, 2, 4 or 8.
        size: u8,
    },
    /// Make the bytes [start, start+length) of `file` sum to zero by adjusting the byte at
    /// `offset`.
    AddChecksum {
        /// Blob.
        file: String,
        /// The checksum byte.
        offset: u32,
        /// Start of the summed range.
        start: u32,
        /// Length of the summed range.
        length: u32,
    },
    /// Write the address of `src` + `src_offset` into fw_cfg file `dest` at `dst_offset`.
    WritePointer {
        /// fw_cfg file to write to.
        dest: String,
        /// Blob whose address is written.
        src: String,
        /// Offset in `dest`.
        dst_offset: u32,
        /// Offset added to the blob address.
        src_offset: u32,
        /// Bytes to write: 1, 2, 4 or 8.
        size: u8,
    },
}

/// Why the table loader was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoaderError {
    /// The command list is not whole commands or too long.
    Length(usize),
    /// Command `index` is malformed.
    Command {
        /// Index in the list.
        index: usize,
        /// What is wrong.
        why: String,
    },
}

impl fmt::Display for LoaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoaderError::Length(n) => {
                write!(f, "etc/table-loader: {n} bytes is not a list of at most {MAX_COMMANDS} 128-byte commands")
            }
            LoaderError::Command { index, why } => write!(f, "etc/table-loader command {index}: {why}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for LoaderError {}

fn name(raw: &[u8], index: usize) -> Result<String, LoaderError> {
    let len = raw
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| LoaderError::Command { index, why: String::from("file name is not NUL-terminated") })?;
    if len == 0 || !raw[..len].iter().all(|c| c.is_ascii_graphic()) {
        return Err(LoaderError::Command { index, why: String::from("malformed file name") });
    }
    Ok(String::from_utf8_lossy(&raw[..len]).into_owned())
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn pointer_size(size: u8, index: usize) -> Result<u8, LoaderError> {
    match size {
        1 | 2 | 4 | 8 => Ok(size),
        other => Err(LoaderError::Command { index, why: alloc::format!("pointer size {other} is not 1, 2, 4 or 8") }),
    }
}

/// Parse the command list. Commands of type 0 (padding) and unknown types are skipped, as
/// SeaBIOS and OVMF do.
pub fn parse(bytes: &[u8]) -> Result<Vec<Command>, LoaderError> {
    if !bytes.len().is_multiple_of(COMMAND_SIZE) || bytes.len() / COMMAND_SIZE > MAX_COMMANDS {
        return Err(LoaderError::Length(bytes.len()));
    }
    let mut out = Vec::new();
    for (index, c) in bytes.chunks_exact(COMMAND_SIZE).enumerate() {
        let b = &c[4..];
        let cmd = match le32(c, 0) {
            1 => {
                let align = le32(b, NAME_LEN);
                if !align.is_power_of_two() || align > MAX_ALIGN {
                    return Err(LoaderError::Command {
                        index,
                        why: alloc::format!("alignment {align} is not a power of two up to {MAX_ALIGN}"),
                    });
                }
                let zone = match b[NAME_LEN + 4] {
                    1 => Zone::High,
                    2 => Zone::FSeg,
                    z => return Err(LoaderError::Command { index, why: alloc::format!("unknown zone {z}") }),
                };
                Command::Allocate { file: name(&b[..NAME_LEN], index)?, align, zone }
            }
            2 => Command::AddPointer {
                dest: name(&b[..NAME_LEN], index)?,
                src: name(&b[NAME_LEN..2 * NAME_LEN], index)?,
                offset: le32(b, 2 * NAME_LEN),
                size: pointer_size(b[2 * NAME_LEN + 4], index)?,
            },
            3 => Command::AddChecksum {
                file: name(&b[..NAME_LEN], index)?,
                offset: le32(b, NAME_LEN),
                start: le32(b, NAME_LEN + 4),
                length: le32(b, NAME_LEN + 8),
            },
            4 => Command::WritePointer {
                dest: name(&b[..NAME_LEN], index)?,
                src: name(&b[NAME_LEN..2 * NAME_LEN], index)?,
                dst_offset: le32(b, 2 * NAME_LEN),
                src_offset: le32(b, 2 * NAME_LEN + 4),
                size: pointer_size(b[2 * NAME_LEN + 8], index)?,
            },
            _ => continue,
        };
        out.push(cmd);
    }
    Ok(out)
}

/// A blob placed in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// fw_cfg name.
    pub name: String,
    /// Guest-physical address chosen for it.
    pub addr: u64,
    /// Contents after linking (to be copied to `addr`).
    pub data: Vec<u8>,
}

/// A value to write back to a fw_cfg file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBack {
    /// fw_cfg file.
    pub file: String,
    /// Offset in it.
    pub offset: u32,
    /// The little-endian bytes to write.
    pub bytes: Vec<u8>,
}

/// The linked result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Linked {
    /// Every allocated blob.
    pub blobs: Vec<Blob>,
    /// Write-pointer requests.
    pub write_backs: Vec<WriteBack>,
}

impl Linked {
    /// Address of a blob by name (e.g. `etc/acpi/rsdp`).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.blobs.iter().find(|b| b.name == name).map(|b| b.addr)
    }
}

/// Run the commands. `read` returns a fw_cfg blob by name (bounded by the caller), `place`
/// returns an address for `len` bytes with `align` (or None when out of memory).
pub fn link(
    commands: &[Command],
    read: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
    place: &mut dyn FnMut(usize, u32) -> Option<u64>,
) -> Result<Linked, LoaderError> {
    let mut linked = Linked::default();
    let find = |linked: &Linked, file: &str, index: usize| -> Result<usize, LoaderError> {
        linked.blobs.iter().position(|b| b.name == file).ok_or_else(|| LoaderError::Command {
            index,
            why: alloc::format!("refers to \"{file}\", which was not allocated"),
        })
    };
    let range = |len: usize, offset: u32, size: usize, index: usize, what: &str| -> Result<usize, LoaderError> {
        let o = offset as usize;
        if o.checked_add(size).is_none_or(|end| end > len) {
            return Err(LoaderError::Command {
                index,
                why: alloc::format!("{what} at {offset} (+{size}) lies outside its {len}-byte blob"),
            });
        }
        Ok(o)
    };
    for (index, cmd) in commands.iter().enumerate() {
        match cmd {
            Command::Allocate { file, align, .. } => {
                if linked.blobs.iter().any(|b| &b.name == file) {
                    return Err(LoaderError::Command { index, why: alloc::format!("\"{file}\" allocated twice") });
                }
                let data = read(file).ok_or_else(|| LoaderError::Command {
                    index,
                    why: alloc::format!("fw_cfg has no file \"{file}\""),
                })?;
                let addr = place(data.len().max(1), *align).ok_or_else(|| LoaderError::Command {
                    index,
                    why: alloc::format!("no memory for \"{file}\" ({} bytes)", data.len()),
                })?;
                linked.blobs.push(Blob { name: file.clone(), addr, data });
            }
            Command::AddPointer { dest, src, offset, size } => {
                let s = find(&linked, src, index)?;
                let d = find(&linked, dest, index)?;
                let src_addr = linked.blobs[s].addr;
                let size = usize::from(*size);
                let blob = &mut linked.blobs[d].data;
                let o = range(blob.len(), *offset, size, index, "pointer")?;
                let mut v = [0u8; 8];
                v[..size].copy_from_slice(&blob[o..o + size]);
                let patched = u64::from_le_bytes(v).wrapping_add(src_addr);
                if size < 8 && patched >> (8 * size) != 0 {
                    return Err(LoaderError::Command {
                        index,
                        why: alloc::format!("pointer to \"{src}\" does not fit in {size} bytes"),
                    });
                }
                blob[o..o + size].copy_from_slice(&patched.to_le_bytes()[..size]);
            }
            Command::AddChecksum { file, offset, start, length } => {
                let f = find(&linked, file, index)?;
                let blob = &mut linked.blobs[f].data;
                let o = range(blob.len(), *offset, 1, index, "checksum byte")?;
                let s = range(blob.len(), *start, *length as usize, index, "checksummed range")?;
                let sum = blob[s..s + *length as usize].iter().fold(0u8, |a, b| a.wrapping_add(*b));
                blob[o] = blob[o].wrapping_sub(sum);
            }
            Command::WritePointer { dest, src, dst_offset, src_offset, size } => {
                let s = find(&linked, src, index)?;
                let src_blob = &linked.blobs[s];
                range(src_blob.data.len(), *src_offset, 0, index, "source offset")?;
                let value = src_blob.addr + u64::from(*src_offset);
                let size = usize::from(*size);
                if size < 8 && value >> (8 * size) != 0 {
                    return Err(LoaderError::Command {
                        index,
                        why: alloc::format!("address of \"{src}\" does not fit in {size} bytes"),
                    });
                }
                linked.write_backs.push(WriteBack {
                    file: dest.clone(),
                    offset: *dst_offset,
                    bytes: value.to_le_bytes()[..size].to_vec(),
                });
            }
        }
    }
    Ok(linked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn cmd(kind: u32, fields: &[(usize, &[u8])]) -> Vec<u8> {
        let mut c = vec![0u8; COMMAND_SIZE];
        c[..4].copy_from_slice(&kind.to_le_bytes());
        for (at, bytes) in fields {
            c[4 + at..4 + at + bytes.len()].copy_from_slice(bytes);
        }
        c
    }

    fn sample() -> Vec<u8> {
        [
            cmd(1, &[(0, b"etc/acpi/rsdp"), (56, &16u32.to_le_bytes()), (60, &[2])]),
            cmd(1, &[(0, b"etc/acpi/tables"), (56, &64u32.to_le_bytes()), (60, &[1])]),
            cmd(2, &[(0, b"etc/acpi/rsdp"), (56, b"etc/acpi/tables"), (112, &16u32.to_le_bytes()), (116, &[4])]),
            cmd(
                3,
                &[
                    (0, b"etc/acpi/rsdp"),
                    (56, &8u32.to_le_bytes()),
                    (60, &0u32.to_le_bytes()),
                    (64, &20u32.to_le_bytes()),
                ],
            ),
            cmd(
                4,
                &[
                    (0, b"etc/vmgenid_addr"),
                    (56, b"etc/acpi/tables"),
                    (112, &0u32.to_le_bytes()),
                    (116, &40u32.to_le_bytes()),
                    (120, &[8]),
                ],
            ),
            vec![0u8; COMMAND_SIZE], // padding
        ]
        .concat()
    }

    #[test]
    fn parse_and_link() {
        let cmds = parse(&sample()).unwrap();
        assert_eq!(cmds.len(), 5);
        assert_eq!(cmds[0], Command::Allocate { file: "etc/acpi/rsdp".into(), align: 16, zone: Zone::FSeg });
        let mut next = 0x1000_0000u64;
        let linked = link(
            &cmds,
            &mut |name| match name {
                "etc/acpi/rsdp" => Some({
                    let mut r = vec![0u8; 36];
                    r[16..20].copy_from_slice(&0x40u32.to_le_bytes());
                    r
                }),
                "etc/acpi/tables" => Some(vec![7u8; 100]),
                _ => None,
            },
            &mut |len, align| {
                let a = next.div_ceil(u64::from(align)) * u64::from(align);
                next = a + len as u64;
                Some(a)
            },
        )
        .unwrap();
        let rsdp = &linked.blobs[0];
        let tables = linked.address_of("etc/acpi/tables").unwrap();
        assert_eq!(u32::from_le_bytes(rsdp.data[16..20].try_into().unwrap()) as u64, tables + 0x40);
        assert_eq!(rsdp.data[..20].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "checksum fixed");
        assert_eq!(
            linked.write_backs[0],
            WriteBack { file: "etc/vmgenid_addr".into(), offset: 0, bytes: (tables + 40).to_le_bytes().to_vec() }
        );
    }

    #[test]
    fn refusals() {
        assert!(matches!(parse(&[0u8; 100]), Err(LoaderError::Length(100))));
        let bad_align = cmd(1, &[(0, b"x"), (56, &3u32.to_le_bytes()), (60, &[1])]);
        assert!(matches!(parse(&bad_align), Err(LoaderError::Command { index: 0, .. })));
        let bad_size = cmd(2, &[(0, b"a"), (56, b"b"), (116, &[3])]);
        assert!(parse(&bad_size).is_err());
        let no_nul = cmd(1, &[(0, &[b'a'; 56]), (56, &4u32.to_le_bytes()), (60, &[1])]);
        assert!(parse(&no_nul).is_err());
        // A pointer outside its blob.
        let cmds = parse(
            &[
                cmd(1, &[(0, b"a"), (56, &4u32.to_le_bytes()), (60, &[1])]),
                cmd(2, &[(0, b"a"), (56, b"a"), (112, &30u32.to_le_bytes()), (116, &[4])]),
            ]
            .concat(),
        )
        .unwrap();
        let err = link(&cmds, &mut |_| Some(vec![0u8; 32]), &mut |_, _| Some(0x1000)).unwrap_err();
        assert!(err.to_string().contains("outside its 32-byte blob"), "{err}");
        // A checksum range outside its blob.
        let cmds = parse(
            &[
                cmd(1, &[(0, b"a"), (56, &4u32.to_le_bytes()), (60, &[1])]),
                cmd(
                    3,
                    &[(0, b"a"), (56, &0u32.to_le_bytes()), (60, &0u32.to_le_bytes()), (64, &u32::MAX.to_le_bytes())],
                ),
            ]
            .concat(),
        )
        .unwrap();
        assert!(link(&cmds, &mut |_| Some(vec![0u8; 32]), &mut |_, _| Some(0x1000)).is_err());
        // References to blobs never allocated, and missing fw_cfg files.
        let cmds = parse(&cmd(2, &[(0, b"a"), (56, b"b"), (116, &[4])])).unwrap();
        assert!(
            link(&cmds, &mut |_| Some(vec![0u8; 8]), &mut |_, _| Some(0))
                .unwrap_err()
                .to_string()
                .contains("not allocated")
        );
        let cmds = parse(&cmd(1, &[(0, b"a"), (56, &4u32.to_le_bytes()), (60, &[1])])).unwrap();
        assert!(link(&cmds, &mut |_| None, &mut |_, _| Some(0)).unwrap_err().to_string().contains("no file"));
        // A 4-byte pointer cannot hold an address above 4 GiB.
        let cmds = parse(
            &[
                cmd(1, &[(0, b"a"), (56, &4u32.to_le_bytes()), (60, &[1])]),
                cmd(2, &[(0, b"a"), (56, b"a"), (112, &0u32.to_le_bytes()), (116, &[4])]),
            ]
            .concat(),
        )
        .unwrap();
        assert!(link(&cmds, &mut |_| Some(vec![0u8; 8]), &mut |_, _| Some(0x1_0000_0000)).is_err());
    }
}
