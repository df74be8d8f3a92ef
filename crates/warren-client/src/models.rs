//! Control-plane models: the REST types of `warren_proto::api` (shared with the server), plus
//! the filters of the list calls, which exist only on the client side as query strings.

pub use warren_proto::api::{
    ApiError, ForkResult, ListedSandbox, NewSandbox, Sandbox as SandboxInfo, SandboxDetail,
    SandboxMetric, SandboxState, SnapshotInfo, StringMap,
};

/// Filters of `GET /v2/sandboxes`.
#[derive(Debug, Clone, Default)]
pub struct SandboxQuery {
    /// Every pair must equal the sandbox's metadata.
    pub metadata: Vec<(String, String)>,
    /// Empty means running and paused.
    pub states: Vec<SandboxState>,
    /// Page size; the server's default when unset.
    pub limit: Option<u32>,
}

/// Filters of `GET /snapshots`.
#[derive(Debug, Clone, Default)]
pub struct SnapshotQuery {
    pub sandbox_id: Option<String>,
    pub name: Option<String>,
    pub limit: Option<u32>,
}
