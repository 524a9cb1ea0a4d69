//! Master secret files and KMS URIs (from fw_cfg or the host).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(secret) = veil_agent::keys::MasterSecret::parse(data) {
        let again = veil_agent::keys::MasterSecret::parse(secret.to_json().as_bytes()).unwrap();
        assert_eq!(again, secret);
        let again = veil_agent::keys::MasterSecret::parse(secret.to_uri().as_bytes()).unwrap();
        assert_eq!(again, secret);
    }
});
