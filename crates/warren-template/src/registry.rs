//! Template and build records, and the pure functions that move them through their states.
//!
//! The control plane stores these records (serde-serializable) and calls these functions;
//! nothing here touches a disk. The rules they encode:
//!
//! - A template's `current` build is what sandboxes start from. It changes only when a build
//!   finishes successfully ([`finish_build`] with `Ok`); a failed build marks its own
//!   [`BuildRecord`] as `error` and leaves the template record untouched, so the previous
//!   build stays in use.
//! - The template's `def` is the definition of its current build (before any build succeeds,
//!   the one it was created with); derived templates build on its `current` build.
//! - Tags map to build ids; every successful build gets the tag `default` and the template's
//!   own tags. A template that other templates are based on cannot be deleted.
//!
//! Build lifecycle: `waiting` (created) → `building` → `ready` | `error`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{LayerRef, SnapshotRef};
use crate::builder::{BuildError, BuildOutcome, BuildRequest};
use crate::layers::BuildContext;
use crate::model::{Base, Resources, TemplateDef};
use crate::plan::Force;
use crate::resolve::{BaseTemplate, BuiltBase};
use crate::rules;
use crate::run::{BuildState, StepError};

/// Tag given to every successful build.
pub const DEFAULT_TAG: &str = "default";

/// A template as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Opaque id (E2B's `templateID`).
    pub template_id: String,
    /// Definition of the current build.
    pub def: TemplateDef,
    /// Visible to other teams (E2B's `public`).
    pub public: bool,
    /// The build sandboxes start from.
    pub current: Option<ReadyBuild>,
    /// Tag → build id.
    pub tags: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change of `current`, `def` or `tags`.
    pub updated_at: DateTime<Utc>,
}

/// What a successful build produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyBuild {
    /// Build id.
    pub build_id: String,
    /// The ready snapshot.
    pub snapshot: SnapshotRef,
    /// Top disk layer (`None` = the base image).
    pub top_layer: Option<LayerRef>,
    /// Key after the last step (the root of derived templates' key chains).
    pub final_key: String,
    /// All layer keys the top layer depends on, bases included (for garbage collection).
    pub layer_keys: Vec<String>,
    /// Env vars, user and working directory sandboxes inherit.
    pub state: BuildState,
    /// Default sandbox size.
    pub resources: Resources,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

/// State of a build, spelled as E2B's `TemplateBuildStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Waiting,
    Building,
    Ready,
    Error,
}

/// Why a build failed, kept for the status endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFailure {
    /// The whole error chain, `outer: inner: ...`.
    pub message: String,
    /// E2B step name.
    pub step: Option<String>,
    /// Exit code of a failed command.
    pub exit_code: Option<i32>,
    /// Last output lines of a failed command.
    pub output: Option<String>,
}

/// One build of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Build id.
    pub build_id: String,
    /// Template id.
    pub template_id: String,
    /// State.
    pub status: BuildStatus,
    /// Definition being built.
    pub def: TemplateDef,
    /// Forced steps.
    pub force_all: bool,
    /// Forced own-step indices.
    pub force_steps: BTreeSet<usize>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// End time (ready or error).
    pub finished_at: Option<DateTime<Utc>>,
    /// Result of a successful build.
    pub ready: Option<ReadyBuild>,
    /// Cause of a failed build.
    pub failure: Option<BuildFailure>,
}

/// Refusals of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No template has this name or id.
    #[error("template `{name}` does not exist")]
    NotFound { name: String },
    /// The name is used by another template.
    #[error("template name `{name}` is taken")]
    NameTaken { name: String },
    /// Other templates build on it.
    #[error("template `{name}` is the base of {}", .by.join(", "))]
    InUseAsBase { name: String, by: Vec<String> },
    /// The build does not belong to the template or did not succeed.
    #[error("build `{build_id}` is not a ready build of this template")]
    BuildNotReady { build_id: String },
    /// A tag breaks the naming rules.
    #[error("tag `{tag}` is invalid: {problem}")]
    BadTag { tag: String, problem: String },
    /// The `default` tag always follows the current build.
    #[error("tag `{DEFAULT_TAG}` cannot be removed")]
    DefaultTag,
    /// A new template's name breaks the naming rules.
    #[error("template name `{name}` is invalid: {problem}")]
    BadName { name: String, problem: String },
}

/// A new template record (no build yet). Fails if the name is taken or invalid.
pub fn create(
    existing: &[TemplateRecord],
    template_id: &str,
    def: TemplateDef,
    now: DateTime<Utc>,
) -> Result<TemplateRecord, RegistryError> {
    rules::check_name(&def.name).map_err(|problem| RegistryError::BadName {
        name: def.name.clone(),
        problem,
    })?;
    if find(existing, &def.name).is_some() {
        return Err(RegistryError::NameTaken { name: def.name });
    }
    Ok(TemplateRecord {
        template_id: template_id.to_string(),
        def,
        public: false,
        current: None,
        tags: BTreeMap::new(),
        created_at: now,
        updated_at: now,
    })
}

/// The template named or identified by `name_or_id` (a trailing `:tag` is ignored).
pub fn find<'a>(records: &'a [TemplateRecord], name_or_id: &str) -> Option<&'a TemplateRecord> {
    let name = name_or_id.split_once(':').map_or(name_or_id, |(n, _)| n);
    records
        .iter()
        .find(|r| r.def.name == name || r.template_id == name)
}

/// Templates sorted by name, optionally only those carrying `tag`.
pub fn list<'a>(records: &'a [TemplateRecord], tag: Option<&str>) -> Vec<&'a TemplateRecord> {
    let mut out: Vec<_> = records
        .iter()
        .filter(|r| tag.is_none_or(|t| r.tags.contains_key(t)))
        .collect();
    out.sort_by(|a, b| a.def.name.cmp(&b.def.name));
    out
}

/// The ready build a `name:tag` reference points at (`name` alone = the current build).
pub fn resolve_tag<'a>(
    template: &'a TemplateRecord,
    builds: &'a [BuildRecord],
    tag: Option<&str>,
) -> Option<&'a ReadyBuild> {
    match tag {
        None => template.current.as_ref(),
        Some(tag) => {
            let build_id = template.tags.get(tag)?;
            builds
                .iter()
                .find(|b| &b.build_id == build_id)?
                .ready
                .as_ref()
        }
    }
}

/// Templates by name with their current builds: the lookup that base resolution needs.
pub fn lookup(records: &[TemplateRecord]) -> HashMap<String, BaseTemplate> {
    records
        .iter()
        .map(|r| (r.def.name.clone(), base_template(r)))
        .collect()
}

/// One record as a possible base.
pub fn base_template(record: &TemplateRecord) -> BaseTemplate {
    let built = record.current.as_ref().map(|c| BuiltBase {
        final_key: c.final_key.clone(),
        top_layer: c.top_layer.clone(),
        state: c.state.clone(),
        layer_keys: c.layer_keys.clone(),
    });
    BaseTemplate {
        def: record.def.clone(),
        built,
    }
}

/// A new build record in state `waiting`.
pub fn start_build(
    template: &TemplateRecord,
    def: TemplateDef,
    build_id: &str,
    force: &Force,
    now: DateTime<Utc>,
) -> BuildRecord {
    BuildRecord {
        build_id: build_id.to_string(),
        template_id: template.template_id.clone(),
        status: BuildStatus::Waiting,
        def,
        force_all: force.all,
        force_steps: force.steps.clone(),
        created_at: now,
        finished_at: None,
        ready: None,
        failure: None,
    }
}

/// Marks a waiting build as running (done when [`crate::builder::build`] starts).
pub fn mark_building(build: &mut BuildRecord) {
    if build.status == BuildStatus::Waiting {
        build.status = BuildStatus::Building;
    }
}

/// The request that runs `build` (the caller supplies where COPY sources are).
pub fn build_request(build: &BuildRecord, context: BuildContext) -> BuildRequest {
    BuildRequest {
        def: build.def.clone(),
        build_id: build.build_id.clone(),
        context,
        force: Force {
            all: build.force_all,
            steps: build.force_steps.clone(),
        },
    }
}

/// A build of the template's current definition (cached layers are reused unless `force`).
pub fn rebuild(
    template: &TemplateRecord,
    build_id: &str,
    force: bool,
    now: DateTime<Utc>,
) -> BuildRecord {
    let force = Force {
        all: force,
        steps: BTreeSet::new(),
    };
    start_build(template, template.def.clone(), build_id, &force, now)
}

/// Records the end of a build. Only success touches `template`.
pub fn finish_build(
    template: &mut TemplateRecord,
    build: &mut BuildRecord,
    result: &Result<BuildOutcome, BuildError>,
    now: DateTime<Utc>,
) {
    build.finished_at = Some(now);
    match result {
        Ok(outcome) => {
            let ready = ReadyBuild {
                build_id: build.build_id.clone(),
                snapshot: outcome.snapshot.clone(),
                top_layer: outcome.top_layer.clone(),
                final_key: outcome.final_key.clone(),
                layer_keys: outcome.all_layer_keys(),
                state: outcome.state.clone(),
                resources: outcome.resources,
                finished_at: now,
            };
            build.status = BuildStatus::Ready;
            build.ready = Some(ready.clone());
            template.def = build.def.clone();
            template.current = Some(ready);
            template
                .tags
                .insert(DEFAULT_TAG.to_string(), build.build_id.clone());
            for tag in &build.def.tags {
                template.tags.insert(tag.clone(), build.build_id.clone());
            }
            template.updated_at = now;
        }
        Err(err) => {
            build.status = BuildStatus::Error;
            build.failure = Some(failure_of(err));
        }
    }
}

/// The failure record of a build error.
pub fn failure_of(err: &BuildError) -> BuildFailure {
    let (exit_code, output) = match err {
        BuildError::Step(StepError::Failed {
            exit_code, output, ..
        }) => (Some(*exit_code), Some(output.clone())),
        _ => (None, None),
    };
    BuildFailure {
        message: error_chain(err),
        step: err.step_name().map(str::to_string),
        exit_code,
        output,
    }
}

/// `err` and its sources joined with `: `.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Points `tags` at a ready build of `template`.
pub fn tag(
    template: &mut TemplateRecord,
    builds: &[BuildRecord],
    build_id: &str,
    tags: &[String],
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    let ready = builds.iter().any(|b| {
        b.build_id == build_id && b.template_id == template.template_id && b.ready.is_some()
    });
    if !ready {
        return Err(RegistryError::BuildNotReady {
            build_id: build_id.to_string(),
        });
    }
    for t in tags {
        rules::check_name(t).map_err(|problem| RegistryError::BadTag {
            tag: t.clone(),
            problem,
        })?;
    }
    for t in tags {
        template.tags.insert(t.clone(), build_id.to_string());
    }
    template.updated_at = now;
    Ok(())
}

/// Removes `tags` (unknown tags are ignored; `default` is refused).
pub fn untag(
    template: &mut TemplateRecord,
    tags: &[String],
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    if tags.iter().any(|t| t == DEFAULT_TAG) {
        return Err(RegistryError::DefaultTag);
    }
    for t in tags {
        template.tags.remove(t);
    }
    template.updated_at = now;
    Ok(())
}

/// Whether `name` may be deleted: refused while other templates are based on it.
pub fn check_delete(records: &[TemplateRecord], name: &str) -> Result<(), RegistryError> {
    let target =
        find(records, name).ok_or_else(|| RegistryError::NotFound { name: name.into() })?;
    let by: Vec<String> = records
        .iter()
        .filter(|r| r.def.base == Base::Template(target.def.name.clone()))
        .map(|r| r.def.name.clone())
        .collect();
    if by.is_empty() {
        Ok(())
    } else {
        Err(RegistryError::InUseAsBase {
            name: target.def.name.clone(),
            by,
        })
    }
}

/// Layer keys still referenced by ready builds; other layers may be deleted.
pub fn layers_in_use(builds: &[BuildRecord]) -> BTreeSet<String> {
    builds
        .iter()
        .filter_map(|b| b.ready.as_ref())
        .flat_map(|r| r.layer_keys.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests;
