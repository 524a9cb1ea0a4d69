//! Real TD quotes with their PCS collateral (shared/testdata/tdx/quotes/dcap-qvl, from
//! Phala's dcap-qvl): the up-to-date one verifies at the collateral's validity time with status
//! UpToDate; the outdated one matches no TCB level of its collateral (upstream accepts it only
//! with a TCB override) and is refused; a flipped byte in the signed TD report, or a time
//! outside the collateral's validity, refuses.
mod common;

use common::testdata;
use veil_agent::tdx::verify::{DEFAULT_ALLOWED, verify_quote};

/// A time inside the collateral's validity: an hour after the later of the TCB info's and the
/// QE identity's issue dates.
fn valid_time(collateral: &[u8]) -> u64 {
    let c: serde_json::Value = serde_json::from_slice(collateral).unwrap();
    let issued = |field: &str| {
        let inner: serde_json::Value = serde_json::from_str(c[field].as_str().unwrap()).unwrap();
        let date = inner["issueDate"].as_str().unwrap();
        // "YYYY-MM-DDTHH:MM:SSZ" to Unix seconds (days from civil, proleptic Gregorian).
        let n = |r: std::ops::Range<usize>| date[r].parse::<i64>().unwrap();
        let (y, m, d) = (n(0..4), n(5..7), n(8..10));
        let (y, m) = if m <= 2 { (y - 1, m + 12) } else { (y, m) };
        let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * (m - 3) + 2) / 5 + d - 719469;
        (days * 86400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
    };
    issued("tcb_info").max(issued("qe_identity")) + 3600
}

#[test]
fn dcap_quotes_verify_with_their_collateral() {
    let Some(dir) = testdata("tdx/quotes/dcap-qvl") else { return };
    let quote = std::fs::read(dir.join("tdx_quote")).unwrap();
    let collateral = std::fs::read(dir.join("tdx_quote_collateral.json")).unwrap();
    let now = valid_time(&collateral);
    let v = verify_quote(&quote, &collateral, now, &DEFAULT_ALLOWED).unwrap();
    assert_eq!(v.status, "UpToDate");
    assert!(v.advisory_ids.is_empty(), "{:?}", v.advisory_ids);
    assert_eq!(v.td_attributes & 1, 0);
    // A status the operator does not allow is refused, naming it.
    let refusal = verify_quote(&quote, &collateral, now, &["SWHardeningNeeded"]).unwrap_err();
    assert!(refusal.contains("TCB status is UpToDate"), "{refusal}");

    // A flipped byte inside the TD report body (header 48 bytes, MRTD at body offset 136).
    let mut flipped = quote.clone();
    flipped[48 + 136] ^= 1;
    assert!(verify_quote(&flipped, &collateral, now, &DEFAULT_ALLOWED).is_err());
    // Years later the collateral has expired.
    assert!(verify_quote(&quote, &collateral, now + 400 * 86400, &DEFAULT_ALLOWED).is_err());

    let outdated = std::fs::read(dir.join("tdx_quote_outdated")).unwrap();
    let outdated_collateral = std::fs::read(dir.join("tdx_quote_outdated_collateral.json")).unwrap();
    let when = valid_time(&outdated_collateral);
    // Upstream: this platform's TCB is UpToDate only under a TCB override; without one no TCB
    // level of the collateral matches it, and the quote is refused whatever is allowed.
    let refusal = verify_quote(&outdated, &outdated_collateral, when, &DEFAULT_ALLOWED).unwrap_err();
    assert!(refusal.contains("No matching TCB level"), "{refusal}");
    assert!(
        verify_quote(&outdated, &outdated_collateral, when, &["OutOfDate", "UpToDate", "SWHardeningNeeded"]).is_err()
    );
}
