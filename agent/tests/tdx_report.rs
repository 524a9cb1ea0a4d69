//! A real TDREPORT (Intel's DCAP repository, td-ql-logic-rs test data) parses to the fields
//! its SOURCE.txt states.
mod common;

use common::testdata;
use veil_agent::tdx::report::TdReport;

#[test]
fn intel_tdreport_fields() {
    let Some(dir) = testdata("tdx/tdreport/intel-dcap") else { return };
    let bytes = std::fs::read(dir.join("tdreport_for_test.dat")).unwrap();
    let r = TdReport::parse(&bytes).unwrap();
    assert_eq!(r.attributes, 0x5000_0000, "ATTRIBUTES 0000005000000000 (little-endian bytes)");
    assert!(!r.is_debug());
    assert_eq!(r.xfam, 0x6_02E7, "XFAM e702060000000000");
    assert!(hex::encode(r.mr_td).starts_with("bb1249bde960ef9b"), "{}", hex::encode(r.mr_td));
    assert_eq!(hex::encode(&bytes[0x210..0x240]), hex::encode(r.mr_td));
}
