//! Shared helpers for the corpus tests: where shared/testdata lives and how to read it.
#![allow(dead_code)]

pub mod images;

/// The shared test corpus (`../shared/testdata` from the project root, or $VEIL_TESTDATA): the
/// one rule of veil_testkit::require (a loud skip, or a failure under $VEIL_REQUIRE_TESTDATA).
#[allow(unused_imports)]
pub use veil_testkit::testdata;

pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim()).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

#[allow(unused)]
pub mod tdx_forge;
#[allow(unused)]
pub mod test_pki;
