//! The firmware heap. A fixed region in .bss for now; the firmware-boot issue sizes it
//! from the e820 map.
use linked_list_allocator::LockedHeap;

const HEAP_SIZE: usize = 1 << 20;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

static mut HEAP: [u8; HEAP_SIZE] = [0; HEAP_SIZE];

/// Hand the heap region to the allocator. Called once, first thing at boot.
pub fn init() {
    // SAFETY: called once before any allocation; HEAP is used by nothing else, and
    // `&raw mut` takes its address without creating a reference.
    unsafe { ALLOCATOR.lock().init((&raw mut HEAP).cast::<u8>(), HEAP_SIZE) };
}
