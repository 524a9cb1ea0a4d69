//! Time: the TSC frequency (CPUID leaf 0x15/0x16, else calibrated against the PIT) and the
//! boot timeline marks (`veil: t=<us> stage=<name>`; QEMU starts the TSC at 0 on reset, so
//! t is the time since the VM started running; see `set_base` for VMMs that do not).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::cpu::port::{inb, outb};
use crate::arch::cpu::{cpuid, rdtsc};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_BASE: AtomicU64 = AtomicU64::new(0);

/// How the frequency was found.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// CPUID leaf 0x15 (crystal ratio).
    Cpuid15,
    /// CPUID leaf 0x16 (base frequency).
    Cpuid16,
    /// Measured against PIT channel 2.
    Pit,
    /// Nothing worked; 1 GHz assumed (marks are then approximate).
    Assumed,
}

const PIT_HZ: u64 = 1_193_182;
const PIT_COUNT: u16 = 2386; // 2 ms

fn calibrate_pit() -> Option<u64> {
    // Gate channel 2 on, speaker off; mode 0 (interrupt on terminal count), binary.
    outb(0x61, (inb(0x61) & !0x02) | 0x01);
    outb(0x43, 0xB0);
    outb(0x42, PIT_COUNT as u8);
    outb(0x42, (PIT_COUNT >> 8) as u8);
    let start = rdtsc();
    // OUT2 (port 0x61 bit 5) goes high at terminal count. Bounded, in case there is no PIT.
    for _ in 0..50_000_000u32 {
        if inb(0x61) & 0x20 != 0 {
            let ticks = rdtsc() - start;
            return Some(ticks * PIT_HZ / u64::from(PIT_COUNT));
        }
    }
    None
}

/// Find the TSC frequency.
pub fn calibrate() -> (u64, Source) {
    let max = cpuid(0, 0).eax;
    let (hz, src) = if max >= 0x15 && {
        let l = cpuid(0x15, 0);
        l.eax != 0 && l.ebx != 0 && l.ecx != 0
    } {
        let l = cpuid(0x15, 0);
        (u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax), Source::Cpuid15)
    } else if max >= 0x16 && cpuid(0x16, 0).eax & 0xFFFF != 0 {
        (u64::from(cpuid(0x16, 0).eax & 0xFFFF) * 1_000_000, Source::Cpuid16)
    } else if let Some(hz) = calibrate_pit() {
        (hz, Source::Pit)
    } else {
        (1_000_000_000, Source::Assumed)
    };
    TSC_HZ.store(hz.max(1), Ordering::Relaxed);
    (hz, src)
}

/// Microseconds for a TSC value, since the time base.
pub fn micros(tsc: u64) -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0; // not calibrated yet (a failure before the timeline starts)
    }
    (u128::from(tsc.saturating_sub(TSC_BASE.load(Ordering::Relaxed))) * 1_000_000 / u128::from(hz)) as u64
}

/// Choose the time base given the TSC at firmware entry: QEMU resets the TSC to 0 with the
/// VM, so marks count from the reset; a VMM that does not (some nested hypervisors) would
/// give times since its host booted, so then marks count from firmware entry instead.
/// Returns true if the TSC was reset with the VM.
pub fn set_base(entry_tsc: u64) -> bool {
    if micros(entry_tsc) > 60_000_000 {
        TSC_BASE.store(entry_tsc, Ordering::Relaxed);
        false
    } else {
        true
    }
}

/// Every mark so far (stage, microseconds), for the hand-off file.
pub static MARKS: spin::Mutex<alloc::vec::Vec<(&'static str, u64)>> = spin::Mutex::new(alloc::vec::Vec::new());

/// Print a timeline mark for `stage` at TSC value `tsc`.
pub fn mark_at(tsc: u64, stage: &'static str) {
    MARKS.lock().push((stage, micros(tsc)));
    use core::fmt::Write as _;
    let mut out = crate::arch::serial::Serial;
    let _ = veil_agent::timeline::write_mark(&mut out, micros(tsc), stage);
    let _ = out.write_str("\n");
}

/// Print a timeline mark for `stage` now.
pub fn mark(stage: &'static str) {
    mark_at(rdtsc(), stage);
}
