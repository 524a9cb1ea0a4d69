//! A broker reply as the firmware receives it through the untrusted relay: the virtio-console
//! byte stream cut into frames, the challenge, and the KBS resource response (flattened JWE,
//! ECDH-ES+A256KW / A256GCM) decrypted with the firmware's key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    let _ = veil_agent::kbs::jwe::decrypt(data, &key);
    let _ = veil_agent::kbs::client::Challenge::parse(data);
    // The byte stream from the relay, reassembled into frames.
    let mut frames = veil_agent::kbs::frame::Decoder::new();
    for b in data {
        if let Ok(Some(frame)) = frames.push(*b) {
            assert!(!frame.is_empty() && frame.len() <= veil_agent::kbs::frame::MAX_FRAME);
        }
    }
});
