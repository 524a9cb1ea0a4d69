//! Every secret the firmware holds is registered here, and `wipe_all` zeroes them before the
//! jump to Linux (the disk keys handed over travel in the initrd, not in firmware memory).
//! Volatile writes keep the compiler from dropping the wipe.

use alloc::vec::Vec;

use spin::Mutex;

struct Region(*mut u8, usize);

// SAFETY: one CPU; the regions are only touched by `wipe_all`, with the lock held.
unsafe impl Send for Region {}

static REGIONS: Mutex<Vec<Region>> = Mutex::new(Vec::new());

/// Register a secret buffer. It must stay allocated (leaked or static) until `wipe_all`.
/// (Today only the canary test registers one: the plain platform's secrets are all
/// `Zeroizing` values dropped before the hand-off.)
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub fn register(secret: &'static mut [u8]) {
    REGIONS.lock().push(Region(secret.as_mut_ptr(), secret.len()));
}

/// Zero every registered secret and check that it reads back as zero.
/// Returns (regions, bytes).
pub fn wipe_all() -> Result<(usize, usize), usize> {
    let mut regions = REGIONS.lock();
    let mut bytes = 0;
    for Region(ptr, len) in regions.iter() {
        for i in 0..*len {
            // SAFETY: `register` took a 'static mutable slice of this length; nothing else
            // holds it.
            unsafe { ptr.add(i).write_volatile(0) };
        }
        bytes += len;
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    for (n, Region(ptr, len)) in regions.iter().enumerate() {
        // SAFETY: the same registered 'static slices, read back within their length.
        if (0..*len).any(|i| unsafe { ptr.add(i).read_volatile() } != 0) {
            return Err(n);
        }
    }
    let count = regions.len();
    regions.clear();
    Ok((count, bytes))
}
