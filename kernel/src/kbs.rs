//! Remote key release from the firmware's side: the virtio-console relay channel (frames of
//! veil_agent::kbs::frame carrying `{"method","path","body"}` out and `{"status","body"}`
//! back) and the call into the RCAR client with this machine's TPM, randomness and clock.
//! Everything the relay returns is untrusted and parsed in agent.

use alloc::string::String;
use alloc::vec::Vec;

use serde_json::Value;
use veil_agent::kbs::client::Relay;
use veil_agent::kbs::frame;

use crate::virtio::Console;

/// How long the firmware waits for one broker reply.
const REPLY_TIMEOUT_US: u64 = 60_000_000;

impl Console {
    /// Send one frame.
    pub fn send_frame(&mut self, payload: &[u8]) -> Result<(), String> {
        let bytes = frame::encode(payload).map_err(|e| alloc::format!("relay: {e}"))?;
        self.send(&bytes)
    }

    /// Receive one frame, waiting at most `timeout_us`.
    pub fn recv_frame(&mut self, timeout_us: u64) -> Result<Vec<u8>, String> {
        let deadline = crate::tsc::micros(crate::cpu::rdtsc()) + timeout_us;
        let mut decoder = frame::Decoder::new();
        loop {
            match self.recv_byte(deadline)? {
                Some(b) => {
                    if let Some(payload) = decoder.push(b).map_err(|e| alloc::format!("relay: {e}"))? {
                        return Ok(payload);
                    }
                }
                None => return Err(alloc::format!("relay: no reply within {} s", timeout_us / 1_000_000)),
            }
        }
    }
}

impl Relay for Console {
    fn exchange(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Vec<u8>), String> {
        let request = serde_json::json!({"method": method, "path": path, "body": body});
        self.send_frame(&serde_json::to_vec(&request).map_err(|_| String::from("relay: request does not serialize"))?)?;
        let reply = self.recv_frame(REPLY_TIMEOUT_US)?;
        let v: Value =
            serde_json::from_slice(&reply).map_err(|_| String::from("relay: a reply frame that is not JSON"))?;
        let status = v
            .get("status")
            .and_then(Value::as_u64)
            .filter(|s| (100..600).contains(s))
            .ok_or_else(|| String::from("relay: a reply without an HTTP status"))?;
        let body = v
            .get("body")
            .and_then(Value::as_str)
            .ok_or_else(|| String::from("relay: a reply without a body string"))?;
        Ok((status as u16, body.as_bytes().to_vec()))
    }
}
