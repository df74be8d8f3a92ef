//! The other direction: a [`TemplateDef`] written as a template file, so a definition built
//! in Rust code travels the same way as a hand-written file (the CLI and the client send
//! `template.toml`, and the server validates it with [`super::parse`]).
//!
//! Two parts of the model have no spelling in the file format and are refused:
//! E2B uploads (`files_hash` on a COPY step) and `default_user` (TOML templates start as
//! `root`; put a `user` step first instead).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{BASE_IMAGE_NAME, Base, ReadyCheck, Step, TemplateDef};

/// Why a definition cannot be written as a file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A feature of the model that the file format does not have.
    #[error("template files cannot express {0}")]
    Unsupported(&'static str),
    /// TOML serialization failed.
    #[error("cannot write TOML")]
    Toml(#[source] toml::ser::Error),
}

#[derive(Serialize)]
struct File<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    base: &'a str,
    vcpus: u32,
    memory_mib: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_timeout_secs: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    steps: Vec<FileStep<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<FileStart<'a>>,
}

#[derive(Serialize, Default)]
struct FileStep<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    apt: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pip: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    npm: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    copy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<BTreeMap<&'a str, &'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workdir: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    as_user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_secs: Option<u64>,
}

#[derive(Serialize)]
struct FileStart<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_cmd: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_timeout_secs: Option<u64>,
}

fn secs(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| d.as_secs().max(1))
}

fn step(s: &Step) -> Result<FileStep<'_>, WriteError> {
    let out = match s {
        Step::Run { cmd, user, timeout } => FileStep {
            run: Some(cmd),
            as_user: user.as_deref(),
            timeout_secs: secs(*timeout),
            ..FileStep::default()
        },
        Step::Apt { packages, timeout } => FileStep {
            apt: Some(packages),
            timeout_secs: secs(*timeout),
            ..FileStep::default()
        },
        Step::Pip { packages, timeout } => FileStep {
            pip: Some(packages),
            timeout_secs: secs(*timeout),
            ..FileStep::default()
        },
        Step::Npm { packages, timeout } => FileStep {
            npm: Some(packages),
            timeout_secs: secs(*timeout),
            ..FileStep::default()
        },
        Step::Copy(c) => {
            if c.files_hash.is_some() {
                return Err(WriteError::Unsupported("copies from E2B uploads"));
            }
            FileStep {
                copy: Some(&c.src),
                dest: Some(&c.dest),
                as_user: c.user.as_deref(),
                mode: c.mode.as_deref(),
                ..FileStep::default()
            }
        }
        Step::Env { vars } => {
            let mut env = BTreeMap::new();
            for (k, v) in vars {
                env.insert(k.as_str(), v.as_str());
            }
            if env.len() != vars.len() {
                return Err(WriteError::Unsupported("one env step setting a name twice"));
            }
            FileStep {
                env: Some(env),
                ..FileStep::default()
            }
        }
        Step::Workdir { path } => FileStep {
            workdir: Some(path),
            ..FileStep::default()
        },
        Step::User { name } => FileStep {
            user: Some(name),
            ..FileStep::default()
        },
    };
    Ok(out)
}

/// `def` as the text of a template file.
pub fn to_toml(def: &TemplateDef) -> Result<String, WriteError> {
    if def.default_user.is_some() {
        return Err(WriteError::Unsupported(
            "a default user (use a `user` step)",
        ));
    }
    let base = match &def.base {
        Base::Image => BASE_IMAGE_NAME,
        Base::Template(name) => name,
    };
    let start = def.start.as_ref().map(|s| {
        let (mut ready_cmd, mut ready_port, mut ready_delay_ms) = (None, None, None);
        match &s.ready {
            ReadyCheck::Command(c) => ready_cmd = Some(c.as_str()),
            ReadyCheck::Port(p) => ready_port = Some(*p),
            ReadyCheck::Delay(d) => {
                ready_delay_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
            }
        }
        FileStart {
            cmd: s.cmd.as_deref(),
            ready_cmd,
            ready_port,
            ready_delay_ms,
            ready_timeout_secs: secs(s.ready_timeout),
        }
    });
    let file = File {
        name: &def.name,
        tags: &def.tags,
        base,
        vcpus: def.resources.vcpus,
        memory_mib: def.resources.memory_mib,
        step_timeout_secs: secs(def.step_timeout),
        steps: def.steps.iter().map(step).collect::<Result<_, _>>()?,
        start,
    };
    toml::to_string(&file).map_err(WriteError::Toml)
}
