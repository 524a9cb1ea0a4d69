//! Measured boot on TDX: the plain platform's measurement plan (crate::tpm::measure) mapped to
//! the TD's registers as the UEFI CC measurement mapping does it (UEFI 2.10 section 38.4.1):
//! PCR 0 is MRTD (the TDX module measured the ROM at launch: nothing to extend), PCRs 1 and 7
//! are CC MR index 1 = RTMR0, PCRs 2-6 index 2 = RTMR1, PCRs 8-15 index 3 = RTMR2. Digests are
//! SHA-384; the event log is the TCG2 crypto-agile format with SHA-384 only, its records'
//! first field the MR index (the CCEL layout), which the event-log parser replays.

use crate::tpm::Bank;
use crate::tpm::measure::Measurement;

/// The CC MR index of `pcr` (0: MRTD, not extendable).
pub fn mr_index(pcr: u32) -> u32 {
    match pcr {
        0 => 0,
        1 | 7 => 1,
        2..=6 => 2,
        8..=15 => 3,
        _ => 4,
    }
}

/// The RTMR (0-3) a measurement goes into, or None for PCR 0 (MRTD).
pub fn rtmr_of(m: &Measurement<'_>) -> Option<u8> {
    match mr_index(m.pcr) {
        0 => None,
        i => Some((i - 1) as u8),
    }
}

/// Predict RTMR0-3 after `plan`: each starts at zero, `RTMR = SHA-384(RTMR || digest)`.
pub fn predict(plan: &[Measurement<'_>]) -> [[u8; 48]; 4] {
    use sha2::Digest;
    let mut rtmr = [[0u8; 48]; 4];
    for m in plan {
        if let Some(i) = rtmr_of(m) {
            let mut h = sha2::Sha384::new();
            h.update(rtmr[usize::from(i)]);
            h.update(m.digest(Bank::Sha384));
            rtmr[usize::from(i)] = h.finalize().into();
        }
    }
    rtmr
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::measure;

    #[test]
    fn the_uefi_cc_mapping() {
        assert_eq!([0, 1, 2, 4, 6, 7, 8, 9, 15, 16].map(mr_index), [0, 1, 2, 2, 2, 1, 3, 3, 3, 4]);
        assert_eq!(rtmr_of(&measure::rom(b"rom")), None);
        assert_eq!(rtmr_of(&measure::config("etc/e820", b"x")), Some(0));
        assert_eq!(rtmr_of(&measure::cmdline("console=ttyS0")), Some(2));
        // Replaying a log written with the same plan gives the same registers.
        let plan = [measure::config("etc/e820", b"x"), measure::cmdline("quiet")];
        let mut log = crate::tpm::eventlog::EventLog::new(&[Bank::Sha384]);
        for m in &plan {
            log.record(mr_index(m.pcr), m.event_type, &[(Bank::Sha384, m.digest(Bank::Sha384))], &m.event_data);
        }
        let (_, events) = crate::tpm::eventlog::parse(log.as_bytes()).unwrap();
        let replayed = crate::tpm::eventlog::replay(&events, Bank::Sha384);
        let predicted = predict(&plan);
        assert_eq!(replayed[&1][..], predicted[0][..]);
        assert_eq!(replayed[&3][..], predicted[2][..]);
    }
}
