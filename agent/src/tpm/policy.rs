//! Policy digests (TPM 2.0 Part 3, TPM2_PolicyPCR): what a sealed object's authPolicy must
//! equal for a PolicyPCR session over given PCR values to unseal it. Computed here so that
//! the firmware can seal to the values it measured and `veil` to the values it predicts.

use alloc::vec::Vec;

use sha2::{Digest, Sha256};

use super::Bank;

/// TPM_CC_PolicyPCR.
const CC_POLICY_PCR: u32 = 0x0000_017F;

/// A marshalled TPML_PCR_SELECTION with one bank and a 3-byte bitmap of `pcrs` (indices
/// above 23 are left out), as TPM2_PolicyPCR takes it.
pub fn marshal_selection(bank: Bank, pcrs: &[u32]) -> Vec<u8> {
    let below_24: Vec<u32> = pcrs.iter().copied().filter(|p| *p < 24).collect();
    super::wire::pcr_selection(bank.alg_id(), &below_24).expect("indices below 24").to_vec()
}

/// The SHA-256 policy digest of a trial session that ran TPM2_PolicyPCR once over `pcrs` of
/// `bank` holding `values` (given in ascending PCR order, as the TPM concatenates them).
pub fn policy_pcr(bank: Bank, pcrs: &[u32], values: &[Vec<u8>]) -> [u8; 32] {
    let mut sorted = pcrs.to_vec();
    crate::heapsort::sort_by_key(&mut sorted, |p| *p);
    sorted.dedup();
    assert_eq!(sorted.len(), values.len(), "one value per selected PCR");
    let mut pcr_digest = Sha256::new();
    for v in values {
        pcr_digest.update(v);
    }
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(CC_POLICY_PCR.to_be_bytes());
    h.update(marshal_selection(bank, &sorted));
    h.update(pcr_digest.finalize());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_pcr_of_zeroed_pcr7_matches_tpm2_tools() {
        // `tpm2_startup -c; tpm2_createpolicy --policy-pcr -l sha256:7 -L p` on a fresh swtpm
        // (PCR 7 all zero) prints this digest.
        let d = policy_pcr(Bank::Sha256, &[7], &[alloc::vec![0u8; 32]]);
        assert_eq!(hex::encode(d), POLICY_PCR7_ZERO);
    }

    /// Recorded with tpm2-tools 5.4 against swtpm 0.7.1 (see the test above).
    const POLICY_PCR7_ZERO: &str = "8b5682d81b29435d08d79278150611dc7e5923b2fefcce684a09577b40130a8b";

    #[test]
    fn policy_over_several_pcrs_matches_tpm2_tools() {
        // Same swtpm, after `tpm2_pcrextend 4:sha256=aa..aa`: `tpm2_createpolicy --policy-pcr
        // -l sha256:0,4,8,9`. PCR 4 is then SHA256(0^32 || aa^32).
        let pcr4 = Bank::Sha256.extend(&[0; 32], &[0xAA; 32]);
        assert_eq!(hex::encode(&pcr4), "9ef814b42fa0be12d197c44d3e8e03441a4b1118237658368ba1351090e556ed");
        let zero = alloc::vec![0u8; 32];
        let d = policy_pcr(Bank::Sha256, &[9, 0, 8, 4], &[zero.clone(), pcr4, zero.clone(), zero]);
        assert_eq!(hex::encode(d), "20ec718b96cbae071a2323dd737f8d571d1ea498baadea2ae5230ff936e4c204");
    }

    #[test]
    fn selection_layout() {
        assert_eq!(marshal_selection(Bank::Sha256, &[0, 4, 8, 9, 23]), [0, 0, 0, 1, 0, 0x0B, 3, 0x11, 0x03, 0x80]);
        // PolicyPCR's 3-byte bitmap has no room for PCR 24 and up: they are left out.
        assert_eq!(marshal_selection(Bank::Sha256, &[0, 24, 31]), [0, 0, 0, 1, 0, 0x0B, 3, 0x01, 0, 0]);
    }
}
