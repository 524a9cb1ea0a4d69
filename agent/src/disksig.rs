//! Signatures that mark a disk as in use. The firmware formats a second disk as its state
//! volume only when it is blank; a disk with any of these is never touched, and the name says
//! why in the log.

/// Bytes of the disk's start the check needs.
pub const PROBE: usize = 0x10048;

/// The first signature found in `head` (the disk's first bytes), by name.
pub fn signature(head: &[u8]) -> Option<&'static str> {
    let at = |o: usize, m: &[u8]| head.get(o..o + m.len()) == Some(m);
    if at(0, b"LUKS\xba\xbe") {
        Some("a LUKS header")
    } else if at(512, b"EFI PART") {
        Some("a GPT partition table")
    } else if at(510, &[0x55, 0xAA]) {
        Some("an MBR boot signature")
    } else if at(1080, &[0x53, 0xEF]) {
        Some("an ext2/3/4 superblock")
    } else if at(0, b"XFSB") {
        Some("an XFS superblock")
    } else if at(4086, b"SWAPSPACE2") {
        Some("a swap signature")
    } else if at(0x10040, b"_BHRfS_M") {
        Some("a btrfs superblock")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_signature_and_nothing_on_a_blank_disk() {
        let blank = alloc::vec![0u8; PROBE];
        assert_eq!(signature(&blank), None);
        for (offset, magic, name) in [
            (0, &b"LUKS\xba\xbe"[..], "a LUKS header"),
            (512, b"EFI PART", "a GPT partition table"),
            (510, &[0x55, 0xAA], "an MBR boot signature"),
            (1080, &[0x53, 0xEF], "an ext2/3/4 superblock"),
            (0, b"XFSB", "an XFS superblock"),
            (4086, b"SWAPSPACE2", "a swap signature"),
            (0x10040, b"_BHRfS_M", "a btrfs superblock"),
        ] {
            let mut head = blank.clone();
            head[offset..offset + magic.len()].copy_from_slice(magic);
            assert_eq!(signature(&head), Some(name));
        }
        // A short read cannot hold a signature past its end, and does not panic.
        assert_eq!(signature(&[0u8; 100]), None);
    }
}
