//! REST models of the E2B-compatible control plane (e2b-protocol.md section 2).
//!
//! Field names follow the wire exactly: camelCase, except `allow_internet_access` in the
//! create body and `error_code` in the error body. Optional response fields are skipped when
//! absent rather than sent as `null`, except where the SDK models declare them nullable
//! (`domain`, `trafficAccessToken`, `allowInternetAccess`). Request models ignore fields
//! Warren does not implement yet (network, volumes, MCP, IAM), so SDK bodies that carry them
//! still parse.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// String-to-string map used for metadata and environment variables.
pub type StringMap = BTreeMap<String, String>;

/// Body of `POST /v2/sandboxes` (`NewSandboxV2`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    /// Template name or id, or a snapshot id.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Seconds until the sandbox is killed (or paused with `autoPause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<StringMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<StringMap>,
    #[serde(
        default,
        rename = "allow_internet_access",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_internet_access: Option<bool>,
    /// Pause instead of kill when the timeout expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<bool>,
    /// With `autoPause`: whether memory is kept (`false` = filesystem-only pause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pause_memory: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_resume: Option<AutoResume>,
}

/// `autoResume` of the create body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoResume {
    pub enabled: bool,
}

/// Create, connect and fork response (`Sandbox`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub envd_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(default)]
    pub traffic_access_token: Option<String>,
    /// Always `null` for Warren: clients reach envd through `E2B_SANDBOX_URL`.
    #[serde(default)]
    pub domain: Option<String>,
}

/// Lifecycle state as the SDKs know it (only these two values are accepted by Python).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Running,
    Paused,
}

impl SandboxState {
    /// The wire spelling, also used in the `state` list query.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
        }
    }

    /// Parses one wire value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(SandboxState::Running),
            "paused" => Some(SandboxState::Paused),
            _ => None,
        }
    }
}

/// One entry of `GET /v2/sandboxes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    pub started_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u32,
    pub state: SandboxState,
    pub envd_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<StringMap>,
}

/// `GET /sandboxes/{id}` response: a listed sandbox plus access details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(flatten)]
    pub listed: ListedSandbox,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(default)]
    pub allow_internet_access: Option<bool>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// What happens when a sandbox's timeout expires, and whether it resumes on traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    pub auto_resume: bool,
    pub on_timeout: OnTimeout,
}

/// `lifecycle.onTimeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    Pause,
    Kill,
}

/// One sample of `GET /sandboxes/{id}/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    pub timestamp: DateTime<Utc>,
    pub timestamp_unix: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// Body of `POST /v2/sandboxes/{id}/connect`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// `false` asks a paused sandbox to reboot from its filesystem instead of resuming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
}

/// Body of `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTimeout {
    /// Seconds from now.
    pub timeout: i64,
}

/// Body of `POST /sandboxes/{id}/pause`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_healthy_guest: Option<bool>,
}

/// Body of `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSnapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
}

/// A snapshot as created and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}

/// Body of `POST /sandboxes/{id}/fork`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Number of copies, 1 to 20; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// One entry of the fork response: either a new sandbox or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForkResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// A template as `GET /templates` lists it and `GET /templates/{templateID}` returns it:
/// E2B's `Template` fields, plus Warren's tag map and (for a single template) its builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateInfo {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// The build sandboxes start from; before any build succeeded, the latest build.
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// Default vCPUs of sandboxes started from it.
    pub cpu_count: u32,
    /// Default memory of sandboxes started from it, in MiB.
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    pub public: bool,
    /// The template's name (E2B lists it as the single alias).
    pub aliases: Vec<String>,
    pub names: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Status of the latest build: `waiting`, `building`, `ready` or `error`.
    pub build_status: String,
    /// Number of builds, failed ones included.
    pub build_count: u32,
    /// Tag → build id.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Builds, newest first; only in the answer of `GET /templates/{templateID}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<TemplateBuildSummary>,
}

/// One build of a template, as [`TemplateInfo::builds`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBuildSummary {
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// `waiting`, `building`, `ready` or `error`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why a failed build failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The step that failed (E2B step name: `base`, `1`, `2`, ..., `finalize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// Answer (202) of a started build: `POST /warren/templates/builds` and
/// `POST /templates/{templateID}` (rebuild).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateBuildStarted {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// The template's name.
    pub name: String,
}

/// Optional body of `POST /templates/{templateID}` (rebuild).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildTemplate {
    /// Rebuild every step instead of reusing cached layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// The error body of every non-2xx control-plane response; `code` equals the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

impl ApiError {
    /// An error body without `error_code`.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            error_code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_from_python_parses() {
        let body = r#"{"templateID":"base","timeout":300,"metadata":{"smoke":"e2b-compat"},
            "envVars":{},"allow_internet_access":true,"network":{"allowOut":[]}}"#;
        let new: NewSandbox = serde_json::from_str(body).expect("parse");
        assert_eq!(new.template_id, "base");
        assert_eq!(new.timeout, Some(300));
        assert_eq!(new.allow_internet_access, Some(true));
        assert_eq!(new.metadata.expect("metadata")["smoke"], "e2b-compat");
    }

    #[test]
    fn sandbox_serializes_nullable_fields_and_ids() {
        let sb = Sandbox {
            template_id: "base".into(),
            sandbox_id: "abc".into(),
            client_id: "warren".into(),
            envd_version: "0.5.7".into(),
            alias: None,
            envd_access_token: Some("tok".into()),
            traffic_access_token: None,
            domain: None,
        };
        let v = serde_json::to_value(&sb).expect("serialize");
        assert_eq!(v["templateID"], "base");
        assert_eq!(v["sandboxID"], "abc");
        assert_eq!(v["envdAccessToken"], "tok");
        assert!(v["domain"].is_null() && v.get("domain").is_some());
        assert!(v.get("alias").is_none());
    }

    #[test]
    fn detail_flattens_listed_fields() {
        let t = DateTime::parse_from_rfc3339("2026-12-03T14:23:50.061740Z")
            .expect("time")
            .with_timezone(&Utc);
        let detail = SandboxDetail {
            listed: ListedSandbox {
                template_id: "base".into(),
                sandbox_id: "abc".into(),
                client_id: "warren".into(),
                alias: None,
                started_at: t,
                end_at: t,
                cpu_count: 2,
                memory_mb: 512,
                disk_size_mb: 1024,
                state: SandboxState::Running,
                envd_version: "0.5.7".into(),
                metadata: Some(StringMap::new()),
            },
            envd_access_token: None,
            allow_internet_access: Some(false),
            domain: None,
            lifecycle: Some(Lifecycle {
                auto_resume: false,
                on_timeout: OnTimeout::Kill,
            }),
        };
        let v = serde_json::to_value(&detail).expect("serialize");
        assert_eq!(v["memoryMB"], 512);
        assert_eq!(v["diskSizeMB"], 1024);
        assert_eq!(v["state"], "running");
        assert_eq!(v["startedAt"], "2026-12-03T14:23:50.061740Z");
        assert_eq!(v["lifecycle"]["onTimeout"], "kill");
        let back: SandboxDetail = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, detail);
    }

    #[test]
    fn error_body_shape() {
        let v = serde_json::to_value(ApiError::new(404, "nope")).expect("serialize");
        assert_eq!(v, serde_json::json!({"code": 404, "message": "nope"}));
    }
}
