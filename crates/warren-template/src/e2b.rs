//! E2B's Template builder API: the wire types and their mapping onto [`TemplateDef`].
//!
//! The SDK's `Template.build()` creates the template (`POST /v3/templates`), uploads each COPY
//! source as a tar named by its `filesHash`, starts the build (`POST /v2/templates/{id}/builds/
//! {buildID}`) and polls `GET .../status?logsOffset=N`. The API crate serves those routes with
//! these types; this module turns the build body into the model:
//!
//! | E2B step | args | model |
//! |---|---|---|
//! | `RUN` | `[cmd, user?]` | [`Step::Run`] |
//! | `ENV` | `[k1, v1, k2, v2, ..]` | [`Step::Env`] |
//! | `WORKDIR` | `[path]` | [`Step::Workdir`] |
//! | `USER` | `[user]` | [`Step::User`] |
//! | `COPY` | `[src, dest, user, mode]` + `filesHash` | [`Step::Copy`] from upload `filesHash` |
//!
//! Bases: `fromTemplate` maps to [`Base::Template`]; `fromImage` is accepted only for images
//! that are (or stand for) Debian bookworm, because this server builds on its own bookworm
//! base image and cannot pull Docker images; `fromImageRegistry` (private registries) is
//! refused for the same reason. Per-step `force` and the body's `force` become [`Force`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::logs::LogEntry;
use crate::model::{Base, CopyStep, ReadyCheck, Resources, StartSpec, Step, TemplateDef};
use crate::plan::Force;
use crate::registry::{BuildFailure, BuildStatus};
use crate::rules;

/// Images accepted as `fromImage` (any tag of `e2bdev/base`, the SDK's default).
pub const SUPPORTED_IMAGES: &[&str] = &[
    "e2bdev/base",
    "debian:bookworm",
    "debian:bookworm-slim",
    "debian:12",
    "debian:12-slim",
];

/// User that E2B build steps and the start command run as until a `USER` step (the SDK sends
/// `root` explicitly where it needs it, e.g. for `apt_install`).
pub const E2B_DEFAULT_USER: &str = "user";

/// How long to wait after `startCmd` when no `readyCmd` is given.
pub const DEFAULT_READY_DELAY: Duration = Duration::from_secs(2);

/// `POST /v3/templates` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBuildRequestV3 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Deprecated spelling of `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, rename = "teamID", skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_count: Option<u32>,
    #[serde(default, rename = "memoryMB", skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free_disk_mb: Option<u64>,
}

/// `POST /v3/templates` response (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRequestResponseV3 {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub public: bool,
    pub names: Vec<String>,
    pub tags: Vec<String>,
    pub aliases: Vec<String>,
}

/// A build step as the SDK sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateStep {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_hash: Option<String>,
    #[serde(default)]
    pub force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_upload: Option<bool>,
}

/// `POST /v2/templates/{templateID}/builds/{buildID}` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBuildStartV2 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_template: Option<String>,
    /// Registry credentials; kept opaque (never logged), only its presence matters here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image_registry: Option<serde_json::Value>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub steps: Vec<TemplateStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_cmd: Option<String>,
}

/// `GET /templates/{templateID}/files/{hash}` response (201).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateBuildFileUpload {
    pub present: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// `reason` of a build status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatusReason {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_entries: Option<Vec<LogEntry>>,
}

/// `GET /templates/{templateID}/builds/{buildID}/status` response (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBuildInfo {
    pub logs: Vec<String>,
    pub log_entries: Vec<LogEntry>,
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub status: BuildStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<BuildStatusReason>,
}

/// `GET /templates/aliases/{alias}` response (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateAliasResponse {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub public: bool,
}

/// `POST /templates/tags` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignTemplateTagsRequest {
    /// `name:tag` of the build to tag.
    pub target: String,
    pub tags: Vec<String>,
}

/// `POST /templates/tags` response (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedTemplateTags {
    pub tags: Vec<String>,
    #[serde(rename = "buildID")]
    pub build_id: String,
}

/// `DELETE /templates/tags` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTemplateTagsRequest {
    pub name: String,
    pub tags: Vec<String>,
}

/// An element of `GET /templates/{id}/tags`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateTag {
    pub tag: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub created_at: DateTime<Utc>,
}

/// Why an E2B build request cannot be mapped.
#[derive(Debug, thiserror::Error)]
pub enum E2bMapError {
    /// A Docker image this server cannot build on.
    #[error(
        "base image `{image}` is not supported: this server builds only on its Debian bookworm \
         base; use fromTemplate, or fromImage with one of {}", SUPPORTED_IMAGES.join(", ")
    )]
    UnsupportedImage { image: String },
    /// Private registries cannot be reached.
    #[error(
        "fromImageRegistry is not supported: this server cannot pull images; use \
             fromTemplate or fromImage `e2bdev/base`"
    )]
    RegistryUnsupported,
    /// Both `fromImage` and `fromTemplate`.
    #[error("fromImage and fromTemplate are mutually exclusive")]
    TwoBases,
    /// A step type this server does not know.
    #[error("step {step}: unknown step type `{kind}`")]
    UnknownStep { step: usize, kind: String },
    /// Wrong number or form of args.
    #[error("step {step} ({kind}): {problem}")]
    BadArgs {
        step: usize,
        kind: String,
        problem: String,
    },
    /// The template name (from `POST /v3/templates`) breaks the naming rules.
    #[error("template name `{name}` is invalid: {problem}")]
    BadName { name: String, problem: String },
}

/// The template's default resources from a `POST /v3/templates` body.
pub fn resources_of(req: &TemplateBuildRequestV3) -> Resources {
    let default = Resources::default();
    Resources {
        vcpus: req.cpu_count.filter(|&c| c > 0).unwrap_or(default.vcpus),
        memory_mib: req
            .memory_mb
            .filter(|&m| m >= 128)
            .unwrap_or(default.memory_mib),
    }
}

/// The base named by a build body.
pub fn map_base(body: &TemplateBuildStartV2) -> Result<Base, E2bMapError> {
    if body.from_image_registry.is_some() {
        return Err(E2bMapError::RegistryUnsupported);
    }
    match (&body.from_image, &body.from_template) {
        (Some(_), Some(_)) => Err(E2bMapError::TwoBases),
        (None, Some(t)) => {
            // `name:tag` picks a build; the definition is per name, so the tag is dropped.
            let name = t.split_once(':').map_or(t.as_str(), |(n, _)| n);
            Ok(Base::Template(name.to_string()))
        }
        (Some(image), None) if image_is_supported(image) => Ok(Base::Image),
        (Some(image), None) => Err(E2bMapError::UnsupportedImage {
            image: image.clone(),
        }),
        (None, None) => Ok(Base::Image),
    }
}

fn image_is_supported(image: &str) -> bool {
    let image = image.trim();
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    let image = image.strip_prefix("library/").unwrap_or(image);
    let (repo, tag) = image.split_once(':').unwrap_or((image, "latest"));
    if repo == "e2bdev/base" {
        return true;
    }
    SUPPORTED_IMAGES.contains(&format!("{repo}:{tag}").as_str())
}

/// Maps a build body onto a definition named `name` with `tags` and `resources`.
pub fn map_build(
    name: &str,
    tags: &[String],
    resources: Resources,
    body: &TemplateBuildStartV2,
) -> Result<(TemplateDef, Force), E2bMapError> {
    rules::check_name(name).map_err(|problem| E2bMapError::BadName {
        name: name.to_string(),
        problem,
    })?;
    let base = map_base(body)?;
    let mut force = Force {
        all: body.force,
        ..Force::default()
    };
    let mut steps = Vec::with_capacity(body.steps.len());
    for (i, s) in body.steps.iter().enumerate() {
        steps.push(map_step(i + 1, s)?);
        if s.force {
            force.steps.insert(i);
        }
    }
    let start = match (&body.start_cmd, &body.ready_cmd) {
        (None, None) => None,
        (cmd, ready) => Some(StartSpec {
            cmd: cmd.clone().filter(|c| !c.trim().is_empty()),
            ready: ready
                .clone()
                .filter(|r| !r.trim().is_empty())
                .map_or(ReadyCheck::Delay(DEFAULT_READY_DELAY), ReadyCheck::Command),
            ready_timeout: None,
        }),
    };
    let def = TemplateDef {
        name: name.to_string(),
        tags: tags.to_vec(),
        base,
        steps,
        start,
        resources,
        step_timeout: None,
        default_user: Some(E2B_DEFAULT_USER.to_string()),
    };
    Ok((def, force))
}

fn map_step(step: usize, s: &TemplateStep) -> Result<Step, E2bMapError> {
    let bad = |problem: String| E2bMapError::BadArgs {
        step,
        kind: s.kind.clone(),
        problem,
    };
    let arg = |i: usize| s.args.get(i).map(String::as_str).filter(|a| !a.is_empty());
    let check = |r: Result<(), String>| r.map_err(bad);
    match s.kind.to_ascii_uppercase().as_str() {
        "RUN" => {
            let cmd = arg(0).ok_or_else(|| bad("needs a command".into()))?;
            if let Some(user) = arg(1) {
                check(rules::check_user(user))?;
            }
            Ok(Step::Run {
                cmd: cmd.to_string(),
                user: arg(1).map(str::to_string),
                timeout: None,
            })
        }
        "ENV" => {
            if s.args.is_empty() || !s.args.len().is_multiple_of(2) {
                return Err(bad("needs name/value pairs".into()));
            }
            let mut vars = Vec::new();
            for pair in s.args.chunks(2) {
                check(rules::check_env_key(&pair[0]))?;
                vars.push((pair[0].clone(), pair[1].clone()));
            }
            Ok(Step::Env { vars })
        }
        "WORKDIR" => {
            let path = arg(0).ok_or_else(|| bad("needs a path".into()))?;
            Ok(Step::Workdir {
                path: path.to_string(),
            })
        }
        "USER" => {
            let user = arg(0).ok_or_else(|| bad("needs a user".into()))?;
            check(rules::check_user(user))?;
            Ok(Step::User {
                name: user.to_string(),
            })
        }
        "COPY" => {
            let src = arg(0).ok_or_else(|| bad("needs a source".into()))?;
            let dest = arg(1).ok_or_else(|| bad("needs a destination".into()))?;
            check(rules::check_copy_src(src))?;
            if let Some(user) = arg(2) {
                check(rules::check_user(user))?;
            }
            if let Some(mode) = arg(3) {
                check(rules::check_mode(mode))?;
            }
            let hash = s
                .files_hash
                .clone()
                .ok_or_else(|| bad("needs filesHash".into()))?;
            Ok(Step::Copy(CopyStep {
                src: src.to_string(),
                dest: dest.to_string(),
                user: arg(2).map(str::to_string),
                mode: arg(3).map(str::to_string),
                files_hash: Some(hash),
            }))
        }
        _ => Err(E2bMapError::UnknownStep {
            step,
            kind: s.kind.clone(),
        }),
    }
}

/// A status response: entries after `offset`, and the reason of a failed build.
pub fn build_info(
    template_id: &str,
    build_id: &str,
    status: BuildStatus,
    entries_since_offset: Vec<LogEntry>,
    failure: Option<&BuildFailure>,
) -> TemplateBuildInfo {
    let logs = entries_since_offset
        .iter()
        .map(|e| {
            let at = e
                .timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            format!("[{at}] {}", e.message)
        })
        .collect();
    let reason = failure.map(|f| BuildStatusReason {
        message: match (&f.output, f.exit_code) {
            (Some(out), Some(_)) if !out.is_empty() => format!("{}\n{out}", f.message),
            _ => f.message.clone(),
        },
        step: f.step.clone(),
        log_entries: None,
    });
    TemplateBuildInfo {
        logs,
        log_entries: entries_since_offset,
        template_id: template_id.to_string(),
        build_id: build_id.to_string(),
        status,
        reason,
    }
}

#[cfg(test)]
mod tests;
