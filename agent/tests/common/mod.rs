//! Shared helpers for the corpus tests: where shared/testdata lives and how to read it.
#![allow(dead_code)]

pub mod images;

use std::path::PathBuf;

/// The shared test corpus (`../shared/testdata` from the project root, or $VEIL_TESTDATA).
/// Returns None, after saying so loudly, when it is absent; with $VEIL_REQUIRE_TESTDATA set
/// (CI sets it) absence is a failure instead.
pub fn testdata(sub: &str) -> Option<PathBuf> {
    let root = std::env::var_os("VEIL_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"));
    let dir = root.join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("VEIL_REQUIRE_TESTDATA").is_some() {
        panic!("test corpus {} is missing and VEIL_REQUIRE_TESTDATA is set", dir.display());
    }
    eprintln!();
    eprintln!("!!! SKIPPED: test corpus {} is absent; only the literal vectors ran !!!", dir.display());
    eprintln!();
    None
}

pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim()).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}
