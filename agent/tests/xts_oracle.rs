//! Property test: veilboot's sector cipher agrees with RustCrypto `xts-mode` (the
//! one-block-at-a-time reference) over random keys, sector numbers, run lengths and
//! buffer alignments, and decryption inverts encryption.
//!
//! Every backend the CPU offers is compared, including any the start-up self-test disabled
//! (`all_backends`, not `available_backends`): a bug shared by every backend makes the
//! self-test disable them all, and the oracle must then fail rather than compare nothing. Each
//! case also asserts it compared the portable backend and at least one backend in all.
use aes::cipher::KeyInit;
use aes::{Aes128, Aes256};
use proptest::prelude::*;
use veil_agent::xts::SectorCipher;
use xts_mode::Xts128;

fn oracle_encrypt(key: &[u8], sector_size: usize, first: u64, data: &mut [u8]) {
    let step = (sector_size / 512) as u64;
    let half = key.len() / 2;
    let tweak = |i: u128| {
        let sector = first.wrapping_add((i as u64).wrapping_mul(step));
        xts_mode::get_tweak_default(sector as u128)
    };
    if half == 16 {
        let xts =
            Xts128::new(Aes128::new_from_slice(&key[..half]).unwrap(), Aes128::new_from_slice(&key[half..]).unwrap());
        xts.encrypt_area(data, sector_size, 0, tweak);
    } else {
        let xts =
            Xts128::new(Aes256::new_from_slice(&key[..half]).unwrap(), Aes256::new_from_slice(&key[half..]).unwrap());
        xts.encrypt_area(data, sector_size, 0, tweak);
    }
}

fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 32), proptest::collection::vec(any::<u8>(), 64)]
        .prop_filter("distinct halves", |k| k[..k.len() / 2] != k[k.len() / 2..])
}

fn sector_number() -> impl Strategy<Value = u64> {
    // Bias toward the 2^64 wrap, where plain64 sector numbers overflow.
    prop_oneof![any::<u64>(), (0u64..64).prop_map(|d| u64::MAX - d), 0u64..64]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_xts_mode(
        key in key_strategy(),
        sector_size in prop_oneof![Just(512usize), Just(1024), Just(2048), Just(4096)],
        sectors in 1usize..6,
        first in sector_number(),
        offset in 0usize..16,
        seed in any::<u8>(),
    ) {
        let len = sector_size * sectors;
        // An unaligned view into a larger buffer.
        let mut backing = vec![0u8; len + offset];
        for (i, b) in backing.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
        let plain = backing[offset..].to_vec();
        let mut expected = plain.clone();
        oracle_encrypt(&key, sector_size, first, &mut expected);

        // Every backend this CPU has, disabled or not, against the oracle.
        let backends = veil_agent::xts::all_backends(&key).unwrap();
        prop_assert!(backends.iter().any(|b| b.name() == "rustcrypto"), "the portable backend is compared");
        let mut compared = 0;
        for backend in backends {
            let name = backend.name();
            let cipher = SectorCipher::with_backend(backend, sector_size).unwrap();
            let data = &mut backing[offset..];
            data.copy_from_slice(&plain);
            cipher.encrypt_sectors(first, data).unwrap();
            prop_assert_eq!(&data[..], &expected[..], "{} encrypt", name);
            cipher.decrypt_sectors(first, data).unwrap();
            prop_assert_eq!(&data[..], &plain[..], "{} decrypt", name);
            compared += 1;
        }
        prop_assert!(compared >= 1, "no backend was compared with the oracle");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Every backend agrees with the portable one on data units of any whole number of blocks
    /// (exercising the 4- and 8-block loops and every tail length; the VAES-512 backend runs data
    /// units on the AES-NI code, its 32-block sector loop is compared above) and any 128-bit IV.
    #[test]
    fn backends_agree_on_any_block_count(
        key in key_strategy(),
        blocks in 1usize..70,
        iv in any::<[u8; 16]>(),
        offset in 0usize..16,
        seed in any::<u8>(),
    ) {
        let reference = veil_agent::xts::soft::SoftXts::new(&key).unwrap();
        let plain: Vec<u8> = (0..blocks * 16).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect();
        let mut expected = plain.clone();
        veil_agent::xts::encrypt_data_unit(&reference, &iv, &mut expected).unwrap();
        let backends = veil_agent::xts::all_backends(&key).unwrap();
        prop_assert!(backends.len() >= 2 || backends[0].name() == "rustcrypto");
        for backend in backends {
            let mut backing = vec![0u8; plain.len() + offset];
            let data = &mut backing[offset..];
            data.copy_from_slice(&plain);
            veil_agent::xts::encrypt_data_unit(backend.as_ref(), &iv, data).unwrap();
            prop_assert_eq!(&data[..], &expected[..], "{} encrypt, {} blocks", backend.name(), blocks);
            veil_agent::xts::decrypt_data_unit(backend.as_ref(), &iv, data).unwrap();
            prop_assert_eq!(&data[..], &plain[..], "{} decrypt, {} blocks", backend.name(), blocks);
        }
    }
}

/// The backends the oracle compares are every one the firmware may select: the available
/// ones are among them, and the AES-NI paths are among them whenever this CPU has AES-NI.
#[test]
fn the_oracle_covers_every_selectable_backend() {
    let key: Vec<u8> = (0..64).collect();
    let all: Vec<&str> = veil_agent::xts::all_backends(&key).unwrap().iter().map(|b| b.name()).collect();
    for b in veil_agent::xts::available_backends(&key).unwrap() {
        assert!(all.contains(&b.name()), "{} is selectable but not compared", b.name());
    }
    assert!(all.contains(&"rustcrypto"));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("sse2") {
        assert!(all.contains(&"aesni"), "this CPU has AES-NI but the aesni backend is not compared: {all:?}");
    }
    // A VAES-512 path lost by a wrong feature check would leave only the others compared.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("vaes")
        && std::arch::is_x86_feature_detected!("vpclmulqdq")
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq")
    {
        assert!(all.contains(&"vaes512"), "this CPU has VAES and AVX-512 but vaes512 is not compared: {all:?}");
    }
}
