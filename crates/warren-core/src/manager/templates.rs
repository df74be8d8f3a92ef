//! What a create starts from: an explicit boot source (template builds), a template's ready
//! snapshot, a snapshot, or a cold boot of the base image.
//!
//! Template names are looked up before snapshots: `name` is the template's current build and
//! `name:tag` a tagged one (`registry::resolve_tag`). A reference that no template answers
//! falls through to the snapshots, so snapshot ids (`abc:default`, `warren/x:v2`) keep
//! working. `base` is the base image's ready snapshot once the server has built it, and a
//! cold boot of the image before that.

use std::path::{Path, PathBuf};

use warren_proto::api::StringMap;
use warren_template::registry::{self, ReadyBuild};

use super::snapshot::{SnapshotSource, read_token};
use super::{BootFrom, CreateSandbox, SandboxManager};
use crate::store::StoreError;

/// A template's ready build and where its snapshot lives.
#[derive(Debug, Clone)]
pub struct TemplateSource {
    /// The ready snapshot's directory.
    pub dir: PathBuf,
    /// The build.
    pub ready: ReadyBuild,
}

/// How a create boots.
#[derive(Debug, Clone, Default)]
pub(super) struct BootPlan {
    /// `None` = cold boot of the base image.
    pub source: Option<SnapshotSource>,
    /// Template defaults, used when the request names none.
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
    /// Template env vars, under the request's own.
    pub env: StringMap,
}

impl SandboxManager {
    /// The ready build `reference` (`name`, `name:tag` or a template id) starts from.
    pub async fn template_source(
        &self,
        reference: &str,
    ) -> Result<Option<TemplateSource>, StoreError> {
        // Every create passes here: build records are read only for a `name:tag`.
        let tag = reference.split_once(':').map(|(_, t)| t.to_owned());
        let with_builds = tag.is_some();
        let (templates, builds) = self
            .inner
            .store
            .call(move |s| {
                let builds = if with_builds {
                    s.list_builds()?
                } else {
                    Vec::new()
                };
                Ok((s.list_templates()?, builds))
            })
            .await?;
        let Some(template) = registry::find(&templates, reference) else {
            return Ok(None);
        };
        let resolved = registry::resolve_tag(template, &builds, tag.as_deref());
        Ok(resolved.map(|ready| TemplateSource {
            dir: PathBuf::from(&ready.snapshot.id),
            ready: ready.clone(),
        }))
    }

    pub(super) async fn boot_plan(&self, cmd: &CreateSandbox) -> Result<BootPlan, StoreError> {
        match &cmd.boot_from {
            Some(BootFrom::Image) => return Ok(BootPlan::default()),
            Some(BootFrom::Dir(dir)) => return Ok(plan_from_dir(dir)),
            None => {}
        }
        if let Some(t) = self.template_source(&cmd.template_id).await? {
            let mut plan = plan_from_dir(&t.dir);
            plan.vcpus = Some(t.ready.resources.vcpus);
            plan.memory_mb = Some(t.ready.resources.memory_mib);
            plan.env = t.ready.state.env.iter().cloned().collect();
            return Ok(plan);
        }
        Ok(BootPlan {
            source: self.snapshot_source(&cmd.template_id).await?,
            ..BootPlan::default()
        })
    }
}

fn plan_from_dir(dir: &Path) -> BootPlan {
    BootPlan {
        source: Some(SnapshotSource {
            dir: dir.to_owned(),
            agent_token: read_token(dir),
        }),
        ..BootPlan::default()
    }
}
