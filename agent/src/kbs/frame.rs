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
}
