//! A hostile hypervisor driven by the fuzzer: every MSR-protocol answer, every GHCB page it
//! hands back and every PVALIDATE result come from the input. The guest's GHCB code must
//! refuse or accept, never panic, loop for ever or read out of bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::snp::ghcb::{self, Ghcb, GhcbPage, PageState, Pvalidate, SnpCpu};
use veil_agent::snp::memory;

struct Fuzzed<'a> {
    data: &'a [u8],
    calls: usize,
}

impl Fuzzed<'_> {
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a.to_vec()
    }
    fn u64(&mut self) -> u64 {
        let mut b = self.take(8);
        b.resize(8, 0);
        u64::from_le_bytes(b.try_into().unwrap())
    }
}

impl SnpCpu for Fuzzed<'_> {
    fn msr_protocol(&mut self, _request: u64) -> u64 {
        self.u64()
    }
    fn vmgexit(&mut self, page: &mut GhcbPage) {
        self.calls += 1;
        // Overwrite a fuzzer-chosen window of the page with fuzzer bytes.
        let at = (self.u64() as usize) % ghcb::PAGE;
        let bytes = self.take(64);
        let n = bytes.len().min(ghcb::PAGE - at);
        page.0[at..at + n].copy_from_slice(&bytes[..n]);
        if self.data.is_empty() {
            // Out of input: answer as an honest hypervisor that finished everything.
            page.0[0x3F0..0x400].fill(0xFF);
            page.0[0x398..0x3A8].fill(0);
            page.0[0xFFA..0xFFC].copy_from_slice(&2u16.to_le_bytes());
            page.0[0xFFC..0x1000].fill(0);
            page.0[0x800..0x802].copy_from_slice(&u16::MAX.to_le_bytes());
        }
    }
    fn pvalidate(&mut self, _gpa: u64, _huge: bool, _validate: bool) -> Pvalidate {
        match self.take(1).first().copied().unwrap_or(0) % 4 {
            0 => Pvalidate::Done { changed: true },
            1 => Pvalidate::Done { changed: false },
            2 => Pvalidate::SizeMismatch,
            _ => Pvalidate::FailInput,
        }
    }
    fn touch(&mut self, _gpa: u64) {}
    fn write_shared(&mut self, _gpa: u64, _bytes: &[u8]) {}
    fn read_shared(&mut self, _gpa: u64, out: &mut [u8]) {
        // The hypervisor's bytes in the shared guest-request page.
        let bytes = self.take(out.len());
        out[..bytes.len()].copy_from_slice(&bytes);
    }
    fn ghcb_gpa(&self) -> u64 {
        0x80_4000
    }
}

fuzz_target!(|data: &[u8]| {
    let mut cpu = Fuzzed { data, calls: 0 };
    let _ = ghcb::check_sev_info(&mut cpu, 51);
    let _ = ghcb::hv_features(&mut cpu);
    let _ = ghcb::register(&mut cpu, 0x80_0000);
    let _ = ghcb::msr_page_state(&mut cpu, 0x1000, PageState::Private);
    let mut g = Ghcb::new(&mut cpu);
    let _ = g.io_read(0x3FD, 1);
    let _ = g.io_read_bytes(0x511, &mut [0u8; 3000]);
    let _ = g.rdmsr(0x10);
    let _ = g.cpuid(0x4000_0000, 0);
    let _ = g.mmio_read(0xFE00_0000, 4, &|_| true);
    let _ = memory::validate(&mut g, 0x20_0000, 0x40_3000);
    let _ = memory::share(&mut g, 0x20_0000, 0x20_2000);
    // Bounded: a guest that kept calling a hypervisor making no progress would spin here.
    assert!(cpu.calls < 100_000);
});
