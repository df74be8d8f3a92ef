//! The build plan: every step of the template with its key, its E2B step name, the host
//! path it copies from, and whether its layer is already cached. The key chain starts at the
//! base image's key or at the base template's final key (`resolve.rs`).
//!
//! Planning does no VM work, so a bad COPY source fails the build before anything boots.
//! A disk step counts as cached when the highest cached disk-step key is at or after it:
//! a layer's backing chain holds all its ancestors, so a cached layer implies its prefix.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::backend::BuildBackend;
use crate::layers::{self, BuildContext, LayerError};
use crate::model::Step;
use crate::resolve::{ResolvedBase, ResolvedTemplate};

/// Which steps must be rebuilt even when cached (E2B's `force` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Force {
    /// Rebuild everything.
    pub all: bool,
    /// Indices into the template's `steps` to rebuild (and everything after them).
    pub steps: BTreeSet<usize>,
}

/// One planned step.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// The step.
    pub step: Step,
    /// Index in the template's `steps`.
    pub index: usize,
    /// E2B step name: the 1-based index.
    pub name: String,
    /// Layer key.
    pub key: String,
    /// Host source of a COPY step.
    pub copy_source: Option<PathBuf>,
    /// The template's default step timeout.
    pub default_timeout: Option<std::time::Duration>,
    /// The layer is cached (always false for steps that do not change the disk).
    pub cached: bool,
}

/// Why planning failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare step {name} ({label})")]
pub struct PlanError {
    /// E2B step name.
    pub name: String,
    /// Step label.
    pub label: String,
    /// Cause.
    #[source]
    pub source: LayerError,
}

/// Computes keys and cache state of every step of `resolved.def`.
pub fn plan(
    resolved: &ResolvedTemplate,
    backend: &dyn BuildBackend,
    ctx: &BuildContext,
    force: &Force,
    build_id: &str,
) -> Result<Vec<PlannedStep>, PlanError> {
    let mut parent = root_key(resolved, backend);
    let mut forced = force.all;
    let mut planned = Vec::with_capacity(resolved.def.steps.len());
    for (index, step) in resolved.def.steps.iter().enumerate() {
        let name = (index + 1).to_string();
        forced |= force.steps.contains(&index);
        let (copy_source, copied) = match step {
            Step::Copy(copy) => {
                let fail = |source| PlanError {
                    name: name.clone(),
                    label: step.label(),
                    source,
                };
                let path = layers::locate_copy_source(ctx, copy).map_err(fail)?;
                let root = path_root(ctx, copy).ok_or_else(|| {
                    fail(LayerError::NoContext {
                        src: copy.src.clone(),
                    })
                })?;
                let hash = layers::hash_tree(&root, &path, &copy.src).map_err(fail)?;
                (Some(path), Some(hash))
            }
            _ => (None, None),
        };
        // Once forced, the nonce stays in the chain through the parent key.
        let nonce = (forced && step.changes_disk()).then_some(build_id);
        let key = layers::step_key(&parent, step, copied.as_deref(), nonce);
        parent.clone_from(&key);
        planned.push(PlannedStep {
            step: step.clone(),
            index,
            name,
            key,
            copy_source,
            default_timeout: resolved.def.step_timeout,
            cached: false,
        });
    }
    let top_cached = planned
        .iter()
        .rposition(|p| p.step.changes_disk() && backend.layer_exists(&p.key));
    if let Some(top) = top_cached {
        for p in planned.iter_mut().take(top + 1) {
            p.cached = p.step.changes_disk();
        }
    }
    Ok(planned)
}

/// Key the template's first step builds on.
pub fn root_key(resolved: &ResolvedTemplate, backend: &dyn BuildBackend) -> String {
    match &resolved.base {
        ResolvedBase::Image => {
            let image = layers::base_key(&backend.base_image_id());
            // A default user acts like a leading USER step, and is keyed as one.
            match &resolved.def.default_user {
                Some(name) => {
                    layers::step_key(&image, &Step::User { name: name.clone() }, None, None)
                }
                None => image,
            }
        }
        ResolvedBase::Template { built, .. } => built.final_key.clone(),
    }
}

fn path_root(ctx: &BuildContext, copy: &crate::model::CopyStep) -> Option<PathBuf> {
    match &copy.files_hash {
        Some(hash) => ctx.uploads.as_ref().map(|u| u.join(hash)),
        None => ctx.dir.clone(),
    }
}
