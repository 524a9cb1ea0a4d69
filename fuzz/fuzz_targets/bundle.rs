//! The boot bundle header from the (decrypted but unauthenticated) veil-boot volume.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::keys::MasterSecret;

fuzz_target!(|data: &[u8]| {
    let secret = MasterSecret::new(&[7u8; 32], &[9u8; 32]).unwrap();
    let mut header = data.to_vec();
    header.resize(veil_agent::bundle::HEADER_SIZE.max(data.len()), 0);
    if let Ok(m) = veil_agent::bundle::open_header(&secret, &header, 1 << 30) {
        let _ = veil_agent::bundle::verify("kernel", &m.kernel, data);
    }
});
