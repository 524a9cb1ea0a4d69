//! How `veil` ends: argument errors found after clap's parse exit 2 like clap's own
//! (`UsageError`), every other failure exits 1 with one line, and some failures get a second
//! line with the hint a user needs (a wrong master secret, a truncated file, a whole disk given
//! where a volume was expected).

use std::fmt;

use veil_agent::gpt::GptError;
use veil_agent::io::IoError;
use veil_agent::luks2::{Luks2Error, Luks2ErrorKind};

/// An argument that parsed but cannot be used (bad hex, an unknown partition name, a platform
/// without the inputs it needs): exit status 2, as for clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An argument error as an `anyhow::Error` (exit status 2).
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Return early with an argument error (exit status 2).
#[macro_export]
macro_rules! usage_bail {
    ($($t:tt)*) => {
        return Err($crate::cli_error::usage(format!($($t)*)))
    };
}

/// The exit status for an error: 2 when any cause is an argument error, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<UsageError>()) { 2 } else { 1 }
}

/// A hint for what usually causes this error, if there is one.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Luks2Error>() {
            match e.kind() {
                Luks2ErrorKind::WrongPassphrase => {
                    return Some(
                        "the key or master secret is not one this volume was made with (another cluster's secret? another disk?)",
                    );
                }
                Luks2ErrorKind::Io(IoError::OutOfRange { .. }) | Luks2ErrorKind::DeviceTooSmall { .. } => {
                    return Some(TRUNCATED);
                }
                Luks2ErrorKind::NoValidHeader { .. } => {
                    return Some(
                        "not a LUKS2 volume: for a disk made by `veil image build` name the partition with --part veil-boot or --part veil-root (`veil image inspect DISK` lists them)",
                    );
                }
                _ => {}
            }
        }
        match cause.downcast_ref::<GptError>() {
            Some(GptError::Io(IoError::OutOfRange { .. })) => return Some(TRUNCATED),
            // The primary table names a disk larger than the file, and the backup (at the
            // file's end) is missing: the file was cut.
            Some(GptError::NoValidTable { primary, .. }) if primary.contains("does not fit the disk") => {
                return Some(TRUNCATED);
            }
            _ => {}
        }
    }
    None
}

const TRUNCATED: &str = "the file is shorter than its headers say: truncated, or still being copied?";
