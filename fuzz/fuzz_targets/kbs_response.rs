//! A broker reply as the firmware receives it through the untrusted relay: the KBS resource
//! response (flattened JWE, ECDH-ES+A256KW / A256GCM) decrypted with the firmware's key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    let _ = veil_agent::kbs::jwe::decrypt(data, &key);
});
