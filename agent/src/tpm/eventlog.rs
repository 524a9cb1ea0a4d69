//! The TCG2 crypto-agile event log (TCG PC Client Platform Firmware Profile, section 10): a
//! Spec ID event (SHA-1 log format, EV_NO_ACTION, "Spec ID Event03") naming the banks, then
//! one TCG_PCR_EVENT2 per measurement with a digest for every bank. All fields little-endian.
//!
//! The firmware writes it (and hands it to Linux through the ACPI TPM2 table's log area);
//! the host parses logs it did not write (`veil`), so [`parse`] treats its input as hostile.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::Bank;

/// EV_NO_ACTION: logged, never extended.
pub const EV_NO_ACTION: u32 = 0x3;
/// EV_SEPARATOR.
pub const EV_SEPARATOR: u32 = 0x4;
/// EV_S_CRTM_CONTENTS.
pub const EV_S_CRTM_CONTENTS: u32 = 0x7;
/// EV_PLATFORM_CONFIG_FLAGS.
pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0xA;
/// EV_COMPACT_HASH.
pub const EV_COMPACT_HASH: u32 = 0xC;
/// EV_IPL.
pub const EV_IPL: u32 = 0xD;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// Largest event data accepted by the parser.
pub const MAX_EVENT_DATA: usize = 1 << 20;

/// One logged measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// PCR index.
    pub pcr: u32,
    /// Event type.
    pub event_type: u32,
    /// One digest per bank, in the log's bank order.
    pub digests: Vec<(Bank, Vec<u8>)>,
    /// Event data.
    pub data: Vec<u8>,
}

/// An event log being written.
#[derive(Debug, Clone)]
pub struct EventLog {
    banks: Vec<Bank>,
    bytes: Vec<u8>,
    events: usize,
}

impl EventLog {
    /// A log for `banks`, starting with its Spec ID event.
    pub fn new(banks: &[Bank]) -> EventLog {
        let mut spec = Vec::new();
        spec.extend_from_slice(SPEC_ID_SIGNATURE);
        spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
        spec.extend_from_slice(&[0, 2, 0, 2]); // version 2.0, errata 0, UINTN = 64 bit
        spec.extend_from_slice(&(banks.len() as u32).to_le_bytes());
        for b in banks {
            spec.extend_from_slice(&b.alg_id().to_le_bytes());
            spec.extend_from_slice(&(b.size() as u16).to_le_bytes());
        }
        spec.push(0); // vendorInfoSize
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 20]);
        bytes.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&spec);
        EventLog { banks: banks.to_vec(), bytes, events: 0 }
    }

    /// The banks every event carries a digest for.
    pub fn banks(&self) -> &[Bank] {
        &self.banks
    }

    /// Append an event. `digests` must hold exactly the log's banks, in order.
    pub fn record(&mut self, pcr: u32, event_type: u32, digests: &[(Bank, Vec<u8>)], data: &[u8]) {
        assert!(
            digests.len() == self.banks.len()
                && digests.iter().zip(&self.banks).all(|((b, d), want)| b == want && d.len() == b.size()),
            "event digests must match the log's banks"
        );
        self.bytes.extend_from_slice(&pcr.to_le_bytes());
        self.bytes.extend_from_slice(&event_type.to_le_bytes());
        self.bytes.extend_from_slice(&(digests.len() as u32).to_le_bytes());
        for (b, d) in digests {
            self.bytes.extend_from_slice(&b.alg_id().to_le_bytes());
            self.bytes.extend_from_slice(d);
        }
        self.bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(data);
        self.events += 1;
    }

    /// Number of events after the Spec ID event.
    pub fn len(&self) -> usize {
        self.events
    }

    /// True before the first measurement.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The log as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Why a log was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event log at byte {}: {}", self.offset, self.what)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], LogError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| LogError { offset: self.pos, what: alloc::format!("truncated {what}") })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, LogError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u16(&mut self, what: &str) -> Result<u16, LogError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn err(&self, what: impl Into<String>) -> LogError {
        LogError { offset: self.pos, what: what.into() }
    }
}

/// Parse a crypto-agile log (a TPM's, or a TD's CC event log). Trailing zero or 0xFF bytes
/// (the log area's free space) end it.
/// Returns the banks of the Spec ID event and the events after it.
pub fn parse(bytes: &[u8]) -> Result<(Vec<Bank>, Vec<Event>), LogError> {
    let mut r = Reader { bytes, pos: 0 };
    let (pcr, ty) = (r.u32("Spec ID header")?, r.u32("Spec ID header")?);
    r.take(20, "Spec ID header")?;
    let size = r.u32("Spec ID size")? as usize;
    // A TPM log's Spec ID event is in PCR 0; a CC event log's (TDVF's CCEL) carries CC
    // measurement-register index 1 there, as the recorded TD log shows.
    if pcr > 1 || ty != EV_NO_ACTION {
        return Err(LogError {
            offset: 0,
            what: "the first event is not the Spec ID event (PCR or CC MR index 0/1, EV_NO_ACTION)".into(),
        });
    }
    let spec = r.take(size, "Spec ID event")?;
    let mut s = Reader { bytes: spec, pos: 0 };
    if s.take(16, "signature")? != SPEC_ID_SIGNATURE {
        return Err(LogError { offset: 32, what: "no \"Spec ID Event03\" signature: not a crypto-agile log".into() });
    }
    s.take(8, "Spec ID version fields")?;
    let n = s.u32("algorithm count")? as usize;
    if n == 0 || n > 8 {
        return Err(s.err(alloc::format!("{n} algorithms")));
    }
    let mut sizes = BTreeMap::new();
    let mut banks = Vec::new();
    for _ in 0..n {
        let (alg, size) = (s.u16("algorithm")?, s.u16("digest size")?);
        sizes.insert(alg, size as usize);
        if let Some(b) = Bank::from_alg(alg) {
            if b.size() != size as usize {
                return Err(s.err(alloc::format!("{} with digest size {size}", b.name())));
            }
            banks.push(b);
        }
    }
    let vendor = s.take(1, "vendorInfoSize")?[0] as usize;
    s.take(vendor, "vendorInfo")?;

    let mut events = Vec::new();
    while r.pos < bytes.len() {
        // The log area's free space: zeros (an ACPI TPM log area), or 0xFF (TDVF's CCEL).
        let rest = &bytes[r.pos..];
        if rest.iter().all(|b| *b == 0) || rest.iter().all(|b| *b == 0xFF) {
            break;
        }
        let pcr = r.u32("PCR index")?;
        if pcr > 23 {
            return Err(r.err(alloc::format!("PCR index {pcr}")));
        }
        let event_type = r.u32("event type")?;
        let count = r.u32("digest count")? as usize;
        if count != n {
            return Err(r.err(alloc::format!("{count} digests where the Spec ID event declares {n} banks")));
        }
        let mut digests = Vec::new();
        for _ in 0..count {
            let alg = r.u16("digest algorithm")?;
            let size = *sizes
                .get(&alg)
                .ok_or_else(|| r.err(alloc::format!("digest algorithm {alg:#06x} not in the Spec ID event")))?;
            let d = r.take(size, "digest")?;
            if let Some(b) = Bank::from_alg(alg) {
                digests.push((b, d.to_vec()));
            }
        }
        let len = r.u32("event size")? as usize;
        if len > MAX_EVENT_DATA {
            return Err(r.err(alloc::format!("event data of {len} bytes")));
        }
        let data = r.take(len, "event data")?.to_vec();
        events.push(Event { pcr, event_type, digests, data });
    }
    Ok((banks, events))
}

/// Replay `events` into PCR values of `bank` (PCRs start at zero; EV_NO_ACTION is skipped).
/// Returns only the PCRs some event touched.
pub fn replay(events: &[Event], bank: Bank) -> BTreeMap<u32, Vec<u8>> {
    let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.event_type != EV_NO_ACTION) {
        if let Some((_, d)) = e.digests.iter().find(|(b, _)| *b == bank) {
            let old = pcrs.entry(e.pcr).or_insert_with(|| alloc::vec![0u8; bank.size()]);
            *old = bank.extend(old, d);
        }
    }
    pcrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(banks: &[Bank], data: &[u8]) -> Vec<(Bank, Vec<u8>)> {
        banks.iter().map(|b| (*b, b.digest(data))).collect()
    }

    #[test]
    fn round_trip_and_replay() {
        let banks = [Bank::Sha256, Bank::Sha384];
        let mut log = EventLog::new(&banks);
        log.record(4, EV_IPL, &digests(&banks, b"kernel"), b"kernel");
        log.record(4, EV_SEPARATOR, &digests(&banks, &[0; 4]), &[0; 4]);
        let mut area = log.as_bytes().to_vec();
        area.resize(area.len() + 4096, 0); // an ACPI log area's free space
        let (got_banks, events) = parse(&area).unwrap();
        assert_eq!(got_banks, banks);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, b"kernel");
        let pcrs = replay(&events, Bank::Sha256);
        let step1 = Bank::Sha256.extend(&[0; 32], &Bank::Sha256.digest(b"kernel"));
        let step2 = Bank::Sha256.extend(&step1, &Bank::Sha256.digest(&[0; 4]));
        assert_eq!(pcrs[&4], step2);
        assert_eq!(pcrs.len(), 1);
    }

    #[test]
    fn spec_id_event_layout() {
        // The fixed part of the header as the PC Client spec lays it out.
        let log = EventLog::new(&[Bank::Sha256]);
        let b = log.as_bytes();
        assert_eq!(&b[0..8], &[0, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&b[8..28], &[0; 20]);
        assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()) as usize, b.len() - 32);
        assert_eq!(&b[32..48], b"Spec ID Event03\0");
        assert_eq!(&b[56..60], &1u32.to_le_bytes());
        assert_eq!(&b[60..64], &[0x0B, 0, 32, 0]);
    }

    #[test]
    fn hostile_logs_are_refused_with_their_offset() {
        let banks = [Bank::Sha256];
        let mut log = EventLog::new(&banks);
        log.record(0, EV_IPL, &digests(&banks, b"x"), b"x");
        let good = log.as_bytes().to_vec();
        let head = good.len() - (4 + 4 + 4 + 2 + 32 + 4 + 1);
        // Truncated anywhere: an error, never a panic.
        for cut in 1..good.len() {
            let _ = parse(&good[..cut]);
        }
        assert!(parse(&good[..good.len() - 1]).unwrap_err().what.contains("truncated event data"));
        let mut bad = good.clone();
        bad[head] = 24;
        assert_eq!(parse(&bad).unwrap_err().what, "PCR index 24");
        let mut bad = good.clone();
        bad[head + 8] = 2;
        assert!(parse(&bad).unwrap_err().what.contains("2 digests"));
        let mut bad = good.clone();
        bad[head + 12] = 0x0C;
        assert!(parse(&bad).unwrap_err().what.contains("not in the Spec ID event"));
        let mut bad = good.clone();
        bad[head + 46..head + 50].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&bad).unwrap_err().what.contains("event data of"));
        let mut bad = good;
        bad[40] = b'X';
        assert!(parse(&bad).unwrap_err().what.contains("signature"));
    }
}
