//! Running the uncached steps of a plan in one build VM.
//!
//! The VM boots on the last cached layer (or the base image); each disk step runs and is
//! committed as its own layer, so a failure at step k keeps layers 1..k-1 for the next try.
//! On any failure the VM is discarded, which drops the failed step's partial overlay.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::timeout;
use tracing::debug;

use crate::backend::{BackendError, BuildBackend, BuildVm, ExecRequest, LayerRef, VmSpec};
use crate::builder::BuildOptions;
use crate::commands;
use crate::logs::{BuildLog, LogLevel};
use crate::model::{DEFAULT_BUILD_USER, Step};
use crate::plan::PlannedStep;
use crate::resolve::ResolvedBase;

/// State that ENV, WORKDIR and USER steps change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildState {
    /// Environment, in the order set (a later value of a key replaces the earlier one).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User; `None` = [`DEFAULT_BUILD_USER`].
    pub user: Option<String>,
}

impl BuildState {
    fn apply(&mut self, step: &Step) {
        match step {
            Step::Env { vars } => {
                for (k, v) in vars {
                    self.env.retain(|(old, _)| old != k);
                    self.env.push((k.clone(), v.clone()));
                }
            }
            Step::Workdir { path } => self.workdir = Some(self.guest_path(path)),
            Step::User { name } => self.user = Some(name.clone()),
            _ => {}
        }
    }

    /// `path` made absolute against the working directory (E2B allows relative paths).
    pub fn guest_path(&self, path: &str) -> String {
        if path.starts_with('/') {
            return path.to_string();
        }
        let base = self.workdir.as_deref().unwrap_or("/");
        format!("{}/{path}", base.trim_end_matches('/'))
    }

    fn user(&self) -> &str {
        self.user.as_deref().unwrap_or(DEFAULT_BUILD_USER)
    }
}

/// Failure of one step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The command exited non-zero.
    #[error("step {name} ({label}) exited with code {exit_code}")]
    Failed {
        index: usize,
        name: String,
        label: String,
        exit_code: i32,
        /// The last lines the step printed.
        output: String,
    },
    /// The step ran longer than its timeout and was stopped.
    #[error("step {name} ({label}) did not finish within {timeout:?}")]
    TimedOut {
        index: usize,
        name: String,
        label: String,
        timeout: Duration,
    },
    /// The backend failed while booting for, running or committing the step.
    #[error("step {name} ({label}) could not be run")]
    Backend {
        index: usize,
        name: String,
        label: String,
        #[source]
        source: BackendError,
    },
}

impl StepError {
    /// E2B step name.
    pub fn name(&self) -> &str {
        match self {
            StepError::Failed { name, .. }
            | StepError::TimedOut { name, .. }
            | StepError::Backend { name, .. } => name,
        }
    }

    /// Index in the template's steps.
    pub fn index(&self) -> usize {
        match self {
            StepError::Failed { index, .. }
            | StepError::TimedOut { index, .. }
            | StepError::Backend { index, .. } => *index,
        }
    }
}

/// Replays the cached prefix and runs the rest on top of `base`; returns the final state and
/// the indices of the disk steps that ran.
pub async fn run_steps(
    backend: &dyn BuildBackend,
    base: &ResolvedBase,
    default_user: Option<&str>,
    steps: &[PlannedStep],
    spec: &VmSpec,
    opts: &BuildOptions,
    log: &BuildLog,
) -> Result<(BuildState, Vec<usize>), StepError> {
    let total = steps.len();
    let first_uncached = steps
        .iter()
        .position(|p| p.step.changes_disk() && !p.cached);
    let (mut state, mut parent) = match base {
        ResolvedBase::Image => {
            let state = BuildState {
                user: default_user.map(str::to_string),
                ..Default::default()
            };
            (state, None)
        }
        ResolvedBase::Template { built, .. } => (built.state.clone(), built.top_layer.clone()),
    };
    for p in &steps[..first_uncached.unwrap_or(total)] {
        state.apply(&p.step);
        let what = if p.cached { "cached" } else { "set" };
        let msg = format!("[{}/{total}] {what}: {}", p.index + 1, p.step.label());
        log.push(LogLevel::Info, Some(&p.name), msg);
        if p.cached {
            parent = Some(LayerRef { key: p.key.clone() });
        }
    }
    let Some(first) = first_uncached else {
        return Ok((state, Vec::new()));
    };
    let boot_err = |source| StepError::Backend {
        index: first,
        name: steps[first].name.clone(),
        label: steps[first].step.label(),
        source,
    };
    log.push(LogLevel::Info, Some(&steps[first].name), "booting build VM");
    let mut vm = backend
        .boot(parent.as_ref(), spec)
        .await
        .map_err(boot_err)?;
    let mut ran = Vec::new();
    for p in &steps[first..] {
        let msg = format!("[{}/{total}] {}", p.index + 1, p.step.label());
        log.push(LogLevel::Info, Some(&p.name), msg);
        if !p.step.changes_disk() {
            state.apply(&p.step);
            continue;
        }
        if let Err(e) = run_one(vm.as_mut(), p, &state, opts, log).await {
            vm.discard().await;
            return Err(e);
        }
        ran.push(p.index);
    }
    vm.discard().await;
    Ok((state, ran))
}

async fn run_one(
    vm: &mut dyn BuildVm,
    p: &PlannedStep,
    state: &BuildState,
    opts: &BuildOptions,
    log: &BuildLog,
) -> Result<(), StepError> {
    let backend_err = |source| StepError::Backend {
        index: p.index,
        name: p.name.clone(),
        label: p.step.label(),
        source,
    };
    let limit = p
        .step
        .timeout()
        .or(p.default_timeout)
        .unwrap_or(opts.default_step_timeout);
    let cmd = match &p.step {
        Step::Run { cmd, .. } => cmd.clone(),
        Step::Apt { packages, .. } => commands::apt_install(packages),
        Step::Pip { packages, .. } => commands::pip_install(packages),
        Step::Npm { packages, .. } => commands::npm_install(packages),
        Step::Copy(copy) => {
            // plan() sets the source of every COPY step; the fallback cannot be reached.
            let host = p.copy_source.as_deref().unwrap_or(Path::new(""));
            let dest = state.guest_path(&copy.dest);
            let user = copy.user.as_deref().unwrap_or(state.user());
            let copied = vm.copy_in(host, &dest, user, copy.mode.as_deref());
            match timeout(limit, copied).await {
                Ok(res) => res.map_err(backend_err)?,
                Err(_) => return Err(timed_out(p, limit)),
            }
            return commit(vm, p).await.map_err(backend_err);
        }
        Step::Env { .. } | Step::Workdir { .. } | Step::User { .. } => return Ok(()),
    };
    let user = match &p.step {
        Step::Run { user, .. } => user.as_deref().unwrap_or(state.user()),
        _ => "root",
    };
    let cwd = match &p.step {
        Step::Run { .. } => state.workdir.as_deref(),
        _ => None,
    };
    let req = ExecRequest {
        cmd: &cmd,
        user,
        env: &state.env,
        cwd,
        timeout: limit,
    };
    let offset = log.len();
    let exit_code = match timeout(limit, vm.exec(req, log.step(&p.name))).await {
        Ok(res) => res.map_err(backend_err)?,
        Err(_) => return Err(timed_out(p, limit)),
    };
    if exit_code != 0 {
        return Err(StepError::Failed {
            index: p.index,
            name: p.name.clone(),
            label: p.step.label(),
            exit_code,
            output: tail_output(log, offset, &p.name, opts.failure_output_lines),
        });
    }
    commit(vm, p).await.map_err(backend_err)
}

async fn commit(vm: &mut dyn BuildVm, p: &PlannedStep) -> Result<(), BackendError> {
    let layer = vm.commit_layer(&p.key).await?;
    debug!(step = %p.name, key = %layer.key, "layer committed");
    Ok(())
}

fn timed_out(p: &PlannedStep, limit: Duration) -> StepError {
    StepError::TimedOut {
        index: p.index,
        name: p.name.clone(),
        label: p.step.label(),
        timeout: limit,
    }
}

fn tail_output(log: &BuildLog, offset: usize, step: &str, lines: usize) -> String {
    let entries: Vec<String> = log
        .since(offset)
        .into_iter()
        .filter(|e| e.step.as_deref() == Some(step))
        .map(|e| e.message)
        .collect();
    entries[entries.len().saturating_sub(lines)..].join("\n")
}
