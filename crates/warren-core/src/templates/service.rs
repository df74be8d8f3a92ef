//! The template commands behind the REST API and the CLI: submit a build, follow its log,
//! list, get, tag and delete templates, and keep the built-in `base` template (the base
//! image's ready snapshot) current.
//!
//! Records live in the store (see `store/templates.rs`); the registry's pure functions decide
//! every change, under one async lock so two builds finishing together cannot lose an update.
//! A build runs in its own task: [`TemplateService::submit`] answers at once with the build
//! record, and the build's log is read by offset ([`TemplateService::status`]) while it runs.
//! A running build's log is kept in memory; when the build ends it is saved to disk
//! (`build_logs.rs`) and served from there, so a restarted server still has it. A build that
//! was running when the server stopped is marked as failed on the next start, without log
//! lines.
//!
//! Known shortcoming: cached layers (`<data>/templates/layers/<key>`) are never deleted, even
//! when no build refers to them any more (`registry::layers_in_use` says which ones are
//! needed, but nothing prunes the rest yet), so disk use grows with every changed step.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use warren_template::builder::{self, BuildOptions};
use warren_template::e2b::{self, TemplateBuildInfo};
use warren_template::layers::{self, BuildContext};
use warren_template::logs::BuildLog;
use warren_template::model::{BASE_IMAGE_NAME, Base, TemplateDef};
use warren_template::plan::Force;
use warren_template::registry::{
    self, BuildFailure, BuildRecord, BuildStatus, RegistryError, TemplateRecord,
};

use super::backend::{BUILD_METADATA, VmBuildBackend};
use super::build_logs;
use crate::ids;
use crate::manager::{ErrorKind, ListFilter, SandboxManager};
use crate::store::{Store, StoreError};

/// Failure of a template command.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {0} not found")]
    NotFound(String),
    #[error("build {0} not found")]
    BuildNotFound(String),
    #[error("build {0} was already started")]
    AlreadyStarted(String),
    #[error("invalid template: {0}")]
    Invalid(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("invalid upload")]
    Upload(#[source] std::io::Error),
    #[error("cannot record the template")]
    Store(#[from] StoreError),
}

impl TemplateError {
    /// The error's class, for status codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TemplateError::NotFound(_) | TemplateError::BuildNotFound(_) => ErrorKind::NotFound,
            TemplateError::Registry(RegistryError::NotFound { .. }) => ErrorKind::NotFound,
            TemplateError::AlreadyStarted(_)
            | TemplateError::Registry(RegistryError::InUseAsBase { .. }) => ErrorKind::Conflict,
            TemplateError::Invalid(_) | TemplateError::Upload(_) | TemplateError::Registry(_) => {
                ErrorKind::InvalidRequest
            }
            TemplateError::Store(_) => ErrorKind::Internal,
        }
    }
}

pub(super) struct Inner {
    manager: SandboxManager,
    backend: VmBuildBackend,
    opts: BuildOptions,
    /// Build id → its log, for builds run by this server process.
    logs: Mutex<HashMap<String, BuildLog>>,
    /// Serializes read-modify-write of template and build records.
    pub(super) records: tokio::sync::Mutex<()>,
}

/// Handle to the template commands; cheap to clone.
#[derive(Clone)]
pub struct TemplateService {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for TemplateService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateService").finish_non_exhaustive()
    }
}

impl TemplateService {
    /// Template commands over `manager`, building on the base image `image_id`.
    pub fn new(manager: SandboxManager, image_id: String, opts: BuildOptions) -> Self {
        let backend = VmBuildBackend::new(manager.clone(), image_id);
        TemplateService {
            inner: Arc::new(Inner {
                manager,
                backend,
                opts,
                logs: Mutex::new(HashMap::new()),
                records: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn store(&self) -> &Store {
        self.inner.manager.store()
    }

    /// Stores a template record.
    async fn save_template(&self, t: &TemplateRecord) -> Result<(), StoreError> {
        let t = t.clone();
        self.store().call(move |s| s.put_template(&t)).await
    }

    /// Stores a build record.
    pub(super) async fn save_build(&self, b: &BuildRecord) -> Result<(), StoreError> {
        let b = b.clone();
        self.store().call(move |s| s.put_build(&b)).await
    }

    /// Records a waiting build of `def` for the template of that name, creating the
    /// template first if there is none. The caller holds the records lock.
    pub(super) async fn record_build(
        &self,
        def: TemplateDef,
        force: &Force,
    ) -> Result<(TemplateRecord, BuildRecord), TemplateError> {
        let (templates, _) = self.records().await?;
        let now = chrono::Utc::now();
        let template = match registry::find(&templates, &def.name) {
            Some(t) if t.def.name == def.name => t.clone(),
            _ => {
                let t = registry::create(&templates, &template_id(), def.clone(), now)?;
                self.save_template(&t).await?;
                t
            }
        };
        let build = registry::start_build(&template, def, &build_id(), force, now);
        self.save_build(&build).await?;
        Ok((template, build))
    }

    /// Where COPY sources of E2B uploads and of rebuilds come from.
    pub(super) fn uploads_context(&self) -> BuildContext {
        BuildContext {
            dir: None,
            uploads: Some(self.uploads_dir()),
        }
    }

    pub(super) fn uploads_dir(&self) -> PathBuf {
        self.inner.manager.config().templates_dir().join("uploads")
    }

    async fn records(&self) -> Result<(Vec<TemplateRecord>, Vec<BuildRecord>), StoreError> {
        self.store()
            .call(|s| Ok((s.list_templates()?, s.list_builds()?)))
            .await
    }

    /// After a restart: fails builds the previous process left unfinished and stops their
    /// VMs (a build cannot be resumed midway).
    pub async fn recover(&self) -> Result<(), TemplateError> {
        let _guard = self.inner.records.lock().await;
        let (_, builds) = self.records().await?;
        for mut b in builds {
            if matches!(b.status, BuildStatus::Waiting | BuildStatus::Building) {
                b.status = BuildStatus::Error;
                b.finished_at = Some(chrono::Utc::now());
                b.failure = Some(BuildFailure {
                    message: "the server stopped while this build was running".into(),
                    step: None,
                    exit_code: None,
                    output: None,
                });
                self.save_build(&b).await?;
            }
        }
        // Build contexts of the previous process's builds are no longer needed.
        let _ =
            std::fs::remove_dir_all(self.inner.manager.config().templates_dir().join("contexts"));
        let filter = ListFilter {
            limit: usize::MAX,
            ..ListFilter::default()
        };
        if let Ok(page) = self.inner.manager.list(&filter) {
            for sandbox in page.items {
                let building = sandbox
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.contains_key(BUILD_METADATA));
                if building {
                    let _ = self.inner.manager.kill(&sandbox.sandbox_id).await;
                }
            }
        }
        Ok(())
    }

    /// Builds the `base` template (the base image booted and snapshotted, so that creating
    /// a sandbox from `base` is a restore) unless its ready build matches the current image.
    pub async fn ensure_base(&self) -> Result<(), TemplateError> {
        let root = layers::base_key(&self.inner.backend_image_id());
        let (templates, _) = self.records().await?;
        let current = registry::find(&templates, BASE_IMAGE_NAME).cloned();
        if let Some(t) = &current
            && t.current.as_ref().is_some_and(|c| c.final_key == root)
        {
            return Ok(());
        }
        let def = TemplateDef {
            name: BASE_IMAGE_NAME.to_owned(),
            tags: Vec::new(),
            base: Base::Image,
            steps: Vec::new(),
            start: None,
            resources: Default::default(),
            step_timeout: None,
            default_user: None,
        };
        let now = chrono::Utc::now();
        // `registry::create` refuses the reserved name; the built-in record is made here.
        let template = current.unwrap_or_else(|| TemplateRecord {
            template_id: BASE_IMAGE_NAME.to_owned(),
            def: def.clone(),
            public: true,
            current: None,
            tags: BTreeMap::new(),
            created_at: now,
            updated_at: now,
        });
        self.save_template(&template).await?;
        let build = registry::start_build(&template, def, &build_id(), &Force::default(), now);
        self.save_build(&build).await?;
        tracing::info!(build_id = %build.build_id, "building the base template");
        self.run_build(build, BuildContext::default()).await;
        Ok(())
    }

    /// Starts a build of `def` (a new template, or a new build of the template of that
    /// name); returns at once.
    pub async fn submit(
        &self,
        def: TemplateDef,
        context: BuildContext,
        force: Force,
    ) -> Result<(TemplateRecord, BuildRecord), TemplateError> {
        let (template, build) = {
            let _guard = self.inner.records.lock().await;
            self.record_build(def, &force).await?
        };
        self.spawn_build(build.clone(), context);
        Ok((template, build))
    }

    /// A build's state and the log entries after `offset`.
    pub async fn status(
        &self,
        template_id: &str,
        build_id: &str,
        offset: usize,
    ) -> Result<TemplateBuildInfo, TemplateError> {
        let build = self.build_of(template_id, build_id).await?;
        let entries = match self.log_of(build_id) {
            Some(log) => log.since(offset),
            None => build_logs::load(&self.templates_dir(), build_id)
                .and_then(|all| all.get(offset..).map(<[_]>::to_vec))
                .unwrap_or_default(),
        };
        Ok(e2b::build_info(
            &build.template_id,
            build_id,
            build.status,
            entries,
            build.failure.as_ref(),
        ))
    }

    fn templates_dir(&self) -> PathBuf {
        self.inner.manager.config().templates_dir()
    }

    /// The log of a build this server process runs, or ran and could not save (readers may
    /// `wait_beyond` it); finished builds' logs are read with [`TemplateService::status`].
    pub fn log_of(&self, build_id: &str) -> Option<BuildLog> {
        let logs = self.inner.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.get(build_id).cloned()
    }

    /// All templates (name order) with their builds.
    pub async fn list(&self) -> Result<Vec<(TemplateRecord, Vec<BuildRecord>)>, TemplateError> {
        let (templates, builds) = self.records().await?;
        Ok(templates
            .into_iter()
            .map(|t| {
                let own = builds
                    .iter()
                    .filter(|b| b.template_id == t.template_id)
                    .cloned()
                    .collect();
                (t, own)
            })
            .collect())
    }

    /// One template by name or id, with its builds.
    pub async fn get(
        &self,
        name_or_id: &str,
    ) -> Result<(TemplateRecord, Vec<BuildRecord>), TemplateError> {
        self.list()
            .await?
            .into_iter()
            .find(|(t, _)| t.def.name == name_or_id || t.template_id == name_or_id)
            .ok_or_else(|| TemplateError::NotFound(name_or_id.to_owned()))
    }

    /// Starts a new build of a template's current definition.
    pub async fn rebuild(
        &self,
        name_or_id: &str,
        force: bool,
    ) -> Result<BuildRecord, TemplateError> {
        let build = {
            let _guard = self.inner.records.lock().await;
            let (template, _) = self.get(name_or_id).await?;
            if template.def.steps.iter().any(|s| {
                matches!(s,
                warren_template::model::Step::Copy(c) if c.files_hash.is_none())
            }) {
                return Err(TemplateError::Invalid(
                    "this template copies files from a local folder; build it again from its \
                     file with `warren template build`"
                        .into(),
                ));
            }
            let build = registry::rebuild(&template, &build_id(), force, chrono::Utc::now());
            self.save_build(&build).await?;
            build
        };
        self.spawn_build(build.clone(), self.uploads_context());
        Ok(build)
    }

    /// Points `tags` at a ready build (`target` = `name:tag` or `name`, its current build).
    pub async fn tag(
        &self,
        target: &str,
        tags: &[String],
    ) -> Result<(TemplateRecord, String), TemplateError> {
        let _guard = self.inner.records.lock().await;
        let (templates, builds) = self.records().await?;
        let mut template = registry::find(&templates, target)
            .cloned()
            .ok_or_else(|| TemplateError::NotFound(target.to_owned()))?;
        let tag = target.split_once(':').map(|(_, t)| t);
        let build_id = registry::resolve_tag(&template, &builds, tag)
            .map(|r| r.build_id.clone())
            .ok_or_else(|| TemplateError::NotFound(target.to_owned()))?;
        registry::tag(&mut template, &builds, &build_id, tags, chrono::Utc::now())?;
        self.save_template(&template).await?;
        Ok((template, build_id))
    }

    /// Removes tags of a template.
    pub async fn untag(&self, name: &str, tags: &[String]) -> Result<(), TemplateError> {
        let _guard = self.inner.records.lock().await;
        let (templates, _) = self.records().await?;
        let mut template = registry::find(&templates, name)
            .cloned()
            .ok_or_else(|| TemplateError::NotFound(name.to_owned()))?;
        registry::untag(&mut template, tags, chrono::Utc::now())?;
        self.save_template(&template).await?;
        Ok(())
    }

    /// Deletes a template and its ready snapshots; `false` when there is none. Sandboxes
    /// running from it keep working (their memory mappings and disk layers stay until they
    /// end, as with snapshots). The built-in `base` cannot be deleted.
    pub async fn delete(&self, name_or_id: &str) -> Result<bool, TemplateError> {
        let _guard = self.inner.records.lock().await;
        let (templates, builds) = self.records().await?;
        let Some(template) = registry::find(&templates, name_or_id).cloned() else {
            return Ok(false);
        };
        if template.template_id == BASE_IMAGE_NAME {
            return Err(TemplateError::Invalid(
                "the base template cannot be deleted".into(),
            ));
        }
        registry::check_delete(&templates, &template.def.name)?;
        let id = template.template_id.clone();
        self.store().call(move |s| s.delete_template(&id)).await?;
        for b in builds
            .iter()
            .filter(|b| b.template_id == template.template_id)
        {
            if let Some(ready) = &b.ready {
                let _ = std::fs::remove_dir_all(&ready.snapshot.id);
            }
            build_logs::remove(&self.templates_dir(), &b.build_id);
        }
        tracing::info!(template = %template.def.name, "template deleted");
        // Frees what only the deleted snapshots held: disk layers, standby VMs.
        self.inner.manager.collect_garbage().await;
        Ok(true)
    }

    pub(super) async fn build_of(
        &self,
        template_id: &str,
        build_id: &str,
    ) -> Result<BuildRecord, TemplateError> {
        let id = build_id.to_owned();
        let build = self
            .store()
            .call(move |s| s.get_build(&id))
            .await?
            .ok_or_else(|| TemplateError::BuildNotFound(build_id.to_owned()))?;
        let (templates, _) = self.records().await?;
        let owner = registry::find(&templates, template_id)
            .ok_or_else(|| TemplateError::NotFound(template_id.to_owned()))?;
        if owner.template_id != build.template_id {
            return Err(TemplateError::BuildNotFound(build_id.to_owned()));
        }
        Ok(build)
    }

    pub(super) fn spawn_build(&self, build: BuildRecord, context: BuildContext) {
        let service = self.clone();
        tokio::spawn(async move { service.run_build(build, context).await });
    }

    /// Runs a build to its end and records the outcome.
    async fn run_build(&self, mut build: BuildRecord, context: BuildContext) {
        let log = BuildLog::new();
        {
            let mut logs = self.inner.logs.lock().unwrap_or_else(|p| p.into_inner());
            logs.insert(build.build_id.clone(), log.clone());
        }
        registry::mark_building(&mut build);
        if let Err(e) = self.save_build(&build).await {
            tracing::warn!(build_id = %build.build_id, error = %e, "cannot record a build");
        }
        let lookup = match self.records().await {
            Ok((templates, _)) => registry::lookup(&templates),
            Err(_) => HashMap::new(),
        };
        let req = registry::build_request(&build, context);
        let result =
            builder::build(&self.inner.backend, &lookup, &req, &self.inner.opts, &log).await;
        if let Err(e) = self.record_outcome(&mut build, &result).await {
            tracing::warn!(build_id = %build.build_id, error = %e,
                "cannot record the end of a build");
        }
        match build_logs::save(&self.templates_dir(), &build.build_id, &log.since(0)) {
            // From now on the saved copy is served; readers still waiting hold their own.
            Ok(()) => {
                let mut logs = self.inner.logs.lock().unwrap_or_else(|p| p.into_inner());
                logs.remove(&build.build_id);
            }
            Err(e) => tracing::warn!(build_id = %build.build_id, error = %e,
                "cannot save a build's log; it is served from memory until the server stops"),
        }
    }

    async fn record_outcome(
        &self,
        build: &mut BuildRecord,
        result: &Result<builder::BuildOutcome, builder::BuildError>,
    ) -> Result<(), TemplateError> {
        let _guard = self.inner.records.lock().await;
        let (templates, _) = self.records().await?;
        let template = templates
            .into_iter()
            .find(|t| t.template_id == build.template_id);
        let Some(mut template) = template else {
            // Deleted while building: its snapshot has no owner.
            if let Ok(outcome) = result {
                let _ = std::fs::remove_dir_all(&outcome.snapshot.id);
            }
            return Ok(());
        };
        registry::finish_build(&mut template, build, result, chrono::Utc::now());
        let (t, b) = (template.clone(), build.clone());
        self.store().call(move |s| s.finish_build(&t, &b)).await?;
        if result.is_ok() {
            tracing::info!(template = %template.def.name, build_id = %build.build_id,
                "template build ready");
        }
        Ok(())
    }
}

impl Inner {
    fn backend_image_id(&self) -> String {
        use warren_template::backend::BuildBackend as _;
        self.backend.base_image_id()
    }
}

fn template_id() -> String {
    ids::secret(20).to_ascii_lowercase()
}

fn build_id() -> String {
    ids::secret(24).to_ascii_lowercase()
}
