//! Remote key release from the firmware's side: the virtio-console relay channel (frames of
//! veil_agent::kbs::frame carrying `{"method","path","body"}` out and `{"status","body"}`
//! back) and the call into the RCAR client with this machine's TPM, randomness and clock.
//! Everything the relay returns is untrusted and parsed in agent.

use alloc::vec::Vec;

use veil_agent::json::Value;
use veil_agent::kbs::client::Relay;
use veil_agent::kbs::frame::{self, RelayError};

use crate::devices::relay::Console;

/// How long the firmware waits for one broker reply.
const REPLY_TIMEOUT_US: u64 = 60_000_000;

impl Console {
    /// Send one frame's payload (the relay-echo test hook; exchanges send requests whole).
    #[cfg(feature = "test-hooks")]
    pub fn send_frame(&mut self, payload: &[u8]) -> Result<(), RelayError> {
        self.send(&frame::encode(payload)?)
    }

    /// Receive one frame, waiting at most `timeout_us`.
    pub fn recv_frame(&mut self, timeout_us: u64) -> Result<Vec<u8>, RelayError> {
        let deadline = crate::arch::tsc::micros(crate::arch::cpu::rdtsc()) + timeout_us;
        let mut decoder = frame::Decoder::new();
        loop {
            match self.recv_byte(deadline)? {
                Some(b) => {
                    if let Some(payload) = decoder.push(b)? {
                        return Ok(payload);
                    }
                }
                None => return Err(RelayError::Timeout { seconds: timeout_us / 1_000_000 }),
            }
        }
    }
}

impl Relay for Console {
    fn exchange(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Vec<u8>), RelayError> {
        self.send(&frame::request(method, path, body)?)?;
        frame::parse_reply(&self.recv_frame(REPLY_TIMEOUT_US)?)
    }
}

/// Fetch `resource` from the broker behind `relay`, attesting as `tee` with the platform's own
/// evidence (`evidence(report_data)`: SEV-SNP reports, TDX quotes), `init_data` sent for the
/// broker to check; each protocol phase gets a timeline mark.
pub fn release_with_evidence(
    tee: veil_agent::kbs::evidence::Tee,
    init_data: Option<&str>,
    relay: &mut dyn Relay,
    resource: &str,
    evidence: &mut dyn FnMut(&[u8]) -> Result<Value, crate::error::BootError>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, crate::error::BootError> {
    use veil_agent::kbs::client;
    crate::arch::tsc::mark("kbs-auth");
    let mut phases = client::Phases::default();
    let mut random = |b: &mut [u8]| crate::arch::random::fill(b);
    let mut evidence =
        |report_data: &[u8]| evidence(report_data).map_err(|e| client::KbsError::Evidence(alloc::format!("{e}")));
    let r = client::remote_release_with_evidence(
        tee,
        init_data,
        relay,
        resource,
        &mut random,
        &crate::arch::cpu::rdtsc,
        &mut phases,
        &mut evidence,
    );
    for (at, stage) in
        [(phases.challenge, "kbs-report"), (phases.quote, "kbs-attest"), (phases.attested, "kbs-resource")]
    {
        if at != 0 {
            crate::arch::tsc::mark_at(at, stage);
        }
    }
    Ok(r?)
}
