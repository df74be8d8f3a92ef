//! Messages of the envd Connect services in their proto3 JSON mapping (e2b-protocol.md 3.2-3.3).
//!
//! Mapping rules implemented here: lowerCamelCase names; fields holding a default value are
//! omitted on output (proto3 `optional` fields are `Option`s and appear whenever set);
//! `bytes` are standard base64 with padding (URL-safe or unpadded input is accepted);
//! `int64` is written as a string and read from a string or a number; enums are written as
//! names and read from names or numbers; `Timestamp` is RFC 3339; unknown fields are
//! ignored. A message made only of a oneof is a Rust enum whose variant appears as the
//! single key (`{"pid":5}`, `{"start":{}}`); the empty-oneof case is not representable and
//! is rejected on input.

pub mod filesystem;
pub mod json;
pub mod process;

/// URL path prefix of the process service.
pub const PROCESS_SERVICE: &str = "/process.Process/";
/// URL path prefix of the filesystem service.
pub const FILESYSTEM_SERVICE: &str = "/filesystem.Filesystem/";
