//! veilboot's hardware-free core: everything that is logic rather than instructions or
//! device access (the xts assembly aside), for every platform the firmware runs on.
//!
//! The crate is `no_std` + `alloc` so that the firmware (`kernel/`) links it unchanged; the
//! `std` feature (on by default) only adds conveniences for the host tools and tests. All
//! parsing of untrusted bytes lives here, in safe Rust.
#![cfg_attr(not(feature = "std"), no_std)]
// Unsafe code is allowed only in the assembly fast paths of agent::xts (see their SAFETY
// comments); everything else, parsers included, is safe Rust.
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

/// An error type that is its kind enum behind one `Box`: `kind()` and `into_kind()` to match
/// on it, `From<Kind>` (out of line: error paths are cold) and the kind's `Display`.
///
/// For errors that many `?` sites forward: each moves one pointer instead of the whole enum
/// (the ROM's TPM reader, LUKS2 code and boot stages were 12 KiB larger with the enums
/// moved inline). The calling crate needs `extern crate alloc`.
#[macro_export]
macro_rules! boxed_error {
    ($(#[$attr:meta])* $vis:vis struct $name:ident($kind:ty);) => {
        $(#[$attr])*
        $vis struct $name(::alloc::boxed::Box<$kind>);

        impl $name {
            /// What failed.
            pub fn kind(&self) -> &$kind {
                &self.0
            }

            /// What failed, unboxed.
            pub fn into_kind(self) -> $kind {
                *self.0
            }
        }

        impl From<$kind> for $name {
            #[cold]
            #[inline(never)]
            fn from(kind: $kind) -> Self {
                $name(::alloc::boxed::Box::new(kind))
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

pub mod acpi_loader;
pub mod b64;
pub mod bundle;
pub mod cpio;
pub mod disksig;
pub mod fwcfg;
pub mod gpt;
pub mod handover;
pub mod heapsort;
pub mod initdata;
pub mod io;
pub mod json;
pub mod kbs;
pub mod keys;
pub mod linux;
pub mod luks2;
pub mod memmap;
#[cfg(feature = "std")]
pub mod pki;
pub mod snp;
pub mod statedisk;
pub mod tdx;
pub mod timeline;
pub mod tpm;
pub mod xts;

#[cfg(test)]
mod tests {
    /// The firmware (no_std) serializes JSON objects with sorted keys; the host tools must too,
    /// or digests and MACs over JSON (report data, the bundle manifest) differ between them.
    /// serde_json's `preserve_order` feature, which any dependency can switch on for the whole
    /// host build, would make them insertion-ordered.
    #[test]
    fn json_objects_serialize_with_sorted_keys() {
        let v = serde_json::json!({"b": 1, "a": {"d": 2, "c": 3}});
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"a":{"c":3,"d":2},"b":1}"#,
            "a dependency switched on serde_json's preserve_order: find it with `cargo tree -e features -i serde_json`"
        );
    }
}
