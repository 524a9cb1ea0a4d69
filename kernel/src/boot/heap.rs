//! The firmware heap: a small arena in .bss for the first allocations (fw_cfg directory,
//! the e820 map), then a large region chosen from the e820 map. Two first-fit heaps behind
//! one allocator; a block is freed back to the heap whose range contains it.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use linked_list_allocator::Heap;
use spin::Mutex;
use veil_agent::fwcfg::E820Entry;
use veil_agent::memmap::{HeapLimits, choose_heap};

use crate::arch::layout::{HEAP_FLOOR, HEAP_PREFERRED};

const EARLY_SIZE: usize = 512 * 1024;
/// The main heap takes at most this much RAM (the rest stays for Linux).
const MAIN_MAX: u64 = 256 << 20;

struct TwoHeaps {
    early: Mutex<Heap>,
    main: Mutex<Heap>,
}

#[global_allocator]
static ALLOCATOR: TwoHeaps = TwoHeaps { early: Mutex::new(Heap::empty()), main: Mutex::new(Heap::empty()) };

static mut EARLY: [u8; EARLY_SIZE] = [0; EARLY_SIZE];

fn contains(heap: &Heap, ptr: *mut u8) -> bool {
    let p = ptr as usize;
    heap.size() > 0 && p >= heap.bottom() as usize && p < heap.top() as usize
}

// SAFETY: each heap hands out disjoint blocks from its own region and takes back only
// blocks inside that region; the mutexes serialize access.
unsafe impl GlobalAlloc for TwoHeaps {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Ok(p) = self.main.lock().allocate_first_fit(layout) {
            return p.as_ptr();
        }
        self.early.lock().allocate_first_fit(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(nn) = NonNull::new(ptr) else { return };
        let mut main = self.main.lock();
        if contains(&main, ptr) {
            // SAFETY: the block came from this heap with this layout.
            unsafe { main.deallocate(nn, layout) };
        } else {
            drop(main);
            // SAFETY: not from the main heap, so from the early one, with this layout.
            unsafe { self.early.lock().deallocate(nn, layout) };
        }
    }
}

/// Give the early arena to the allocator. First thing in Rust.
pub fn init_early() {
    // SAFETY: called once before any allocation; EARLY is used by nothing else.
    unsafe { ALLOCATOR.early.lock().init((&raw mut EARLY).cast::<u8>(), EARLY_SIZE) };
}

/// Where the main heap may go: above the firmware, from 80 MiB when 32 MiB or more are there
/// (the window below stays free for Linux), at most MAIN_MAX.
pub const LIMITS: HeapLimits =
    HeapLimits { floor: HEAP_FLOOR, preferred: HEAP_PREFERRED, preferred_room: 32 << 20, max: MAIN_MAX, min: 1 << 20 };

/// What the firmware itself allocates in a direct boot besides the initrd (ACPI tables, the
/// boot parameters, the hand-off archive, event logs).
const DIRECT_BOOT_OVERHEAD: u64 = 2 << 20;
/// ... and on a confidential platform: also the fw_cfg DMA bounce buffer (2 MiB) and the
/// virtio bounce pool (4 MiB), both 2 MiB aligned so that they are shared as large pages.
const DIRECT_BOOT_OVERHEAD_CC: u64 = 10 << 20;

/// Choose the main heap from the memory map. Returns (start, size). A direct boot (`direct`:
/// the kernel's range and the initrd's size) puts the heap above the kernel
/// (veil_agent::memmap::choose_heap_above_kernel), so it needs no more RAM than the kernel,
/// its initrd and a few MiB; otherwise veil_agent::memmap::choose_heap. On a `confidential`
/// platform the heap is 2 MiB aligned (validated or accepted in large pages).
pub fn choose_main(map: &[E820Entry], direct: Option<((u64, u64), u64)>, confidential: bool) -> Option<(u64, u64)> {
    let (overhead, align) =
        if confidential { (DIRECT_BOOT_OVERHEAD_CC, 2 << 20) } else { (DIRECT_BOOT_OVERHEAD, 4096) };
    if let Some((kernel, initrd)) = direct
        && let Some(h) = veil_agent::memmap::choose_heap_above_kernel(
            map,
            kernel,
            initrd.next_multiple_of(4096) + overhead,
            MAIN_MAX,
            align,
            HEAP_FLOOR,
        )
    {
        return Some(h);
    }
    choose_heap(map, &LIMITS)
}

/// The main heap's range: (start, size).
pub fn main_range() -> (u64, u64) {
    let heap = ALLOCATOR.main.lock();
    (heap.bottom() as u64, heap.size() as u64)
}

/// Hand the range `choose_main` picked (and the platform accepted) to the allocator, once it
/// holds the heap invariant (crate::arch::layout::check_heap): never the firmware's own memory.
pub fn init_main(start: u64, size: u64) -> Result<(), veil_agent::memmap::HeapRefusal> {
    crate::arch::layout::check_heap(start, size)?;
    // SAFETY: the range is RAM per e820, identity mapped, at or above HEAP_FLOOR and clear of
    // every range the firmware itself uses (checked just above), accepted by the platform,
    // and handed over exactly once.
    unsafe { ALLOCATOR.main.lock().init(start as *mut u8, size as usize) };
    Ok(())
}
