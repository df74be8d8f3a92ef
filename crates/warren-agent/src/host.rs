//! Private host-facing routes (docs/CONTRACTS.md "Agent ⟷ host"): `/health`, `/init`,
//! `/metrics`.
//!
//! `/init` is called after every boot and every restore of a snapshot: a restored guest
//! has a stale clock and an RNG state shared with every other clone of the same snapshot,
//! so the host sends the time and fresh entropy, and the agent mixes the entropy in and
//! forces the kernel CRNG to reseed at once (RNDADDENTROPY, then RNDRESEEDCRNG).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use serde::{Deserialize, Deserializer, Serialize};
use warren_proto::envd::json::base64_bytes;

use crate::state::AppState;

/// `POST /init` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InitRequest {
    /// Absent: keep; `null`: remove; a string: replace.
    #[serde(deserialize_with = "present")]
    access_token: Option<Option<String>>,
    env_vars: Option<BTreeMap<String, String>>,
    default_user: Option<String>,
    host_time_unix_nanos: Option<i64>,
    entropy: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Why part of `/init` failed (logged; the rest of the request still applies).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Setting the wall clock failed.
    #[error("setting the clock")]
    SetClock(#[source] nix::Error),
    /// The entropy is not base64.
    #[error("decoding the entropy")]
    DecodeEntropy(#[source] base64::DecodeError),
    /// Opening /dev/random failed.
    #[error("opening /dev/random")]
    OpenRandom(#[source] std::io::Error),
    /// The RNDADDENTROPY ioctl failed.
    #[error("adding entropy")]
    AddEntropy(#[source] std::io::Error),
    /// The RNDRESEEDCRNG ioctl failed.
    #[error("reseeding the CRNG")]
    Reseed(#[source] std::io::Error),
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    (status, axum::Json(body)).into_response()
}

fn token_ok(state: &AppState, headers: &HeaderMap) -> bool {
    state.token_ok(headers.get("x-access-token").and_then(|v| v.to_str().ok()))
}

/// `GET /health`.
pub async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `POST /init`.
pub async fn init(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !token_ok(&state, &headers) {
        return json_error(StatusCode::UNAUTHORIZED, "invalid access token");
    }
    let req: InitRequest = if body.is_empty() {
        InitRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}")),
        }
    };
    if let Some(nanos) = req.host_time_unix_nanos
        && let Err(err) = set_clock(nanos)
    {
        log_init_failure(&err);
    }
    if let Some(entropy) = &req.entropy
        && let Err(err) = add_entropy(entropy)
    {
        log_init_failure(&err);
    }
    {
        let mut settings = state
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = req.access_token {
            settings.access_token = token.filter(|t| !t.is_empty());
        }
        if let Some(env) = req.env_vars {
            settings.env_vars = env;
        }
        if let Some(user) = req.default_user.filter(|u| !u.is_empty()) {
            settings.default_user = user;
        }
    }
    tracing::info!("sandbox initialised");
    StatusCode::NO_CONTENT.into_response()
}

fn log_init_failure(err: &InitError) {
    let cause = std::error::Error::source(err)
        .map(ToString::to_string)
        .unwrap_or_default();
    tracing::warn!(error = %err, %cause, "init step failed");
}

fn set_clock(nanos: i64) -> Result<(), InitError> {
    let ts = nix::sys::time::TimeSpec::new(
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000),
    );
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts).map_err(InitError::SetClock)
}

/// `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

fn add_entropy(b64: &str) -> Result<(), InitError> {
    use std::os::fd::AsRawFd as _;
    let bytes = base64_bytes::decode(b64).map_err(InitError::DecodeEntropy)?;
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/random")
        .map_err(InitError::OpenRandom)?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }, built in a
    // u32 buffer for alignment.
    let words = bytes.len().div_ceil(4);
    let mut info = vec![0u32; 2 + words];
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    info[0] = len.saturating_mul(8).cast_unsigned();
    info[1] = len.cast_unsigned();
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        info[2 + i] = u32::from_ne_bytes(w);
    }
    // SAFETY: `info` is a properly aligned rand_pool_info whose buffer holds `buf_size`
    // bytes; the kernel only reads from it during the call.
    let rc = unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
    if rc < 0 {
        return Err(InitError::AddEntropy(std::io::Error::last_os_error()));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    let rc = unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) };
    if rc < 0 {
        return Err(InitError::Reseed(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// CPU counters from `/proc/stat` (busy and total jiffies).
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    busy: u64,
    total: u64,
}

fn read_cpu() -> Option<CpuSample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(CpuSample {
        busy: total.saturating_sub(idle),
        total,
    })
}

fn meminfo() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, rest) = l.split_once(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some((k.to_owned(), kb * 1024))
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metrics {
    cpu_count: usize,
    cpu_used_pct: f64,
    mem_used: u64,
    mem_total: u64,
    mem_cache: u64,
    disk_used: u64,
    disk_total: u64,
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !token_ok(&state, &headers) {
        return json_error(StatusCode::UNAUTHORIZED, "invalid access token");
    }
    let now = read_cpu();
    let cpu_used_pct = {
        let mut prev = state
            .cpu_sample
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let base = prev.unwrap_or(CpuSample { busy: 0, total: 0 });
        let pct = now.map_or(0.0, |n| {
            let dt = n.total.saturating_sub(base.total);
            if dt == 0 {
                0.0
            } else {
                100.0 * n.busy.saturating_sub(base.busy) as f64 / dt as f64
            }
        });
        if now.is_some() {
            *prev = now;
        }
        pct
    };
    let mem = meminfo();
    let get = |k: &str| mem.get(k).copied().unwrap_or(0);
    let (disk_used, disk_total) = match nix::sys::statvfs::statvfs("/") {
        Ok(s) => {
            let frsize = s.fragment_size();
            (
                s.blocks().saturating_sub(s.blocks_free()) * frsize,
                s.blocks() * frsize,
            )
        }
        Err(_) => (0, 0),
    };
    let body = Metrics {
        cpu_count: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        cpu_used_pct,
        mem_used: get("MemTotal").saturating_sub(get("MemAvailable")),
        mem_total: get("MemTotal"),
        mem_cache: get("Cached"),
        disk_used,
        disk_total,
    };
    axum::Json(body).into_response()
}
