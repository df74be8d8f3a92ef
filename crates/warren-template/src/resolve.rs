//! Resolution of a template's base: the Debian image, or another template's ready build.
//!
//! A template based on another template builds on top of that template's *current ready
//! build* (its top disk layer, its final layer key and its final ENV/WORKDIR/USER state), as
//! E2B's `fromTemplate` does. The base's steps are not replayed, so its COPY sources (which
//! live in the base's own build context) are not needed. Because the child's key chain starts
//! at the base's final key, rebuilding an unchanged child on an unchanged base is fully
//! cached, and a child picks up a rebuilt base at its own next build.
//!
//! The start command is inherited from the nearest template in the chain that has one.
//! The chain is walked through the caller's lookup (the control plane's store, or a map in
//! tests); a chain that comes back to a name already on it is refused as a cycle, even when
//! every template on it has a ready build, since rebuilding any of them would be ill-defined.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::backend::LayerRef;
use crate::model::{Base, StartSpec, TemplateDef};
use crate::run::BuildState;

/// Longest base chain accepted; far beyond real use, it bounds work on corrupt data.
pub const MAX_BASE_DEPTH: usize = 32;

/// What a finished build of a template leaves for templates built on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltBase {
    /// Key after the template's last step (the root of a derived template's key chain).
    pub final_key: String,
    /// Its top disk layer (`None` = the base image itself).
    pub top_layer: Option<LayerRef>,
    /// Its final env vars, working directory and user.
    pub state: BuildState,
    /// Every layer key its top layer depends on (its own and its bases'), for garbage
    /// collection: a derived template keeps its base's layers alive.
    pub layer_keys: Vec<String>,
}

/// Another template as the resolver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseTemplate {
    /// Current definition.
    pub def: TemplateDef,
    /// Its current ready build, if it has one.
    pub built: Option<BuiltBase>,
}

/// Where other templates come from.
pub trait DefinitionLookup {
    /// The template `name`, if it exists.
    fn template(&self, name: &str) -> Option<BaseTemplate>;
}

impl DefinitionLookup for HashMap<String, BaseTemplate> {
    fn template(&self, name: &str) -> Option<BaseTemplate> {
        self.get(name).cloned()
    }
}

/// The resolved base of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedBase {
    /// The Debian base image.
    Image,
    /// Another template's ready build.
    Template {
        /// Its name.
        name: String,
        /// Its build.
        built: BuiltBase,
    },
}

/// A template with its base resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTemplate {
    /// The template being built.
    pub def: TemplateDef,
    /// What its first step builds on.
    pub base: ResolvedBase,
    /// Start command of the nearest template in the chain that has one.
    pub start: Option<StartSpec>,
    /// Names from the template down to the last one before the base image.
    pub chain: Vec<String>,
}

/// Why a base cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A template's base is unknown.
    #[error("template `{template}` is based on `{base}`, which does not exist")]
    MissingBase { template: String, base: String },
    /// The base exists but has never been built successfully.
    #[error("base template `{base}` has no ready build; build it first")]
    BaseNotBuilt { base: String },
    /// The chain returns to a template already on it.
    #[error("templates form a cycle of bases: {}", .chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    /// The chain is longer than [`MAX_BASE_DEPTH`].
    #[error("base chain of `{template}` is deeper than {MAX_BASE_DEPTH}")]
    TooDeep { template: String },
}

/// Resolves `def`'s base using `lookup`. `def` itself is taken as given (it may be a new
/// version not yet stored under its name).
pub fn resolve(
    def: &TemplateDef,
    lookup: &dyn DefinitionLookup,
) -> Result<ResolvedTemplate, ResolveError> {
    let mut chain = vec![def.name.clone()];
    let mut start = def.start.clone();
    let mut direct: Option<BaseTemplate> = None;
    let mut base = def.base.clone();
    while let Base::Template(name) = base {
        if chain.contains(&name) {
            chain.push(name);
            return Err(ResolveError::Cycle { chain });
        }
        if chain.len() >= MAX_BASE_DEPTH {
            return Err(ResolveError::TooDeep {
                template: def.name.clone(),
            });
        }
        let Some(next) = lookup.template(&name) else {
            let template = chain.last().cloned().unwrap_or_default();
            return Err(ResolveError::MissingBase {
                template,
                base: name,
            });
        };
        if start.is_none() {
            start.clone_from(&next.def.start);
        }
        base = next.def.base.clone();
        chain.push(name);
        direct.get_or_insert(next);
    }
    let base = match direct {
        None => ResolvedBase::Image,
        Some(t) => {
            let name = t.def.name.clone();
            let built = t
                .built
                .ok_or_else(|| ResolveError::BaseNotBuilt { base: name.clone() })?;
            ResolvedBase::Template { name, built }
        }
    };
    Ok(ResolvedTemplate {
        def: def.clone(),
        base,
        start,
        chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReadyCheck, Resources, Step};

    fn def(name: &str, base: Base) -> TemplateDef {
        TemplateDef {
            name: name.into(),
            tags: vec![],
            base,
            steps: vec![Step::Run {
                cmd: "x".into(),
                user: None,
                timeout: None,
            }],
            start: None,
            resources: Resources::default(),
            step_timeout: None,
            default_user: None,
        }
    }

    fn built(key: &str) -> Option<BuiltBase> {
        Some(BuiltBase {
            final_key: key.into(),
            top_layer: None,
            state: BuildState::default(),
            layer_keys: vec![],
        })
    }

    fn map(entries: Vec<(TemplateDef, Option<BuiltBase>)>) -> HashMap<String, BaseTemplate> {
        entries
            .into_iter()
            .map(|(def, built)| (def.name.clone(), BaseTemplate { def, built }))
            .collect()
    }

    #[test]
    fn builds_on_the_direct_base_and_inherits_start() {
        let mut a = def("a", Base::Image);
        a.start = Some(StartSpec {
            cmd: Some("serve".into()),
            ready: ReadyCheck::Port(80),
            ready_timeout: None,
        });
        let lookup = map(vec![
            (a, built("ka")),
            (def("b", Base::Template("a".into())), built("kb")),
        ]);
        let r = resolve(&def("c", Base::Template("b".into())), &lookup).unwrap();
        assert_eq!(r.chain, ["c", "b", "a"]);
        match &r.base {
            ResolvedBase::Template { name, built } => {
                assert_eq!((name.as_str(), built.final_key.as_str()), ("b", "kb"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.start.unwrap().cmd.as_deref(), Some("serve"));
        let r = resolve(&def("d", Base::Image), &lookup).unwrap();
        assert_eq!(r.base, ResolvedBase::Image);
    }

    #[test]
    fn refuses_cycles_missing_and_unbuilt_bases() {
        let lookup = map(vec![
            (def("a", Base::Template("b".into())), built("ka")),
            (def("b", Base::Template("a".into())), built("kb")),
            (def("u", Base::Image), None),
        ]);
        match resolve(&def("a", Base::Template("b".into())), &lookup) {
            Err(ResolveError::Cycle { chain }) => assert_eq!(chain, ["a", "b", "a"]),
            other => panic!("expected a cycle, got {other:?}"),
        }
        let selfish = def("s", Base::Template("s".into()));
        assert!(matches!(
            resolve(&selfish, &lookup),
            Err(ResolveError::Cycle { .. })
        ));
        let err = resolve(&def("o", Base::Template("nobody".into())), &lookup).unwrap_err();
        assert!(err.to_string().contains("`nobody`"), "{err}");
        let err = resolve(&def("o", Base::Template("u".into())), &lookup).unwrap_err();
        assert!(matches!(err, ResolveError::BaseNotBuilt { .. }), "{err}");
    }
}
