//! A test PKI for the verifier tests (rcgen): certificates shaped like Intel's and AMD's, made
//! with one change at a time, and CRLs.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension, DistinguishedName, DnType,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
    SignatureAlgorithm, SigningKey, date_time_ymd,
};

/// A certificate with its key.
pub struct Cert {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub der: Vec<u8>,
    pub pem: String,
}

impl Cert {
    /// An issuer for certificates and CRLs this one signs.
    pub fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// Sign `msg` with this certificate's key (ECDSA, the signature DER-encoded).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.key.sign(msg).unwrap()
    }
}

/// What a certificate is.
#[derive(Clone)]
pub struct Spec {
    pub cn: &'static str,
    /// None: a leaf with basicConstraints cA false; Some(n): a CA with path length n (None in
    /// the inner option: unconstrained).
    pub ca: Option<Option<u8>>,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub serial: u64,
    /// (year, month, day) of notBefore and notAfter.
    pub valid: ((i32, u8, u8), (i32, u8, u8)),
    /// Extensions (OID arcs, DER content of extnValue).
    pub extensions: Vec<(Vec<u64>, Vec<u8>)>,
    pub alg: &'static SignatureAlgorithm,
    /// Leave basicConstraints out altogether (a leaf only).
    pub no_basic_constraints: bool,
}

impl Spec {
    pub fn ca(cn: &'static str, path_len: Option<u8>, serial: u64) -> Spec {
        Spec {
            cn,
            ca: Some(path_len),
            key_usages: vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
            serial,
            valid: ((2018, 1, 1), (2049, 1, 1)),
            extensions: Vec::new(),
            alg: &rcgen::PKCS_ECDSA_P256_SHA256,
            no_basic_constraints: false,
        }
    }

    pub fn leaf(cn: &'static str, serial: u64) -> Spec {
        Spec {
            cn,
            ca: None,
            key_usages: vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::ContentCommitment],
            serial,
            valid: ((2018, 1, 1), (2049, 1, 1)),
            extensions: Vec::new(),
            alg: &rcgen::PKCS_ECDSA_P256_SHA256,
            no_basic_constraints: false,
        }
    }

    fn params(&self) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.cn);
        p.distinguished_name = dn;
        p.is_ca = match self.ca {
            None if self.no_basic_constraints => IsCa::NoCa,
            None => IsCa::ExplicitNoCa,
            Some(None) => IsCa::Ca(BasicConstraints::Unconstrained),
            Some(Some(n)) => IsCa::Ca(BasicConstraints::Constrained(n)),
        };
        p.key_usages = self.key_usages.clone();
        p.serial_number = Some(SerialNumber::from(self.serial));
        let ((y0, m0, d0), (y1, m1, d1)) = self.valid;
        p.not_before = date_time_ymd(y0, m0, d0);
        p.not_after = date_time_ymd(y1, m1, d1);
        for (oid, content) in &self.extensions {
            p.custom_extensions.push(CustomExtension::from_oid_content(oid, content.clone()));
        }
        p
    }

    /// The certificate, self-signed.
    pub fn self_signed(&self) -> Cert {
        let key = KeyPair::generate_for(self.alg).unwrap();
        let params = self.params();
        let c = params.self_signed(&key).unwrap();
        Cert { der: c.der().to_vec(), pem: c.pem(), params, key }
    }

    /// The certificate, signed by `issuer`.
    pub fn signed_by(&self, issuer: &Cert) -> Cert {
        let key = KeyPair::generate_for(self.alg).unwrap();
        let params = self.params();
        let c = params.signed_by(&key, &issuer.issuer()).unwrap();
        Cert { der: c.der().to_vec(), pem: c.pem(), params, key }
    }
}

/// A CRL by `issuer` valid `this`..`next` (year, month, day), revoking `serials`.
pub fn crl(issuer: &Cert, this: (i32, u8, u8), next: (i32, u8, u8), serials: &[u64]) -> Vec<u8> {
    let params = CertificateRevocationListParams {
        this_update: date_time_ymd(this.0, this.1, this.2),
        next_update: date_time_ymd(next.0, next.1, next.2),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: date_time_ymd(this.0, this.1, this.2),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(&issuer.issuer()).unwrap().der().to_vec()
}
