//! A hostile TDX module and VMM driven by the fuzzer: every TDCALL's output registers come
//! from the input. The guest's TDCALL code must refuse or accept, never panic or loop for ever.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::tdx::tdcall::{self, Regs, TdxCpu};

struct Fuzzed<'a> {
    data: &'a [u8],
    calls: usize,
}

impl Fuzzed<'_> {
    fn u64(&mut self) -> u64 {
        let n = self.data.len().min(8);
        let (a, b) = self.data.split_at(n);
        self.data = b;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(a);
        u64::from_le_bytes(v)
    }
}

impl TdxCpu for Fuzzed<'_> {
    fn tdcall(&mut self, r: &mut Regs) {
        self.calls += 1;
        if self.data.is_empty() {
            // Out of input: an honest success.
            (r.rax, r.r10) = (0, 0);
            return;
        }
        r.rax = self.u64() & 0xC000_0B0B_0000_0001;
        r.r10 = self.u64() & 3;
        r.r11 = self.u64();
        r.rcx = self.u64();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut cpu = Fuzzed { data, calls: 0 };
    let shared = 1u64 << 51;
    let _ = tdcall::vp_info(&mut cpu);
    let _ = tdcall::accept(&mut cpu, 0x20_0000, 0x60_1000);
    let _ = tdcall::io_read(&mut cpu, 0x3FD, 1);
    let _ = tdcall::mmio_read(&mut cpu, shared | 0xFEC0_0000, 4, shared);
    let _ = tdcall::map_gpa(&mut cpu, 0x80_0000, 0x40_0000, true, shared);
    let _ = tdcall::hypervisor_cpuid(&mut cpu, 0x4000_0000, 0);
    assert!(cpu.calls < 1_000_000);
});
