//! agent::b64 held to the `base64` crate's strict engines, which the agent used
//! before: the same text for every input, and on arbitrary text the same verdict and bytes.
//! A header, token or master-secret file that decoded before still decodes, to the same
//! bytes, and nothing the old engines refused is accepted now.

use base64::Engine;
use base64::engine::general_purpose;
use proptest::prelude::*;
use veil_agent::b64::{self, Codec};

fn pairs() -> [(Codec, &'static general_purpose::GeneralPurpose); 3] {
    [
        (b64::STANDARD, &general_purpose::STANDARD),
        (b64::URL_SAFE, &general_purpose::URL_SAFE),
        (b64::URL_SAFE_NO_PAD, &general_purpose::URL_SAFE_NO_PAD),
    ]
}

/// Text that is mostly base64 symbols, with some padding, whitespace and strays, so that
/// near-misses (a wrong last symbol, padding in the middle, a missing `=`) come up often.
fn near_base64() -> impl Strategy<Value = String> {
    let symbol = prop_oneof![
        20 => proptest::char::range('A', 'Z'),
        20 => proptest::char::range('a', 'z'),
        10 => proptest::char::range('0', '9'),
        3 => Just('+'),
        3 => Just('/'),
        3 => Just('-'),
        3 => Just('_'),
        6 => Just('='),
        1 => Just(' '),
        1 => Just('\n'),
        1 => any::<char>(),
    ];
    proptest::collection::vec(symbol, 0..40).prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn encodes_as_the_base64_crate(data in proptest::collection::vec(any::<u8>(), 0..100)) {
        for (ours, peer) in pairs() {
            let text = ours.encode(&data);
            prop_assert_eq!(&text, &peer.encode(&data), "{:?}", ours);
            prop_assert_eq!(ours.decode(&text).unwrap(), data.clone());
        }
    }

    #[test]
    fn decodes_as_the_base64_crate(text in near_base64()) {
        for (ours, peer) in pairs() {
            let (a, b) = (ours.decode(&text).ok(), peer.decode(&text).ok());
            prop_assert_eq!(a, b, "{:?} on {:?}", ours, text);
        }
    }

    /// Every canonical encoding with one symbol changed: both accept or both refuse, and
    /// agree on the bytes.
    #[test]
    fn agrees_on_altered_encodings(
        data in proptest::collection::vec(any::<u8>(), 1..40),
        at in any::<prop::sample::Index>(),
        to in prop_oneof![Just(b'='), Just(b'A'), Just(b'B'), Just(b'/'), Just(b'_'), any::<u8>()],
    ) {
        for (ours, peer) in pairs() {
            let mut text = peer.encode(&data).into_bytes();
            let i = at.index(text.len());
            text[i] = to;
            prop_assert_eq!(ours.decode(&text).ok(), peer.decode(&text).ok(), "{:?} on {:?}", ours, text);
        }
    }
}
