//! The template model: what a template is, independent of how it was written down.
//!
//! A template is a recipe for a ready snapshot: a [`Base`] (the Debian base image or another
//! template), a list of [`Step`]s that each change the disk (RUN, packages, COPY) or only the
//! build state (ENV, WORKDIR, USER), a start command with a [`ReadyCheck`], and the default
//! size of sandboxes started from it. The TOML file format (`file.rs`) and E2B's build request
//! (`e2b.rs`) are both translated into this model; the layer keys (`layers.rs`) are computed
//! from its canonical JSON form, so field order and names here are part of the cache key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The name that designates the Debian base image as a base (reserved: no template may use it).
pub const BASE_IMAGE_NAME: &str = "base";

/// User that steps run as until a USER step says otherwise.
pub const DEFAULT_BUILD_USER: &str = "root";

/// Default vCPU count of sandboxes started from a template.
pub const DEFAULT_VCPUS: u32 = 2;

/// Default memory of sandboxes started from a template, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 512;

/// Timeout of a step that names none, unless the build options override it.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// Timeout of the ready check when the template names none.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A complete template definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDef {
    /// Unique name (also what `fromTemplate` and `base = "..."` refer to).
    pub name: String,
    /// Free-form tags (E2B's `name:tag`), informational for the build itself.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What the first step builds on.
    pub base: Base,
    /// Build steps, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Started in the background before the ready snapshot; `None` snapshots an idle guest.
    #[serde(default)]
    pub start: Option<StartSpec>,
    /// Default size of sandboxes started from this template.
    #[serde(default)]
    pub resources: Resources,
    /// Timeout of steps that name none; `None` = the build options' default.
    #[serde(default)]
    pub step_timeout: Option<Duration>,
    /// User of the first steps when the base is the image (until a USER step); `None` =
    /// [`DEFAULT_BUILD_USER`]. E2B templates use `user`, E2B's default; a template built on
    /// another template starts with that template's final user instead.
    #[serde(default)]
    pub default_user: Option<String>,
}

/// What a template starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    /// Warren's Debian bookworm base image.
    Image,
    /// Another template, by name: the build starts from its current ready build.
    Template(String),
}

/// Default vCPUs and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            vcpus: DEFAULT_VCPUS,
            memory_mib: DEFAULT_MEMORY_MIB,
        }
    }
}

/// The start command and how to know it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSpec {
    /// Shell command started in the background (as the build's current user, in its workdir);
    /// `None` only runs the ready check (E2B's `readyCmd` without `startCmd`).
    pub cmd: Option<String>,
    /// What must hold before the snapshot is taken.
    pub ready: ReadyCheck,
    /// How long the ready check may take; `None` = [`DEFAULT_READY_TIMEOUT`].
    #[serde(default)]
    pub ready_timeout: Option<Duration>,
}

/// A readiness condition of the start command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyCheck {
    /// A shell command, retried until it exits 0.
    Command(String),
    /// A TCP port in the guest that accepts a connection.
    Port(u16),
    /// A fixed delay after the start.
    Delay(Duration),
}

/// One build step. The serialized form of a step is its cache identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// A shell command.
    Run {
        /// Passed to `sh -c`.
        cmd: String,
        /// `None` = the build's current user.
        user: Option<String>,
        /// `None` = the template's (or build's) default step timeout.
        timeout: Option<Duration>,
    },
    /// Debian packages, installed as root.
    Apt {
        packages: Vec<String>,
        timeout: Option<Duration>,
    },
    /// Python packages, installed system-wide as root.
    Pip {
        packages: Vec<String>,
        timeout: Option<Duration>,
    },
    /// npm packages, installed globally as root (installs nodejs and npm first if missing).
    Npm {
        packages: Vec<String>,
        timeout: Option<Duration>,
    },
    /// A file or folder of the build context, copied into the guest.
    Copy(CopyStep),
    /// Environment variables for later steps and the start command.
    Env { vars: Vec<(String, String)> },
    /// Working directory of later steps and the start command.
    Workdir { path: String },
    /// User of later RUN steps and the start command.
    User { name: String },
}

/// A COPY step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyStep {
    /// Path relative to the build context; must stay inside it.
    pub src: String,
    /// Absolute guest path (a trailing `/` means "into this folder").
    pub dest: String,
    /// Owner of the copied files; `None` = the build's current user.
    pub user: Option<String>,
    /// Octal mode such as `0755`; `None` keeps the source's mode.
    pub mode: Option<String>,
    /// E2B's `filesHash`: the upload holding the source (see `e2b.rs`); `None` for TOML files.
    pub files_hash: Option<String>,
}

impl Step {
    /// Whether the step changes the disk (needs a VM and produces a layer) or only the state.
    pub fn changes_disk(&self) -> bool {
        !matches!(
            self,
            Step::Env { .. } | Step::Workdir { .. } | Step::User { .. }
        )
    }

    /// The step's own timeout, if it names one.
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            Step::Run { timeout, .. }
            | Step::Apt { timeout, .. }
            | Step::Pip { timeout, .. }
            | Step::Npm { timeout, .. } => *timeout,
            _ => None,
        }
    }

    /// Short human label used in logs and errors, e.g. `RUN echo hi`.
    pub fn label(&self) -> String {
        let text = match self {
            Step::Run { cmd, .. } => format!("RUN {cmd}"),
            Step::Apt { packages, .. } => format!("APT {}", packages.join(" ")),
            Step::Pip { packages, .. } => format!("PIP {}", packages.join(" ")),
            Step::Npm { packages, .. } => format!("NPM {}", packages.join(" ")),
            Step::Copy(c) => format!("COPY {} {}", c.src, c.dest),
            Step::Env { vars } => {
                let kv: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("ENV {}", kv.join(" "))
            }
            Step::Workdir { path } => format!("WORKDIR {path}"),
            Step::User { name } => format!("USER {name}"),
        };
        // Labels end up in one-line log entries; long commands are cut, not wrapped.
        truncate_chars(&text, 120)
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    let first_line = text.lines().next().unwrap_or("");
    if first_line.chars().count() <= max && first_line.len() == text.len() {
        return text.to_string();
    }
    let cut: String = first_line.chars().take(max).collect();
    format!("{cut}…")
}
