//! Length-prefixed frames: a 4-byte big-endian body length, then the body.
//!
//! The length is checked against the limit before any buffer is allocated
//! for the body, so a peer cannot make a node reserve memory by announcing a
//! huge frame.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::FrameError;

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// The default limit for frames on the peer port. Peer frames carry batches
/// of entries, so they are allowed to be larger than client frames.
pub const MAX_PEER_FRAME: usize = 8 * 1024 * 1024;

/// The default limit for frames on the client port.
pub const MAX_CLIENT_FRAME: usize = 1536 * 1024;

/// Serializes `value` as JSON and appends it to `out` as one frame.
///
/// # Errors
///
/// Returns [`FrameError::TooLarge`] when the body exceeds `max_len`, and
/// [`FrameError::Encode`] when serialization fails.
pub fn encode<T: Serialize>(
    value: &T,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(error) = serde_json::to_writer(&mut *out, value) {
        out.truncate(start);
        return Err(FrameError::Encode(error));
    }
    let len = out.len() - start - HEADER_LEN;
    if len > max_len {
        out.truncate(start);
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Deserializes a frame body.
///
/// # Errors
///
/// Returns [`FrameError::Decode`] when the body is not the expected JSON.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(FrameError::Decode)
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
#[derive(Debug)]
pub struct FrameDecoder {
    max_len: usize,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` that belong to frames already returned.
    consumed: usize,
}

impl FrameDecoder {
    pub fn new(max_len: usize) -> FrameDecoder {
        FrameDecoder {
            max_len,
            buf: Vec::new(),
            consumed: 0,
        }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// Returns the body of the next complete frame, or `None` when more
    /// bytes are needed.
    ///
    /// # Errors
    ///
    /// Returns [`FrameError::TooLarge`] as soon as a length prefix above the
    /// limit arrives; the stream cannot be resynchronized after that and the
    /// connection must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = &self.buf[self.consumed..];
        if pending.len() < HEADER_LEN {
            self.compact();
            return Ok(None);
        }
        let len = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        if pending.len() < HEADER_LEN + len {
            self.compact();
            return Ok(None);
        }
        let body = pending[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.consumed += HEADER_LEN + len;
        Ok(Some(body))
    }

    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut bytes = Vec::new();
        encode(&"first", 1024, &mut bytes).unwrap();
        encode(&vec![1, 2, 3], 1024, &mut bytes).unwrap();

        let mut decoder = FrameDecoder::new(1024);
        let mut bodies = Vec::new();
        for byte in &bytes {
            decoder.extend(std::slice::from_ref(byte));
            while let Some(body) = decoder.next_frame().unwrap() {
                bodies.push(body);
            }
        }
        assert_eq!(bodies.len(), 2);
        assert_eq!(decode::<String>(&bodies[0]).unwrap(), "first");
        assert_eq!(decode::<Vec<u32>>(&bodies[1]).unwrap(), vec![1, 2, 3]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn oversized_prefix_rejected_before_body() {
        let mut decoder = FrameDecoder::new(16);
        decoder.extend(&1_000_000u32.to_be_bytes());
        let error = decoder.next_frame().unwrap_err();
        assert!(matches!(
            error,
            FrameError::TooLarge {
                len: 1_000_000,
                max: 16
            }
        ));
    }

    #[test]
    fn encode_rejects_oversized_body() {
        let mut out = vec![9];
        let error = encode(&"x".repeat(100), 16, &mut out).unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { max: 16, .. }));
        assert_eq!(out, vec![9]);
    }

    #[test]
    fn garbage_body_is_decode_error() {
        let error = decode::<String>(b"\xff\x00not json").unwrap_err();
        assert!(matches!(error, FrameError::Decode(_)));
    }
}
