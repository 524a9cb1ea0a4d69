//! The state disk's decision from its three probes: the input is laid over the start of an
//! otherwise blank head (where the firmware's format writes), and its first byte picks which
//! of the other probes is non-zero; the decision must never panic and must call nothing
//! with data past the format's footprint an interrupted format.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::statedisk::{Footprint, Found, MIN_SIZE, PROBE, classify};

fuzz_target!(|data: &[u8]| {
    let Some((pick, data)) = data.split_first() else { return };
    let mut head = vec![0u8; PROBE as usize];
    let n = data.len().min(head.len());
    head[..n].copy_from_slice(&data[..n]);
    let mut other = vec![0u8; PROBE as usize];
    let (mut body, mut tail) = (other.clone(), core::mem::take(&mut other));
    match pick % 3 {
        1 => body[usize::from(*pick)] = 1,
        2 => tail[usize::from(*pick)] = 1,
        _ => {}
    }
    let found = classify(MIN_SIZE, &head, &body, &tail);
    let past_footprint = head[Footprint::of_format().end() as usize..].iter().any(|b| *b != 0);
    if let Found::InterruptedFormat(_) = found {
        assert!(pick % 3 == 0 && !past_footprint);
    }
});
