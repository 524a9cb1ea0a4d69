//! The key broker's request parsers (host side, reached by anyone who can connect): every
//! endpoint with arbitrary bodies, paths and session ids, and the /attest checks against a
//! fixed session (so the evidence parser and the quote verifier are reached without a real
//! EK certificate). Anything may be refused; nothing may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use veil_agent::kbs::broker::{Broker, BrokerConfig, Expected, Request, check_attestation};

fn config() -> BrokerConfig {
    BrokerConfig {
        snp: None,
        tdx: None,
        resources: [("a/b/c".to_string(), zeroize::Zeroizing::new(b"secret".to_vec()))].into(),
        reference: [(4, veil_agent::kbs::broker::Reference { expected: [0; 32], warn_only: false })].into(),
        ek_root: Vec::new(),
        ek_intermediates: Vec::new(),
        allow_no_init_data: false,
        min_bundle_version: None,
        tpm_trust: veil_agent::kbs::broker::TpmTrust::AnyTpmUnderCa,
    }
}

fuzz_target!(|data: &[u8]| {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    let broker = BROKER.get_or_init(|| Broker::new(config(), Box::new(|b: &mut [u8]| b.fill(0x42))));
    let (selector, body) = data.split_first().unwrap_or((&0, &[]));
    let path = match selector % 4 {
        0 => "/kbs/v0/auth",
        1 => "/kbs/v0/attest",
        2 => "/kbs/v0/resource/a/b/c",
        _ => core::str::from_utf8(body).unwrap_or("/"),
    };
    let method = if selector % 4 == 2 { "GET" } else { "POST" };
    let reply = broker.handle(&Request { method, path, session: Some("00"), body });
    assert!(reply.status == 200 || reply.status >= 400);
    // The evidence checks with a session in place. The AK is an RSA TPM2B_PUBLIC of 256 bytes.
    let mut ak = vec![
        0x01, 0x18, 0x00, 0x01, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x14, 0x00, 0x0b,
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
    ];
    ak.extend(std::iter::repeat_n(0xC5, 256));
    let expected = Expected { tee: kbs_types::Tee::Tpm, nonce: "n".to_string(), ak_public: ak, credential: zeroize::Zeroizing::new([1; 32]) };
    let _ = check_attestation(&config(), &expected, body);
    // Past the JSON: a well-formed attestation whose one field (picked by the selector) holds
    // the fuzzer's bytes, so the evidence decoders and the quote verifier see hostile bytes.
    let _ = check_attestation(&config(), &expected, &shaped_attestation(*selector, body));
});

fn shaped_attestation(selector: u8, bytes: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap().public_key();
    let jwk = veil_agent::kbs::client::tee_pubkey(&key);
    let mut evidence = serde_json::json!({
        // The SPKI of the session's AK, so the signature and message reach the quote verifier.
        "ak_public": b64(&veil_agent::kbs::evidence::rsa_spki(&[0xC5; 256], 65537)),
        "tpm_quote": {"signature": b64(&[0x00, 0x14, 0x00, 0x0b, 0x01, 0x00]), "message": b64(&[0xff, 0x54, 0x43, 0x47, 0x80, 0x18]), "pcrs": vec![hex::encode([0u8; 32]); 24]},
        "veil_credential": b64(&[1; 32]),
    });
    let mut runtime = serde_json::json!({"nonce": "n", "tee-pubkey": jwk});
    match selector % 6 {
        0 => evidence["ak_public"] = b64(bytes).into(),
        1 => evidence["tpm_quote"]["signature"] = b64(bytes).into(),
        2 => evidence["tpm_quote"]["message"] = b64(bytes).into(),
        3 => evidence["tpm_quote"]["pcrs"][usize::from(selector) % 24] = hex::encode(bytes).into(),
        4 => runtime["tee-pubkey"]["x"] = url(bytes).into(),
        _ => evidence["veil_credential"] = b64(bytes).into(),
    }
    serde_json::to_vec(&serde_json::json!({"runtime-data": runtime, "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}})).unwrap()
}
