//! The report-data binding against a real Trustee KBS: an RCAR attestation the real Trustee
//! KBS (confidential-containers/trustee 78962cd4) accepted, with the report data it computed
//! (shared/testdata/kbs/trustee-tpm-accepted). Both the client's binding and the broker's
//! independent computation must give Trustee's value, and the quote veilboot produced must
//! carry its first 32 bytes as extraData.
mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{testdata, unhex};
use veil_agent::kbs::broker;
use veil_agent::kbs::evidence::{self, Tee, TpmEvidence};
use veil_agent::tpm::quote;

struct Recorded {
    request: serde_json::Value,
    expected: Vec<u8>,
}

fn recorded() -> Option<Recorded> {
    let dir = testdata("kbs/trustee-tpm-accepted")?;
    let request = serde_json::from_slice(&std::fs::read(dir.join("attest-request.json")).unwrap()).unwrap();
    let expected = unhex(&std::fs::read_to_string(dir.join("expected-report-data.hex")).unwrap());
    assert_eq!(expected.len(), 48, "Trustee's expected report data is a SHA-384 digest");
    Some(Recorded { request, expected })
}

#[test]
fn client_binding_gives_trustees_report_data() {
    let Some(r) = recorded() else { return };
    let runtime = &veil_agent::json::Value::from(&r.request["runtime-data"]);
    let additional = r.request["tee-evidence"]["additional_evidence"].as_str().unwrap();
    assert_eq!(evidence::runtime_digest(runtime, additional).to_vec(), r.expected);
    assert_eq!(evidence::report_data(Tee::Tpm, runtime, additional), r.expected[..32]);
    let mut padded = r.expected.clone();
    padded.resize(64, 0);
    assert_eq!(evidence::report_data(Tee::Snp, runtime, additional), padded);
    assert_eq!(evidence::report_data(Tee::Tdx, runtime, additional), padded);
}

#[test]
fn broker_computes_trustees_report_data_independently() {
    let Some(r) = recorded() else { return };
    let attestation: kbs_types::Attestation =
        serde_json::from_value(r.request.clone()).expect("Trustee's request parses as kbs-types' Attestation");
    assert_eq!(broker::expected_report_data(&attestation).unwrap(), r.expected[..32]);
}

#[test]
fn the_accepted_quote_carries_the_first_32_bytes_as_extra_data() {
    let Some(r) = recorded() else { return };
    let ev = TpmEvidence::from_json(&(&r.request["tee-evidence"]["primary_evidence"]).into()).unwrap();
    let info = quote::parse(&ev.message).unwrap();
    assert_eq!(info.extra_data, r.expected[..32]);
    // And the evidence is the shape Trustee's TPM verifier read: an RSA AK in DER, 24 PCRs.
    assert_eq!(ev.pcrs.len(), evidence::PCR_COUNT);
    let ak = r.request["tee-evidence"]["primary_evidence"]["ak_public"].as_str().unwrap();
    assert_eq!(B64.decode(ak).unwrap(), ev.ak_spki);
}
