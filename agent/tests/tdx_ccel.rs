//! The TCG2 event-log code against a real TD's CC event log (CCEL): go-tdx-guest's recorded
//! log of a Container-Optimized-OS TD, whose replay must give the RTMRs of that TD's quote
//! (shared/testdata/tdx/ccel-rtmr-replay). The CC measurement-register index of an event is
//! 1..4 for RTMR0..3 (UEFI CC measurement mapping), each extended with SHA-384 from zero.
mod common;

use common::{testdata, unhex};
use veil_agent::tpm::Bank;
use veil_agent::tpm::eventlog;

#[test]
fn ccel_replays_to_the_quoted_rtmrs() {
    let Some(dir) = testdata("tdx/ccel-rtmr-replay/go-tdx-guest") else { return };
    let log = std::fs::read(dir.join("ccel_data.dat")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected_rtmrs_from_quote.json")).unwrap()).unwrap();
    let (banks, events) = eventlog::parse(&log).unwrap();
    assert_eq!(banks, [Bank::Sha384], "a TD's CCEL is SHA-384 only");
    assert_eq!(events.iter().filter(|e| e.event_type != 3).count(), 43, "the 43 measurement events SOURCE.txt names");
    let replayed = eventlog::replay(&events, Bank::Sha384);
    for rtmr in 0..4u32 {
        let want = unhex(expected[format!("rtmr{rtmr}")].as_str().unwrap());
        let got = replayed.get(&(rtmr + 1)).cloned().unwrap_or(vec![0; 48]);
        assert_eq!(hex::encode(got), hex::encode(want), "RTMR{rtmr} (CC MR index {})", rtmr + 1);
    }
    // A flipped digest byte changes the replay: the check can fail.
    let mut tampered = events.clone();
    let e = tampered.iter_mut().find(|e| e.pcr == 2).unwrap();
    e.digests[0].1[0] ^= 1;
    assert_ne!(eventlog::replay(&tampered, Bank::Sha384).get(&2), replayed.get(&2));
}
