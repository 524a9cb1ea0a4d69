//! Forged TDX evidence for the verifier tests: dcap-qvl's real quote rebuilt with a new
//! attestation key under a test PCK chain shaped like Intel's, Intel's real collateral re-signed
//! by a test TCB signing key. Shared by agent/tests/tdx_forged.rs and the dcap-qvl differential
//! test (tools/dcap-diff).

use p256::ecdsa::signature::Signer;
use sha2::Digest;
use veil_agent::tdx::collateral::Collateral;
use veil_agent::tdx::quote;

use super::test_pki::{Cert, Spec, crl};
use super::testdata;

pub const SGX_EXTENSIONS: [u64; 7] = [1, 2, 840, 113741, 1, 13, 1];
pub const PLATFORM_CA: &str = "Intel SGX PCK Platform CA";
pub const PCK: &str = "Intel SGX PCK Certificate";
pub const TCB_SIGNING: &str = "Intel SGX TCB Signing";

/// The real material: dcap-qvl's quote and Intel's collateral for it.
pub struct Real {
    pub quote: quote::Quote,
    pub collateral: serde_json::Value,
    /// The real PCK certificate's SGX extensions (extnValue content).
    pub sgx_extension: Vec<u8>,
}

pub fn real() -> Option<Real> {
    let dir = testdata("tdx/quotes/dcap-qvl")?;
    let quote = quote::parse(&std::fs::read(dir.join("tdx_quote")).unwrap()).unwrap();
    let collateral: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("tdx_quote_collateral.json")).unwrap()).unwrap();
    let chain = veil_agent::pki::pem_bundle(&quote.certification.1).unwrap();
    let pck = <x509_cert::Certificate as der::Decode>::from_der(&chain[0]).unwrap();
    let sgx_extension = pck
        .tbs_certificate()
        .extensions()
        .unwrap()
        .iter()
        .find(|e| e.extn_id.to_string() == "1.2.840.113741.1.13.1")
        .unwrap()
        .extn_value
        .as_bytes()
        .to_vec();
    Some(Real { quote, collateral, sgx_extension })
}

/// The test PKI: root, Platform CA, PCK leaf, TCB signing.
pub struct Pki {
    pub root: Cert,
    pub platform: Cert,
    pub pck: Cert,
    pub tcb: Cert,
}

pub fn pck_spec(real: &Real, serial: u64) -> Spec {
    let mut s = Spec::leaf(PCK, serial);
    s.extensions.push((SGX_EXTENSIONS.to_vec(), real.sgx_extension.clone()));
    s
}

pub fn pki(real: &Real) -> Pki {
    let root = Spec::ca("Intel SGX Root CA", Some(1), 1).self_signed();
    let platform = Spec::ca(PLATFORM_CA, Some(0), 2).signed_by(&root);
    let pck = pck_spec(real, 3).signed_by(&platform);
    let tcb = Spec::leaf(TCB_SIGNING, 4).signed_by(&root);
    Pki { root, platform, pck, tcb }
}

/// An ECDSA P-256 DER signature as r || s.
pub fn raw_sig(der: &[u8]) -> [u8; 64] {
    p256::ecdsa::Signature::from_der(der).unwrap().to_bytes().into()
}

/// The pieces of a quote to build.
#[derive(Clone)]
pub struct QuoteParts {
    /// Header (48 bytes).
    pub header: Vec<u8>,
    /// v5 body descriptor (type, size), if any.
    pub v5: Option<(u16, u32)>,
    pub body: Vec<u8>,
    pub qe_report: Vec<u8>,
    pub qe_auth: Vec<u8>,
}

impl QuoteParts {
    pub fn from_real(real: &Real) -> QuoteParts {
        let signed = &real.quote.signed;
        QuoteParts {
            header: signed[..48].to_vec(),
            v5: None,
            body: signed[48..].to_vec(),
            qe_report: real.quote.qe_report.clone(),
            qe_auth: real.quote.qe_auth_data.clone(),
        }
    }

    /// As a v5 quote with a TD report 1.5 body: TEE_TCB_SVN2 and MRSERVICETD after the 1.0 body.
    pub fn td15(mut self, tee_tcb_svn2: [u8; 16], mr_service_td: [u8; 48]) -> QuoteParts {
        self.header[0..2].copy_from_slice(&5u16.to_le_bytes());
        self.body.extend(tee_tcb_svn2);
        self.body.extend(mr_service_td);
        self.v5 = Some((3, self.body.len() as u32));
        self
    }

    /// The quote: signed by a fresh attestation key, whose QE report `signer` signs, with
    /// `chain_pem` as its certification data.
    pub fn build(&self, signer: &Cert, chain_pem: &str) -> Vec<u8> {
        let att = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
        let point = att.verifying_key().to_sec1_point(false);
        let att_xy = &point.as_bytes()[1..];
        let mut signed = self.header.clone();
        if let Some((kind, size)) = self.v5 {
            signed.extend(kind.to_le_bytes());
            signed.extend(size.to_le_bytes());
        }
        signed.extend(&self.body);
        let sig: p256::ecdsa::Signature = att.sign(&signed);
        let mut qe_report = self.qe_report.clone();
        let mut h = sha2::Sha256::new();
        h.update(att_xy);
        h.update(&self.qe_auth);
        qe_report[320..352].copy_from_slice(&h.finalize());
        let qe_sig = raw_sig(&signer.sign(&qe_report));
        let mut cert = qe_report;
        cert.extend(qe_sig);
        cert.extend((self.qe_auth.len() as u16).to_le_bytes());
        cert.extend(&self.qe_auth);
        cert.extend(5u16.to_le_bytes());
        cert.extend((chain_pem.len() as u32).to_le_bytes());
        cert.extend(chain_pem.as_bytes());
        let mut sig_data = sig.to_bytes().to_vec();
        sig_data.extend(att_xy);
        sig_data.extend(6u16.to_le_bytes());
        sig_data.extend((cert.len() as u32).to_le_bytes());
        sig_data.extend(cert);
        let mut q = signed;
        q.extend((sig_data.len() as u32).to_le_bytes());
        q.extend(sig_data);
        q
    }
}

/// Body offsets (TD report 1.0).
pub const TEE_TCB_SVN: usize = 0;
pub const MR_SIGNER_SEAM: usize = 64;
pub const SEAM_ATTRIBUTES: usize = 112;
pub const TD_ATTRIBUTES: usize = 120;
pub const MR_TD: usize = 136;
/// RTMR0; RTMRi at `RTMR + 48 * i`.
pub const RTMR: usize = 328;

/// The collateral: Intel's TCB info and QE identity (possibly changed), signed by `signer`
/// with `chain` as their issuer chain, and the CRLs.
pub struct Coll {
    pub tcb_info: String,
    pub qe_identity: String,
    pub pck_crl: Option<Vec<u8>>,
    pub root_crl: Option<Vec<u8>>,
    /// The PCK CRL's issuer chain (dcap-qvl reads it).
    pub pck_crl_issuer_chain: String,
}

impl Coll {
    pub fn from_real(real: &Real, pki: &Pki) -> Coll {
        Coll {
            tcb_info: real.collateral["tcb_info"].as_str().unwrap().to_string(),
            qe_identity: real.collateral["qe_identity"].as_str().unwrap().to_string(),
            pck_crl: Some(crl(&pki.platform, (2025, 6, 1), (2025, 7, 1), &[])),
            root_crl: Some(crl(&pki.root, (2025, 6, 1), (2025, 7, 1), &[])),
            pck_crl_issuer_chain: format!("{}{}", pki.platform.pem, pki.root.pem),
        }
    }

    pub fn build(&self, signer: &Cert, chain: &str) -> Collateral {
        Collateral::from_json(&serde_json::to_vec(&self.json(signer, chain)).unwrap()).unwrap()
    }

    /// The collateral JSON (dcap-qvl's form), with the PCK CRL issuer chain `chain` too.
    pub fn json(&self, signer: &Cert, chain: &str) -> serde_json::Value {
        serde_json::json!({
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
            "tcb_info_issuer_chain": chain,
            "tcb_info": self.tcb_info,
            "tcb_info_signature": hex::encode(raw_sig(&signer.sign(self.tcb_info.as_bytes()))),
            "qe_identity_issuer_chain": chain,
            "qe_identity": self.qe_identity,
            "qe_identity_signature": hex::encode(raw_sig(&signer.sign(self.qe_identity.as_bytes()))),
            "pck_crl": self.pck_crl.as_ref().map(hex::encode),
            "root_ca_crl": self.root_crl.as_ref().map(hex::encode),
        })
    }
}
