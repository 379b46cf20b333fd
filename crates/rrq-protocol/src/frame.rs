//! Length-prefixed JSON frames: `u32` big-endian payload length, then the payload.

use bytes::{Buf, BufMut, BytesMut};

use crate::Envelope;

/// The largest payload the reference runners accept (16 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

const HEADER: usize = 4;

/// Why a frame could not be encoded or decoded.
///
/// After any decode error the byte stream is out of sync; the connection that
/// produced it must be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announced a zero-length payload.
    #[error("frame announces an empty payload")]
    Empty,
    /// The header (or an outgoing message) exceeds the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    Oversize {
        /// The announced or encoded payload length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({have} of {need} bytes received)")]
    Truncated {
        /// Bytes received so far, header included.
        have: usize,
        /// Bytes the frame needs, header included.
        need: usize,
    },
    /// The payload is not a valid message (not UTF-8, not JSON, unknown `type`,
    /// missing or mistyped fields).
    #[error("frame payload is not a valid protocol message: {0}")]
    Invalid(#[source] serde_json::Error),
    /// An outgoing message could not be serialised.
    #[error("message could not be serialised: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Appends one frame holding `message` to `dst`.
///
/// Fails with [`FrameError::Oversize`] (leaving `dst` unchanged) when the JSON
/// payload is longer than `max_frame_bytes`.
pub fn encode_frame(message: &Envelope, dst: &mut BytesMut, max_frame_bytes: usize) -> Result<(), FrameError> {
    let start = dst.len();
    dst.put_u32(0);
    let mut writer = dst.writer();
    if let Err(e) = serde_json::to_writer(&mut writer, message) {
        let dst = writer.into_inner();
        dst.truncate(start);
        return Err(FrameError::Encode(e));
    }
    let dst = writer.into_inner();
    let len = dst.len() - start - HEADER;
    if len > max_frame_bytes || len > u32::MAX as usize {
        dst.truncate(start);
        return Err(FrameError::Oversize { len, max: max_frame_bytes });
    }
    dst[start..start + HEADER].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Encodes one frame into a fresh vector (convenience for tests and tools).
pub fn encode_frame_to_vec(message: &Envelope, max_frame_bytes: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = BytesMut::new();
    encode_frame(message, &mut buf, max_frame_bytes)?;
    Ok(buf.to_vec())
}

/// Incremental frame decoder: feed it a buffer, take out whole messages.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    /// A decoder rejecting payloads longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    /// The configured maximum payload length.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Removes one complete frame's payload from the front of `src`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. A bad header is reported
    /// as soon as the four header bytes are in, before the payload arrives.
    pub fn decode_payload(&self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if src.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame_bytes {
            return Err(FrameError::Oversize { len, max: self.max_frame_bytes });
        }
        if src.len() < HEADER + len {
            src.reserve(HEADER + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER);
        Ok(Some(src.split_to(len)))
    }

    /// Removes and parses one complete message from the front of `src`.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Envelope>, FrameError> {
        match self.decode_payload(src)? {
            None => Ok(None),
            Some(payload) => serde_json::from_slice(&payload).map(Some).map_err(FrameError::Invalid),
        }
    }

    /// Like [`Self::decode`], for the end of the stream: leftover bytes that do
    /// not form a whole frame are a [`FrameError::Truncated`].
    pub fn decode_eof(&self, src: &mut BytesMut) -> Result<Option<Envelope>, FrameError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => {
                let need = if src.len() >= HEADER {
                    HEADER + u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize
                } else {
                    HEADER
                };
                Err(FrameError::Truncated { have: src.len(), need })
            }
        }
    }
}
