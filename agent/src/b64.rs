//! Base64 (RFC 4648) as veilboot's formats write it: the standard alphabet with padding
//! (LUKS2 salts and digests, tokens, the master-secret file, Trustee evidence), the URL-safe
//! one with padding (the master-secret URI form) and without it (JWE).
//!
//! Written here rather than taken from a crate because of the ROM: the `base64` crate's
//! general-purpose engine is generic over its configuration and cost the firmware 8 KiB for
//! its three forms, and RustCrypto's constant-time `base64ct` more (one copy per alphabet).
//! This codec is one non-generic encoder and decoder whose alphabet differs in two symbols.
//! Like `base64ct`, it maps symbols with arithmetic instead of tables or branches, so the
//! time it takes does not depend on the key and salt bytes that pass through it. It is as
//! strict as RFC 4648 section 3.5 asks and as the `base64` crate's engines were: canonical
//! padding, no stray bits in the last symbol, no whitespace. A property test holds it to the
//! `base64` crate on arbitrary input (tests/b64_peer.rs).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// One of the three base64 forms; `encode` and `decode` as the `base64` crate's engines named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    url_safe: bool,
    padded: bool,
}

/// The standard alphabet (`+/`), padded.
pub const STANDARD: Codec = Codec { url_safe: false, padded: true };
/// The URL-safe alphabet (`-_`), padded.
pub const URL_SAFE: Codec = Codec { url_safe: true, padded: true };
/// The URL-safe alphabet, unpadded.
pub const URL_SAFE_NO_PAD: Codec = Codec { url_safe: true, padded: false };

/// Why text is not this form's canonical base64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A character outside the alphabet (whitespace and misplaced padding included).
    InvalidSymbol,
    /// A length no encoding has (one symbol too many, or missing padding).
    InvalidLength,
    /// Padding where this form has none, or more than two `=`.
    InvalidPadding,
    /// The last symbol carries bits beyond the data (not the canonical encoding).
    NonCanonical,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::InvalidSymbol => "a character outside the base64 alphabet",
            DecodeError::InvalidLength => "a length no base64 encoding has",
            DecodeError::InvalidPadding => "wrong padding",
            DecodeError::NonCanonical => "not the canonical encoding (stray bits in the last symbol)",
        })
    }
}

/// `mask` (all ones) when `lo <= c <= hi`, else 0, without a branch.
fn in_range(c: i16, lo: i16, hi: i16) -> i16 {
    ((lo - 1 - c) & (c - hi - 1)) >> 8
}

impl Codec {
    /// The alphabet's symbols for 62 and 63.
    fn last_two(self) -> (i16, i16) {
        if self.url_safe { (b'-' as i16, b'_' as i16) } else { (b'+' as i16, b'/' as i16) }
    }

    /// The symbol for a 6-bit value.
    fn symbol(self, value: u8) -> u8 {
        let (s62, s63) = self.last_two();
        let v = i16::from(value);
        // Offsets from the value to its symbol, switched in as v passes 26, 52, 62 and 63.
        let mut offset = b'A' as i16;
        offset += ((25 - v) >> 8) & (b'a' as i16 - 26 - b'A' as i16);
        offset += ((51 - v) >> 8) & (b'0' as i16 - 52 - (b'a' as i16 - 26));
        offset += ((61 - v) >> 8) & (s62 - 62 - (b'0' as i16 - 52));
        offset += ((62 - v) >> 8) & (s63 - 63 - (s62 - 62));
        (v + offset) as u8
    }

    /// The 6-bit value of a symbol, or -1.
    fn value(self, symbol: u8) -> i16 {
        let (s62, s63) = self.last_two();
        let c = i16::from(symbol);
        let mut v = -1;
        v += in_range(c, b'A' as i16, b'Z' as i16) & (c - b'A' as i16 + 1);
        v += in_range(c, b'a' as i16, b'z' as i16) & (c - b'a' as i16 + 27);
        v += in_range(c, b'0' as i16, b'9' as i16) & (c - b'0' as i16 + 53);
        v += in_range(c, s62, s62) & 63;
        v += in_range(c, s63, s63) & 64;
        v
    }

    /// `data` in this form. The string is allocated once at its final size, so encoding a
    /// key leaves no partial copy behind in freed memory.
    pub fn encode(self, data: impl AsRef<[u8]>) -> String {
        self.encode_bytes(data.as_ref())
    }

    fn encode_bytes(self, data: &[u8]) -> String {
        let len = if self.padded { data.len().div_ceil(3) * 4 } else { (data.len() * 4).div_ceil(3) };
        let mut out = Vec::with_capacity(len);
        for chunk in data.chunks(3) {
            let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
            let group = [b[0] >> 2, (b[0] << 4 | b[1] >> 4) & 63, (b[1] << 2 | b[2] >> 6) & 63, b[2] & 63];
            for value in &group[..chunk.len() + 1] {
                out.push(self.symbol(*value));
            }
            if self.padded {
                out.resize(out.len() + 3 - chunk.len(), b'=');
            }
        }
        debug_assert_eq!(out.len(), len);
        // Every byte pushed is an ASCII symbol or `=`.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The bytes `text` encodes, refusing anything but this form's canonical encoding.
    pub fn decode(self, text: impl AsRef<[u8]>) -> Result<Vec<u8>, DecodeError> {
        self.decode_bytes(text.as_ref())
    }

    fn decode_bytes(self, text: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let symbols = if self.padded {
            if !text.len().is_multiple_of(4) {
                return Err(DecodeError::InvalidLength);
            }
            let pads = text.iter().rev().take_while(|c| **c == b'=').count();
            if pads > 2 {
                return Err(DecodeError::InvalidPadding);
            }
            &text[..text.len() - pads]
        } else {
            text
        };
        if symbols.len() % 4 == 1 {
            return Err(DecodeError::InvalidLength);
        }
        // Allocated once at its final size (a key may be decoded here).
        let mut out = Vec::with_capacity(symbols.len() * 3 / 4);
        let mut invalid = 0i16;
        let mut last = 0u32;
        for chunk in symbols.chunks(4) {
            let mut group = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                let v = self.value(*c);
                invalid |= v;
                group |= ((v & 63) as u32) << (18 - 6 * i);
            }
            let bytes = group.to_be_bytes();
            out.extend_from_slice(&bytes[1..chunk.len()]);
            last = group;
        }
        if invalid < 0 {
            out.fill(0);
            return Err(DecodeError::InvalidSymbol);
        }
        // The bits of a short last group beyond its bytes must be zero.
        let stray = match symbols.len() % 4 {
            2 => last & 0xffff,
            3 => last & 0xff,
            _ => 0,
        };
        if stray != 0 {
            out.fill(0);
            return Err(DecodeError::NonCanonical);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        // RFC 4648 section 10.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(STANDARD.encode(plain), coded);
            assert_eq!(STANDARD.decode(coded).unwrap(), plain.as_bytes());
            assert_eq!(URL_SAFE_NO_PAD.encode(plain), coded.trim_end_matches('='));
            assert_eq!(URL_SAFE_NO_PAD.decode(coded.trim_end_matches('=')).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn alphabets_differ_where_rfc4648_says() {
        let bytes = [0xfb, 0xff, 0xbf];
        assert_eq!(STANDARD.encode(bytes), "+/+/");
        assert_eq!(URL_SAFE.encode(bytes), "-_-_");
        assert_eq!(URL_SAFE.encode([0xfb]), "-w==");
        assert_eq!(URL_SAFE_NO_PAD.encode([0xfb]), "-w");
        assert!(STANDARD.decode("-_-_").is_err());
        assert!(URL_SAFE.decode("+/+/").is_err());
    }

    #[test]
    fn every_symbol_round_trips() {
        for codec in [STANDARD, URL_SAFE] {
            let alphabet: Vec<u8> = (0..64).map(|v| codec.symbol(v)).collect();
            let expected: &[u8] = if codec == STANDARD {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            } else {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            };
            assert_eq!(alphabet, expected);
            for c in 0..=255u8 {
                let v = codec.value(c);
                match expected.iter().position(|s| *s == c) {
                    Some(p) => assert_eq!(v, p as i16),
                    None => assert_eq!(v, -1, "{c:#x}"),
                }
            }
        }
    }

    #[test]
    fn refuses_what_is_not_canonical() {
        for bad in ["Zg", "Zg=", "Zg===", "Zh==", "Zm9=", "Z===", "Zm9v\n", " Zm9v", "Zm=v", "Zm9vYg==Zg==", "===="] {
            assert!(STANDARD.decode(bad).is_err(), "{bad:?}");
        }
        for bad in ["Zg==", "Zh", "Z", "Zm9vY"] {
            assert!(URL_SAFE_NO_PAD.decode(bad).is_err(), "{bad:?}");
        }
    }
}
