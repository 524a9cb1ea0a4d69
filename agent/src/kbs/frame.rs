//! Frames between the firmware and the untrusted host relay over virtio-console: a u32
//! little-endian length, then that many bytes of JSON (one KBS request or reply). The relay
//! can send anything; the decoder refuses lengths of zero or above MAX_FRAME before it
//! buffers a byte of the body.

use alloc::vec::Vec;
use core::fmt;

/// Largest frame accepted either way.
pub const MAX_FRAME: usize = 64 * 1024;

/// A frame that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is zero or above MAX_FRAME.
    Length(u32),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Length(n) => write!(f, "relay frame of {n} bytes (1 to {MAX_FRAME} accepted)"),
        }
    }
}

/// Why one exchange through the relay failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayError {
    /// A frame could not be encoded or the relay sent a bad length.
    Frame(FrameError),
    /// The channel carrying the frames (virtio-console) failed while doing `op`.
    Channel {
        /// "send" or "receive".
        op: &'static str,
    },
    /// No whole reply within the time allowed.
    Timeout {
        /// The time allowed, in seconds.
        seconds: u64,
    },
    /// The reply frame is not the relay's `{"status", "body"}` JSON: what is wrong with it.
    MalformedReply(&'static str),
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::Frame(e) => write!(f, "{e}"),
            RelayError::Channel { op } => write!(f, "the relay channel failed to {op}"),
            RelayError::Timeout { seconds } => write!(f, "no reply within {seconds} s"),
            RelayError::MalformedReply(what) => write!(f, "a reply frame {what}"),
        }
    }
}

impl From<FrameError> for RelayError {
    fn from(e: FrameError) -> Self {
        RelayError::Frame(e)
    }
}

/// The framed request for one HTTP exchange: `{"method", "path", "body"}`.
pub fn request(method: &str, path: &str, body: Option<&crate::json::Value>) -> Result<Vec<u8>, FrameError> {
    let json = crate::json!({"method": method, "path": path, "body": body});
    encode(&crate::json::to_vec(&json))
}

/// Parse an untrusted reply payload `{"status": 100..=599, "body": "<text>"}`.
pub fn parse_reply(payload: &[u8]) -> Result<(u16, Vec<u8>), RelayError> {
    let v: crate::json::Value =
        crate::json::from_slice(payload).map_err(|_| RelayError::MalformedReply("that is not JSON"))?;
    let status = v
        .get("status")
        .and_then(crate::json::Value::as_u64)
        .filter(|s| (100..600).contains(s))
        .ok_or(RelayError::MalformedReply("without an HTTP status"))?;
    let body = v
        .get("body")
        .and_then(crate::json::Value::as_str)
        .ok_or(RelayError::MalformedReply("without a body string"))?;
    Ok((status as u16, body.as_bytes().to_vec()))
}

/// Prefix `payload` with its length.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.is_empty() || payload.len() > MAX_FRAME {
        return Err(FrameError::Length(payload.len().min(u32::MAX as usize) as u32));
    }
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    Ok(v)
}

/// Reassembles frames from a byte stream.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    want: Option<usize>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Feed one byte; returns a whole frame's payload when this byte completes it.
    pub fn push(&mut self, byte: u8) -> Result<Option<Vec<u8>>, FrameError> {
        self.buf.push(byte);
        match self.want {
            None if self.buf.len() == 4 => {
                let n = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if n == 0 || n as usize > MAX_FRAME {
                    self.buf.clear();
                    return Err(FrameError::Length(n));
                }
                self.want = Some(n as usize);
                self.buf.clear();
                Ok(None)
            }
            Some(n) if self.buf.len() == n => {
                self.want = None;
                Ok(Some(core::mem::take(&mut self.buf)))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_byte_by_byte_and_bad_lengths_are_refused() {
        let mut stream = encode(br#"{"a":1}"#).unwrap();
        stream.extend(encode(b"[]").unwrap());
        let mut d = Decoder::new();
        let frames: Vec<Vec<u8>> = stream.iter().filter_map(|b| d.push(*b).unwrap()).collect();
        assert_eq!(frames, [br#"{"a":1}"#.to_vec(), b"[]".to_vec()]);
        let mut d = Decoder::new();
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert_eq!(huge.iter().map(|b| d.push(*b)).last().unwrap(), Err(FrameError::Length(MAX_FRAME as u32 + 1)));
        let mut d = Decoder::new();
        assert_eq!([0u8; 4].iter().map(|b| d.push(*b)).last().unwrap(), Err(FrameError::Length(0)));
        assert!(encode(&[]).is_err());
        assert!(encode(&alloc::vec![b' '; MAX_FRAME + 1]).is_err());
    }

    #[test]
    fn replies_parse_or_are_refused_by_variant() {
        assert_eq!(parse_reply(br#"{"status":200,"body":"{}"}"#), Ok((200, b"{}".to_vec())));
        assert_eq!(parse_reply(b"<html>"), Err(RelayError::MalformedReply("that is not JSON")));
        assert_eq!(
            parse_reply(br#"{"status":99,"body":""}"#),
            Err(RelayError::MalformedReply("without an HTTP status"))
        );
        assert_eq!(
            parse_reply(br#"{"status":"200","body":""}"#),
            Err(RelayError::MalformedReply("without an HTTP status"))
        );
        assert_eq!(
            parse_reply(br#"{"status":401,"body":7}"#),
            Err(RelayError::MalformedReply("without a body string"))
        );
        let framed = request("POST", "/kbs/v0/auth", Some(&crate::json!({"a": 1}))).unwrap();
        let mut d = Decoder::new();
        let payload = framed.iter().find_map(|b| d.push(*b).unwrap()).unwrap();
        assert_eq!(payload, br#"{"body":{"a":1},"method":"POST","path":"/kbs/v0/auth"}"#);
    }
}
