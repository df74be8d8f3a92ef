//! The template file: TOML read into [`TemplateDef`], with errors that name line and column.
//!
//! Layout (documented with examples in `docs/templates.md`): top-level `name`, `tags`, `base`,
//! `vcpus`, `memory_mib`, `step_timeout_secs`; an array of `[[steps]]` tables, each holding
//! exactly one of `run`, `apt`, `pip`, `npm`, `copy`, `env`, `workdir`, `user` plus the
//! modifiers that kind allows; and an optional `[start]` table with `cmd` and one of
//! `ready_cmd`, `ready_port`, `ready_delay_ms`. Parsing is in two passes: toml deserializes
//! into raw structs whose fields keep their byte spans (unknown keys and wrong types fail
//! there, with toml's own span), then validation checks the rules and reports the span of
//! the offending value. Spans become 1-based line and column numbers.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::layers::BuildContext;
use crate::model::{
    BASE_IMAGE_NAME, Base, CopyStep, ReadyCheck, Resources, StartSpec, Step, TemplateDef,
};
use crate::rules;

/// A 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a template file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TemplateFileError {
    /// The file could not be read.
    #[error("cannot read template file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or a key or type the format does not have.
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// Valid TOML that breaks a rule of the format.
    #[error("{at}: {field}: {problem}")]
    Invalid {
        at: Location,
        field: String,
        problem: String,
    },
}

impl TemplateFileError {
    /// Where in the file the problem is, if known.
    pub fn location(&self) -> Option<Location> {
        match self {
            TemplateFileError::Read { .. } => None,
            TemplateFileError::Syntax { at, .. } | TemplateFileError::Invalid { at, .. } => {
                Some(*at)
            }
        }
    }
}

/// Reads a template file; COPY sources are relative to the file's folder.
pub fn load(path: &Path) -> Result<(TemplateDef, BuildContext), TemplateFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TemplateFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let def = parse(&text)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    Ok((
        def,
        BuildContext {
            dir: Some(dir),
            uploads: None,
        },
    ))
}

/// Parses and validates template TOML.
pub fn parse(text: &str) -> Result<TemplateDef, TemplateFileError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| TemplateFileError::Syntax {
        at: locate(text, e.span().map_or(0, |s| s.start)),
        message: e.message().to_string(),
    })?;
    Validator { text }.file(raw)
}

pub(crate) fn locate(text: &str, offset: usize) -> Location {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Location { line, column }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Spanned<String>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    base: Option<Spanned<String>>,
    vcpus: Option<Spanned<u32>>,
    memory_mib: Option<Spanned<u32>>,
    step_timeout_secs: Option<Spanned<u64>>,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
    start: Option<Spanned<RawStart>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    run: Option<Spanned<String>>,
    apt: Option<Spanned<Vec<Spanned<String>>>>,
    pip: Option<Spanned<Vec<Spanned<String>>>>,
    npm: Option<Spanned<Vec<Spanned<String>>>>,
    copy: Option<Spanned<String>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    workdir: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    dest: Option<Spanned<String>>,
    as_user: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    timeout_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStart {
    cmd: Option<Spanned<String>>,
    ready_cmd: Option<Spanned<String>>,
    ready_port: Option<Spanned<u16>>,
    ready_delay_ms: Option<Spanned<u64>>,
    ready_timeout_secs: Option<Spanned<u64>>,
}

struct Validator<'t> {
    text: &'t str,
}

type Checked<T> = Result<T, TemplateFileError>;

impl Validator<'_> {
    fn invalid(
        &self,
        span: Range<usize>,
        field: &str,
        problem: impl Into<String>,
    ) -> TemplateFileError {
        TemplateFileError::Invalid {
            at: locate(self.text, span.start),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    fn check<T>(
        &self,
        value: &Spanned<T>,
        field: &str,
        rule: impl Fn(&T) -> Result<(), String>,
    ) -> Checked<()> {
        rule(value.get_ref()).map_err(|problem| self.invalid(value.span(), field, problem))
    }

    fn positive<T: Copy + Into<u64>>(&self, value: &Spanned<T>, field: &str) -> Checked<T> {
        let v = *value.get_ref();
        if v.into() == 0 {
            return Err(self.invalid(value.span(), field, "must be greater than 0"));
        }
        Ok(v)
    }

    fn file(&self, raw: RawFile) -> Checked<TemplateDef> {
        self.check(&raw.name, "name", |n| rules::check_name(n))?;
        for tag in &raw.tags {
            self.check(tag, "tags", |t| rules::check_name(t))?;
        }
        let base = match &raw.base {
            None => Base::Image,
            Some(b) if b.get_ref() == BASE_IMAGE_NAME => Base::Image,
            Some(b) => {
                self.check(b, "base", |n| rules::check_name(n))?;
                if b.get_ref() == raw.name.get_ref() {
                    return Err(self.invalid(b.span(), "base", "names the template itself"));
                }
                Base::Template(b.get_ref().clone())
            }
        };
        let mut resources = Resources::default();
        if let Some(v) = &raw.vcpus {
            resources.vcpus = self.positive(v, "vcpus")?;
        }
        if let Some(m) = &raw.memory_mib {
            resources.memory_mib = self.positive(m, "memory_mib")?;
            if resources.memory_mib < 128 {
                return Err(self.invalid(m.span(), "memory_mib", "must be at least 128"));
            }
        }
        let step_timeout = match &raw.step_timeout_secs {
            Some(t) => Some(Duration::from_secs(self.positive(t, "step_timeout_secs")?)),
            None => None,
        };
        let steps = raw
            .steps
            .iter()
            .map(|s| self.step(s))
            .collect::<Checked<Vec<_>>>()?;
        let start = raw.start.as_ref().map(|s| self.start(s)).transpose()?;
        Ok(TemplateDef {
            name: raw.name.into_inner(),
            tags: raw.tags.into_iter().map(Spanned::into_inner).collect(),
            base,
            steps,
            start,
            resources,
            step_timeout,
            default_user: None,
        })
    }
}

impl Validator<'_> {
    fn step(&self, raw: &Spanned<RawStep>) -> Checked<Step> {
        let s = raw.get_ref();
        let kinds: Vec<(&str, Range<usize>)> = [
            ("run", s.run.as_ref().map(Spanned::span)),
            ("apt", s.apt.as_ref().map(Spanned::span)),
            ("pip", s.pip.as_ref().map(Spanned::span)),
            ("npm", s.npm.as_ref().map(Spanned::span)),
            ("copy", s.copy.as_ref().map(Spanned::span)),
            ("env", s.env.as_ref().map(Spanned::span)),
            ("workdir", s.workdir.as_ref().map(Spanned::span)),
            ("user", s.user.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(k, span)| span.map(|span| (k, span)))
        .collect();
        let kind = match kinds.as_slice() {
            [] => {
                let problem = "needs one of run, apt, pip, npm, copy, env, workdir, user";
                return Err(self.invalid(raw.span(), "steps", problem));
            }
            [(kind, _)] => *kind,
            [(first, _), (second, span), ..] => {
                let problem = format!("cannot be combined with `{first}` in one step");
                return Err(self.invalid(span.clone(), second, problem));
            }
        };
        let allowed: &[&str] = match kind {
            "run" => &["as_user", "timeout_secs"],
            "apt" | "pip" | "npm" => &["timeout_secs"],
            "copy" => &["dest", "as_user", "mode"],
            _ => &[],
        };
        let modifiers = [
            ("dest", s.dest.as_ref().map(Spanned::span)),
            ("as_user", s.as_user.as_ref().map(Spanned::span)),
            ("mode", s.mode.as_ref().map(Spanned::span)),
            ("timeout_secs", s.timeout_secs.as_ref().map(Spanned::span)),
        ];
        for (name, span) in modifiers {
            if let Some(span) = span
                && !allowed.contains(&name)
            {
                return Err(self.invalid(span, name, format!("does not apply to a `{kind}` step")));
            }
        }
        if let Some(u) = &s.as_user {
            self.check(u, "as_user", |u| rules::check_user(u))?;
        }
        let timeout = match &s.timeout_secs {
            Some(t) => Some(Duration::from_secs(self.positive(t, "timeout_secs")?)),
            None => None,
        };
        let user = s.as_user.as_ref().map(|u| u.get_ref().clone());
        let step = match kind {
            "run" => {
                let cmd = s
                    .run
                    .as_ref()
                    .map(|c| self.nonempty(c, "run"))
                    .transpose()?;
                Step::Run {
                    cmd: cmd.unwrap_or_default(),
                    user,
                    timeout,
                }
            }
            "apt" => Step::Apt {
                packages: self.packages(s.apt.as_ref(), "apt")?,
                timeout,
            },
            "pip" => Step::Pip {
                packages: self.packages(s.pip.as_ref(), "pip")?,
                timeout,
            },
            "npm" => Step::Npm {
                packages: self.packages(s.npm.as_ref(), "npm")?,
                timeout,
            },
            "copy" => Step::Copy(self.copy(raw, user)?),
            "env" => {
                let mut vars = Vec::new();
                if let Some(env) = &s.env {
                    for (k, v) in env.get_ref() {
                        rules::check_env_key(k).map_err(|p| self.invalid(env.span(), "env", p))?;
                        vars.push((k.clone(), v.clone()));
                    }
                    if vars.is_empty() {
                        return Err(self.invalid(env.span(), "env", "sets no variable"));
                    }
                }
                Step::Env { vars }
            }
            "workdir" => {
                let w = s.workdir.as_ref();
                if let Some(w) = w {
                    self.check(w, "workdir", |p| rules::check_guest_path(p))?;
                }
                Step::Workdir {
                    path: w.map(|w| w.get_ref().clone()).unwrap_or_default(),
                }
            }
            _ => {
                let u = s.user.as_ref();
                if let Some(u) = u {
                    self.check(u, "user", |u| rules::check_user(u))?;
                }
                Step::User {
                    name: u.map(|u| u.get_ref().clone()).unwrap_or_default(),
                }
            }
        };
        Ok(step)
    }

    fn nonempty(&self, value: &Spanned<String>, field: &str) -> Checked<String> {
        if value.get_ref().trim().is_empty() {
            return Err(self.invalid(value.span(), field, "is empty"));
        }
        Ok(value.get_ref().clone())
    }

    fn packages(
        &self,
        list: Option<&Spanned<Vec<Spanned<String>>>>,
        field: &str,
    ) -> Checked<Vec<String>> {
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        if list.get_ref().is_empty() {
            return Err(self.invalid(list.span(), field, "lists no package"));
        }
        list.get_ref()
            .iter()
            .map(|p| {
                self.check(p, field, |p| rules::check_package(p))?;
                Ok(p.get_ref().clone())
            })
            .collect()
    }

    fn copy(&self, raw: &Spanned<RawStep>, user: Option<String>) -> Checked<CopyStep> {
        let s = raw.get_ref();
        let src = s.copy.as_ref().map(|c| (c.get_ref().clone(), c.span()));
        let (src, src_span) = src.unwrap_or_default();
        rules::check_copy_src(&src).map_err(|p| self.invalid(src_span, "copy", p))?;
        let Some(dest) = &s.dest else {
            return Err(self.invalid(raw.span(), "dest", "is required by a `copy` step"));
        };
        self.check(dest, "dest", |d| rules::check_guest_path(d))?;
        if let Some(mode) = &s.mode {
            self.check(mode, "mode", |m| rules::check_mode(m))?;
        }
        Ok(CopyStep {
            src,
            dest: dest.get_ref().clone(),
            user,
            mode: s.mode.as_ref().map(|m| m.get_ref().clone()),
            files_hash: None,
        })
    }

    fn start(&self, raw: &Spanned<RawStart>) -> Checked<StartSpec> {
        let s = raw.get_ref();
        let cmd = s
            .cmd
            .as_ref()
            .map(|c| self.nonempty(c, "cmd"))
            .transpose()?;
        let mut checks = Vec::new();
        if let Some(c) = &s.ready_cmd {
            checks.push((
                "ready_cmd",
                c.span(),
                ReadyCheck::Command(self.nonempty(c, "ready_cmd")?),
            ));
        }
        if let Some(p) = &s.ready_port {
            checks.push((
                "ready_port",
                p.span(),
                ReadyCheck::Port(self.positive(p, "ready_port")?),
            ));
        }
        if let Some(d) = &s.ready_delay_ms {
            let delay = Duration::from_millis(*d.get_ref());
            checks.push(("ready_delay_ms", d.span(), ReadyCheck::Delay(delay)));
        }
        let mut checks = checks.into_iter();
        let Some((_, _, ready)) = checks.next() else {
            let problem = "needs one of ready_cmd, ready_port, ready_delay_ms";
            return Err(self.invalid(raw.span(), "start", problem));
        };
        if let Some((field, span, _)) = checks.next() {
            return Err(self.invalid(span, field, "only one ready check may be given"));
        }
        let ready_timeout = match &s.ready_timeout_secs {
            Some(t) => Some(Duration::from_secs(self.positive(t, "ready_timeout_secs")?)),
            None => None,
        };
        Ok(StartSpec {
            cmd,
            ready,
            ready_timeout,
        })
    }
}

mod write;
pub use write::{WriteError, to_toml};

#[cfg(test)]
mod tests;
