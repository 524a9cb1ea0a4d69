//! The firmware's side of the Trustee KBS attestation protocol (RCAR: Request, Challenge,
//! Attestation, Response), protocol version 0.4.0, TEE `tpm`, over an untrusted relay:
//!
//! 1. `POST /kbs/v0/auth` `{"version":"0.4.0","tee":"tpm","extra-params":{..}}`: the
//!    extra parameters carry the EK certificate and the AK's TPM2B_PUBLIC for brokers that
//!    certify the AK (veilboot's does; a plain Trustee ignores them).
//! 2. The challenge `{"nonce":..,"extra-params":{..}}`; if it holds a `veil-credential`
//!    (MakeCredential to the EK for the AK's name), the TPM recovers it with
//!    ActivateCredential.
//! 3. `POST /kbs/v0/attest` with the runtime data (nonce, ephemeral P-256 key as a JWK) and
//!    the TPM evidence: a quote by the AK of all 24 SHA-256 PCRs, whose extraData is the
//!    report data (see [`super::evidence`]).
//! 4. `GET /kbs/v0/resource/<repository>/<type>/<tag>`: the secret as a JWE to the
//!    ephemeral key, decrypted here.
//!
//! The relay sees everything and can change anything: the nonce and report data bind the
//! quote to this session and key, and the JWE's integrity check catches a changed reply.
//! Relay frames are JSON: `{"method","path","body"}` out, `{"status","body"}` back, where
//! the reply body is the HTTP body as text (the relay keeps the session cookie).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::b64::STANDARD as B64;
use crate::json;
use crate::json::Value;
use zeroize::Zeroizing;

use super::evidence::{self, TpmEvidence};
use super::frame::RelayError;
use super::jwe;
use crate::tpm::Bank;
use crate::tpm::command::{self, Tpm, TpmError, TpmErrorKind, Transport};

/// The KBS protocol version spoken.
pub const PROTOCOL_VERSION: &str = "0.4.0";
/// Where veilboot's master secret lives in the broker's resource store, by default.
pub const DEFAULT_RESOURCE: &str = "veilboot/cluster/master-secret";

/// One HTTP exchange through the relay.
pub trait Relay {
    /// Send `method path` with an optional JSON body; return the status and body text.
    fn exchange(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Vec<u8>), RelayError>;
}

/// Why remote release failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KbsError {
    /// The relay failed (no reply, malformed frame).
    Relay(RelayError),
    /// The broker refused a step: status and its error detail.
    Refused {
        /// Which request.
        step: &'static str,
        /// HTTP status.
        status: u16,
        /// The broker's `detail`, or the body.
        detail: String,
    },
    /// A reply that does not follow the protocol.
    Protocol(String),
    /// The TPM failed `during` a step.
    Tpm {
        /// What the TPM was doing.
        during: &'static str,
        /// How it failed.
        error: TpmError,
    },
    /// The TPM returned an attestation key that is not an RSA TPM2B_PUBLIC.
    AkPublic(String),
    /// The secret's JWE did not decrypt.
    Jwe(jwe::JweError),
    /// The platform could not produce its evidence (SEV-SNP report): why.
    Evidence(String),
}

impl fmt::Display for KbsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KbsError::Relay(w) => write!(f, "relay: {w}"),
            KbsError::Refused { step, status, detail } => {
                write!(f, "the key broker refused {step} (HTTP {status}): {detail}")
            }
            KbsError::Protocol(w) => write!(f, "key broker reply: {w}"),
            KbsError::Tpm { during, error } => write!(f, "TPM, {during}: {error}"),
            KbsError::AkPublic(w) => write!(f, "TPM: the attestation key: {w}"),
            KbsError::Jwe(e) => write!(f, "{e}"),
            KbsError::Evidence(w) => write!(f, "attestation evidence: {w}"),
        }
    }
}

/// A TPM failure during `step`.
fn tpm_err(during: &'static str) -> impl FnOnce(TpmError) -> KbsError {
    move |error| KbsError::Tpm { during, error }
}

/// The broker's reply to one request, checked for success and parsed as JSON (the resource
/// reply is returned raw).
fn call(
    relay: &mut dyn Relay,
    step: &'static str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Vec<u8>, KbsError> {
    let (status, reply) = relay.exchange(method, path, body).map_err(KbsError::Relay)?;
    if status != 200 {
        let detail = crate::json::from_slice(&reply)
            .ok()
            .and_then(|v| v.get("detail").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&reply[..reply.len().min(200)]).into_owned());
        return Err(KbsError::Refused { step, status, detail });
    }
    Ok(reply)
}

/// A parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The broker's nonce (a string, used as given).
    pub nonce: String,
    /// MakeCredential output for the AK, if the broker certifies AKs: (blob, secret).
    pub credential: Option<(Vec<u8>, Vec<u8>)>,
}

impl Challenge {
    /// Parse an untrusted challenge.
    pub fn parse(body: &[u8]) -> Result<Challenge, KbsError> {
        let v: Value =
            crate::json::from_slice(body).map_err(|_| KbsError::Protocol(String::from("the challenge is not JSON")))?;
        let nonce = v
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or_else(|| KbsError::Protocol(String::from("the challenge has no nonce")))?;
        if nonce.is_empty() || nonce.len() > 1024 {
            return Err(KbsError::Protocol(alloc::format!("a challenge nonce of {} bytes", nonce.len())));
        }
        let credential = match v.get("extra-params").and_then(|p| p.get("veil-credential")) {
            None | Some(Value::Null) => None,
            Some(c) => {
                let field = |name: &str| {
                    c.get(name)
                        .and_then(Value::as_str)
                        .and_then(|s| B64.decode(s).ok())
                        .ok_or_else(|| KbsError::Protocol(alloc::format!("veil-credential has no base64 \"{name}\"")))
                };
                Some((field("blob")?, field("secret")?))
            }
        };
        Ok(Challenge { nonce: String::from(nonce), credential })
    }
}

/// Timestamps (from `clock`) after each phase, for the boot timeline, and the attestation
/// key used (public: what a Trustee KBS operator registers in its trusted AK directory).
#[derive(Debug, Default, Clone)]
pub struct Phases {
    /// The AK's DER SubjectPublicKeyInfo (Trustee identifies AKs by its SHA-256).
    pub ak_spki: Vec<u8>,
    /// EK, EK certificate and AK ready.
    pub keys: u64,
    /// Challenge received.
    pub challenge: u64,
    /// Credential activated and quote made.
    pub quote: u64,
    /// Attestation accepted.
    pub attested: u64,
    /// Secret received and decrypted.
    pub released: u64,
}

impl Phases {
    /// The AK as a Trustee operator registers it: SHA-256 of its DER SubjectPublicKeyInfo and
    /// the DER in base64 (the body of its PEM). None before the AK was created.
    pub fn ak_description(&self) -> Option<String> {
        use sha2::Digest;
        if self.ak_spki.is_empty() {
            return None;
        }
        Some(alloc::format!(
            "sha256:{} (DER SPKI, the body of its PEM: {})",
            hex::encode(sha2::Sha256::digest(&self.ak_spki)),
            B64.encode(&self.ak_spki)
        ))
    }
}

/// Fetch `resource` from the broker behind `relay`, attesting with `tpm`. `random` fills
/// buffers from the CPU's entropy source; `clock` reads a timestamp for [`Phases`].
pub fn remote_release<T: Transport>(
    tpm: &mut Tpm<T>,
    relay: &mut dyn Relay,
    resource: &str,
    random: &mut dyn FnMut(&mut [u8]),
    clock: &dyn Fn() -> u64,
    phases: &mut Phases,
) -> Result<Zeroizing<Vec<u8>>, KbsError> {
    let ek_cert = tpm.nv_read(command::EK_CERT_RSA_NV_INDEX).ok();
    let (ek, _) = tpm.create_ek().map_err(tpm_err("creating the EK"))?;
    let ak = tpm.create_attestation_key().map_err(tpm_err("creating the attestation key"));
    let (ak, ak_public) = match ak {
        Ok(k) => k,
        Err(e) => {
            let _ = tpm.flush(ek);
            return Err(e);
        }
    };
    phases.keys = clock();
    let r = attest_and_fetch(tpm, relay, resource, random, clock, phases, (ek, ek_cert.as_deref()), (ak, &ak_public));
    let _ = tpm.flush(ak);
    let _ = tpm.flush(ek);
    r
}

#[allow(clippy::too_many_arguments)]
fn attest_and_fetch<T: Transport>(
    tpm: &mut Tpm<T>,
    relay: &mut dyn Relay,
    resource: &str,
    random: &mut dyn FnMut(&mut [u8]),
    clock: &dyn Fn() -> u64,
    phases: &mut Phases,
    (ek, ek_cert): (u32, Option<&[u8]>),
    (ak, ak_public): (u32, &[u8]),
) -> Result<Zeroizing<Vec<u8>>, KbsError> {
    let (modulus, exponent) = crate::tpm::rsa_public_parts(ak_public).map_err(KbsError::AkPublic)?;
    phases.ak_spki = evidence::rsa_spki(&modulus, exponent);
    let mut extra = json!({"veil-ak-public": B64.encode(ak_public)});
    if let Some(cert) = ek_cert {
        extra["veil-ek-cert"] = Value::String(B64.encode(cert));
    }
    let request = json!({"version": PROTOCOL_VERSION, "tee": evidence::Tee::Tpm.name(), "extra-params": extra});
    let challenge =
        Challenge::parse(&call(relay, "the attestation request (auth)", "POST", "/kbs/v0/auth", Some(&request))?)?;
    phases.challenge = clock();

    let credential = match &challenge.credential {
        Some((blob, secret)) => {
            let mut nonce = [0u8; 32];
            random(&mut nonce);
            Some(
                tpm.activate_credential(ak, ek, blob, secret, &nonce)
                    .map_err(tpm_err("activating the broker's credential for the AK"))?,
            )
        }
        None => None,
    };

    let key = ephemeral_key(random);
    let runtime = evidence::runtime_data(&challenge.nonce, &tee_pubkey(&key.public_key()));
    // No additional evidence is sent ("additional_evidence": ""), and Trustee binds that.
    let report = evidence::report_data(evidence::Tee::Tpm, &runtime, "");
    let pcr_list: Vec<u32> = (0..evidence::PCR_COUNT as u32).collect();
    let quote = tpm.quote(ak, &report, Bank::Sha256, &pcr_list).map_err(tpm_err("quoting the PCRs"))?;
    let values = tpm.pcr_read(Bank::Sha256, &pcr_list).map_err(tpm_err("reading the PCRs"))?;
    let mut pcrs = Vec::with_capacity(values.len());
    for (i, v) in values {
        pcrs.push(<[u8; 32]>::try_from(v.as_slice()).map_err(|_| {
            KbsError::Tpm {
                during: "reading the PCRs",
                error: TpmErrorKind::Response {
                    command: "PCR_Read",
                    why: alloc::format!("PCR {i} is not a SHA-256 value"),
                }
                .into(),
            }
        })?);
    }
    let ev = TpmEvidence {
        ak_spki: phases.ak_spki.clone(),
        signature: quote.signature,
        message: quote.attest,
        pcrs,
        credential: credential.map(|c| c.to_vec()),
    };
    phases.quote = clock();
    attest_and_fetch_resource(relay, resource, runtime, ev.to_json(), None, &key, clock, phases)
}

/// Send the evidence with its runtime data (and init-data, a TOML document, if any), then
/// fetch `resource` and decrypt it with `key`.
#[allow(clippy::too_many_arguments)]
fn attest_and_fetch_resource(
    relay: &mut dyn Relay,
    resource: &str,
    runtime: Value,
    primary_evidence: Value,
    init_data: Option<&str>,
    key: &p256::SecretKey,
    clock: &dyn Fn() -> u64,
    phases: &mut Phases,
) -> Result<Zeroizing<Vec<u8>>, KbsError> {
    // No additional evidence is sent, and Trustee binds that ("additional_evidence": "").
    let mut attestation = json!({
        "runtime-data": runtime,
        "tee-evidence": {"primary_evidence": primary_evidence, "additional_evidence": ""},
    });
    if let Some(doc) = init_data {
        attestation["init-data"] = json!({"format": "toml", "body": doc});
    }
    call(relay, "the attestation (attest)", "POST", "/kbs/v0/attest", Some(&attestation))?;
    phases.attested = clock();
    let path = alloc::format!("/kbs/v0/resource/{resource}");
    let reply = call(relay, "the resource request", "GET", &path, None)?;
    let secret = jwe::decrypt(&reply, key).map_err(KbsError::Jwe)?;
    phases.released = clock();
    Ok(secret)
}

/// Fetch `resource` from the broker behind `relay`, attesting as `tee` with the platform's
/// own evidence: `evidence(report_data)` returns the primary evidence binding `report_data`
/// (SEV-SNP: a report whose REPORT_DATA it is, as Trustee's `snp` evidence JSON). `init_data`
/// is the document whose digest the launch carries (HOST_DATA), sent for the broker to check.
#[allow(clippy::too_many_arguments)]
pub fn remote_release_with_evidence(
    tee: evidence::Tee,
    init_data: Option<&str>,
    relay: &mut dyn Relay,
    resource: &str,
    random: &mut dyn FnMut(&mut [u8]),
    clock: &dyn Fn() -> u64,
    phases: &mut Phases,
    make_evidence: &mut dyn FnMut(&[u8]) -> Result<Value, KbsError>,
) -> Result<Zeroizing<Vec<u8>>, KbsError> {
    phases.keys = clock();
    let request = json!({"version": PROTOCOL_VERSION, "tee": tee.name(), "extra-params": {}});
    let challenge =
        Challenge::parse(&call(relay, "the attestation request (auth)", "POST", "/kbs/v0/auth", Some(&request))?)?;
    phases.challenge = clock();
    let key = ephemeral_key(random);
    let runtime = evidence::runtime_data(&challenge.nonce, &tee_pubkey(&key.public_key()));
    let report_data = evidence::report_data(tee, &runtime, "");
    let primary = make_evidence(&report_data)?;
    phases.quote = clock();
    attest_and_fetch_resource(relay, resource, runtime, primary, init_data, &key, clock, phases)
}

/// A fresh P-256 key from `random` (rejection-sampled: a scalar must be below the order).
fn ephemeral_key(random: &mut dyn FnMut(&mut [u8])) -> p256::SecretKey {
    loop {
        let mut bytes = Zeroizing::new([0u8; 32]);
        random(bytes.as_mut());
        if let Ok(key) = p256::SecretKey::from_slice(bytes.as_ref()) {
            return key;
        }
    }
}

/// The `tee-pubkey` JWK (Trustee's TeePubKey::EC) for the ephemeral key.
pub fn tee_pubkey(key: &p256::PublicKey) -> Value {
    let mut jwk = jwe::public_jwk(key);
    jwk["alg"] = Value::String(String::from(jwe::ALG));
    jwk
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_or_are_refused_precisely() {
        let c = Challenge::parse(br#"{"nonce":"abc","extra-params":""}"#).unwrap();
        assert_eq!(c, Challenge { nonce: String::from("abc"), credential: None });
        let c =
            Challenge::parse(br#"{"nonce":"n","extra-params":{"veil-credential":{"blob":"AQI=","secret":"Aw=="}}}"#)
                .unwrap();
        assert_eq!(c.credential, Some((alloc::vec![1, 2], alloc::vec![3])));
        assert!(Challenge::parse(b"<html>").unwrap_err().to_string().contains("not JSON"));
        assert!(Challenge::parse(br#"{"extra-params":""}"#).unwrap_err().to_string().contains("no nonce"));
        assert!(Challenge::parse(br#"{"nonce":""}"#).unwrap_err().to_string().contains("0 bytes"));
        assert!(Challenge::parse(br#"{"nonce":"n","extra-params":{"veil-credential":{"blob":"!"}}}"#).is_err());
    }

    #[test]
    fn refusals_carry_the_brokers_detail() {
        struct Refuse;
        impl Relay for Refuse {
            fn exchange(&mut self, _: &str, _: &str, _: Option<&Value>) -> Result<(u16, Vec<u8>), RelayError> {
                Ok((401, br#"{"type":"https://github.com/confidential-containers/kbs/errors/AttestationFailed","detail":"PCR 4 differs"}"#.to_vec()))
            }
        }
        let e = call(&mut Refuse, "the attestation (attest)", "POST", "/kbs/v0/attest", None).unwrap_err();
        assert_eq!(e.to_string(), "the key broker refused the attestation (attest) (HTTP 401): PCR 4 differs");
    }

    #[test]
    fn tee_pubkey_is_trustees_ec_jwk() {
        let key = ephemeral_key(&mut |b: &mut [u8]| b.fill(7));
        let jwk = tee_pubkey(&key.public_key());
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ECDH-ES+A256KW");
        assert!(jwk["x"].as_str().unwrap().len() == 43 && jwk["y"].as_str().unwrap().len() == 43);
    }
}
