//! Build orchestration: from a definition to a ready snapshot.
//!
//! ```text
//! resolve the base ─▶ plan keys ─▶ replay cached prefix
//!   ─▶ [boot build VM on the last cached layer ─▶ per uncached step: run, commit layer]
//!   ─▶ boot a fresh VM on the top layer ─▶ start command in the background
//!   ─▶ ready check (polled, with a timeout) ─▶ snapshot
//! ```
//!
//! Uncached steps share one build VM: one boot (seconds under TCG) instead of one per step,
//! while each step still gets its own committed layer, so a later edit to step 5 reuses 1–4.
//! ENV, WORKDIR and USER steps only change the build state (environment, working directory,
//! user of later RUN steps and of the start command); they are replayed even when cached.
//!
//! Nothing here writes a template record: the caller stores the [`BuildOutcome`] only when
//! the build succeeded (see `registry.rs`), so a failed build leaves the previous one in use.
//! Layers committed before a failure stay in the content-addressed cache, where they speed up
//! the next attempt and are invisible otherwise. If the build future is dropped, the boxed VM
//! is dropped with it; backends must stop the VM and delete its overlay on drop.

use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};
use tracing::{info, warn};

use crate::backend::{
    BackendError, BuildBackend, BuildVm, ExecRequest, LayerRef, SnapshotRef, VmPurpose, VmSpec,
};
use crate::commands;
use crate::layers::BuildContext;
use crate::logs::{BuildLog, LogLevel, STEP_BASE, STEP_FINALIZE};
use crate::model::{
    DEFAULT_BUILD_USER, DEFAULT_READY_TIMEOUT, DEFAULT_STEP_TIMEOUT, ReadyCheck, Resources,
    StartSpec, TemplateDef,
};
use crate::plan::{Force, PlanError, PlannedStep, plan, root_key};
use crate::resolve::{BuiltBase, DefinitionLookup, ResolveError, ResolvedBase, resolve};
use crate::run::{BuildState, StepError, run_steps};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The definition (stored under its name only if the build succeeds).
    pub def: TemplateDef,
    /// Unique id of this build.
    pub build_id: String,
    /// Where COPY sources come from.
    pub context: BuildContext,
    /// Steps to rebuild regardless of the cache.
    pub force: Force,
}

/// Tunables of the builder.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Timeout of steps whose step and template name none.
    pub default_step_timeout: Duration,
    /// Pause between ready-check attempts.
    pub ready_poll_interval: Duration,
    /// Longest single ready-check command.
    pub ready_attempt_timeout: Duration,
    /// Lines of output a failed step reports.
    pub failure_output_lines: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            default_step_timeout: DEFAULT_STEP_TIMEOUT,
            ready_poll_interval: Duration::from_millis(250),
            ready_attempt_timeout: Duration::from_secs(10),
            failure_output_lines: 50,
        }
    }
}

/// A successful build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutcome {
    /// Template name.
    pub template: String,
    /// Build id.
    pub build_id: String,
    /// Key of every step, in order.
    pub layer_keys: Vec<String>,
    /// Key after the last step (the root of templates built on this one).
    pub final_key: String,
    /// Keys of the base template's chain that the top layer also depends on.
    pub base_layer_keys: Vec<String>,
    /// The top disk layer; `None` when no step changes the disk (the base image itself).
    pub top_layer: Option<LayerRef>,
    /// The ready snapshot.
    pub snapshot: SnapshotRef,
    /// Indices of the disk steps that ran.
    pub ran: Vec<usize>,
    /// Indices of disk steps served from the cache.
    pub cached: Vec<usize>,
    /// Final build state: sandboxes inherit these env vars, user and working directory.
    pub state: BuildState,
    /// Default sandbox size.
    pub resources: Resources,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The base chain is broken.
    #[error("cannot resolve the bases of template `{template}`")]
    Resolve {
        template: String,
        #[source]
        source: ResolveError,
    },
    /// A COPY source is missing, unreadable or outside the context.
    #[error("cannot plan the build")]
    Plan(#[source] PlanError),
    /// A step failed, timed out, or the build VM failed under it.
    #[error("build step failed")]
    Step(#[source] StepError),
    /// The VM for the ready snapshot did not boot.
    #[error("cannot boot the VM for the ready snapshot")]
    BootSnapshotVm(#[source] BackendError),
    /// The start command could not be started.
    #[error("cannot launch the start command")]
    Start(#[source] BackendError),
    /// The ready check failed to pass in time.
    #[error("ready check did not pass within {timeout:?}")]
    NotReady { timeout: Duration },
    /// Running the ready check itself failed.
    #[error("cannot run the ready check")]
    ReadyCheck(#[source] BackendError),
    /// Taking the snapshot failed.
    #[error("cannot take the ready snapshot")]
    Snapshot(#[source] BackendError),
}

impl BuildOutcome {
    /// What templates built on this one start from.
    pub fn as_base(&self) -> BuiltBase {
        BuiltBase {
            final_key: self.final_key.clone(),
            top_layer: self.top_layer.clone(),
            state: self.state.clone(),
            layer_keys: self.all_layer_keys(),
        }
    }

    /// The base's keys followed by this build's own.
    pub fn all_layer_keys(&self) -> Vec<String> {
        self.base_layer_keys
            .iter()
            .chain(&self.layer_keys)
            .cloned()
            .collect()
    }
}

impl BuildError {
    /// E2B step name of the failure (`"base"`, `"1"`.., `"finalize"`), if one applies.
    pub fn step_name(&self) -> Option<&str> {
        match self {
            BuildError::Resolve { .. } => Some(STEP_BASE),
            BuildError::Plan(e) => Some(&e.name),
            BuildError::Step(e) => Some(e.name()),
            _ => Some(STEP_FINALIZE),
        }
    }
}

/// Builds `req.def` into a ready snapshot, logging progress to `log` (a failure ends the log
/// with an `error` entry holding the whole error chain).
pub async fn build(
    backend: &dyn BuildBackend,
    lookup: &(dyn DefinitionLookup + Sync),
    req: &BuildRequest,
    opts: &BuildOptions,
    log: &BuildLog,
) -> Result<BuildOutcome, BuildError> {
    let result = build_inner(backend, lookup, req, opts, log).await;
    if let Err(e) = &result {
        let message = crate::registry::error_chain(e);
        let build_id = &req.build_id;
        warn!(template = %req.def.name, %build_id, error = %message, "template build failed");
        log.push(LogLevel::Error, e.step_name(), message);
    }
    result
}

async fn build_inner(
    backend: &dyn BuildBackend,
    lookup: &(dyn DefinitionLookup + Sync),
    req: &BuildRequest,
    opts: &BuildOptions,
    log: &BuildLog,
) -> Result<BuildOutcome, BuildError> {
    let template = req.def.name.clone();
    let started = Instant::now();
    log.push(
        LogLevel::Info,
        None,
        format!("building template {template}"),
    );
    let resolved = resolve(&req.def, lookup).map_err(|source| BuildError::Resolve {
        template: template.clone(),
        source,
    })?;
    let steps = plan(&resolved, backend, &req.context, &req.force, &req.build_id)
        .map_err(BuildError::Plan)?;
    let spec = |purpose| VmSpec {
        template: template.clone(),
        build_id: req.build_id.clone(),
        vcpus: req.def.resources.vcpus,
        memory_mib: req.def.resources.memory_mib,
        purpose,
    };
    let build_spec = spec(VmPurpose::Build);
    let ran = run_steps(
        backend,
        &resolved.base,
        req.def.default_user.as_deref(),
        &steps,
        &build_spec,
        opts,
        log,
    )
    .await;
    let (state, ran) = ran.map_err(BuildError::Step)?;
    let (base_layer, base_layer_keys) = match &resolved.base {
        ResolvedBase::Image => (None, Vec::new()),
        ResolvedBase::Template { built, .. } => (built.top_layer.clone(), built.layer_keys.clone()),
    };
    let top_layer = steps
        .iter()
        .rev()
        .find(|p| p.step.changes_disk())
        .map(|p| LayerRef { key: p.key.clone() })
        .or(base_layer);
    let final_key = steps
        .last()
        .map_or_else(|| root_key(&resolved, backend), |p| p.key.clone());
    let cached = steps.iter().filter(|p| p.cached).map(|p| p.index).collect();
    let snapshot = finalize(
        backend,
        top_layer.as_ref(),
        &spec(VmPurpose::Snapshot),
        resolved.start.as_ref(),
        &state,
        opts,
        log,
    )
    .await?;
    let elapsed = started.elapsed();
    info!(%template, build_id = %req.build_id, ran = ran.len(), ?elapsed, "template built");
    log.push(
        LogLevel::Info,
        Some(STEP_FINALIZE),
        format!("build finished in {elapsed:.1?}"),
    );
    Ok(BuildOutcome {
        template,
        build_id: req.build_id.clone(),
        layer_keys: steps.iter().map(|p: &PlannedStep| p.key.clone()).collect(),
        final_key,
        base_layer_keys,
        top_layer,
        snapshot,
        ran,
        cached,
        state,
        resources: req.def.resources,
    })
}

/// Boots the top layer, runs the start command, waits for readiness, snapshots.
async fn finalize(
    backend: &dyn BuildBackend,
    top: Option<&LayerRef>,
    spec: &VmSpec,
    start: Option<&StartSpec>,
    state: &BuildState,
    opts: &BuildOptions,
    log: &BuildLog,
) -> Result<SnapshotRef, BuildError> {
    let step_log = log.step(STEP_FINALIZE);
    step_log.note(
        LogLevel::Info,
        "booting the top layer for the ready snapshot",
    );
    let mut vm = backend
        .boot(top, spec)
        .await
        .map_err(BuildError::BootSnapshotVm)?;
    if let Some(start) = start
        && let Err(e) = start_and_wait(vm.as_mut(), start, state, opts, log).await
    {
        vm.discard().await;
        return Err(e);
    }
    step_log.note(LogLevel::Info, "taking the snapshot");
    vm.snapshot().await.map_err(BuildError::Snapshot)
}

async fn start_and_wait(
    vm: &mut dyn BuildVm,
    start: &StartSpec,
    state: &BuildState,
    opts: &BuildOptions,
    log: &BuildLog,
) -> Result<(), BuildError> {
    let step_log = log.step(STEP_FINALIZE);
    let user = state.user.as_deref().unwrap_or(DEFAULT_BUILD_USER);
    let req = ExecRequest {
        cmd: "",
        user,
        env: &state.env,
        cwd: state.workdir.as_deref(),
        timeout: Duration::MAX,
    };
    if let Some(cmd) = &start.cmd {
        step_log.note(LogLevel::Info, format!("start command: {cmd}"));
        let req = ExecRequest { cmd, ..req };
        vm.spawn(req, step_log.clone())
            .await
            .map_err(BuildError::Start)?;
    }
    let limit = start.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT);
    let check = match &start.ready {
        ReadyCheck::Delay(delay) => {
            sleep(*delay).await;
            return Ok(());
        }
        ReadyCheck::Command(cmd) => cmd.clone(),
        ReadyCheck::Port(port) => commands::port_check(*port),
    };
    step_log.note(LogLevel::Info, format!("waiting for ready check: {check}"));
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt_limit = left.min(opts.ready_attempt_timeout);
        let req = ExecRequest {
            cmd: &check,
            timeout: attempt_limit,
            ..req
        };
        // Attempts log at debug level through a throwaway log: a port polled for a minute
        // would otherwise fill the build log with connection errors.
        let quiet = BuildLog::new().step(STEP_FINALIZE);
        match timeout(attempt_limit, vm.exec(req, quiet)).await {
            Ok(Ok(0)) => {
                step_log.note(LogLevel::Info, "ready");
                return Ok(());
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => return Err(BuildError::ReadyCheck(e)),
        }
        if Instant::now() + opts.ready_poll_interval >= deadline {
            return Err(BuildError::NotReady { timeout: limit });
        }
        sleep(opts.ready_poll_interval).await;
    }
}

#[cfg(test)]
mod tests;
