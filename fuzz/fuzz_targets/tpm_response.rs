//! TPM responses: whatever the (host-emulated) TPM answers, every command's response parser
//! must return an error or a value, never panic or read out of bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::tpm::Bank;
use veil_agent::tpm::command::{self, SealedBlob, Tpm, Transport, TransportError};

struct Replay<'a>(&'a [u8]);

impl Transport for Replay<'_> {
    fn transact(&mut self, _command: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(self.0.to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut tpm = Tpm::new(Replay(data));
    let _ = tpm.startup_clear();
    let _ = tpm.active_banks();
    let _ = tpm.pcr_read(Bank::Sha256, &[0, 4, 8, 9, 10, 11, 12, 13, 14]);
    let _ = tpm.create_primary(&command::storage_primary_template());
    let _ = tpm.create_sealed(0x8000_0000, &[0; 32], b"secret");
    let blob = SealedBlob { private: vec![0, 1, 0], public: vec![0, 0] };
    let _ = tpm.load(0x8000_0000, &blob);
    let _ = tpm.start_policy_session(&[1; 32]);
    let _ = tpm.unseal(0x8000_0001, 0x0300_0000);
    let _ = tpm.create_attestation_key();
    let _ = tpm.quote(0x8000_0002, &[7; 48], Bank::Sha256, &[0, 7]);
    let _ = tpm.nv_read(command::EK_CERT_RSA_NV_INDEX);
    let _ = tpm.activate_credential(0x8000_0002, 0x8000_0003, &[0, 1, 2], &[0, 1, 3], &[4; 32]);
    let _ = tpm.import(0x8000_0000, &[0, 1, 2], &[0, 1, 3], &[0, 0]);
    let _ = tpm.flush(0x8000_0001);
    let _ = veil_agent::tpm::rsa_public_parts(data);
    let _ = SealedBlob::from_concatenated(data);
});
