//! E2B's Template-builder flow on top of [`TemplateService`]: `POST /v3/templates` creates
//! the template and a waiting build ([`TemplateService::request_e2b`]), the SDK uploads each
//! COPY source by its files hash ([`TemplateService::upload_present`],
//! [`TemplateService::store_upload`]), and `POST /v2/templates/{id}/builds/{build}` sends
//! the steps, which start the waiting build ([`TemplateService::start_e2b`]).

use warren_template::e2b::{self, TemplateBuildStartV2};
use warren_template::model::{Base, TemplateDef};
use warren_template::plan::Force;
use warren_template::registry::{self, BuildRecord, BuildStatus, TemplateRecord};

use super::service::{TemplateError, TemplateService};

impl TemplateService {
    /// E2B step 1 (`POST /v3/templates`): the template (created if new) and a waiting build
    /// whose steps come with [`TemplateService::start_e2b`].
    pub async fn request_e2b(
        &self,
        name: &str,
        tags: Vec<String>,
        resources: warren_template::model::Resources,
    ) -> Result<(TemplateRecord, BuildRecord), TemplateError> {
        let def = TemplateDef {
            name: name.to_owned(),
            tags,
            base: Base::Image,
            steps: Vec::new(),
            start: None,
            resources,
            step_timeout: None,
            default_user: Some(e2b::E2B_DEFAULT_USER.to_owned()),
        };
        let _guard = self.inner.records.lock().await;
        self.record_build(def, &Force::default()).await
    }

    /// E2B step 3 (`POST /v2/templates/{id}/builds/{buildID}`): maps the steps and starts
    /// the waiting build.
    pub async fn start_e2b(
        &self,
        template_id: &str,
        build_id: &str,
        body: &TemplateBuildStartV2,
    ) -> Result<(), TemplateError> {
        let build = {
            let _guard = self.inner.records.lock().await;
            let mut build = self.build_of(template_id, build_id).await?;
            if build.status != BuildStatus::Waiting || self.log_of(build_id).is_some() {
                return Err(TemplateError::AlreadyStarted(build_id.to_owned()));
            }
            // A refused body leaves the build waiting, so the client may send a corrected one
            // (bodies that are not even JSON are refused before reaching here, likewise).
            let (def, force) =
                e2b::map_build(&build.def.name, &build.def.tags, build.def.resources, body)
                    .map_err(|e| TemplateError::Invalid(registry::error_chain(&e)))?;
            build.def = def;
            build.force_all = force.all;
            build.force_steps = force.steps;
            self.save_build(&build).await?;
            build
        };
        self.spawn_build(build, self.uploads_context());
        Ok(())
    }

    /// Whether the upload `hash` (E2B's `filesHash`) is already stored.
    pub fn upload_present(&self, hash: &str) -> Result<bool, TemplateError> {
        check_hash(hash)?;
        Ok(self.uploads_dir().join(hash).is_dir())
    }

    /// Stores an upload: a tar or gzip-compressed tar, unpacked under `uploads/<hash>`.
    pub async fn store_upload(&self, hash: &str, body: Vec<u8>) -> Result<(), TemplateError> {
        check_hash(hash)?;
        let root = self.uploads_dir();
        let hash = hash.to_owned();
        tokio::task::spawn_blocking(move || super::uploads::unpack(&root, &hash, &body))
            .await
            .map_err(|e| TemplateError::Upload(std::io::Error::other(e)))?
            .map_err(TemplateError::Upload)
    }
}

fn check_hash(hash: &str) -> Result<(), TemplateError> {
    if hash.is_empty() || hash.len() > 128 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TemplateError::Invalid(format!(
            "files hash {hash:?} is not a hex digest"
        )));
    }
    Ok(())
}
