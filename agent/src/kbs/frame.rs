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
    /// The device said it wrote more bytes into a receive buffer than the buffer holds.
    UsedLength {
        /// The used-ring length the device reported.
        len: u32,
        /// The buffer's size.
        cap: usize,
    },
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::Frame(e) => write!(f, "{e}"),
            RelayError::Channel { op } => write!(f, "the relay channel failed to {op}"),
            RelayError::Timeout { seconds } => write!(f, "no reply within {seconds} s"),
            RelayError::MalformedReply(what) => write!(f, "a reply frame {what}"),
            RelayError::UsedLength { len, cap } => write!(
                f,
                "the relay device reported {len} bytes received into a {cap}-byte buffer: refusing the channel"
            ),
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

/// Size of the buffer the firmware posts on the console's receive queue.
pub const RX_BUFFER: usize = 4096;

/// The relay's receive side below the frames: the one buffer posted on the virtio-console
/// receive queue and what the device says it wrote into it. The device's used-ring length is
/// the host's word: a length above the buffer is refused ([`RelayError::UsedLength`]), never
/// used as an index (virtio-drivers 0.13's console driver did, and panicked past 4096).
#[derive(Debug)]
pub struct Receiver {
    buf: Vec<u8>,
    cursor: usize,
    len: usize,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver::new()
    }
}

impl Receiver {
    /// An empty receiver with its [`RX_BUFFER`]-byte buffer.
    pub fn new() -> Receiver {
        Receiver { buf: alloc::vec![0; RX_BUFFER], cursor: 0, len: 0 }
    }

    /// The buffer to post on the receive queue (its address stays put for the receiver's
    /// lifetime: it is never resized). Post it only when [`Self::drained`].
    pub fn buffer(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Has every received byte been taken?
    pub fn drained(&self) -> bool {
        self.cursor == self.len
    }

    /// The device returned the buffer saying it wrote `used_len` bytes. Refused (and nothing
    /// taken from the buffer) when that is more than the buffer holds; zero is nothing.
    pub fn filled(&mut self, used_len: u32) -> Result<(), RelayError> {
        let len = usize::try_from(used_len).ok().filter(|n| *n <= self.buf.len());
        let Some(len) = len else {
            self.cursor = 0;
            self.len = 0;
            return Err(RelayError::UsedLength { len: used_len, cap: self.buf.len() });
        };
        self.cursor = 0;
        self.len = len;
        Ok(())
    }

    /// The next received byte, if any.
    pub fn next_byte(&mut self) -> Option<u8> {
        let b = *self.buf[..self.len].get(self.cursor)?;
        self.cursor += 1;
        Some(b)
    }
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

    /// Issue 34: the device's used length is bounded by the posted buffer. virtio-drivers 0.13's
    /// console indexed its 4096-byte buffer with it and panicked at 4096.
    #[test]
    fn a_used_length_past_the_buffer_is_refused() {
        let mut rx = Receiver::new();
        rx.buffer()[..6].copy_from_slice(&[2, 0, 0, 0, b'[', b']']);
        for long in [RX_BUFFER as u32 + 1, 5000, u32::MAX] {
            assert_eq!(rx.filled(long), Err(RelayError::UsedLength { len: long, cap: RX_BUFFER }));
            assert!(rx.drained(), "nothing is taken from a refused buffer");
            assert_eq!(rx.next_byte(), None);
        }
        assert!(RelayError::UsedLength { len: 5000, cap: RX_BUFFER }.to_string().contains("5000 bytes"));
        // A whole buffer, and zero, are fine.
        rx.filled(RX_BUFFER as u32).unwrap();
        assert_eq!((0..RX_BUFFER).filter_map(|_| rx.next_byte()).count(), RX_BUFFER);
        assert_eq!(rx.next_byte(), None);
        rx.filled(0).unwrap();
        assert!(rx.drained());
        // What was written comes out as a frame.
        rx.buffer()[..6].copy_from_slice(&[2, 0, 0, 0, b'[', b']']);
        rx.filled(6).unwrap();
        let mut d = Decoder::new();
        let frames: Vec<Vec<u8>> = core::iter::from_fn(|| rx.next_byte()).filter_map(|b| d.push(b).unwrap()).collect();
        assert_eq!(frames, [b"[]".to_vec()]);
    }

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
