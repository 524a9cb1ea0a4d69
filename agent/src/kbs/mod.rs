//! Remote key release with the Trustee KBS protocol: the frames that carry it over the host
//! relay ([`frame`]), the TPM evidence and its binding to the session ([`evidence`]), the
//! firmware's RCAR client ([`client`]), the secret's wrapping as a JWE to the requester's
//! ephemeral key ([`jwe`]) and, on the host, the broker's checks ([`broker`]).
#[cfg(feature = "std")]
pub mod broker;
pub mod client;
pub mod evidence;
pub mod frame;
pub mod jwe;
#[cfg(all(test, feature = "std"))]
mod tee_refusals;
