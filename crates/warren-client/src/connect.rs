//! A minimal Connect-protocol client (JSON codec only), as envd speaks it.
//!
//! Unary calls are one `application/json` POST whose answer is one JSON message, or on a
//! non-200 status a `{code, message}` error. Server-streaming calls POST one *envelope*
//! (`application/connect+json`) and read a 200 answer made of envelopes: 1 flag byte, a
//! 4-byte big-endian length, then that many bytes of JSON. Flag `0x02` marks the last
//! envelope, whose JSON is `{}` or `{"error": {code, message}}`; a stream that ends without
//! it was cut short.
//!
//! The framing itself (envelopes, end-of-stream, error codes) comes from
//! `warren_proto::connect`; this module adds the HTTP side.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use serde::de::DeserializeOwned;
use warren_proto::connect::{
    CONTENT_TYPE_STREAM_JSON, CONTENT_TYPE_UNARY_JSON, ConnectError, EndStreamResponse, Envelope,
    EnvelopeDecoder, ErrorCode,
};

use crate::client::json_body;
use crate::error::ClientError;
use crate::sandbox::EnvdTarget;

/// Largest message the client accepts in a stream; envd's output chunks are far smaller.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Turns a failed RPC answer into [`ClientError::Rpc`]: a Connect JSON error body when there
/// is one, otherwise the code implied by the HTTP status (as the Python SDK does), with the
/// `message` of a JSON body such as the gateway's `{"code": 502, "message": "..."}`.
async fn rpc_error(step: &str, resp: reqwest::Response) -> ClientError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ConnectError>(&text) {
        Ok(err) => (err.code, err.message),
        Err(_) => {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                .unwrap_or(text);
            (ErrorCode::from_http_status(status), message)
        }
    };
    ClientError::Rpc {
        step: step.to_owned(),
        code,
        message,
    }
}

/// Calls a unary method (`method` = `package.Service/Method`).
pub(crate) async fn unary<Req: Serialize, Resp: DeserializeOwned>(
    target: &EnvdTarget,
    method: &str,
    request: &Req,
) -> Result<Resp, ClientError> {
    let step = format!("RPC {method}");
    let body = serde_json::to_vec(request).map_err(|source| ClientError::Decode {
        step: step.clone(),
        source,
    })?;
    let resp = target
        .post(&format!("/{method}"))
        .header(CONTENT_TYPE, CONTENT_TYPE_UNARY_JSON)
        .header("Connect-Protocol-Version", "1")
        .body(body)
        .send()
        .await
        .map_err(|source| ClientError::Transport {
            step: step.clone(),
            source,
        })?;
    if !resp.status().is_success() {
        return Err(rpc_error(&step, resp).await);
    }
    json_body(&step, resp).await
}

/// A server stream of typed messages.
pub(crate) type RpcStream<T> =
    std::pin::Pin<Box<dyn Stream<Item = Result<T, ClientError>> + Send + 'static>>;

/// Calls a server-streaming method; the returned stream ends after the end envelope, and
/// yields an error if the server reported one or the body ended early.
pub(crate) async fn server_stream<Req, Resp>(
    target: &EnvdTarget,
    method: &str,
    request: &Req,
    timeout_ms: Option<u64>,
) -> Result<RpcStream<Resp>, ClientError>
where
    Req: Serialize,
    Resp: DeserializeOwned + Send + 'static,
{
    let step = format!("RPC {method}");
    let json = serde_json::to_vec(request).map_err(|source| ClientError::Decode {
        step: step.clone(),
        source,
    })?;
    let mut req = target
        .post(&format!("/{method}"))
        .header(CONTENT_TYPE, CONTENT_TYPE_STREAM_JSON)
        .header("Connect-Protocol-Version", "1")
        .header("Keepalive-Ping-Interval", "50")
        .body(Envelope::message(json).encode());
    if let Some(ms) = timeout_ms {
        req = req.header("Connect-Timeout-Ms", ms.to_string());
    }
    let resp = req.send().await.map_err(|source| ClientError::Transport {
        step: step.clone(),
        source,
    })?;
    if !resp.status().is_success() {
        return Err(rpc_error(&step, resp).await);
    }
    let state = StreamState {
        body: Box::pin(resp.bytes_stream()),
        decoder: EnvelopeDecoder::new(MAX_MESSAGE),
        ready: VecDeque::new(),
        done: false,
        step,
    };
    Ok(Box::pin(futures::stream::unfold(
        state,
        next_message::<Resp>,
    )))
}

type BodyStream = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct StreamState {
    body: BodyStream,
    decoder: EnvelopeDecoder,
    ready: VecDeque<Envelope>,
    done: bool,
    step: String,
}

/// Produces the next message of a stream (the body of the `unfold`).
async fn next_message<T: DeserializeOwned>(
    mut st: StreamState,
) -> Option<(Result<T, ClientError>, StreamState)> {
    if st.done {
        return None;
    }
    loop {
        if let Some(env) = st.ready.pop_front() {
            let item = decode_envelope::<T>(&st.step, &env);
            match item {
                Decoded::Message(msg) => return Some((Ok(msg), st)),
                Decoded::End => {
                    st.done = true;
                    return None;
                }
                Decoded::Failed(err) => {
                    st.done = true;
                    return Some((Err(err), st));
                }
            }
        }
        match st.body.next().await {
            Some(Ok(chunk)) => {
                st.decoder.push(&chunk);
                loop {
                    match st.decoder.next_envelope() {
                        Ok(Some(env)) => st.ready.push_back(env),
                        Ok(None) => break,
                        Err(e) => {
                            st.done = true;
                            let err = ClientError::Protocol {
                                step: st.step.clone(),
                                detail: e.to_string(),
                            };
                            return Some((Err(err), st));
                        }
                    }
                }
            }
            Some(Err(source)) => {
                st.done = true;
                let err = ClientError::Transport {
                    step: st.step.clone(),
                    source,
                };
                return Some((Err(err), st));
            }
            None => {
                st.done = true;
                let detail = match st.decoder.finish() {
                    Err(e) => e.to_string(),
                    Ok(()) => "stream ended without an end-of-stream envelope".to_owned(),
                };
                let err = ClientError::Protocol {
                    step: st.step.clone(),
                    detail,
                };
                return Some((Err(err), st));
            }
        }
    }
}

enum Decoded<T> {
    Message(T),
    End,
    Failed(ClientError),
}

fn decode_envelope<T: DeserializeOwned>(step: &str, env: &Envelope) -> Decoded<T> {
    if env.is_compressed() {
        return Decoded::Failed(ClientError::Protocol {
            step: step.to_owned(),
            detail: "compressed envelope received although compression was not offered".into(),
        });
    }
    if env.is_end_stream() {
        return match serde_json::from_slice::<EndStreamResponse>(&env.data) {
            Ok(EndStreamResponse { error: None, .. }) => Decoded::End,
            Ok(EndStreamResponse { error: Some(e), .. }) => Decoded::Failed(ClientError::Rpc {
                step: step.to_owned(),
                code: e.code,
                message: e.message,
            }),
            Err(source) => Decoded::Failed(ClientError::Decode {
                step: step.to_owned(),
                source,
            }),
        };
    }
    match serde_json::from_slice::<T>(&env.data) {
        Ok(msg) => Decoded::Message(msg),
        Err(source) => Decoded::Failed(ClientError::Decode {
            step: step.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_envelope_with_error_becomes_rpc_error() {
        let env = Envelope {
            flags: warren_proto::connect::FLAG_END_STREAM,
            data: Bytes::from_static(br#"{"error":{"code":"not_found","message":"no"}}"#),
        };
        match decode_envelope::<serde_json::Value>("t", &env) {
            Decoded::Failed(ClientError::Rpc { code, message, .. }) => {
                assert_eq!((code, message.as_str()), (ErrorCode::NotFound, "no"));
            }
            _ => panic!("expected an RPC error"),
        }
    }

    #[test]
    fn compressed_envelopes_are_refused() {
        let env = Envelope {
            flags: warren_proto::connect::FLAG_COMPRESSED,
            data: Bytes::from_static(b"{}"),
        };
        assert!(matches!(
            decode_envelope::<serde_json::Value>("t", &env),
            Decoded::Failed(ClientError::Protocol { .. })
        ));
    }
}
