//! The firmware's base64 (agent::b64) on any bytes, in each of its three forms: never panics,
//! accepts exactly what the `base64` crate's strict engines accept, decodes to the same bytes,
//! and what it decodes it encodes back to the same text.
#![no_main]
use base64::Engine;
use base64::engine::general_purpose;
use libfuzzer_sys::fuzz_target;
use veil_agent::b64;

fuzz_target!(|data: &[u8]| {
    for (ours, peer) in [
        (b64::STANDARD, &general_purpose::STANDARD),
        (b64::URL_SAFE, &general_purpose::URL_SAFE),
        (b64::URL_SAFE_NO_PAD, &general_purpose::URL_SAFE_NO_PAD),
    ] {
        let decoded = ours.decode(data);
        assert_eq!(decoded.as_ref().ok(), peer.decode(data).ok().as_ref(), "{ours:?}");
        if let Ok(bytes) = decoded {
            assert_eq!(ours.encode(&bytes).as_bytes(), data);
        }
        assert_eq!(ours.encode(data), peer.encode(data));
    }
});
