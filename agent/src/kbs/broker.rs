//! The key broker's protocol logic (host, std): the Trustee KBS endpoints veilboot uses,
//! `POST /kbs/v0/auth`, `POST /kbs/v0/attest`, `GET /kbs/v0/resource/<repo>/<type>/<tag>`,
//! with the `tpm` evidence of [`super::evidence`]. Transport-free (the `veil kbs serve`
//! HTTP server feeds it), so tests and the fuzzer drive it directly.
//!
//! What it checks before it releases a resource, each with its own refusal:
//! - /auth: protocol version 0.4.0 and TEE `tpm`; the AK is a restricted RSA signing key with
//!   fixedTPM and fixedParent; the TPM is a registered one (its AK or its EK public key is in
//!   the operator's registry, [`TpmTrust::Registered`]; without a registry TPM evidence is
//!   refused unless the operator chose [`TpmTrust::AnyTpmUnderCa`]); the EK certificate is
//!   valid now, has the TCG EK profile's fields and chains to the trusted root. It answers
//!   with a fresh nonce and a credential made for the AK's name and encrypted to the EK
//!   (TPM2_MakeCredential): only the TPM holding both keys can recover it.
//! - /attest (once per challenge: a second answer is a replay): the nonce is this session's;
//!   the AK is the one certified at /auth and the recovered credential matches; the quote is
//!   signed by it, names it as signer, carries SHA-384 of the runtime data as extraData, and
//!   its PCR digest matches the 24 values sent; PCR 15 is zero (veilboot quotes before it
//!   extends it, a booted OS has); every PCR with a reference value that is not warn-only
//!   equals it.
//! - /resource: the session attested; the resource is sent as a JWE to the key in the
//!   runtime data, and the session ends.
//!
//! Sessions live 300 s, a challenge left unanswered 60 s. At most [`MAX_SESSIONS_PER_EK`] are
//! open for one TPM (beyond, /auth is refused, 429: an /auth flood made with a VM's public EK
//! certificate and AK cannot crowd out the VM's own session) and 1024 in all: when the table
//! is full, a new challenge evicts the oldest unanswered one (an /auth flood without /attest,
//! which needs no evidence, cannot lock genuine clients out), and an attested session waiting
//! for its resource is never dropped (503 when nothing else can go). A session whose answer
//! was refused no longer counts against its TPM's quota.
//! The broker is shared by the HTTP server's threads: its state is behind mutexes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::b64::STANDARD as B64;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::client::PROTOCOL_VERSION;
use super::evidence::{self, TpmEvidence};
use super::jwe;
use crate::tpm::{Bank, credential, ekcert, quote};

/// Name of the session cookie (Trustee's).
pub const COOKIE: &str = "kbs-session-id";
/// How long a session lives.
const SESSION_LIFETIME: Duration = Duration::from_secs(300);
/// How long a challenge waits for its answer: veilboot answers within seconds (one report or
/// quote), so unanswered challenges of a flood do not hold the table for long.
const CHALLENGE_LIFETIME: Duration = Duration::from_secs(60);
/// Most sessions open at once; beyond, the oldest unanswered challenge makes room, and /auth
/// is refused (503) only when every session is attested and waiting for its resource.
pub const MAX_SESSIONS: usize = 1024;
/// Most sessions open at once for one EK (one TPM): an /auth flood made with a VM's EK
/// certificate and AK (both public) is refused (429) instead of crowding out the VM's own
/// session.
pub const MAX_SESSIONS_PER_EK: usize = 4;

/// Equality of two byte strings in time independent of where they differ.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One reference PCR value (Constellation's measurements JSON entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Expected SHA-256 value.
    pub expected: [u8; 32],
    /// A mismatch is logged, not refused.
    pub warn_only: bool,
}

/// Parse Constellation's measurements JSON (`{"4": {"expected": "<hex>", "warnOnly": false}}`).
pub fn parse_measurements(text: &str) -> Result<BTreeMap<u32, Reference>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("measurements: not JSON: {e}"))?;
    let map = v.as_object().ok_or("measurements: not a JSON object")?;
    let mut out = BTreeMap::new();
    for (k, entry) in map {
        let pcr: u32 = k
            .parse()
            .ok()
            .filter(|p| *p < 24)
            .ok_or_else(|| format!("measurements: \"{k}\" is not a PCR index 0-23"))?;
        let expected = entry
            .get("expected")
            .and_then(Value::as_str)
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| format!("measurements: PCR {pcr} has no 32-byte hex \"expected\""))?;
        let warn_only = entry.get("warnOnly").and_then(Value::as_bool).unwrap_or(false);
        out.insert(pcr, Reference { expected, warn_only });
    }
    Ok(out)
}

/// Which TPMs the broker releases to. PCR values are extends of public inputs (the ROM, the
/// manifest `veil image build` stores in clear), so any TPM under the EK CA can reproduce
/// them: what ties a release to this VM is its registered TPM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TpmTrust {
    /// No registry: TPM evidence is refused.
    #[default]
    Nobody,
    /// Only TPMs whose AK or EK public key (DER SubjectPublicKeyInfo, as `veil tpm ak` /
    /// `veil tpm ek` print it) is one of these.
    Registered(Vec<Vec<u8>>),
    /// Any TPM whose EK certificate chains to the EK CA (`--any-tpm-under-ca`): every tenant
    /// that can get a TPM under that CA and reproduce the PCR values gets the secret.
    AnyTpmUnderCa,
}

/// What the broker trusts and serves (the default trusts nothing and serves nothing).
#[derive(Default)]
pub struct BrokerConfig {
    /// SEV-SNP evidence: what is accepted (None: `snp` is refused).
    pub snp: Option<crate::snp::verify::SnpPolicy>,
    /// TDX evidence: what is accepted (None: `tdx` is refused).
    pub tdx: Option<crate::tdx::verify::TdxPolicy>,
    /// Resources by path (`repo/type/tag`).
    pub resources: HashMap<String, Zeroizing<Vec<u8>>>,
    /// Reference PCR values (SHA-256).
    pub reference: BTreeMap<u32, Reference>,
    /// The CA that signs EK certificates (DER), and the intermediates below it (issuer of
    /// the EK certificate first).
    pub ek_root: Vec<u8>,
    /// Intermediate CA certificates (DER).
    pub ek_intermediates: Vec<Vec<u8>>,
    /// Accept SEV-SNP and TDX evidence sent without init-data (a launch not bound to a boot
    /// target: HOST_DATA / MRCONFIGID zero). Off by default: veilboot always sends it.
    pub allow_no_init_data: bool,
    /// SEV-SNP and TDX: the lowest bundle version the init-data may name (rollback to an
    /// older bundle is refused); None accepts any.
    pub min_bundle_version: Option<u64>,
    /// Which TPMs are released to.
    pub tpm_trust: TpmTrust,
}

/// The launch's host-data register (`register`: SEV-SNP HOST_DATA, TDX MRCONFIGID, holding
/// `value`) against the init-data sent (Trustee's rule: the register is the document's digest,
/// zero-padded), then the bundle version the document names. Evidence without init-data is
/// refused (a launch bound to no boot target) unless the operator allows it, and always when
/// the register is not zero. Returns a log suffix.
fn check_init_data(
    (subject, register): (&str, &str),
    value: &[u8],
    init_data: Option<&str>,
    config: &BrokerConfig,
) -> Result<String, String> {
    match init_data {
        Some(doc) => {
            let want = crate::initdata::regularize(&crate::initdata::digest(doc)?, value.len());
            if value != want.as_slice() {
                return Err(format!(
                    "{register} {} is not the digest of the init-data sent ({})",
                    hex::encode(value),
                    hex::encode(&want)
                ));
            }
            Ok(format!(
                "; {register} is the init-data's digest{}",
                check_bundle_version(doc, config.min_bundle_version)?
            ))
        }
        None if value.iter().any(|b| *b != 0) => {
            Err(format!("{subject} {register} but no init-data was sent to check it against"))
        }
        None if !config.allow_no_init_data => Err(String::from(NO_INIT_DATA)),
        None => Ok(String::from("; no init-data (allowed by the operator)")),
    }
}

/// The init-data's bundle version against the minimum the broker requires: a log suffix, or
/// the refusal.
fn check_bundle_version(doc: &str, min: Option<u64>) -> Result<String, String> {
    let Some(min) = min else { return Ok(String::new()) };
    match crate::initdata::bundle_version(doc)? {
        Some(v) if v >= min => Ok(format!("; bundle version {v} (at least {min})")),
        Some(v) => Err(format!(
            "the init-data names bundle version {v}, below the minimum {min} this broker requires (an older bundle: rollback)"
        )),
        None => Err(format!("the init-data names no bundle version; this broker requires at least {min}")),
    }
}

/// The refusal of SEV-SNP or TDX evidence that comes without init-data.
const NO_INIT_DATA: &str = "the evidence comes without init-data, so the launch is bound to no boot target (veilboot sends the boot volume's init-data; `veil kbs serve --allow-no-init-data` accepts such launches)";

/// An HTTP request, reduced to what the protocol needs.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// GET or POST.
    pub method: &'a str,
    /// The path (no query).
    pub path: &'a str,
    /// The kbs-session-id cookie, if sent.
    pub session: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

/// The reply, and a line for the broker's log.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// A session id to set as the cookie.
    pub set_session: Option<String>,
    /// What happened (public values only).
    pub log: String,
}

/// What a session's attestation must match: set at /auth.
pub struct Expected {
    /// The TEE the session attests with.
    pub tee: kbs_types::Tee,
    /// The nonce sent in the challenge.
    pub nonce: String,
    /// The AK certified at /auth (TPM2B_PUBLIC).
    pub ak_public: Vec<u8>,
    /// The credential made for it.
    pub credential: Zeroizing<[u8; 32]>,
}

impl Session {
    /// Still in progress: its challenge unanswered, or attested and its resource not yet
    /// fetched. (A session whose answer was refused is over.)
    fn live(&self) -> bool {
        self.challenge_open || self.tee_pubkey.is_some()
    }

    /// Past its lifetime: [`SESSION_LIFETIME`], or [`CHALLENGE_LIFETIME`] while its challenge
    /// is unanswered.
    fn expired(&self) -> bool {
        let age = self.created.elapsed();
        age >= SESSION_LIFETIME || (self.challenge_open && age >= CHALLENGE_LIFETIME)
    }
}

struct Session {
    /// The EK (DER SubjectPublicKeyInfo) of a `tpm` session: whose quota it counts against.
    ek: Option<Vec<u8>>,
    expected: Expected,
    challenge_open: bool,
    tee_pubkey: Option<p256::PublicKey>,
    created: Instant,
}

/// The broker.
pub struct Broker {
    config: BrokerConfig,
    sessions: Mutex<HashMap<String, Session>>,
    random: Mutex<Box<dyn FnMut(&mut [u8]) + Send>>,
}

fn refuse(status: u16, kind: &str, detail: String) -> Reply {
    let body = serde_json::to_vec(
        &json!({"type": format!("https://github.com/confidential-containers/kbs/errors/{kind}"), "detail": detail}),
    )
    .expect("JSON");
    Reply { status, body, set_session: None, log: format!("refused ({status} {kind}): {detail}") }
}

/// TPMA_OBJECT bits an AK must have: fixedTPM, fixedParent, sensitiveDataOrigin,
/// restricted, sign.
const AK_ATTRIBUTES: u32 = 0x0000_0002 | 0x0000_0010 | 0x0000_0020 | 0x0001_0000 | 0x0004_0000;

/// Check an AK's TPM2B_PUBLIC: an RSA restricted signing key that never leaves its TPM.
pub fn check_ak(ak_public: &[u8]) -> Result<(), String> {
    let area = ak_public.get(2..).filter(|a| a.len() >= 8).ok_or("the AK public area is truncated")?;
    if u16::from_be_bytes([ak_public[0], ak_public[1]]) as usize != area.len() {
        return Err(String::from("the AK public area's size field is wrong"));
    }
    if area[0..2] != [0x00, 0x01] {
        return Err(String::from("the AK is not an RSA key"));
    }
    let attributes = u32::from_be_bytes(area[4..8].try_into().expect("4 bytes"));
    if attributes & AK_ATTRIBUTES != AK_ATTRIBUTES {
        return Err(format!(
            "the AK's attributes {attributes:#010x} lack fixedTPM, fixedParent, sensitiveDataOrigin, restricted or sign"
        ));
    }
    crate::tpm::rsa_public_parts(ak_public).map(|_| ()).map_err(|e| format!("the AK: {e}"))
}

/// Put `session` in `sessions` as `id` unless that would pass a bound: the whole table
/// ([`MAX_SESSIONS`]) or its EK's share ([`MAX_SESSIONS_PER_EK`]). Expired sessions go first,
/// then refused ones, then the oldest unanswered challenge; an attested session is never
/// dropped.
fn open_session(sessions: &mut HashMap<String, Session>, id: String, session: Session) -> Result<(), Reply> {
    has_room(sessions, session.ek.as_deref())?;
    sessions.insert(id, session);
    Ok(())
}

/// Whether a session of `ek` (None: not a `tpm` session) fits within the bounds, making room
/// as [`open_session`] says.
fn has_room(sessions: &mut HashMap<String, Session>, ek: Option<&[u8]>) -> Result<(), Reply> {
    sessions.retain(|_, s| !s.expired());
    if let Some(ek) = ek {
        let open = sessions.values().filter(|s| s.live() && s.ek.as_deref() == Some(ek)).count();
        if open >= MAX_SESSIONS_PER_EK {
            return Err(refuse(
                429,
                "TooManySessions",
                format!(
                    "this TPM already has {open} open sessions (EK sha256 {}...): answer or let them expire ({} s)",
                    fingerprint(ek),
                    SESSION_LIFETIME.as_secs()
                ),
            ));
        }
    }
    if sessions.len() >= MAX_SESSIONS {
        // Sessions whose one answer was refused serve only to name a replay: they go first.
        sessions.retain(|_, s| s.live());
    }
    if sessions.len() >= MAX_SESSIONS {
        // An unanswered challenge costs its sender nothing: the oldest makes room.
        let oldest = sessions.iter().filter(|(_, s)| s.challenge_open).min_by_key(|(_, s)| s.created);
        if let Some(id) = oldest.map(|(id, _)| id.clone()) {
            sessions.remove(&id);
        }
    }
    if sessions.len() >= MAX_SESSIONS {
        return Err(refuse(
            503,
            "TooManySessions",
            format!("{MAX_SESSIONS} attested sessions are waiting for their resource: try again when some have ended"),
        ));
    }
    Ok(())
}

/// A short fingerprint of a public key for the log: SHA-256 of its DER, first 8 bytes.
fn fingerprint(spki: &[u8]) -> String {
    hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(spki)[..8])
}

/// A registry entry (DER SubjectPublicKeyInfo) as the RSA key it must be (the firmware's AK
/// and EK are RSA-2048).
pub fn registry_key(spki: &[u8]) -> Result<rsa::PublicKey, String> {
    use rsa::pkcs8::DecodePublicKey;
    rsa::PublicKey::from_public_key_der(spki).map_err(|e| format!("a registered key is not an RSA public key: {e}"))
}

/// Is the TPM of `ak_public` (TPM2B_PUBLIC) and `ek` one the operator registered? Ok names how.
pub fn check_registered(trust: &TpmTrust, ak_public: &[u8], ek: &rsa::PublicKey) -> Result<String, String> {
    use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
    let (modulus, exponent) = crate::tpm::rsa_public_parts(ak_public)?;
    let ak_spki = evidence::rsa_spki(&modulus, exponent);
    let ak = rsa::PublicKey::from_public_key_der(&ak_spki).map_err(|e| format!("the AK: {e}"))?;
    let ek_spki = ek.to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default();
    let keys = match trust {
        TpmTrust::Nobody => {
            return Err(String::from(
                "this broker has no TPM registry: it releases to no TPM (the operator registers each VM's AK or EK with --tpm-registry)",
            ));
        }
        TpmTrust::AnyTpmUnderCa => return Ok(String::from("any TPM under the EK CA is accepted")),
        TpmTrust::Registered(keys) => keys,
    };
    for der in keys {
        let Ok(key) = registry_key(der) else { continue };
        if key == ak {
            return Ok(format!("registered AK {}", fingerprint(&ak_spki)));
        }
        if &key == ek {
            return Ok(format!("registered EK {}", fingerprint(&ek_spki)));
        }
    }
    Err(format!(
        "the TPM is not registered: neither its AK (sha256 {}...) nor its EK (sha256 {}...) is in the broker's TPM registry",
        fingerprint(&ak_spki),
        fingerprint(&ek_spki)
    ))
}

impl Broker {
    /// A broker with `config`, drawing nonces, credentials and session ids from `random`.
    pub fn new(config: BrokerConfig, random: Box<dyn FnMut(&mut [u8]) + Send>) -> Broker {
        Broker { config, sessions: Mutex::new(HashMap::new()), random: Mutex::new(random) }
    }

    fn fill(&self, buf: &mut [u8]) {
        (self.random.lock().expect("random source"))(buf)
    }

    /// Answer one request.
    pub fn handle(&self, req: &Request<'_>) -> Reply {
        match (req.method, req.path) {
            ("POST", "/kbs/v0/auth") => self.auth(req.body),
            ("POST", "/kbs/v0/attest") => self.attest(req.session, req.body),
            ("GET", p) if p.starts_with("/kbs/v0/resource/") => {
                self.resource(req.session, &p["/kbs/v0/resource/".len()..])
            }
            (m, p) => {
                refuse(404, "InvalidRequest", format!("no endpoint {m} {}", p.chars().take(100).collect::<String>()))
            }
        }
    }

    fn auth(&self, body: &[u8]) -> Reply {
        let request: kbs_types::Request = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return refuse(400, "InvalidRequest", format!("the request is not a KBS Request: {e}")),
        };
        if request.version != PROTOCOL_VERSION {
            return refuse(
                400,
                "ProtocolVersion",
                format!("protocol version {:?}; this broker speaks {PROTOCOL_VERSION}", request.version),
            );
        }
        if (request.tee == kbs_types::Tee::Snp && self.config.snp.is_some())
            || (request.tee == kbs_types::Tee::Tdx && self.config.tdx.is_some())
        {
            return self.auth_nonce(request.tee);
        }
        if request.tee != kbs_types::Tee::Tpm {
            let mut tees = alloc::vec!["\"tpm\""];
            if self.config.snp.is_some() {
                tees.push("\"snp\"");
            }
            if self.config.tdx.is_some() {
                tees.push("\"tdx\"");
            }
            let accepted = match tees.len() {
                1 => String::from("only \"tpm\""),
                _ => tees.join(", "),
            };
            return refuse(
                400,
                "UnsupportedTee",
                format!("TEE {}; this broker verifies {accepted} evidence", request.tee),
            );
        }
        let extra = &request.extra_params;
        let field = |name: &str| extra.get(name).and_then(Value::as_str).and_then(|s| B64.decode(s).ok());
        let (Some(ak_public), Some(ek_cert)) = (field("veil-ak-public"), field("veil-ek-cert")) else {
            return refuse(
                400,
                "InvalidRequest",
                String::from(
                    "extra-params lack the base64 veil-ak-public and veil-ek-cert this broker certifies the AK with",
                ),
            );
        };
        if let Err(e) = check_ak(&ak_public) {
            return refuse(401, "AttestationFailed", e);
        }
        let ek = match ekcert::certified_key(&ek_cert) {
            Ok(k) => k,
            Err(e) => return refuse(401, "AttestationFailed", format!("EK certificate not trusted: {e}")),
        };
        let registered = match check_registered(&self.config.tpm_trust, &ak_public, &ek) {
            Ok(how) => how,
            Err(e) => return refuse(401, "AttestationFailed", e),
        };
        let ek_spki = {
            use rsa::pkcs8::EncodePublicKey;
            ek.to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default()
        };
        // The EK's quota first, before the costly checks: a flood stops here.
        if let Err(r) = has_room(&mut self.sessions.lock().expect("sessions"), Some(&ek_spki)) {
            return r;
        }
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        if let Err(e) = ekcert::verify(&ek_cert, &ek, &self.config.ek_intermediates, &self.config.ek_root, now) {
            return refuse(401, "AttestationFailed", format!("EK certificate not trusted: {e}"));
        }
        let ak_name = match quote::key_name(&ak_public) {
            Ok(n) => n,
            Err(e) => return refuse(401, "AttestationFailed", format!("the AK: {e}")),
        };
        let mut secret = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 32];
        let mut id = [0u8; 16];
        self.fill(secret.as_mut());
        self.fill(&mut nonce);
        self.fill(&mut id);
        let made = {
            let mut random = self.random.lock().expect("random source");
            credential::make_credential(&ek, &ak_name, secret.as_ref(), &mut **random)
        };
        let (blob, encrypted_seed) = match made {
            Ok(c) => c,
            Err(e) => return refuse(500, "InternalError", format!("MakeCredential: {e}")),
        };
        let nonce = B64.encode(nonce);
        let id = hex::encode(id);
        let challenge = kbs_types::Challenge {
            nonce: nonce.clone(),
            extra_params: json!({"veil-credential": {"blob": B64.encode(&blob), "secret": B64.encode(&encrypted_seed)}}),
        };
        let session = Session {
            ek: Some(ek_spki),
            expected: Expected { tee: kbs_types::Tee::Tpm, nonce, ak_public, credential: secret },
            challenge_open: true,
            tee_pubkey: None,
            created: Instant::now(),
        };
        if let Err(r) = open_session(&mut self.sessions.lock().expect("sessions"), id.clone(), session) {
            return r;
        }
        Reply {
            status: 200,
            body: serde_json::to_vec(&challenge).expect("JSON"),
            set_session: Some(id.clone()),
            log: format!(
                "session {id}: challenge sent (AK {} certified by the EK certificate; {registered})",
                hex::encode(&ak_name[2..10])
            ),
        }
    }

    /// /auth for `snp` and `tdx`: a nonce, nothing else (the evidence's own chain proves the
    /// platform).
    fn auth_nonce(&self, tee: kbs_types::Tee) -> Reply {
        let mut nonce = [0u8; 32];
        let mut id = [0u8; 16];
        self.fill(&mut nonce);
        self.fill(&mut id);
        let nonce = B64.encode(nonce);
        let id = hex::encode(id);
        let challenge = kbs_types::Challenge { nonce: nonce.clone(), extra_params: json!({}) };
        let expected = Expected { tee, nonce, ak_public: Vec::new(), credential: Zeroizing::new([0u8; 32]) };
        let session = Session { ek: None, expected, challenge_open: true, tee_pubkey: None, created: Instant::now() };
        if let Err(r) = open_session(&mut self.sessions.lock().expect("sessions"), id.clone(), session) {
            return r;
        }
        Reply {
            status: 200,
            body: serde_json::to_vec(&challenge).expect("JSON"),
            set_session: Some(id.clone()),
            log: format!("session {id}: challenge sent (tee {tee})"),
        }
    }

    fn attest(&self, session: Option<&str>, body: &[u8]) -> Reply {
        let mut sessions = self.sessions.lock().expect("sessions");
        let Some((id, s)) = session.and_then(|id| sessions.get_mut(id).map(|s| (id, s))).filter(|(_, s)| !s.expired())
        else {
            return refuse(
                401,
                "UnAuthenticatedCookie",
                String::from("no live session: request a challenge at /kbs/v0/auth first"),
            );
        };
        if !s.challenge_open {
            return refuse(
                401,
                "AttestationFailed",
                format!("session {id}: its challenge was already answered (a replayed attestation)"),
            );
        }
        s.challenge_open = false; // one answer per challenge, right or wrong
        match check_attestation(&self.config, &s.expected, body) {
            Ok((key, log)) => {
                s.tee_pubkey = Some(key);
                let token = json!({"token": format!("veil-session-{id}")});
                Reply {
                    status: 200,
                    body: serde_json::to_vec(&token).expect("JSON"),
                    set_session: None,
                    log: format!("session {id}: attested; {log}"),
                }
            }
            Err(e) => {
                let mut r = refuse(401, "AttestationFailed", e);
                r.log = format!("session {id}: {}", r.log);
                r
            }
        }
    }

    fn resource(&self, session: Option<&str>, path: &str) -> Reply {
        let mut sessions = self.sessions.lock().expect("sessions");
        let Some(id) = session.filter(|id| sessions.get(*id).is_some_and(|s| s.tee_pubkey.is_some() && !s.expired()))
        else {
            return refuse(
                401,
                "UnAuthenticatedCookie",
                String::from("this session has not attested (or has already fetched its resource)"),
            );
        };
        let Some(secret) = self.config.resources.get(path) else {
            return refuse(
                404,
                "ResourceNotFound",
                format!("no resource {}", path.chars().take(100).collect::<String>()),
            );
        };
        let key = sessions.remove(id).and_then(|s| s.tee_pubkey).expect("checked above");
        let mut random = self.random.lock().expect("random source");
        match jwe::encrypt(secret, &key, &mut **random) {
            Ok(body) => Reply {
                status: 200,
                body,
                set_session: None,
                log: format!("session {id}: released {path} ({} bytes, JWE to the attested key)", secret.len()),
            },
            Err(e) => refuse(500, "InternalError", format!("JWE: {e}")),
        }
    }
}

/// The /attest checks on an untrusted body; the key to wrap the resource to, and a log line.
pub fn check_attestation(
    config: &BrokerConfig,
    s: &Expected,
    body: &[u8],
) -> Result<(p256::PublicKey, String), String> {
    let attestation: kbs_types::Attestation =
        serde_json::from_slice(body).map_err(|e| format!("the attestation is not a KBS Attestation: {e}"))?;
    let key = attested_key(s, &attestation)?;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| String::from("the broker's clock is before 1970"))
    };
    if s.tee == kbs_types::Tee::Snp {
        let policy = config.snp.as_ref().ok_or("this broker does not verify snp evidence")?;
        return check_snp(policy, &attestation, now()?, config).map(|log| (key, log));
    }
    if s.tee == kbs_types::Tee::Tdx {
        let policy = config.tdx.as_ref().ok_or("this broker does not verify tdx evidence")?;
        return check_tdx(policy, &attestation, now()?, config).map(|log| (key, log));
    }
    let primary = &attestation.tee_evidence.primary_evidence;
    let ev = TpmEvidence::from_json(&primary.into())?;
    let (modulus, exponent) = crate::tpm::rsa_public_parts(&s.ak_public)?;
    if ev.ak_spki != evidence::rsa_spki(&modulus, exponent) {
        return Err(String::from("the quote's AK is not the AK certified at /auth (unknown AK)"));
    }
    check_tpm(config, s, &attestation, &ev).map(|log| (key, log))
}

/// SEV-SNP evidence: the report verified (agent::snp::verify) and bound to this session's
/// runtime data the way Trustee binds it for `snp` (SHA-384 of the JCS form, zero-padded to
/// 64 bytes).
pub fn check_snp(
    policy: &crate::snp::verify::SnpPolicy,
    attestation: &kbs_types::Attestation,
    now: u64,
    config: &BrokerConfig,
) -> Result<String, String> {
    let (raw, certs) = crate::snp::verify::from_evidence(&attestation.tee_evidence.primary_evidence)?;
    let verified = crate::snp::verify::verify_snp(&raw, &certs, policy, now)?;
    // HOST_DATA: the digest of the init-data the firmware sent (Trustee's rule), when it sent
    // one; a launch that carries HOST_DATA without it is refused.
    let host_data = &raw[0xC0..0xE0];
    let init = check_init_data(
        ("the launch carries", "HOST_DATA"),
        host_data,
        attestation.init_data.as_ref().map(|d| d.body.as_str()),
        config,
    )?;
    let mut want = [0u8; 64];
    want[..48].copy_from_slice(&expected_runtime_digest(attestation)?);
    if raw[0x50..0x90] != want {
        return Err(String::from(
            "the report's REPORT_DATA is not this session's runtime data (nonce, tee-pubkey) bound as Trustee binds it",
        ));
    }
    Ok(format!("SNP report verified: {}; report data bound to this session{init}", verified.checks.join("; ")))
}

/// TDX evidence: the quote verified (agent::tdx::verify: DCAP, TCB status, debug, reference
/// values, CC event log), MRCONFIGID equal to the init-data's digest (Trustee's rule), and
/// REPORTDATA bound to this session's runtime data as Trustee binds it for `tdx`.
pub fn check_tdx(
    policy: &crate::tdx::verify::TdxPolicy,
    attestation: &kbs_types::Attestation,
    now: u64,
    config: &BrokerConfig,
) -> Result<String, String> {
    let (quote, ccel) = crate::tdx::getquote::from_evidence(&(&attestation.tee_evidence.primary_evidence).into())?;
    let verified = crate::tdx::verify::verify_tdx(&quote, ccel.as_deref(), policy, now)?;
    let body = &verified.quote.body;
    let init = check_init_data(
        ("the TD carries an", "MRCONFIGID"),
        &body.mr_config_id,
        attestation.init_data.as_ref().map(|d| d.body.as_str()),
        config,
    )?;
    let mut want = [0u8; 64];
    want[..48].copy_from_slice(&expected_runtime_digest(attestation)?);
    if body.report_data != want {
        return Err(String::from(
            "the quote's REPORTDATA is not this session's runtime data (nonce, tee-pubkey) bound as Trustee binds it",
        ));
    }
    Ok(format!("TD quote verified: {}; report data bound to this session{init}", verified.checks.join("; ")))
}

/// The nonce and the key the resource will be wrapped to, from the runtime data.
fn attested_key(s: &Expected, attestation: &kbs_types::Attestation) -> Result<p256::PublicKey, String> {
    let runtime = &attestation.runtime_data;
    if runtime.nonce != s.nonce {
        return Err(String::from("the runtime data's nonce is not this session's (replayed or stale)"));
    }
    let kbs_types::TeePubKey::EC { crv, alg, x, y } = &runtime.tee_pubkey else {
        return Err(String::from(
            "the tee-pubkey is not an EC key (the secret is wrapped with ECDH-ES+A256KW to a P-256 key)",
        ));
    };
    if alg != jwe::ALG {
        return Err(format!("the tee-pubkey's alg is {alg:?}, not {}", jwe::ALG));
    }
    jwe::key_from_jwk(&json!({"kty": "EC", "crv": crv, "x": x, "y": y}).into())
        .map_err(|_| String::from("the tee-pubkey is not a P-256 JWK"))
}

/// TPM evidence: the AK's credential, the quote over the runtime data, the PCRs.
fn check_tpm(
    config: &BrokerConfig,
    s: &Expected,
    attestation: &kbs_types::Attestation,
    ev: &TpmEvidence,
) -> Result<String, String> {
    if !config.reference.values().any(|r| !r.warn_only) {
        return Err(String::from("this broker enforces no reference PCR value: it releases nothing to tpm evidence"));
    }
    match &ev.credential {
        Some(c) if equal(c, s.credential.as_ref()) => {}
        Some(_) => {
            return Err(String::from(
                "the recovered credential is wrong: the AK is not on the TPM of the EK certificate",
            ));
        }
        None => {
            return Err(String::from(
                "no recovered credential: the AK was not shown to live on the TPM of the EK certificate",
            ));
        }
    }
    let report = expected_report_data(attestation)?;
    let pcrs: Vec<(Bank, u32, Vec<u8>)> =
        ev.pcrs.iter().enumerate().map(|(i, v)| (Bank::Sha256, i as u32, v.to_vec())).collect();
    quote::verify(&s.ak_public, &ev.message, &ev.signature, &report, &pcrs)?;
    // veilboot quotes before it extends PCR 15 with the clusterID; the OS it boots inherits
    // every other PCR, so a quote with PCR 15 extended is the OS's: refused whatever the
    // reference values say (issue 35).
    let cluster = ev.pcrs.get(crate::tpm::measure::CLUSTER_ID_PCR as usize).ok_or("the quote lacks PCR 15")?;
    if *cluster != [0u8; 32] {
        return Err(format!(
            "PCR 15 is not zero ({}): the quote was not taken by veilboot before the hand-off (it extends PCR 15 with the clusterID; a booted OS asks with it extended)",
            hex::encode(cluster)
        ));
    }
    let mut warnings = Vec::new();
    for (pcr, r) in &config.reference {
        let got = &ev.pcrs[*pcr as usize];
        if *got != r.expected {
            let what = format!("PCR {pcr} is {}, the reference value is {}", hex::encode(got), hex::encode(r.expected));
            if !r.warn_only {
                return Err(what);
            }
            warnings.push(what);
        }
    }
    let checked = config.reference.iter().filter(|(_, r)| !r.warn_only).count();
    let mut log = format!("quote verified, {checked} PCRs match their reference values");
    if !warnings.is_empty() {
        log.push_str(&format!(" (warn-only: {})", warnings.join("; ")));
    }
    Ok(log)
}

/// The quote's extraData Trustee's KBS expects for `attestation`, computed as Trustee does and
/// deliberately not with the client's binding (evidence::report_data): a broker that shared
/// the client's code could not catch the client's mistakes. The KBS builds
/// `{"additional-evidence", "nonce", "tee-pubkey"}` from the typed request, the attestation
/// service hashes its RFC 8785 form with SHA-384, and the TPM verifier compares the first 32
/// bytes with the quote's extraData.
pub fn expected_report_data(attestation: &kbs_types::Attestation) -> Result<Vec<u8>, String> {
    Ok(expected_runtime_digest(attestation)?[..32].to_vec())
}

/// SHA-384 of the JCS form of `{"additional-evidence", "nonce", "tee-pubkey"}` (see
/// [`expected_report_data`]); the `snp` and `tdx` verifiers compare all 48 bytes, zero-padded.
pub fn expected_runtime_digest(attestation: &kbs_types::Attestation) -> Result<[u8; 48], String> {
    let bound = json!({
        "additional-evidence": attestation.tee_evidence.additional_evidence,
        "nonce": attestation.runtime_data.nonce,
        "tee-pubkey": attestation.runtime_data.tee_pubkey,
    });
    let canonical = serde_json_canonicalizer::to_vec(&bound).map_err(|e| format!("runtime data: {e}"))?;
    Ok(<sha2::Sha384 as sha2::Digest>::digest(&canonical).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> Broker {
        let config = BrokerConfig {
            snp: None,
            tdx: None,
            resources: HashMap::new(),
            reference: BTreeMap::new(),
            ek_root: Vec::new(),
            ek_intermediates: Vec::new(),
            allow_no_init_data: false,
            min_bundle_version: None,
            tpm_trust: TpmTrust::Nobody,
        };
        let mut n = 0u8;
        Broker::new(
            config,
            Box::new(move |b: &mut [u8]| {
                b.iter_mut().for_each(|x| {
                    n = n.wrapping_add(1);
                    *x = n;
                })
            }),
        )
    }

    fn post<'a>(path: &'a str, session: Option<&'a str>, body: &'a [u8]) -> Request<'a> {
        Request { method: "POST", path, session, body }
    }

    /// Issue 35, case 2: SEV-SNP or TDX evidence without init-data is refused unless the
    /// operator allows it (before, it was accepted whenever the register was zero).
    #[test]
    fn init_data_is_required_unless_allowed() {
        let mut config = broker().config;
        let snp = ("the launch carries", "HOST_DATA");
        assert_eq!(check_init_data(snp, &[0; 32], None, &config).unwrap_err(), NO_INIT_DATA);
        assert!(check_init_data(snp, &[1; 32], None, &config).unwrap_err().contains("but no init-data was sent"));
        let doc = crate::initdata::document(&[1; 48], Some(2));
        let digest = crate::initdata::digest(&doc).unwrap();
        assert!(
            check_init_data(snp, &digest, Some(&doc), &config).unwrap().contains("HOST_DATA is the init-data's digest")
        );
        assert!(check_init_data(snp, &[2; 32], Some(&doc), &config).unwrap_err().contains("is not the digest"));
        let tdx = ("the TD carries an", "MRCONFIGID");
        let padded = crate::initdata::regularize(&digest, 48);
        assert!(
            check_init_data(tdx, &padded, Some(&doc), &config)
                .unwrap()
                .contains("MRCONFIGID is the init-data's digest")
        );
        config.min_bundle_version = Some(3);
        assert!(check_init_data(tdx, &padded, Some(&doc), &config).unwrap_err().contains("rollback"));
        config.allow_no_init_data = true;
        assert!(check_init_data(tdx, &[0; 48], None, &config).unwrap().contains("allowed by the operator"));
        assert!(check_init_data(tdx, &[9; 48], None, &config).is_err());
    }

    /// Issue 35: an unanswered challenge lives [`CHALLENGE_LIFETIME`], an attested session
    /// [`SESSION_LIFETIME`]; when the table is full the oldest unanswered challenge makes room,
    /// never an attested session.
    #[test]
    fn challenges_expire_and_the_oldest_unanswered_makes_room() {
        let ago = |s: u64| Instant::now().checked_sub(Duration::from_secs(s)).expect("an uptime of minutes");
        let key = p256::SecretKey::from_slice(&[7; 32]).unwrap().public_key();
        let session = |created, challenge_open, attested: bool| Session {
            ek: None,
            expected: Expected {
                tee: kbs_types::Tee::Snp,
                nonce: String::new(),
                ak_public: Vec::new(),
                credential: Zeroizing::new([0; 32]),
            },
            challenge_open,
            tee_pubkey: attested.then_some(key),
            created,
        };
        assert!(session(ago(CHALLENGE_LIFETIME.as_secs() + 1), true, false).expired());
        assert!(!session(ago(CHALLENGE_LIFETIME.as_secs() + 1), false, true).expired());
        assert!(session(ago(SESSION_LIFETIME.as_secs() + 1), false, true).expired());
        let mut table = HashMap::new();
        table.insert(String::from("oldest"), session(ago(30), true, false));
        table.insert(String::from("attested"), session(ago(40), false, true));
        for i in 0..MAX_SESSIONS - 2 {
            table.insert(format!("{i}"), session(ago(10), true, false));
        }
        assert!(has_room(&mut table, None).is_ok());
        assert!(!table.contains_key("oldest") && table.contains_key("attested"));
        let mut attested: HashMap<String, Session> =
            (0..MAX_SESSIONS).map(|i| (format!("{i}"), session(ago(10), false, true))).collect();
        assert_eq!(has_room(&mut attested, None).map_err(|r| r.status), Err(503));
    }

    #[test]
    fn bundle_version_minimum() {
        let doc = |v| crate::initdata::document(&[1; 48], v);
        assert_eq!(check_bundle_version(&doc(None), None), Ok(String::new()));
        assert!(check_bundle_version(&doc(Some(3)), Some(3)).unwrap().contains("bundle version 3"));
        assert!(check_bundle_version(&doc(Some(2)), Some(3)).unwrap_err().contains("rollback"));
        assert!(check_bundle_version(&doc(None), Some(1)).unwrap_err().contains("names no bundle version"));
    }

    #[test]
    fn auth_refuses_bad_requests_precisely() {
        let b = broker();
        let cases: [(&[u8], &str); 5] = [
            (b"{", "not a KBS Request"),
            (br#"{"version":"0.1.0","tee":"tpm","extra-params":""}"#, "protocol version"),
            (br#"{"version":"0.4.0","tee":"snp","extra-params":""}"#, "only \"tpm\""),
            (br#"{"version":"0.4.0","tee":"tpm","extra-params":""}"#, "veil-ak-public"),
            (
                br#"{"version":"0.4.0","tee":"tpm","extra-params":{"veil-ak-public":"AAEC","veil-ek-cert":"AAEC"}}"#,
                "AK public area",
            ),
        ];
        for (body, want) in cases {
            let r = b.handle(&post("/kbs/v0/auth", None, body));
            assert!(r.status >= 400 && r.log.contains(want), "{want}: {} {}", r.status, r.log);
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert!(v["type"].as_str().unwrap().starts_with("https://github.com/confidential-containers/kbs/errors/"));
        }
    }

    #[test]
    fn attest_and_resource_need_a_session() {
        let b = broker();
        let r = b.handle(&post("/kbs/v0/attest", Some("nope"), b"{}"));
        assert_eq!(r.status, 401);
        let r = b.handle(&Request { method: "GET", path: "/kbs/v0/resource/a/b/c", session: None, body: b"" });
        assert_eq!(r.status, 401);
        assert_eq!(b.handle(&Request { method: "DELETE", path: "/x", session: None, body: b"" }).status, 404);
    }

    /// SEV-SNP sessions: a challenge for tee snp, and an attestation carrying another
    /// session's (replayed) nonce refused before its evidence is looked at; a challenge is
    /// answered once.
    #[test]
    fn snp_and_tdx_sessions_refuse_a_replayed_nonce() {
        for (tee, no_evidence) in [("snp", "attestation_report"), ("tdx", "no base64 \"quote\"")] {
            let mut b = broker();
            b.config.snp = Some(crate::snp::verify::SnpPolicy::default());
            b.config.tdx = Some(crate::tdx::verify::TdxPolicy {
                root: Vec::new(),
                test_root: false,
                collateral: crate::tdx::collateral::Collateral::from_json(
                    br#"{"tcb_info_issuer_chain":"","tcb_info":"","tcb_info_signature":"","qe_identity_issuer_chain":"","qe_identity":"","qe_identity_signature":""}"#,
                )
                .unwrap(),
                allowed_status: vec![String::from("UpToDate")],
                reference: None,
                allow_missing_crl: false,
                allow_service_td: false,
            });
            let request = format!(r#"{{"version":"0.4.0","tee":"{tee}","extra-params":{{}}}}"#);
            let auth = |b: &Broker| {
                let r = b.handle(&post("/kbs/v0/auth", None, request.as_bytes()));
                assert_eq!(r.status, 200, "{}", r.log);
                assert!(r.log.ends_with(&format!("(tee {tee})")), "{}", r.log);
                let nonce = serde_json::from_slice::<Value>(&r.body).unwrap()["nonce"].as_str().unwrap().to_string();
                (r.set_session.unwrap(), nonce)
            };
            let (first, first_nonce) = auth(&b);
            let (second, _) = auth(&b);
            let key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
            let body = json!({
                "runtime-data": {"nonce": first_nonce, "tee-pubkey": serde_json::Value::from(super::super::client::tee_pubkey(&key.public_key()))},
                "tee-evidence": {"primary_evidence": {}, "additional_evidence": ""},
            });
            let bytes = serde_json::to_vec(&body).unwrap();
            // The first session's nonce presented to the second session: a replay.
            let r = b.handle(&post("/kbs/v0/attest", Some(&second), &bytes));
            assert_eq!(r.status, 401);
            assert!(r.log.contains("nonce is not this session's (replayed or stale)"), "{tee}: {}", r.log);
            // The right session, but no evidence: refused, and the challenge is spent.
            let r = b.handle(&post("/kbs/v0/attest", Some(&first), &bytes));
            assert!(r.log.contains(no_evidence), "{tee}: {}", r.log);
            let r = b.handle(&post("/kbs/v0/attest", Some(&first), &bytes));
            assert_eq!(r.status, 401, "{}", r.log);
            assert!(r.log.contains("already answered"), "{tee}: {}", r.log);
        }
    }

    #[test]
    fn measurements_json_parses_and_refuses_bad_entries() {
        let m = parse_measurements(&format!(
            r#"{{"4": {{"expected": "{}", "warnOnly": false}}, "1": {{"expected": "{}", "warnOnly": true}}}}"#,
            "ab".repeat(32),
            "00".repeat(32)
        ))
        .unwrap();
        assert_eq!(m[&4], Reference { expected: [0xab; 32], warn_only: false });
        assert!(m[&1].warn_only);
        assert!(parse_measurements(r#"{"24": {"expected": ""}}"#).unwrap_err().contains("0-23"));
        assert!(parse_measurements(r#"{"4": {"expected": "abcd"}}"#).unwrap_err().contains("32-byte"));
    }
}
