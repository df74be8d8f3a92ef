//! Connect protocol plumbing for axum handlers (e2b-protocol.md 3.1).
//!
//! - Unary: JSON body in, `200 application/json` out; errors as a non-200 status with
//!   `{"code":"<name>","message":..}` (the string code is required by the JS SDK).
//! - Server streams: the request body holds one envelope; the response is always
//!   `200 application/connect+json` (exactly; Python rejects parameters), message envelopes,
//!   then one end envelope that carries the error if any. Keepalive messages are inserted
//!   while the stream is idle and `Connect-Timeout-Ms` ends it with `deadline_exceeded`.
//! - Client streams: envelopes until the end of the request body; the response uses the
//!   streaming framing.
//!
//! Malformed envelopes or JSON become `invalid_argument`; nothing here panics on input.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use warren_proto::connect::{
    CONTENT_TYPE_STREAM_JSON, CONTENT_TYPE_UNARY_JSON, ConnectError, EndStreamResponse, Envelope,
    EnvelopeDecoder, ErrorCode,
};

use crate::state::AppState;
use crate::user::{User, basic_auth_user};

/// Largest accepted request message (unary body or one envelope).
pub const MAX_MESSAGE: usize = 32 << 20;
/// Keepalive interval when the client sends no `Keepalive-Ping-Interval`.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(50);

/// Per-request facts taken from the headers.
#[derive(Debug, Clone)]
pub struct RpcContext {
    /// The user the request acts as.
    pub user: User,
    /// From `Connect-Timeout-Ms`.
    pub deadline: Option<Instant>,
    /// From `Keepalive-Ping-Interval`.
    pub keepalive: Duration,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the access token and resolves the user and timing headers.
pub fn context(state: &AppState, headers: &HeaderMap) -> Result<RpcContext, ConnectError> {
    if !state.token_ok(header_str(headers, "x-access-token")) {
        return Err(ConnectError::new(
            ErrorCode::Unauthenticated,
            "invalid access token",
        ));
    }
    let requested = match header_str(headers, "authorization") {
        Some(h) => Some(
            basic_auth_user(h)
                .map_err(|e| ConnectError::new(ErrorCode::Unauthenticated, e.to_string()))?,
        ),
        None => None,
    };
    let user = User::resolve(requested.as_deref(), &state.settings().default_user)
        .map_err(|e| ConnectError::new(ErrorCode::Unauthenticated, e.to_string()))?;
    let deadline = header_str(headers, "connect-timeout-ms")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let keepalive = header_str(headers, "keepalive-ping-interval")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_KEEPALIVE, Duration::from_secs);
    Ok(RpcContext {
        user,
        deadline,
        keepalive,
    })
}

/// Serializes a message for a stream.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, ConnectError> {
    serde_json::to_vec(msg)
        .map(Bytes::from)
        .map_err(|e| ConnectError::internal(format!("encoding response: {e}")))
}

fn parse<T: DeserializeOwned>(data: &[u8]) -> Result<T, ConnectError> {
    let data = if data.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        data
    };
    serde_json::from_slice(data)
        .map_err(|e| ConnectError::invalid_argument(format!("invalid request message: {e}")))
}

/// A unary error response.
pub fn unary_error(err: &ConnectError) -> Response {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(err).unwrap_or_default();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_UNARY_JSON),
    );
    resp
}

fn is_proto_content(headers: &HeaderMap) -> bool {
    header_str(headers, "content-type").is_some_and(|ct| ct.contains("proto"))
}

async fn collect_limited(body: Body, limit: usize) -> Result<Bytes, ConnectError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ConnectError::new(ErrorCode::Canceled, e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(ConnectError::new(
                ErrorCode::ResourceExhausted,
                "request too large",
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}

/// Runs a unary call: authenticates, decodes the request, encodes the result.
pub async fn unary<Req, Resp, F, Fut>(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
    handler: F,
) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Arc<AppState>, RpcContext, Req) -> Fut,
    Fut: Future<Output = Result<Resp, ConnectError>>,
{
    if is_proto_content(&headers) {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let result = async {
        // The body is read before anything can fail, so that the connection stays reusable.
        let data = collect_limited(body, MAX_MESSAGE).await?;
        let ctx = context(&state, &headers)?;
        let req = parse::<Req>(&data)?;
        match ctx.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, handler(state, ctx, req))
                .await
                .unwrap_or_else(|_| {
                    Err(ConnectError::new(
                        ErrorCode::DeadlineExceeded,
                        "deadline exceeded",
                    ))
                }),
            None => handler(state, ctx, req).await,
        }
    }
    .await;
    match result.and_then(|resp| encode(&resp)) {
        Ok(body) => {
            let mut resp = body.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_UNARY_JSON),
            );
            resp
        }
        Err(err) => unary_error(&err),
    }
}

/// Reads the envelopes of a request stream.
pub struct MessageReader {
    body: BodyDataStream,
    decoder: EnvelopeDecoder,
    done: bool,
}

impl MessageReader {
    /// Wraps a request body.
    pub fn new(body: Body) -> Self {
        Self {
            body: body.into_data_stream(),
            decoder: EnvelopeDecoder::new(MAX_MESSAGE),
            done: false,
        }
    }

    /// The next message, `Ok(None)` at the end of the body.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ConnectError> {
        loop {
            let envelope = self
                .decoder
                .next_envelope()
                .map_err(|e| ConnectError::invalid_argument(e.to_string()))?;
            if let Some(env) = envelope {
                if env.is_compressed() {
                    return Err(ConnectError::new(
                        ErrorCode::Unimplemented,
                        "compressed messages are not supported",
                    ));
                }
                if env.is_end_stream() {
                    // Clients do not send end envelopes; treat one as the end of input.
                    self.done = true;
                    return Ok(None);
                }
                return parse(&env.data).map(Some);
            }
            if self.done {
                return Ok(None);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => return Err(ConnectError::new(ErrorCode::Canceled, e.to_string())),
                None => {
                    self.done = true;
                    self.decoder
                        .finish()
                        .map_err(|e| ConnectError::invalid_argument(e.to_string()))?;
                    return Ok(None);
                }
            }
        }
    }

    /// Reads and discards the rest of the body (up to 2 s; a client that keeps its body
    /// open is not waited for longer).
    pub async fn drain(&mut self) {
        let drain = async {
            while !self.done
                && let Some(chunk) = self.body.next().await
            {
                if chunk.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }

    /// The single request message of a server-streaming call. The rest of the body is
    /// read too: a request body left unread makes the server close the connection after
    /// the response, which races with clients that reuse pooled connections (Python's
    /// client then fails its next call with "connection closed before message completed").
    pub async fn single<T: DeserializeOwned>(mut self) -> Result<T, ConnectError> {
        let msg = self
            .next()
            .await?
            .ok_or_else(|| ConnectError::invalid_argument("missing request message"))?;
        self.drain().await;
        Ok(msg)
    }
}

/// Builds a streaming response from `messages` (each a JSON payload, or an error that ends
/// the stream). `keepalive` is the payload sent after `interval` of silence.
pub fn stream_response<S>(
    messages: S,
    deadline: Option<Instant>,
    keepalive: Option<(Duration, Bytes)>,
) -> Response
where
    S: Stream<Item = Result<Bytes, ConnectError>> + Send + 'static,
{
    let body = async_stream::stream! {
        let mut messages = pin!(messages);
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let deadline = deadline.unwrap_or(far);
        let interval = keepalive.as_ref().map(|k| k.0);
        let mut next_ping = interval.map_or(far, |i| Instant::now() + i);
        let end = loop {
            tokio::select! {
                item = messages.next() => match item {
                    Some(Ok(data)) => {
                        yield Ok::<Bytes, std::io::Error>(Envelope::message(data).encode());
                        if let Some(i) = interval { next_ping = Instant::now() + i; }
                    }
                    Some(Err(err)) => break EndStreamResponse::error(err),
                    None => break EndStreamResponse::ok(),
                },
                () = tokio::time::sleep_until(next_ping) => {
                    if let Some((i, data)) = &keepalive {
                        yield Ok(Envelope::message(data.clone()).encode());
                        next_ping = Instant::now() + *i;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    break EndStreamResponse::error(ConnectError::new(
                        ErrorCode::DeadlineExceeded,
                        "deadline exceeded",
                    ));
                }
            }
        };
        yield Ok(Envelope::end_stream(&end).encode());
    };
    let mut resp = Body::from_stream(body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_STREAM_JSON),
    );
    resp
}

/// A streaming response that fails at once with `err`.
pub fn stream_error(err: ConnectError) -> Response {
    stream_response(futures::stream::once(async move { Err(err) }), None, None)
}
