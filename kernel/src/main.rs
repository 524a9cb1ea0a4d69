//! veilboot firmware entry point.
//!
//! This is the foundation stage of the unikernel: a freestanding x86_64-unknown-none binary
//! that links `veil-agent` with its allocator and panic handler in place. The boot path
//! (reset vector, long mode, devices) is the firmware-boot issue's work; until it lands the
//! binary has no reset vector and is not yet a loadable ROM.
#![no_std]
#![no_main]

extern crate alloc;

mod heap;

use veil_agent::xts::SectorCipher;

/// Entry symbol. The firmware-boot issue jumps here from the 64-bit trampoline.
#[unsafe(no_mangle)]
pub extern "C" fn veil_main() -> ! {
    heap::init();
    // Exercise the agent on the target so that the link proves the whole stack is usable
    // here: a sector round trip through the XTS cipher.
    let key: [u8; 64] = core::array::from_fn(|i| i as u8);
    let ok = match SectorCipher::new(&key, 4096) {
        Ok(cipher) => {
            let mut sector = alloc::vec![0xa5u8; 4096];
            cipher.encrypt_sectors(8, &mut sector).is_ok()
                && cipher.decrypt_sectors(8, &mut sector).is_ok()
                && sector.iter().all(|b| *b == 0xa5)
        }
        Err(_) => false,
    };
    halt(ok)
}

fn halt(_ok: bool) -> ! {
    loop {
        // SAFETY: `hlt` only stops the CPU until the next interrupt; it touches no memory.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    halt(false)
}
