//! The broker's SEV-SNP and TDX checks that come after the evidence verifies, each driven with
//! evidence that verifies but carries the wrong value: HOST_DATA that is not the digest of the
//! init-data sent (or HOST_DATA with no init-data), REPORT_DATA bound to another tee-pubkey,
//! MRCONFIGID that is not the init-data's digest (or MRCONFIGID with no init-data). The model
//! AMD-SP (`snp::psp`) and the GetQuote model (`tdx::getquote::model`) sign the evidence with
//! the committed test PKI (`agent/tests/data/test-pki`, made by its `make.sh`), which the
//! broker accepts only as the policy's test root. The binding is computed with the client's
//! code (`kbs::evidence`), never with the broker's, and the init-data digest with SHA-256
//! directly. Each case first shows the honest evidence is accepted, so a refusal is the
//! check's and not some earlier failure's.

use alloc::string::String;
use alloc::vec::Vec;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use sha2::Digest;

use super::broker::{Broker, BrokerConfig, Reply, Request};
use super::evidence::{self, Tee};

const PKI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/test-pki/");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{PKI}{name}")).unwrap_or_else(|e| panic!("{PKI}{name}: {e}"))
}

fn scalar<const N: usize>(name: &str) -> [u8; N] {
    hex::decode(String::from_utf8(fixture(name)).unwrap().trim()).unwrap().try_into().unwrap()
}

/// The init-data document a launch is made for, and another one.
const INIT_DATA: &str = "algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"veilboot.json\" = '''{\"boot-manifest-sha384\":\"aa\"}'''\n";
const OTHER_INIT_DATA: &str = "algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"veilboot.json\" = '''{\"boot-manifest-sha384\":\"bb\"}'''\n";

fn broker(snp: Option<crate::snp::verify::SnpPolicy>, tdx: Option<crate::tdx::verify::TdxPolicy>) -> Broker {
    broker_allowing(snp, tdx, false)
}

/// A broker that accepts evidence sent without init-data when `allow_no_init_data`.
fn broker_allowing(
    snp: Option<crate::snp::verify::SnpPolicy>,
    tdx: Option<crate::tdx::verify::TdxPolicy>,
    allow_no_init_data: bool,
) -> Broker {
    new_broker(config(snp, tdx, allow_no_init_data))
}

/// The configuration of [`broker_allowing`] (no resource).
fn config(
    snp: Option<crate::snp::verify::SnpPolicy>,
    tdx: Option<crate::tdx::verify::TdxPolicy>,
    allow_no_init_data: bool,
) -> BrokerConfig {
    BrokerConfig {
        snp,
        tdx,
        resources: HashMap::new(),
        reference: BTreeMap::new(),
        ek_root: Vec::new(),
        ek_intermediates: Vec::new(),
        allow_no_init_data,
        min_bundle_version: None,
        tpm_trust: crate::kbs::broker::TpmTrust::Nobody,
    }
}

/// A broker with `config` and a deterministic random source whose session ids do not repeat
/// (a 64-bit LCG: a flood must fill the session table, not overwrite a few ids).
fn new_broker(config: BrokerConfig) -> Broker {
    let mut seed = 0u64;
    Broker::new(
        config,
        Box::new(move |b: &mut [u8]| {
            b.iter_mut().for_each(|x| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *x = (seed >> 33) as u8;
            })
        }),
    )
}

/// What the evidence of one attempt is made with.
struct Attempt {
    /// The init-data sent with the attestation.
    send_init_data: Option<&'static str>,
    /// The document whose digest the launch carries (None: zeros).
    launched_with: Option<&'static str>,
    /// Bind the report data to another tee-pubkey than the one sent.
    bind_other_key: bool,
}

const HONEST: Attempt =
    Attempt { send_init_data: Some(INIT_DATA), launched_with: Some(INIT_DATA), bind_other_key: false };

/// /auth then /attest with the evidence `make(report_data, launch digest)` makes; the /attest reply.
fn attest(b: &Broker, tee: Tee, a: &Attempt, make: &dyn Fn(&[u8], &[u8]) -> crate::json::Value) -> Reply {
    attest_in_session(b, tee, a, make).0
}

/// The private key of the tee-pubkey an attempt sends.
const TEE_KEY: [u8; 32] = [7u8; 32];

/// [`attest`], with the session id.
fn attest_in_session(
    b: &Broker,
    tee: Tee,
    a: &Attempt,
    make: &dyn Fn(&[u8], &[u8]) -> crate::json::Value,
) -> (Reply, String) {
    let request = format!(r#"{{"version":"0.4.0","tee":"{}","extra-params":{{}}}}"#, tee.name());
    let r = b.handle(&Request { method: "POST", path: "/kbs/v0/auth", session: None, body: request.as_bytes() });
    assert_eq!(r.status, 200, "{}", r.log);
    let nonce = serde_json::from_slice::<Value>(&r.body).unwrap()["nonce"].as_str().unwrap().to_string();
    let session = r.set_session.unwrap();
    let sent = p256::SecretKey::from_slice(&TEE_KEY).unwrap().public_key();
    let other = p256::SecretKey::from_slice(&[8u8; 32]).unwrap().public_key();
    let runtime = evidence::runtime_data(&nonce, &super::client::tee_pubkey(&sent));
    let bound =
        evidence::runtime_data(&nonce, &super::client::tee_pubkey(if a.bind_other_key { &other } else { &sent }));
    let report_data = evidence::report_data(tee, &bound, "");
    let launch = a.launched_with.map(|d| sha2::Sha256::digest(d.as_bytes()).to_vec()).unwrap_or_default();
    let primary = make(&report_data, &launch);
    let to_serde = |v: &crate::json::Value| serde_json::from_slice::<Value>(&crate::json::to_vec(v)).unwrap();
    let mut body = json!({
        "runtime-data": to_serde(&runtime),
        "tee-evidence": {"primary_evidence": to_serde(&primary), "additional_evidence": ""},
    });
    if let Some(doc) = a.send_init_data {
        body["init-data"] = json!({"format": "toml", "body": doc});
    }
    let bytes = serde_json::to_vec(&body).unwrap();
    (b.handle(&Request { method: "POST", path: "/kbs/v0/attest", session: Some(&session), body: &bytes }), session)
}

fn refused_for(r: &Reply, reason: &str) {
    assert_eq!(r.status, 401, "{}", r.log);
    assert!(r.log.contains(reason), "refused, but not for {reason:?}: {}", r.log);
}

mod snp {
    use super::*;
    use crate::snp::evidence::CertType;
    use crate::snp::guest_msg::{Channel, MsgType};
    use crate::snp::psp::Psp;
    use crate::snp::requests;

    const MEASUREMENT: [u8; 48] = [0xAB; 48];

    /// A report the model AMD-SP signs with the test VCEK, as Trustee's `snp` evidence with
    /// the test chain.
    fn evidence(report_data: &[u8], host_data: &[u8]) -> crate::json::Value {
        let vmpck = [0x11; 32];
        let mut psp = Psp::new([vmpck, [0x22; 32], [0x33; 32], [0x44; 32]]);
        psp.vcek = Some(scalar::<48>("snp-vcek.scalar.hex"));
        psp.measurement = MEASUREMENT;
        psp.host_data[..host_data.len()].copy_from_slice(host_data);
        let mut channel = Channel::new(&vmpck, 0, 0);
        let user_data: [u8; 64] = report_data.try_into().unwrap();
        let req = channel
            .request(MsgType::ReportRequest, 1, &requests::report_request(&user_data, 0, requests::SigningKey::Vcek))
            .unwrap();
        let page = psp.answer(&req.bytes).unwrap();
        let report = requests::report_response(&channel.response(&req, &page).unwrap()).unwrap();
        let certs = [
            (CertType::Vcek, fixture("snp-vcek.der")),
            (CertType::Ask, fixture("snp-ask.der")),
            (CertType::Ark, fixture("snp-ark.der")),
        ];
        crate::snp::evidence::evidence_json(&report, Some(&certs)).unwrap()
    }

    fn snp_policy() -> crate::snp::verify::SnpPolicy {
        crate::snp::verify::SnpPolicy {
            measurements: alloc::vec![MEASUREMENT],
            test_root: Some(fixture("snp-ark.der")),
            crls: alloc::vec![fixture("snp-ark-crl.der")],
            ..Default::default()
        }
    }

    fn snp_broker() -> Broker {
        broker(Some(snp_policy()), None)
    }

    #[test]
    fn honest_evidence_is_accepted() {
        let r = attest(&snp_broker(), Tee::Snp, &HONEST, &evidence);
        assert_eq!(r.status, 200, "{}", r.log);
        assert!(r.log.contains("report data bound to this session; HOST_DATA is the init-data's digest"), "{}", r.log);
        // Issue 35: a launch bound to no boot target (no init-data, HOST_DATA zero) is refused
        // unless the operator allows it (before, it was accepted).
        let unbound = Attempt { send_init_data: None, launched_with: None, bind_other_key: false };
        refused_for(&attest(&snp_broker(), Tee::Snp, &unbound, &evidence), "without init-data");
        let allowing = broker_allowing(Some(snp_policy()), None, true);
        let r = attest(&allowing, Tee::Snp, &unbound, &evidence);
        assert_eq!(r.status, 200, "{}", r.log);
        assert!(r.log.ends_with("; no init-data (allowed by the operator)"), "{}", r.log);
    }

    /// Issue 35: an /auth flood that never answers (it needs no evidence) fills the session
    /// table; a genuine client that comes after it still attests and gets its secret (before,
    /// its /auth was refused, 503, for as long as the flood's challenges lived).
    #[test]
    fn an_auth_flood_does_not_lock_out_a_genuine_client() {
        let secret = b"the cluster's master secret".to_vec();
        let mut config = config(Some(snp_policy()), None, false);
        config.resources.insert(String::from("veilboot/cluster/master-secret"), secret.clone().into());
        let b = new_broker(config);
        let auth = br#"{"version":"0.4.0","tee":"snp","extra-params":{}}"#;
        for _ in 0..crate::kbs::broker::MAX_SESSIONS + 50 {
            b.handle(&Request { method: "POST", path: "/kbs/v0/auth", session: None, body: auth });
        }
        let (r, session) = attest_in_session(&b, Tee::Snp, &HONEST, &evidence);
        assert_eq!(r.status, 200, "{}", r.log);
        let path = "/kbs/v0/resource/veilboot/cluster/master-secret";
        let r = b.handle(&Request { method: "GET", path, session: Some(&session), body: b"" });
        assert_eq!(r.status, 200, "{}", r.log);
        let key = p256::SecretKey::from_slice(&TEE_KEY).unwrap();
        assert_eq!(super::super::jwe::decrypt(&r.body, &key).unwrap().as_slice(), secret.as_slice());
    }

    #[test]
    fn host_data_of_another_init_data_is_refused() {
        let a = Attempt { launched_with: Some(OTHER_INIT_DATA), ..HONEST };
        let r = attest(&snp_broker(), Tee::Snp, &a, &evidence);
        let other = hex::encode(sha2::Sha256::digest(OTHER_INIT_DATA.as_bytes()));
        refused_for(&r, &format!("HOST_DATA {other} is not the digest of the init-data sent"));
    }

    #[test]
    fn host_data_without_init_data_is_refused() {
        let a = Attempt { send_init_data: None, ..HONEST };
        let r = attest(&snp_broker(), Tee::Snp, &a, &evidence);
        refused_for(&r, "the launch carries HOST_DATA but no init-data was sent to check it against");
    }

    #[test]
    fn report_data_bound_to_another_tee_pubkey_is_refused() {
        let a = Attempt { bind_other_key: true, ..HONEST };
        let r = attest(&snp_broker(), Tee::Snp, &a, &evidence);
        refused_for(&r, "the report's REPORT_DATA is not this session's runtime data");
    }
}

mod tdx {
    use super::*;
    use crate::tdx::getquote::model::{self, QuotingKeys};

    const QE_MRSIGNER: [u8; 32] = [0xDC; 32];
    const FMSPC: &str = "00A06F000000";
    /// The PCK certificate's SGX TCB components and PCESVN (tests/data/test-pki/make.sh).
    const SGX_COMPONENTS: [u8; 16] = [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];

    /// TCB info and QE identity for the test platform, signed with the TCB signing key,
    /// valid from 2026-12-01 to 2046-12-01 (the test certificates' span).
    fn collateral() -> crate::tdx::collateral::Collateral {
        let (issued, next) = ("2026-12-01T00:00:00Z", "2046-12-01T00:00:00Z");
        let comps = |svns: &[u8]| svns.iter().map(|s| json!({"svn": s})).collect::<Vec<_>>();
        let tcb_info = json!({
            "id": "TDX", "version": 3, "issueDate": issued, "nextUpdate": next,
            "fmspc": FMSPC, "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 17,
            "tdxModule": {"mrsigner": "00".repeat(48), "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF"},
            "tdxModuleIdentities": [],
            "tcbLevels": [
                {"tcb": {"sgxtcbcomponents": comps(&SGX_COMPONENTS), "pcesvn": 11, "tdxtcbcomponents": comps(&[0; 16])},
                 "tcbDate": issued, "tcbStatus": "UpToDate"},
            ],
        })
        .to_string();
        let qe_identity = json!({
            "id": "TD_QE", "version": 2, "issueDate": issued, "nextUpdate": next, "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000", "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": hex::encode_upper(QE_MRSIGNER), "isvprodid": 2,
            "tcbLevels": [{"tcb": {"isvsvn": 4}, "tcbDate": issued, "tcbStatus": "UpToDate"}],
        })
        .to_string();
        let tcb_key = p256::ecdsa::SigningKey::from_slice(&scalar::<32>("tdx-tcb.scalar.hex")).unwrap();
        let sign = |text: &str| {
            use p256::ecdsa::signature::Signer;
            let s: p256::ecdsa::Signature = tcb_key.sign(text.as_bytes());
            hex::encode(s.to_bytes())
        };
        let chain = [fixture("tdx-tcb.pem"), fixture("tdx-root.pem")].concat();
        let chain = String::from_utf8(chain).unwrap();
        let doc = json!({
            "tcb_info_issuer_chain": chain, "tcb_info": tcb_info, "tcb_info_signature": sign(&tcb_info),
            "qe_identity_issuer_chain": chain, "qe_identity": qe_identity, "qe_identity_signature": sign(&qe_identity),
            "pck_crl": hex::encode(fixture("tdx-platform-crl.der")), "root_ca_crl": hex::encode(fixture("tdx-root-crl.der")),
        });
        crate::tdx::collateral::Collateral::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap()
    }

    /// A TD quote from the GetQuote model over a TDREPORT with `report_data` and MRCONFIGID
    /// `config_id` (zero-padded to 48 bytes), with no CC event log.
    fn evidence(report_data: &[u8], config_id: &[u8]) -> crate::json::Value {
        let keys = QuotingKeys {
            attestation: scalar::<32>("tdx-att.scalar.hex"),
            pck: scalar::<32>("tdx-pck.scalar.hex"),
            chain_pem: [fixture("tdx-pck.pem"), fixture("tdx-platform.pem"), fixture("tdx-root.pem")].concat(),
            qe_mrsigner: QE_MRSIGNER,
            qe_isvsvn: 4,
        };
        // TDREPORT_STRUCT (TDX module ABI, TDG.MR.REPORT): REPORTMACSTRUCT (REPORTDATA at
        // 128), TEE_TCB_INFO at 256, TDINFO at 512 (ATTRIBUTES, XFAM, MRTD, MRCONFIGID at 64).
        let mut report = [0u8; 1024];
        report[128..192].copy_from_slice(report_data);
        report[512 + 3] = 0x10; // ATTRIBUTES: SEPT_VE_DISABLE (bit 28), as a verifier requires
        report[512 + 16..512 + 64].copy_from_slice(&[0x77; 48]); // MRTD
        report[576..576 + config_id.len()].copy_from_slice(config_id);
        let quote = model::quote(&report, &keys);
        crate::json!({"quote": crate::b64::STANDARD.encode(&quote), "cc_eventlog": null})
    }

    fn tdx_policy() -> crate::tdx::verify::TdxPolicy {
        crate::tdx::verify::TdxPolicy {
            root: fixture("tdx-root.pem"),
            test_root: true,
            collateral: collateral(),
            allowed_status: alloc::vec![String::from("UpToDate")],
            reference: None,
            allow_missing_crl: false,
            allow_service_td: false,
        }
    }

    fn tdx_broker() -> Broker {
        broker(None, Some(tdx_policy()))
    }

    #[test]
    fn honest_evidence_is_accepted() {
        let r = attest(&tdx_broker(), Tee::Tdx, &HONEST, &evidence);
        assert_eq!(r.status, 200, "{}", r.log);
        assert!(r.log.contains("report data bound to this session; MRCONFIGID is the init-data's digest"), "{}", r.log);
        // Issue 35: no init-data and MRCONFIGID zero: refused unless the operator allows it.
        let a = Attempt { send_init_data: None, launched_with: None, bind_other_key: false };
        refused_for(&attest(&tdx_broker(), Tee::Tdx, &a, &evidence), "without init-data");
        let r = attest(&broker_allowing(None, Some(tdx_policy()), true), Tee::Tdx, &a, &evidence);
        assert_eq!(r.status, 200, "{}", r.log);
        assert!(r.log.ends_with("; no init-data (allowed by the operator)"), "{}", r.log);
    }

    #[test]
    fn mrconfigid_of_another_init_data_is_refused() {
        let a = Attempt { launched_with: Some(OTHER_INIT_DATA), ..HONEST };
        let r = attest(&tdx_broker(), Tee::Tdx, &a, &evidence);
        let mut other = sha2::Sha256::digest(OTHER_INIT_DATA.as_bytes()).to_vec();
        other.resize(48, 0);
        refused_for(&r, &format!("MRCONFIGID {} is not the digest of the init-data sent", hex::encode(other)));
    }

    #[test]
    fn mrconfigid_without_init_data_is_refused() {
        let a = Attempt { send_init_data: None, ..HONEST };
        let r = attest(&tdx_broker(), Tee::Tdx, &a, &evidence);
        refused_for(&r, "the TD carries an MRCONFIGID but no init-data was sent to check it against");
    }

    #[test]
    fn report_data_bound_to_another_tee_pubkey_is_refused() {
        let a = Attempt { bind_other_key: true, ..HONEST };
        let r = attest(&tdx_broker(), Tee::Tdx, &a, &evidence);
        refused_for(&r, "the quote's REPORTDATA is not this session's runtime data");
    }
}
