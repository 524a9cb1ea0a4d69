//! The generated Trustee material evaluated as Trustee evaluates it, from inputs veilboot's
//! code did not produce.
//!
//! The attestation policy runs in the regorus engine (Trustee's policy engine) over the policy
//! input Trustee builds from its TPM verifier's claims, shaped from Trustee's source, not from
//! veilboot's:
//! - deps/verifier/src/tpm/mod.rs @ 15f876f340b8 (`extend_claim`, `parse_tee_evidence`): one
//!   claim `pcrNN` (two digits) per SHA-256 PCR of the quote, lowercase hex; `init_data` = hex
//!   of PCR 8; `report_data` = hex of the quote's extraData;
//! - confidential-containers/trustee#1328 (merged 2026-05, "Modified evidence parsing to include
//!   the ak_public field in the claim") and attestation-service/docs/tcb_claims.md @
//!   0895f183f26b ("tpm.ak_public: String (Base64 Standard) ... base64-encoded DER"): the AK
//!   exactly as the evidence carries it;
//! - attestation-service/src/ear_token/claims.rs @ 0895f183f26b
//!   (`TransformedClaims::policy_input_json`) and ear_token/broker.rs @ 056972662534
//!   (`transform_claims`): `init_data` and `report_data` move to the top level, the rest stays
//!   under the TEE's name `tpm`, the parsed runtime data is `runtime_data_claims`, and a null
//!   `init_data_claims` is left out;
//! - attestation-service/src/ear_token/policy_tests.rs @ 02601a7903ae: the rule evaluated is
//!   `data.policy.trust_claims`; `query_reference_value(id)` answers the registered value (a
//!   list, as `kbs-client config set-sample-reference-value` registers it) or null for a name
//!   never registered.
//!
//! The evidence is the recorded exchange a real Trustee KBS accepted
//! (../shared/testdata/kbs/trustee-tpm-accepted, Trustee 78962cd4): its real `ak_public` and
//! its 24 PCR values.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// The PCRs veilboot's reference values cover (`veil measure --trustee-dir`: 0, 2-9, 15).
const MEASURED: [u32; 10] = [0, 2, 3, 4, 5, 6, 7, 8, 9, 15];

/// ../shared/testdata (or $VEIL_TESTDATA); None, loudly, when absent, a failure with
/// $VEIL_REQUIRE_TESTDATA.
fn testdata(sub: &str) -> Option<std::path::PathBuf> {
    let root = std::env::var_os("VEIL_TESTDATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata"));
    let dir = root.join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("VEIL_REQUIRE_TESTDATA").is_none(),
        "test corpus {} is missing and VEIL_REQUIRE_TESTDATA is set",
        dir.display()
    );
    eprintln!("\n!!! SKIPPED: test corpus {} is absent !!!\n", dir.display());
    None
}

/// The recorded attestation a real Trustee KBS accepted: (the attest request, the report data
/// Trustee computed for it).
fn recorded() -> Option<(Value, Vec<u8>)> {
    let dir = testdata("kbs/trustee-tpm-accepted")?;
    let request: Value = serde_json::from_slice(&std::fs::read(dir.join("attest-request.json")).unwrap()).unwrap();
    let report = hex::decode(std::fs::read_to_string(dir.join("expected-report-data.hex")).unwrap().trim()).unwrap();
    Some((request, report))
}

/// The policy input Trustee's attestation service gives the `default_cpu` policy for this TPM
/// evidence (see the module comment for where each field comes from).
fn trustee_policy_input(request: &Value, report_data: &[u8], pcrs: &[String]) -> Value {
    let evidence = &request["tee-evidence"]["primary_evidence"];
    let mut tpm = serde_json::Map::new();
    for (i, pcr) in pcrs.iter().enumerate() {
        tpm.insert(format!("pcr{i:02}"), Value::String(pcr.clone()));
    }
    tpm.insert(String::from("ak_public"), evidence["ak_public"].clone());
    json!({
        "tpm": tpm,
        "init_data": pcrs[8],
        // The quote's extraData: the first 32 bytes of the report data (the KBS's log of it).
        "report_data": hex::encode(&report_data[..32]),
        "runtime_data_claims": request["runtime-data"],
    })
}

fn recorded_pcrs(request: &Value) -> Vec<String> {
    let pcrs: Vec<String> = request["tee-evidence"]["primary_evidence"]["tpm_quote"]["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(pcrs.len(), 24);
    pcrs
}

/// The reference PCR values of a boot that measured exactly `pcrs`.
fn reference_pcrs(pcrs: &[String]) -> BTreeMap<u32, Vec<u8>> {
    MEASURED.iter().map(|p| (*p, hex::decode(&pcrs[*p as usize]).unwrap())).collect()
}

/// `policy` over `input` in regorus, `query_reference_value` answering from `values` as
/// Trustee's does; the trust claims, or None when the evaluation fails (Trustee then issues no
/// token at all).
fn appraise(policy: &str, values: &Value, input: &Value) -> Option<Value> {
    let mut engine = regorus::Engine::new();
    engine.add_policy(String::from("default_cpu.rego"), String::from(policy)).expect("the policy parses");
    let values = values.clone();
    engine
        .add_extension(
            String::from("query_reference_value"),
            1,
            Box::new(move |args: Vec<regorus::Value>| {
                let id = args[0].as_string()?.to_string();
                let value = values.get(&id).cloned().unwrap_or(Value::Null);
                regorus::Value::from_json_str(&value.to_string())
            }),
        )
        .expect("registering the extension");
    engine.set_input(regorus::Value::from_json_str(&input.to_string()).unwrap());
    let v = engine.eval_rule(String::from("data.policy.trust_claims")).ok()?;
    Some(serde_json::from_str(&v.to_json_str().unwrap()).unwrap())
}

/// The EAR status an appraisal gets from its trust claims (draft-ietf-rats-ar4si tiers, as the
/// `ear` crate's `update_status_from_trust_vector` ranks them): the worst tier of any claim.
fn ear_status(claims: &Value) -> &'static str {
    let worst = claims
        .as_object()
        .unwrap()
        .values()
        .map(|v| match v.as_i64().unwrap().unsigned_abs() {
            0..=1 => 0,
            2..=31 => 1,
            32..=95 => 2,
            _ => 3,
        })
        .max()
        .unwrap_or(0);
    ["none", "affirming", "warning", "contraindicated"][worst]
}

/// What the KBS would decide: the EAR status (or "no token").
fn decide(policy: &str, values: &BTreeMap<String, Vec<String>>, input: &Value) -> (String, Option<Value>) {
    let values = serde_json::to_value(values).unwrap();
    match appraise(policy, &values, input) {
        Some(claims) => (String::from(ear_status(&claims)), Some(claims)),
        None => (String::from("no token"), None),
    }
}

/// Another RSA key in the same DER form: the recorded AK with one modulus byte changed.
fn other_ak(ak_b64: &str) -> Vec<u8> {
    let mut der = B64.decode(ak_b64).unwrap();
    der[100] ^= 0x5a;
    der
}

#[test]
fn policy_affirms_the_registered_ak_with_the_reference_pcrs() {
    let Some((request, report)) = recorded() else { return };
    let pcrs = recorded_pcrs(&request);
    let ak = B64.decode(request["tee-evidence"]["primary_evidence"]["ak_public"].as_str().unwrap()).unwrap();
    let reference = reference_pcrs(&pcrs);
    let policy = attestation_policy(&reference);
    let values = reference_values(&reference, Some(&ak));
    let (status, claims) = decide(&policy, &values, &trustee_policy_input(&request, &report, &pcrs));
    let claims = claims.unwrap();
    assert_eq!(status, "affirming", "{claims}");
    assert_eq!(
        (claims["executables"].as_i64(), claims["hardware"].as_i64(), claims["configuration"].as_i64()),
        (Some(3), Some(2), Some(2))
    );
    // The generated resource policy releases to that appraisal.
    assert!(resource_policy_allows(&status));
}

/// The attack of issue 33: a TPM that reproduces the published PCR values but quotes with its
/// own key. Trustee's verifier accepts the quote (it checks the signature with the AK the
/// evidence carries); only the policy can refuse it. The policy generated before this check
/// existed affirmed it.
#[test]
fn policy_refuses_an_unregistered_ak() {
    let Some((request, report)) = recorded() else { return };
    let pcrs = recorded_pcrs(&request);
    let ak_b64 = request["tee-evidence"]["primary_evidence"]["ak_public"].as_str().unwrap();
    let reference = reference_pcrs(&pcrs);
    let policy = attestation_policy(&reference);
    let input = trustee_policy_input(&request, &report, &pcrs);
    // Another VM's AK registered, not this one.
    let values = reference_values(&reference, Some(&other_ak(ak_b64)));
    let (status, claims) = decide(&policy, &values, &input);
    assert_ne!(status, "affirming", "{claims:?}");
    assert!(!resource_policy_allows(&status));
    assert_eq!(claims.unwrap()["hardware"].as_i64(), Some(97), "the KBS log names the unregistered AK");
    // No AK registered at all (veil measure without --ak, and no registration since).
    let (status, _) = decide(&policy, &reference_values(&reference, None), &input);
    assert_ne!(status, "affirming");
    // Two registered, this one among them: affirming.
    let mut both = reference_values(&reference, Some(&other_ak(ak_b64)));
    both.get_mut("trusted_aks").unwrap().push(ak_b64.to_string());
    assert_eq!(decide(&policy, &both, &input).0, "affirming");
}

#[test]
fn policy_refuses_a_boot_with_one_pcr_off() {
    let Some((request, report)) = recorded() else { return };
    let pcrs = recorded_pcrs(&request);
    let ak = B64.decode(request["tee-evidence"]["primary_evidence"]["ak_public"].as_str().unwrap()).unwrap();
    let reference = reference_pcrs(&pcrs);
    let policy = attestation_policy(&reference);
    let values = reference_values(&reference, Some(&ak));
    for p in MEASURED {
        let mut quoted = pcrs.clone();
        let mut bytes = hex::decode(&quoted[p as usize]).unwrap();
        bytes[31] ^= 1;
        quoted[p as usize] = hex::encode(bytes);
        let (status, claims) = decide(&policy, &values, &trustee_policy_input(&request, &report, &quoted));
        assert_ne!(status, "affirming", "PCR {p} differs: {claims:?}");
        assert_eq!(claims.unwrap()["executables"].as_i64(), Some(33), "PCR {p}");
    }
}

#[test]
fn policy_refuses_evidence_without_the_ak_claim() {
    let Some((request, report)) = recorded() else { return };
    let pcrs = recorded_pcrs(&request);
    let ak = B64.decode(request["tee-evidence"]["primary_evidence"]["ak_public"].as_str().unwrap()).unwrap();
    let reference = reference_pcrs(&pcrs);
    let policy = attestation_policy(&reference);
    let values = reference_values(&reference, Some(&ak));
    // A Trustee whose verifier predates trustee#1328 emits no ak_public claim.
    let mut input = trustee_policy_input(&request, &report, &pcrs);
    input["tpm"].as_object_mut().unwrap().remove("ak_public");
    let (status, claims) = decide(&policy, &values, &input);
    assert_ne!(status, "affirming", "{claims:?}");
    // Nor does it affirm evidence of another TEE that happens to carry the same values.
    let mut other = trustee_policy_input(&request, &report, &pcrs);
    let tpm = other.as_object_mut().unwrap().remove("tpm").unwrap();
    other["az-snp-vtpm"] = json!({"tpm": tpm});
    assert_ne!(decide(&policy, &values, &other).0, "affirming");
}

/// The generated resource policy for an EAR of `status` (cpu0 submodule, as the KBS passes it).
fn resource_policy_allows(status: &str) -> bool {
    let mut engine = regorus::Engine::new();
    engine.add_policy(String::from("resource-policy.rego"), String::from(RESOURCE_POLICY)).unwrap();
    engine.set_input(
        regorus::Value::from_json_str(&json!({"submods": {"cpu0": {"ear.status": status}}}).to_string()).unwrap(),
    );
    engine.eval_rule(String::from("data.policy.allow")).unwrap() == regorus::Value::from(true)
}

#[test]
fn resource_policy_needs_an_affirming_ear() {
    assert!(resource_policy_allows("affirming"));
    assert!(!resource_policy_allows("warning"));
    assert!(!resource_policy_allows("contraindicated"));
}

#[test]
fn reference_values_hold_the_ak_as_base64_der() {
    let pcrs: BTreeMap<u32, Vec<u8>> = MEASURED.iter().map(|p| (*p, vec![*p as u8 + 1; 32])).collect();
    let values = reference_values(&pcrs, Some(&[1, 2, 3]));
    assert_eq!(values["trusted_aks"], vec![String::from("AQID")]);
    assert_eq!(values["tpm_pcr0"], vec![hex::encode([1u8; 32])]);
    assert!(!reference_values(&pcrs, None).contains_key("trusted_aks"));
}
