//! The envd gateway: forwards a sandbox's envd traffic to its agent.
//!
//! All sandboxes share one origin (`E2B_SANDBOX_URL`), so a request is routed by its
//! `E2b-Sandbox-Id` header; requests on envd paths without it are either pre-signed
//! `/files` URLs, routed by finding the running sandbox whose token reproduces the
//! `signature`, or refused. Bodies stream both ways untouched (chunked uploads, server
//! streams of Connect RPCs that last minutes): the request body is handed to hyper as is and
//! the agent's body is returned as is, never buffered. Hop-by-hop headers are dropped in
//! both directions; end-to-end ones (`X-Access-Token`, `Authorization`, Connect headers)
//! pass. The agent's private routes (`/init`, `/metrics`) are never forwarded.
//!
//! Errors follow e2b-protocol.md 1.7: an unknown or stopped sandbox is `502` with
//! "The sandbox <id> was not found"; a running sandbox whose agent refuses connections is
//! `502` with "... port is not open" (the SDKs map these two texts to different exceptions).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use warren_core::manager::Route;
use warren_proto::api::ApiError;
use warren_proto::signature::{FileOperation, verify_file_url_signature};

use crate::AppState;
use crate::error::error_response;
use crate::trace::record_sandbox;

/// The HTTP client used to reach agents.
pub type AgentHttpClient = Client<HttpConnector, Body>;

/// A pooled HTTP/1.1 client for agents.
pub fn agent_client() -> AgentHttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

const ENVD_PREFIXES: &[&str] = &["/process.Process/", "/filesystem.Filesystem/"];
const ENVD_PATHS: &[&str] = &["/files", "/health"];
const PRIVATE_PATHS: &[&str] = &["/init", "/metrics"];

fn is_envd_path(path: &str) -> bool {
    ENVD_PATHS.contains(&path) || ENVD_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Middleware in front of the control plane: takes envd traffic, passes the rest on.
pub async fn dispatch(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let sandbox_id = req
        .headers()
        .get("e2b-sandbox-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let path = req.uri().path();
    if sandbox_id.is_none() && !is_envd_path(path) {
        return next.run(req).await;
    }
    if PRIVATE_PATHS.contains(&path) {
        return gateway_error(StatusCode::NOT_FOUND, "this path is not served");
    }
    let route = match sandbox_id {
        Some(id) => {
            record_sandbox(&id);
            match state.manager.route(&id) {
                Ok(route) => route,
                Err(_) => return not_found(&id),
            }
        }
        None => match route_by_signature(&state, &req) {
            Some(route) => {
                record_sandbox(&route.sandbox_id);
                route
            }
            // A signed URL whose signature matches no running sandbox was tampered with,
            // has expired or belongs to a sandbox that is gone: an authentication failure
            // (401, as the agent answers a bad signature), not a malformed request.
            None if has_signature(&req) => {
                return gateway_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid or expired signature, or the sandbox is not running",
                );
            }
            None => {
                return gateway_error(
                    StatusCode::BAD_REQUEST,
                    "missing E2b-Sandbox-Id header (or a valid signature)",
                );
            }
        },
    };
    forward(&state.agent_http, route, req).await
}

/// Whether the request is a `/files` request carrying a `signature` query parameter.
fn has_signature(req: &Request) -> bool {
    req.uri().path() == "/files"
        && serde_urlencoded::from_str::<Vec<(String, String)>>(req.uri().query().unwrap_or(""))
            .is_ok_and(|pairs| pairs.iter().any(|(k, _)| k == "signature"))
}

/// Finds the sandbox of a pre-signed `/files` URL.
fn route_by_signature(state: &AppState, req: &Request) -> Option<Route> {
    if req.uri().path() != "/files" {
        return None;
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(req.uri().query().unwrap_or("")).ok()?;
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let signature = param("signature")?;
    let path = param("path").unwrap_or("");
    let user = param("username").unwrap_or("");
    let expiration = match param("signature_expiration") {
        Some(exp) => Some(exp.parse::<i64>().ok()?),
        None => None,
    };
    let operation = match *req.method() {
        axum::http::Method::GET => FileOperation::Read,
        axum::http::Method::POST => FileOperation::Write,
        _ => return None,
    };
    state.manager.find_by_token(|token| {
        verify_file_url_signature(signature, path, operation, user, token, expiration)
    })
}

async fn forward(client: &AgentHttpClient, route: Route, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(uri) = Uri::try_from(format!("http://{}{}", route.agent, path_and_query)) else {
        return gateway_error(StatusCode::BAD_REQUEST, "invalid request target");
    };
    parts.uri = uri;
    parts.version = axum::http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(host) = HeaderValue::from_str(&route.agent.to_string()) {
        parts.headers.insert(header::HOST, host);
    }
    let upstream = Request::from_parts(parts, body);
    match client.request(upstream).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(err) => {
            // Debug, not warn: any client can trigger this as often as it likes.
            tracing::debug!(
                sandbox_id = %route.sandbox_id,
                error = %crate::error::chain(&err),
                "cannot reach the sandbox agent"
            );
            gateway_error(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "The sandbox {} is running but port is not open",
                    route.sandbox_id
                ),
            )
        }
    }
}

/// Removes the headers that describe one connection rather than the message.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn not_found(id: &str) -> Response {
    gateway_error(
        StatusCode::BAD_GATEWAY,
        &format!("The sandbox {id} was not found"),
    )
}

fn gateway_error(status: StatusCode, message: &str) -> Response {
    error_response(status, &ApiError::new(status.as_u16(), message)).into_response()
}
