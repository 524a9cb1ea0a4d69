//! TPM responses: whatever the (host-emulated) TPM answers, every command's response parser
//! must return an error or a value, never panic or read out of bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::tpm::Bank;
use veil_agent::tpm::command::{self, SealedBlob, Tpm, Transport};

struct Replay<'a>(&'a [u8]);

impl Transport for Replay<'_> {
    fn transact(&mut self, _command: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self.0.to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut tpm = Tpm::new(Replay(data));
    let _ = tpm.startup_clear();
    let _ = tpm.active_banks();
    let _ = tpm.pcr_read(Bank::Sha256, &[0, 4, 8, 9, 10, 11, 12, 13, 14]);
    let _ = tpm.create_primary(command::storage_primary_template());
    let _ = tpm.create_sealed(0x8000_0000, &[0; 32], b"secret");
    let blob = SealedBlob { private: vec![0, 1, 0], public: vec![0, 0] };
    let _ = tpm.load(0x8000_0000, &blob);
    let _ = tpm.start_policy_session(&[1; 32]);
    let _ = tpm.unseal(0x8000_0001, 0x0300_0000);
    let _ = SealedBlob::from_concatenated(data);
});
