//! The Connect protocol framing used by envd (e2b-protocol.md 3.1), JSON codec only.
//!
//! Unary calls carry one JSON message as the HTTP body. Streaming calls carry a sequence of
//! *envelopes*: one flag byte, a 4-byte big-endian payload length, then the payload. Flag
//! bit [`FLAG_COMPRESSED`] is never used by the SDKs (compression is disabled); bit
//! [`FLAG_END_STREAM`] marks the last envelope of a response, whose payload is an
//! [`EndStreamResponse`] (`{}` or `{"error": {...}}`). Client streams end with the HTTP
//! body, without an end envelope.
//!
//! [`EnvelopeDecoder`] is an incremental decoder: feed it body chunks as they arrive and
//! pull complete envelopes out; it refuses payloads above its size cap before buffering them.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Envelope flag: the payload is compressed (unsupported by Warren; never sent by the SDKs).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: this is the end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Size of the envelope header.
pub const HEADER_LEN: usize = 5;

/// Content type of unary requests and responses.
pub const CONTENT_TYPE_UNARY_JSON: &str = "application/json";
/// Content type of streaming requests and responses; Python rejects any parameter after it.
pub const CONTENT_TYPE_STREAM_JSON: &str = "application/connect+json";

/// One framed message of a Connect stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Flag byte ([`FLAG_COMPRESSED`], [`FLAG_END_STREAM`]).
    pub flags: u8,
    /// The payload (JSON).
    pub data: Bytes,
}

impl Envelope {
    /// A plain message envelope.
    pub fn message(data: impl Into<Bytes>) -> Self {
        Self {
            flags: 0,
            data: data.into(),
        }
    }

    /// An end-of-stream envelope carrying `end`.
    pub fn end_stream(end: &EndStreamResponse) -> Self {
        // Serializing this plain struct of strings cannot fail.
        let data = serde_json::to_vec(end).unwrap_or_else(|_| b"{}".to_vec());
        Self {
            flags: FLAG_END_STREAM,
            data: data.into(),
        }
    }

    /// Serializes `msg` as JSON into a message envelope.
    pub fn json<T: Serialize>(msg: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::message(serde_json::to_vec(msg)?))
    }

    /// Whether this is the end-of-stream envelope.
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    /// Whether the payload claims to be compressed.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// Header plus payload, ready to write.
    ///
    /// Payloads above `u32::MAX` bytes cannot be framed; callers never build them (the
    /// decoder cap and the agent's chunk sizes are far below).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.data.len());
        out.put_u8(self.flags);
        out.put_u32(u32::try_from(self.data.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&self.data);
        out.freeze()
    }
}

/// Why a byte stream is not a valid sequence of envelopes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The announced payload is larger than the decoder's cap.
    #[error("envelope of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced payload size.
        size: usize,
        /// The decoder's cap.
        limit: usize,
    },
    /// The stream ended in the middle of an envelope.
    #[error("stream ended inside an envelope ({buffered} bytes left over)")]
    Truncated {
        /// Bytes received of the incomplete envelope.
        buffered: usize,
    },
}

/// Incremental envelope decoder (see the module docs).
#[derive(Debug)]
pub struct EnvelopeDecoder {
    buf: BytesMut,
    limit: usize,
}

impl EnvelopeDecoder {
    /// A decoder refusing payloads above `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            limit: max_payload,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Returns the next complete envelope, `Ok(None)` when more bytes are needed.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, EnvelopeError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let flags = self.buf[0];
        let size = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > self.limit {
            return Err(EnvelopeError::TooLarge {
                size,
                limit: self.limit,
            });
        }
        if self.buf.len() - HEADER_LEN < size {
            // Reserve now so that a large message is received without repeated regrowth.
            self.buf.reserve(HEADER_LEN + size - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let data = self.buf.split_to(size).freeze();
        Ok(Some(Envelope { flags, data }))
    }

    /// Call at the end of the byte stream: fails if a partial envelope is buffered.
    pub fn finish(&self) -> Result<(), EnvelopeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(EnvelopeError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}

/// Connect error codes with their wire names and HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `canceled` (499).
    Canceled,
    /// `unknown` (500).
    Unknown,
    /// `invalid_argument` (400).
    InvalidArgument,
    /// `deadline_exceeded` (504).
    DeadlineExceeded,
    /// `not_found` (404).
    NotFound,
    /// `already_exists` (409).
    AlreadyExists,
    /// `permission_denied` (403).
    PermissionDenied,
    /// `resource_exhausted` (429).
    ResourceExhausted,
    /// `failed_precondition` (400).
    FailedPrecondition,
    /// `aborted` (409).
    Aborted,
    /// `out_of_range` (400).
    OutOfRange,
    /// `unimplemented` (501).
    Unimplemented,
    /// `internal` (500).
    Internal,
    /// `unavailable` (503).
    Unavailable,
    /// `data_loss` (500).
    DataLoss,
    /// `unauthenticated` (401).
    Unauthenticated,
}

const CODES: [(ErrorCode, &str, u16); 16] = [
    (ErrorCode::Canceled, "canceled", 499),
    (ErrorCode::Unknown, "unknown", 500),
    (ErrorCode::InvalidArgument, "invalid_argument", 400),
    (ErrorCode::DeadlineExceeded, "deadline_exceeded", 504),
    (ErrorCode::NotFound, "not_found", 404),
    (ErrorCode::AlreadyExists, "already_exists", 409),
    (ErrorCode::PermissionDenied, "permission_denied", 403),
    (ErrorCode::ResourceExhausted, "resource_exhausted", 429),
    (ErrorCode::FailedPrecondition, "failed_precondition", 400),
    (ErrorCode::Aborted, "aborted", 409),
    (ErrorCode::OutOfRange, "out_of_range", 400),
    (ErrorCode::Unimplemented, "unimplemented", 501),
    (ErrorCode::Internal, "internal", 500),
    (ErrorCode::Unavailable, "unavailable", 503),
    (ErrorCode::DataLoss, "data_loss", 500),
    (ErrorCode::Unauthenticated, "unauthenticated", 401),
];

impl ErrorCode {
    fn entry(self) -> (ErrorCode, &'static str, u16) {
        CODES
            .iter()
            .copied()
            .find(|(c, _, _)| *c == self)
            .unwrap_or(CODES[1])
    }

    /// The wire name, e.g. `not_found`.
    pub fn as_str(self) -> &'static str {
        self.entry().1
    }

    /// The HTTP status of a unary response carrying this code.
    pub fn http_status(self) -> u16 {
        self.entry().2
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        CODES
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(c, _, _)| *c)
    }

    /// The code a client infers from a non-Connect HTTP error status.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 => ErrorCode::InvalidArgument,
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::PermissionDenied,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::AlreadyExists,
            413 | 429 => ErrorCode::ResourceExhausted,
            499 => ErrorCode::Canceled,
            500 => ErrorCode::Internal,
            501 | 505 => ErrorCode::Unimplemented,
            502 | 503 => ErrorCode::Unavailable,
            504 => ErrorCode::DeadlineExceeded,
            _ => ErrorCode::Unknown,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        // Unknown names map to `unknown`, as Connect clients do.
        Ok(Self::from_name(&name).unwrap_or(ErrorCode::Unknown))
    }
}

/// A Connect error: the JSON body of a failed unary call, or the `error` of an end envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    /// The error code (a string on the wire; JS requires the string form).
    pub code: ErrorCode,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl ConnectError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for `invalid_argument`.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// Shorthand for `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// Shorthand for `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// Payload of the end-of-stream envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndStreamResponse {
    /// Set when the stream failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ConnectError>,
    /// Trailers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Vec<String>>,
}

impl EndStreamResponse {
    /// A successful end.
    pub fn ok() -> Self {
        Self::default()
    }

    /// An end carrying `error`.
    pub fn error(error: ConnectError) -> Self {
        Self {
            error: Some(error),
            metadata: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip() {
        let env = Envelope::message(&b"{\"a\":1}"[..]);
        let wire = env.encode();
        assert_eq!(&wire[..5], &[0, 0, 0, 0, 7]);
        let mut dec = EnvelopeDecoder::new(1024);
        dec.push(&wire);
        assert_eq!(dec.next_envelope().unwrap(), Some(env));
        assert_eq!(dec.next_envelope().unwrap(), None);
        dec.finish().unwrap();
    }

    #[test]
    fn decodes_split_chunks_and_several_envelopes_per_chunk() {
        let mut wire = Vec::new();
        for i in 0..3 {
            wire.extend_from_slice(&Envelope::message(format!("{{\"i\":{i}}}")).encode());
        }
        let end = Envelope::end_stream(&EndStreamResponse::ok());
        wire.extend_from_slice(&end.encode());
        for chunk_size in [1, 2, 3, 7, 100] {
            let mut dec = EnvelopeDecoder::new(1024);
            let mut got = Vec::new();
            for chunk in wire.chunks(chunk_size) {
                dec.push(chunk);
                while let Some(env) = dec.next_envelope().unwrap() {
                    got.push(env);
                }
            }
            dec.finish().unwrap();
            assert_eq!(got.len(), 4);
            assert_eq!(&got[2].data[..], b"{\"i\":2}");
            assert!(got[3].is_end_stream());
            assert_eq!(&got[3].data[..], b"{}");
        }
    }

    #[test]
    fn rejects_oversized_before_buffering() {
        let mut dec = EnvelopeDecoder::new(10);
        dec.push(&[0, 0, 0, 0, 11]);
        assert_eq!(
            dec.next_envelope(),
            Err(EnvelopeError::TooLarge {
                size: 11,
                limit: 10
            })
        );
    }

    #[test]
    fn reports_truncation() {
        let wire = Envelope::message(&b"hello"[..]).encode();
        let mut dec = EnvelopeDecoder::new(10);
        dec.push(&wire[..7]);
        assert_eq!(dec.next_envelope().unwrap(), None);
        assert_eq!(dec.finish(), Err(EnvelopeError::Truncated { buffered: 7 }));
        let mut dec = EnvelopeDecoder::new(10);
        dec.push(&wire[..3]);
        assert_eq!(dec.next_envelope().unwrap(), None);
        assert!(dec.finish().is_err());
    }

    #[test]
    fn error_codes_and_json() {
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::Unauthenticated.http_status(), 401);
        assert_eq!(ErrorCode::Canceled.http_status(), 499);
        for (code, name, _) in CODES {
            assert_eq!(ErrorCode::from_name(name), Some(code));
        }
        let err = ConnectError::not_found("no such file");
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(json, r#"{"code":"not_found","message":"no such file"}"#);
        let end = EndStreamResponse::error(ConnectError::invalid_argument("bad"));
        let json = serde_json::to_string(&end).unwrap();
        assert_eq!(
            json,
            r#"{"error":{"code":"invalid_argument","message":"bad"}}"#
        );
        let back: EndStreamResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back, end);
        let odd: ConnectError = serde_json::from_str(r#"{"code":"weird","x":1}"#).unwrap();
        assert_eq!(odd.code, ErrorCode::Unknown);
        assert_eq!(
            serde_json::to_string(&EndStreamResponse::ok()).unwrap(),
            "{}"
        );
    }
}
