//! The boot timeline: one machine-readable serial line per stage boundary,
//! `veil: t=<microseconds since reset> stage=<name>`, written by the firmware and read back
//! by `veil boot-report`. A mark names the stage that begins at that time; each phase lasts
//! from its mark to the next one.

use alloc::string::String;
use alloc::vec::Vec;

/// Prefix of every timeline line.
pub const PREFIX: &str = "veil: t=";

/// Write one timeline line (without the newline) into `out`.
pub fn write_mark(out: &mut dyn core::fmt::Write, t_us: u64, stage: &str) -> core::fmt::Result {
    write!(out, "{PREFIX}{t_us} stage={stage}")
}

/// One parsed mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Microseconds since reset.
    pub t_us: u64,
    /// Stage that starts here.
    pub stage: String,
}

/// One phase: a stage and how long it lasted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Stage name.
    pub stage: String,
    /// Start, microseconds since reset.
    pub start_us: u64,
    /// Duration in microseconds (0 for the last mark).
    pub duration_us: u64,
}

/// Every timeline mark in a serial log, in order; other lines are ignored. Marks whose time
/// goes backwards or whose stage name is empty or not a plain word are skipped.
pub fn parse_log(log: &str) -> Vec<Mark> {
    let mut marks: Vec<Mark> = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.find(PREFIX).map(|i| &line[i + PREFIX.len()..]) else { continue };
        let Some((t, stage)) = rest.trim_end().split_once(" stage=") else { continue };
        let Ok(t_us) = t.parse::<u64>() else { continue };
        let plain = !stage.is_empty() && stage.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(&c));
        if !plain || marks.last().is_some_and(|m| m.t_us > t_us) {
            continue;
        }
        marks.push(Mark { t_us, stage: String::from(stage) });
    }
    marks
}

/// Phases from marks: each lasts until the next mark.
pub fn phases(marks: &[Mark]) -> Vec<Phase> {
    marks
        .iter()
        .enumerate()
        .map(|(i, m)| Phase {
            stage: m.stage.clone(),
            start_us: m.t_us,
            duration_us: marks.get(i + 1).map_or(0, |n| n.t_us - m.t_us),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_phases() {
        let mut s = String::new();
        write_mark(&mut s, 1200, "serial").unwrap();
        assert_eq!(s, "veil: t=1200 stage=serial");
        let log = "SeaBIOS noise\r\nveil: t=10 stage=reset\r\nveil: t=1200 stage=serial\nother\nveil: t=5000 stage=pci\nveil: t=4000 stage=backwards\nveil: t=x stage=bad\nveil: t=6000 stage=done\n";
        let marks = parse_log(log);
        assert_eq!(marks.iter().map(|m| m.stage.as_str()).collect::<Vec<_>>(), ["reset", "serial", "pci", "done"]);
        let p = phases(&marks);
        assert_eq!((p[0].duration_us, p[1].duration_us, p[2].duration_us, p[3].duration_us), (1190, 3800, 1000, 0));
    }
}
