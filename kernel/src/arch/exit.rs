//! Ending a run: QEMU's isa-debug-exit device (when present) turns a status into QEMU's exit
//! code, so tests see success or failure; without it the CPU just halts. [`fail`] is the one
//! way a boot fails. A platform with its own way to report a failure to the host (SEV-SNP's
//! termination request) installs it as [`FailureHooks`].

use core::sync::atomic::{AtomicPtr, Ordering};

use crate::arch::cpu::{halt_forever, port::outb};

const DEBUG_EXIT_PORT: u16 = 0xF4;

/// How a run ended. QEMU exits with `(code << 1) | 1`: 33 for success, 35 for failure.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Status {
    /// Everything worked.
    Success = 0x10,
    /// A precise error was printed.
    Failure = 0x11,
}

/// What a platform adds to a failing boot.
pub struct FailureHooks {
    /// Before the FATAL line is printed (SNP: let the message through a GHCB held by the
    /// failing code).
    pub before_message: fn(),
    /// After the debug-exit write (SNP: request termination; may not return).
    pub after_exit_port: fn(),
}

static FAILURE_HOOKS: AtomicPtr<FailureHooks> = AtomicPtr::new(core::ptr::null_mut());

/// Install the platform's failure hooks.
pub fn set_failure_hooks(hooks: &'static FailureHooks) {
    FAILURE_HOOKS.store(core::ptr::from_ref(hooks).cast_mut(), Ordering::SeqCst);
}

fn failure_hooks() -> Option<&'static FailureHooks> {
    let hooks = FAILURE_HOOKS.load(Ordering::SeqCst);
    // SAFETY: only `&'static FailureHooks` values are ever stored (set_failure_hooks).
    (!hooks.is_null()).then(|| unsafe { &*hooks })
}

/// Print a precise error and stop with a failure status: the one way a boot fails.
pub fn fail(what: core::fmt::Arguments<'_>) -> ! {
    if let Some(hooks) = failure_hooks() {
        (hooks.before_message)();
    }
    crate::log!("FATAL: {what}");
    crate::arch::tsc::mark("halt");
    exit(Status::Failure)
}

/// Stop the machine with a status.
pub fn exit(status: Status) -> ! {
    outb(DEBUG_EXIT_PORT, status as u8);
    if let (Status::Failure, Some(hooks)) = (status, failure_hooks()) {
        (hooks.after_exit_port)();
    }
    halt_forever()
}
