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

/// The recorded attestation a real Trustee KBS accepted: (the attest request, the report data
/// Trustee computed for it).
fn recorded() -> Option<(Value, Vec<u8>)> {
    let dir = veil_testkit::testdata("kbs/trustee-tpm-accepted")?;
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

/// A directory holding `kbs-client`: the stand-in for Trustee's client
/// (trustee_tests_kbs_client.sh: its argument grammar, its output, a log of requests).
fn stub_client(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join("kbs-client");
    std::fs::write(&path, include_str!("trustee_tests_kbs_client.sh")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Run `sh kbs-admin.sh` in `trustee` with the stub client; (success, stdout + stderr, the
/// requests the client received).
fn run_script(trustee: &std::path::Path, bin: &std::path::Path, env: &[(&str, &str)]) -> (bool, String, Vec<String>) {
    let log = trustee.join("requests.log");
    let _ = std::fs::remove_file(&log);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("kbs-admin.sh").current_dir(trustee).env_clear().env("PATH", path).env("STUB_LOG", &log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let requests = std::fs::read_to_string(&log).unwrap_or_default().lines().map(String::from).collect();
    (out.status.success(), text, requests)
}

fn material(dir: &std::path::Path, ak: Option<&[u8]>) -> (std::path::PathBuf, BTreeMap<String, Vec<String>>) {
    let pcrs: BTreeMap<u32, Vec<u8>> = MEASURED.iter().map(|p| (*p, vec![*p as u8 + 1; 32])).collect();
    let trustee = dir.join("trustee");
    write(&trustee, &pcrs, ak, "veilboot/cluster/master-secret").unwrap();
    let values: BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&std::fs::read(trustee.join("reference-values.json")).unwrap()).unwrap();
    (trustee, values)
}

/// The generated kbs-admin.sh against Trustee's kbs-client grammar: every reference value, the
/// attestation policy under default_cpu, the resource policy, then the resource, each with the
/// admin token file; and no byte of the master secret on the terminal, although the client
/// echoes the upload. The script generated before (`config --auth-private-key`) stops at its
/// first command against the same client.
#[test]
fn admin_script_speaks_kbs_client_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stub_client(dir.path());
    let (trustee, values) = material(dir.path(), Some(b"the AK's DER"));
    let secret_json = r#"{"key":"c2VjcmV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5YWJjZGVmMDE=","salt":"c2FsdC1ieXRlcy0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc="}"#;
    let secret = dir.path().join("constellation-mastersecret.json");
    std::fs::write(&secret, secret_json).unwrap();
    std::fs::write(dir.path().join("admin-token"), "eyJ.admin.token").unwrap();
    let secret_s = secret.to_str().unwrap();
    let token = dir.path().join("admin-token");
    let (ok, text, requests) = run_script(
        &trustee,
        &bin,
        &[("KBS_URL", "http://kbs.example:8080"), ("ADMIN_TOKEN", token.to_str().unwrap()), ("SECRET", secret_s)],
    );
    assert!(ok, "{text}");
    let prefix = "token=eyJ.admin.token url=http://kbs.example:8080";
    let mut want: Vec<String> = values
        .iter()
        .flat_map(|(n, l)| l.iter().map(move |v| format!("{prefix} set-sample-reference-value {n} {v}")))
        .collect();
    want.push(format!(
        "{prefix} set-attestation-policy --type rego --id default_cpu --policy-file attestation-policy.rego"
    ));
    want.push(format!("{prefix} set-resource-policy --policy-file resource-policy.rego"));
    want.push(format!("{prefix} set-resource --path veilboot/cluster/master-secret --resource-file {secret_s}"));
    assert_eq!(requests, want);
    assert!(values.contains_key("trusted_aks") && values.len() == MEASURED.len() + 1);
    for leak in [B64.encode(secret_json), String::from("c2VjcmV0LWtleS1ieXRlcy0w"), String::from(secret_json)] {
        assert!(!text.contains(&leak), "the master secret reached the terminal: {text}");
    }
    // The client does echo it: the test would see a leak.
    let echoed = std::process::Command::new(bin.join("kbs-client"))
        .args(["config", "set-resource", "--path", "a/b/c", "--resource-file", secret_s])
        .env("STUB_LOG", dir.path().join("echo.log"))
        .output()
        .unwrap();
    let echoed = String::from_utf8_lossy(&echoed.stdout);
    assert!(echoed.contains(&B64.encode(secret_json)));

    // A KBS with InsecureAllowAll: no ADMIN_TOKEN, no --admin-token-file; KBS_CERT for HTTPS.
    std::fs::write(dir.path().join("kbs.pem"), "PEM").unwrap();
    let cert = dir.path().join("kbs.pem");
    let (ok, text, requests) = run_script(
        &trustee,
        &bin,
        &[("KBS_URL", "https://kbs.example"), ("KBS_CERT", cert.to_str().unwrap()), ("SECRET", secret_s)],
    );
    assert!(ok, "{text}");
    assert_eq!(requests.len(), want.len());
    assert!(requests.iter().all(|r| r.starts_with("token= url=https://kbs.example ")), "{requests:?}");

    // What the old script ran: refused by the client's grammar, as the real client refused it.
    let out = std::process::Command::new(bin.join("kbs-client"))
        .args(["--url", "http://kbs", "config", "--auth-private-key", "admin.key", "set-resource"])
        .args(["--path", "a/b/c", "--resource-file", secret_s])
        .env("STUB_LOG", dir.path().join("old.log"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--auth-private-key'"));
}

/// Without an AK (veil measure had no --ak) the script takes the PEM from AK, and refuses to
/// load anything without one: the policy would affirm no TPM.
#[test]
fn admin_script_registers_the_ak_given_later_or_stops() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stub_client(dir.path());
    let (trustee, values) = material(dir.path(), None);
    assert!(!values.contains_key("trusted_aks"));
    let secret = dir.path().join("secret.json");
    std::fs::write(&secret, "{}").unwrap();
    let env = [("KBS_URL", "http://kbs"), ("SECRET", secret.to_str().unwrap())];
    let (ok, text, requests) = run_script(&trustee, &bin, &env);
    assert!(!ok && requests.is_empty() && text.contains("no attestation key"), "{text} {requests:?}");
    let pem = dir.path().join("ak.pem");
    std::fs::write(&pem, crate::tpm::spki_pem(b"another VM's AK, DER")).unwrap();
    let mut with_ak = env.to_vec();
    with_ak.push(("AK", pem.to_str().unwrap()));
    let (ok, text, requests) = run_script(&trustee, &bin, &with_ak);
    assert!(ok, "{text}");
    assert_eq!(
        requests[0],
        format!("token= url=http://kbs set-sample-reference-value trusted_aks {}", B64.encode(b"another VM's AK, DER"))
    );
    // A missing secret or token file stops it before any request.
    let (ok, _, requests) = run_script(
        &trustee,
        &bin,
        &[("KBS_URL", "http://kbs"), ("SECRET", "/nonexistent"), ("AK", pem.to_str().unwrap())],
    );
    assert!(!ok && requests.is_empty());
}
