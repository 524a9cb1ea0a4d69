//! Remote key release with the Trustee KBS protocol. This part: the secret's wrapping, a JWE
//! to the requester's ephemeral key ([`jwe`]); the RCAR handshake and the evidence follow.
pub mod jwe;
