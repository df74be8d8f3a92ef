//! Wire types shared by the Warren agent, the server and the Rust client.
//!
//! Pure data and codecs, no I/O:
//! - [`connect`]: the Connect protocol framing (5-byte envelopes, end-of-stream message,
//!   error codes and their JSON shape) used by the envd RPC services.
//! - [`envd`]: the messages of `process.Process` and `filesystem.Filesystem` in their
//!   proto3 JSON mapping, as the E2B SDKs send and expect them.
//! - [`signature`]: the signature of pre-signed `/files` URLs.
//! - [`api`]: REST models of the E2B-compatible control plane.

pub mod api;
pub mod connect;
pub mod envd;
pub mod signature;
