//! TPM2 quotes as a verifier sees them: the signed TPMS_ATTEST (parsed here from untrusted
//! bytes), and, on the host (std), the whole check a key broker makes: RSASSA-SHA256 signature
//! by the attestation key, the AK's name as the qualified signer, the nonce as extraData, and
//! the PCR digest against the values the verifier expects.

use alloc::string::String;
use alloc::vec::Vec;

use super::Bank;

/// TPM_GENERATED_VALUE.
const GENERATED: u32 = 0xFF54_4347;
/// TPM_ST_ATTEST_QUOTE.
const ST_ATTEST_QUOTE: u16 = 0x8018;

/// A parsed TPMS_ATTEST of a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    /// The signing key's qualified name.
    pub qualified_signer: Vec<u8>,
    /// The qualifying data (nonce) the caller supplied.
    pub extra_data: Vec<u8>,
    /// TPM clock (ms), reset and restart counts.
    pub clock: (u64, u32, u32),
    /// The quoted PCRs: (bank, PCR indices).
    pub pcr_select: Vec<(Bank, Vec<u32>)>,
    /// Digest of the quoted PCR values, concatenated in selection order.
    pub pcr_digest: Vec<u8>,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(alloc::format!("quote: truncated {what}"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn tpm2b(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
}

/// Parse a quote's TPMS_ATTEST.
pub fn parse(attest: &[u8]) -> Result<QuoteInfo, String> {
    let mut c = Cursor(attest);
    if c.u32("magic")? != GENERATED {
        return Err(String::from("quote: not TPM-generated (magic is not TPM_GENERATED_VALUE)"));
    }
    if c.u16("type")? != ST_ATTEST_QUOTE {
        return Err(String::from("quote: the attestation is not a quote"));
    }
    let qualified_signer = c.tpm2b("qualifiedSigner")?.to_vec();
    let extra_data = c.tpm2b("extraData")?.to_vec();
    let clock = u64::from_be_bytes(c.take(8, "clock")?.try_into().unwrap());
    let (reset, restart) = (c.u32("resetCount")?, c.u32("restartCount")?);
    c.take(1, "safe")?;
    c.take(8, "firmwareVersion")?;
    let count = c.u32("PCR selection count")?;
    if count > 16 {
        return Err(alloc::format!("quote: {count} PCR selections"));
    }
    let mut pcr_select = Vec::new();
    for _ in 0..count {
        let alg = c.u16("PCR bank")?;
        let bank = Bank::from_alg(alg).ok_or_else(|| alloc::format!("quote: unknown PCR bank {alg:#06x}"))?;
        let n = c.take(1, "sizeofSelect")?[0] as usize;
        let bitmap = c.take(n, "PCR bitmap")?;
        let pcrs = (0..n * 8).filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0).map(|i| i as u32).collect();
        pcr_select.push((bank, pcrs));
    }
    let pcr_digest = c.tpm2b("pcrDigest")?.to_vec();
    if !c.0.is_empty() {
        return Err(String::from("quote: trailing bytes after the attestation"));
    }
    Ok(QuoteInfo { qualified_signer, extra_data, clock: (clock, reset, restart), pcr_select, pcr_digest })
}

/// The name of a key from its TPM2B_PUBLIC (nameAlg SHA-256): 0x000B || SHA256(public area).
pub fn key_name(tpm2b_public: &[u8]) -> Result<Vec<u8>, String> {
    use sha2::{Digest, Sha256};
    let area = tpm2b_public.get(2..).ok_or("public area: truncated")?;
    if usize::from(u16::from_be_bytes([tpm2b_public[0], tpm2b_public[1]])) != area.len()
        || area.get(2..4) != Some(&[0x00, 0x0B][..])
    {
        return Err(String::from("public area: size mismatch or name algorithm is not SHA-256"));
    }
    let mut name = alloc::vec![0x00, 0x0B];
    name.extend_from_slice(&Sha256::digest(area));
    Ok(name)
}

/// The qualified name of a primary key of `hierarchy` (Part 1, 16: QN = nameAlg ||
/// H(hierarchy handle || Name)): what a quote names as its signer.
pub fn qualified_name_of_primary(hierarchy: u32, name: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut qn = alloc::vec![0x00, 0x0B];
    qn.extend_from_slice(&Sha256::new().chain_update(hierarchy.to_be_bytes()).chain_update(name).finalize());
    qn
}

/// Verify a quote completely (host side): the AK's RSASSA-SHA256 signature over `attest`,
/// the AK (an endorsement-hierarchy primary, see command::attestation_key_template) as the
/// qualified signer, `nonce` as extraData, and `pcrs` (bank, index, value; in the
/// quote's selection order) hashing to the quoted PCR digest. Returns the parsed quote.
#[cfg(feature = "std")]
pub fn verify(
    ak_public: &[u8],
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
    pcrs: &[(Bank, u32, Vec<u8>)],
) -> Result<QuoteInfo, String> {
    use sha2::{Digest, Sha256};
    let key = super::credential::rsa_public_key(ak_public).map_err(|e| alloc::format!("attestation key: {e}"))?;
    let mut s = Cursor(signature);
    if s.u16("signature algorithm")? != 0x0014 || s.u16("signature hash")? != 0x000B {
        return Err(String::from("quote signature: not RSASSA with SHA-256"));
    }
    let sig = s.tpm2b("signature")?;
    if !s.0.is_empty() {
        return Err(String::from("quote signature: trailing bytes"));
    }
    key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(attest), sig)
        .map_err(|_| "quote signature does not verify with the attestation key")?;
    let info = parse(attest)?;
    if info.qualified_signer != qualified_name_of_primary(super::command::RH_ENDORSEMENT, &key_name(ak_public)?) {
        return Err(String::from("quote: signed by a key other than the attestation key presented"));
    }
    if info.extra_data != nonce {
        return Err(String::from("quote: the nonce (extraData) differs: stale or replayed"));
    }
    let mut want: Vec<(Bank, u32)> = Vec::new();
    for (bank, list) in &info.pcr_select {
        want.extend(list.iter().map(|p| (*bank, *p)));
    }
    if want.len() != pcrs.len() || want.iter().zip(pcrs).any(|((b, p), (b2, p2, _))| b != b2 || p != p2) {
        return Err(String::from("quote: the quoted PCR selection differs from the values given"));
    }
    let mut h = Sha256::new();
    for (_, _, v) in pcrs {
        h.update(v);
    }
    if h.finalize().as_slice() != info.pcr_digest.as_slice() {
        return Err(String::from("quote: the PCR values do not match the quoted digest"));
    }
    Ok(info)
}
