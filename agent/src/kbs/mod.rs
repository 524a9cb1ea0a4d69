//! Remote key release with the Trustee KBS protocol. So far: the frames that carry it over the
//! host relay ([`frame`]) and the secret's wrapping, a JWE
//! to the requester's ephemeral key ([`jwe`]); the RCAR handshake and the evidence follow.
pub mod frame;
pub mod jwe;
