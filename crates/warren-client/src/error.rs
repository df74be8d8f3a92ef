//! The error type of every client call.
//!
//! The client talks three protocols (REST, Connect RPC and plain envd HTTP); each failure is
//! classified by where it happened so callers can react: a transport failure (no answer), an
//! API error (the control plane answered non-2xx with `{code, message}`), an RPC error (envd
//! answered with a Connect error code), a command that exited non-zero, or an answer the
//! client could not decode.

use thiserror::Error;
use warren_proto::connect::ErrorCode;

/// Any failure of a Warren client call.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The request could not be sent or its answer could not be read.
    #[error("{step} failed in transport")]
    Transport {
        /// What the client was doing, e.g. `POST /v2/sandboxes`.
        step: String,
        #[source]
        source: reqwest::Error,
    },
    /// The control plane (or envd's plain HTTP API) answered with an error status.
    #[error("{step} answered HTTP {status}: {message}")]
    Api {
        step: String,
        status: u16,
        /// The optional machine-readable `error_code` of the error body.
        code: Option<String>,
        message: String,
    },
    /// An envd RPC failed with a Connect error code (`not_found`, `invalid_argument`, ...).
    #[error("{step} failed with {code}: {message}")]
    Rpc {
        step: String,
        code: ErrorCode,
        message: String,
    },
    /// A command ran to the end but exited with a non-zero code.
    #[error("command exited with code {exit_code}")]
    CommandExit {
        exit_code: i32,
        stdout: String,
        stderr: String,
        /// envd's own description of the failure, when it gave one.
        error: Option<String>,
    },
    /// Reading or writing a local file or stream failed.
    #[error("{step} failed")]
    LocalIo {
        step: String,
        #[source]
        source: std::io::Error,
    },
    /// An answer did not have the expected shape.
    #[error("could not decode the answer of {step}")]
    Decode {
        step: String,
        #[source]
        source: serde_json::Error,
    },
    /// An answer broke the protocol's rules (e.g. a process stream without a start event).
    #[error("protocol violation in {step}: {detail}")]
    Protocol { step: String, detail: String },
    /// A command did not finish within its deadline (it was killed).
    #[error("command did not finish within {after:?}")]
    Timeout { after: std::time::Duration },
}

impl ClientError {
    /// The HTTP status of an API error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Connect code of an RPC error, if this is one.
    pub fn rpc_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the failure means "the thing does not exist" (API 404 or RPC `not_found`).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404) || self.rpc_code() == Some(ErrorCode::NotFound)
    }
}
