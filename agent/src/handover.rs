//! Where the firmware hands the volume keys to the initramfs: the contract between the
//! hand-off archive (`cpio::handoff_archive`, appended to the initrd) and the crypttab that
//! `veil image build` writes into a distribution's root.
//!
//! The keys are files in the initramfs's own root filesystem, outside `/run`: every stock
//! initramfs mounts a fresh tmpfs on `/run` before it opens disks (initramfs-tools' `init`;
//! systemd in an initrd mounts its own `/run` when it is not a mount point), which would hide
//! a file unpacked there. Both families switch to the real root with a tool that first
//! deletes everything on the initramfs's rootfs (klibc `run-init`, systemd's `switch-root`,
//! busybox `switch_root`), so after the switch the key is on no filesystem.
//!
//! The path is the one Debian's cryptsetup-initramfs itself gives a key file inside the
//! initramfs: its hook (`/usr/share/initramfs-tools/hooks/cryptroot`, `crypttab_print_entry`)
//! rewrites a crypttab key file that matches the `KEYFILE_PATTERN` of
//! `/etc/cryptsetup-initramfs/conf-hook` to `/cryptroot/keyfiles/<name>.key`, and keeps the
//! entry even when the file does not exist at build time (it only warns). A systemd initrd
//! (dracut) reads the same `/etc/crypttab` line and opens the key file at the path written.
//! So one crypttab line, `veil-root UUID=<uuid> /cryptroot/keyfiles/veil-root.key luks`, names
//! the key in both families, and the firmware puts it exactly there.

/// The crypttab name (and device-mapper name) of the root volume.
pub const ROOT_NAME: &str = "veil-root";
/// The crypttab name of the state disk's volume.
pub const STATE_NAME: &str = "veil-state";
/// The directory of the key files in the initramfs (mode 0700, its parent too).
pub const KEY_DIR: &str = "cryptroot/keyfiles";
/// The root volume's key (mode 0400) in the initramfs: `KEY_DIR/ROOT_NAME.key`.
pub const ROOT_KEY: &str = "cryptroot/keyfiles/veil-root.key";
/// The state disk's key (mode 0400) in the initramfs: `KEY_DIR/STATE_NAME.key`.
pub const STATE_KEY: &str = "cryptroot/keyfiles/veil-state.key";
/// The root volume's LUKS2 UUID (not secret) beside the hand-off document.
pub const ROOT_UUID: &str = "veil/root.uuid";
/// The state disk's LUKS2 UUID (not secret).
pub const STATE_UUID: &str = "veil/state.uuid";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_are_where_cryptsetup_initramfs_puts_a_named_key_file() {
        // crypttab_print_entry: keyfile="/cryptroot/keyfiles/$CRYPTTAB_NAME.key"
        assert_eq!(ROOT_KEY, alloc::format!("{KEY_DIR}/{ROOT_NAME}.key"));
        assert_eq!(STATE_KEY, alloc::format!("{KEY_DIR}/{STATE_NAME}.key"));
        for p in [ROOT_KEY, STATE_KEY, ROOT_UUID, STATE_UUID] {
            assert!(!p.starts_with('/') && !p.starts_with("run/"), "{p}");
        }
    }
}
