//! Templates: submitting a template file with its build context, following a build's log,
//! and listing, tagging, rebuilding and deleting templates.
//!
//! A template file (TOML, see `docs/templates.md`) is built by the server from an archive:
//! [`pack_template`] reads the file, finds the sources of its `copy` steps (relative to the
//! file's folder) and packs them with the file, renamed `template.toml`, into a tar.gz that
//! [`Client::submit_template_archive`] sends. The build then runs on the server; its state
//! and log come from [`Client::template_build_status`], read by offset like E2B's SDK does.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use reqwest::Method;
use warren_proto::api::{RebuildTemplate, TemplateBuildStarted, TemplateInfo};
use warren_template::e2b::{
    AssignTemplateTagsRequest, AssignedTemplateTags, DeleteTemplateTagsRequest, TemplateBuildInfo,
    TemplateTag,
};
use warren_template::file::TemplateFileError;
use warren_template::model::{Step, TemplateDef};

use crate::client::{Client, json_body, not_found_as_false, send_checked, to_json};
use crate::error::ClientError;
use crate::query::encode_segment;

/// Name of the template file inside a packed archive.
pub const ARCHIVE_TEMPLATE_FILE: &str = "template.toml";

/// Why a template file could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The template file could not be read.
    #[error("cannot read the template file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The template file is invalid (the message names line and column).
    #[error("invalid template file {}", .path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: TemplateFileError,
    },
    /// A `copy` source does not exist or cannot be read.
    #[error("cannot read `{src}` (a copy source, at {})", .path.display())]
    Source {
        src: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `copy` source would put another file at `template.toml` in the archive.
    #[error(
        "a copy source includes {}, which is not this template file; the archive's \
         template.toml must be the template file, so rename one of them",
        .0.display()
    )]
    TemplateFileClash(PathBuf),
    /// Writing the archive failed.
    #[error("cannot pack the build context")]
    Archive(#[source] std::io::Error),
    /// A definition made in code uses what template files cannot express.
    #[error("cannot write the definition as a template file")]
    Write(#[source] warren_template::file::WriteError),
}

/// The folder-relative, normalized paths of a template's `copy` sources (an empty path is
/// the whole folder), without sources inside another source.
pub fn copy_sources(steps: &[Step]) -> Vec<PathBuf> {
    let mut all = BTreeSet::new();
    for step in steps {
        if let Step::Copy(c) = step
            && c.files_hash.is_none()
        {
            let mut rel = PathBuf::new();
            for part in Path::new(&c.src).components() {
                match part {
                    Component::Normal(p) => rel.push(p),
                    Component::ParentDir => {
                        rel.pop();
                    }
                    _ => {}
                }
            }
            all.insert(rel);
        }
    }
    let mut out: Vec<PathBuf> = Vec::new();
    // Sorted order puts a folder before everything inside it.
    for src in all {
        if !out.iter().any(|kept| src.starts_with(kept)) {
            out.push(src);
        }
    }
    out
}

/// Packs the template file at `path` and its `copy` sources into a tar.gz: the file as
/// `template.toml` at the root, each source (file or folder) at its path relative to the
/// file's folder. The file is validated first, so a bad file fails here with its line and
/// column. Links inside copied folders are kept as links (the server refuses those that
/// leave the build context); a source that is itself a link is packed as what it points to.
pub fn pack_template(path: &Path) -> Result<Vec<u8>, PackError> {
    let text = std::fs::read(path).map_err(|source| PackError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (def, ctx) = warren_template::file::load(path).map_err(|e| match e {
        TemplateFileError::Read { path, source } => PackError::Read { path, source },
        other => PackError::Invalid {
            path: path.to_owned(),
            source: other,
        },
    })?;
    let dir = ctx.dir.unwrap_or_else(|| PathBuf::from("."));
    let sources = copy_sources(&def.steps);
    check_clash(path, &dir, &sources)?;
    pack(&text, std::fs::metadata(path).ok(), &dir, &sources)
}

/// Packs a definition made in code, written as a template file (`file::to_toml`), with its
/// `copy` sources taken from `context_dir`.
pub fn pack_definition(def: &TemplateDef, context_dir: &Path) -> Result<Vec<u8>, PackError> {
    let text = warren_template::file::to_toml(def).map_err(PackError::Write)?;
    let sources = copy_sources(&def.steps);
    if sources
        .iter()
        .any(|s| s.as_os_str().is_empty() || s == Path::new(ARCHIVE_TEMPLATE_FILE))
        && context_dir.join(ARCHIVE_TEMPLATE_FILE).exists()
    {
        return Err(PackError::TemplateFileClash(
            context_dir.join(ARCHIVE_TEMPLATE_FILE),
        ));
    }
    pack(text.as_bytes(), None, context_dir, &sources)
}

fn pack(
    text: &[u8],
    file_meta: Option<std::fs::Metadata>,
    dir: &Path,
    sources: &[PathBuf],
) -> Result<Vec<u8>, PackError> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    // Modification times travel with the files (as with a local copy); owners do not
    // matter, the server does not restore them.
    tar.follow_symlinks(false);
    let mut header = tar::Header::new_gnu();
    if let Some(meta) = &file_meta {
        header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    }
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, ARCHIVE_TEMPLATE_FILE, text)
        .map_err(PackError::Archive)?;
    for rel in sources {
        let full = dir.join(rel);
        let source_error = |source| PackError::Source {
            src: rel.display().to_string(),
            path: full.clone(),
            source,
        };
        let meta = std::fs::metadata(&full).map_err(source_error)?;
        if rel.as_os_str().is_empty() {
            // The whole folder: its entries at the root, except the template file.
            let entries = std::fs::read_dir(&full).map_err(source_error)?;
            for entry in entries {
                let entry = entry.map_err(source_error)?;
                let name = PathBuf::from(entry.file_name());
                if name == Path::new(ARCHIVE_TEMPLATE_FILE) {
                    continue;
                }
                append(&mut tar, &name, &entry.path(), false).map_err(source_error)?;
            }
        } else {
            append(&mut tar, rel, &full, meta.is_dir()).map_err(source_error)?;
        }
    }
    let gz = tar.into_inner().map_err(PackError::Archive)?;
    gz.finish().map_err(PackError::Archive)
}

/// Appends `full` as `name`: folders recursively, a top-level link as its target.
fn append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    name: &Path,
    full: &Path,
    follow: bool,
) -> std::io::Result<()> {
    let meta = if follow {
        std::fs::metadata(full)?
    } else {
        std::fs::symlink_metadata(full)?
    };
    if meta.is_dir() {
        tar.append_dir_all(name, full)
    } else if meta.is_file() {
        let mut file = std::fs::File::open(full)?;
        tar.append_file(name, &mut file)
    } else {
        tar.append_path_with_name(full, name)
    }
}

/// Refuses sources that would pack a different `template.toml` at the archive's root.
fn check_clash(path: &Path, dir: &Path, sources: &[PathBuf]) -> Result<(), PackError> {
    let root_file = dir.join(ARCHIVE_TEMPLATE_FILE);
    let packs_root_file = sources
        .iter()
        .any(|s| s.as_os_str().is_empty() || s == Path::new(ARCHIVE_TEMPLATE_FILE));
    if !packs_root_file || !root_file.exists() {
        return Ok(());
    }
    let same = match (root_file.canonicalize(), path.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(PackError::TemplateFileClash(root_file))
    }
}

impl Client {
    /// Starts a build from an archive made by [`pack_template`]
    /// (`POST /warren/templates/builds`); `force` rebuilds every step.
    pub async fn submit_template_archive(
        &self,
        archive: Vec<u8>,
        force: bool,
    ) -> Result<TemplateBuildStarted, ClientError> {
        let path = format!("/warren/templates/builds?force={force}");
        let step = "POST /warren/templates/builds".to_owned();
        let req = self
            .request(Method::POST, &path)
            .header("content-type", "application/gzip")
            .body(archive);
        json_body(&step, send_checked(&step, req).await?).await
    }

    /// A build's state and the log entries after the first `logs_offset`.
    pub async fn template_build_status(
        &self,
        template_id: &str,
        build_id: &str,
        logs_offset: usize,
    ) -> Result<TemplateBuildInfo, ClientError> {
        let path = format!(
            "/templates/{}/builds/{}/status?logsOffset={logs_offset}",
            encode_segment(template_id),
            encode_segment(build_id)
        );
        Ok(self.call(Method::GET, &path, None).await?.0)
    }

    /// All templates, in name order (without their builds).
    pub async fn list_templates(&self) -> Result<Vec<TemplateInfo>, ClientError> {
        Ok(self.call(Method::GET, "/templates", None).await?.0)
    }

    /// One template by name or id, with its builds (newest first).
    pub async fn get_template(&self, name_or_id: &str) -> Result<TemplateInfo, ClientError> {
        let path = format!("/templates/{}", encode_segment(name_or_id));
        Ok(self.call(Method::GET, &path, None).await?.0)
    }

    /// Deletes a template by name or id; `Ok(false)` if there is none. (The route is the
    /// one snapshots are deleted with: a snapshot of that id or name is deleted too.)
    pub async fn delete_template(&self, name_or_id: &str) -> Result<bool, ClientError> {
        let path = format!("/templates/{}", encode_segment(name_or_id));
        not_found_as_false(self.call_empty(Method::DELETE, &path, None).await)
    }

    /// Points `tags` at a ready build: `target` is `name` (its current build) or `name:tag`.
    pub async fn tag_template(
        &self,
        target: &str,
        tags: &[String],
    ) -> Result<AssignedTemplateTags, ClientError> {
        let body = to_json(&AssignTemplateTagsRequest {
            target: target.to_owned(),
            tags: tags.to_vec(),
        })?;
        Ok(self
            .call(Method::POST, "/templates/tags", Some(&body))
            .await?
            .0)
    }

    /// Removes tags of a template (`default` cannot be removed).
    pub async fn untag_template(&self, name: &str, tags: &[String]) -> Result<(), ClientError> {
        let body = to_json(&DeleteTemplateTagsRequest {
            name: name.to_owned(),
            tags: tags.to_vec(),
        })?;
        self.call_empty(Method::DELETE, "/templates/tags", Some(&body))
            .await
            .map(drop)
    }

    /// The tags of a template.
    pub async fn template_tags(&self, name_or_id: &str) -> Result<Vec<TemplateTag>, ClientError> {
        let path = format!("/templates/{}/tags", encode_segment(name_or_id));
        Ok(self.call(Method::GET, &path, None).await?.0)
    }

    /// Starts a new build of a template's current definition; `force` rebuilds every step.
    pub async fn rebuild_template(
        &self,
        name_or_id: &str,
        force: bool,
    ) -> Result<TemplateBuildStarted, ClientError> {
        let path = format!("/templates/{}", encode_segment(name_or_id));
        let body = to_json(&RebuildTemplate { force: Some(force) })?;
        Ok(self.call(Method::POST, &path, Some(&body)).await?.0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read as _;

    use super::*;

    fn unpack(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
        for entry in tar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            if entry.header().entry_type().is_dir() {
                continue;
            }
            let name = entry.path().expect("path").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            out.insert(name, data);
        }
        out
    }

    fn write(dir: &Path, rel: &str, content: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    #[test]
    fn a_definition_made_in_code_packs_as_its_file() {
        use warren_template::model::{Base, CopyStep, Resources};
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "app/main.py", "print(1)");
        write(dir.path(), "unrelated.txt", "x");
        let def = TemplateDef {
            name: "from-code".into(),
            tags: Vec::new(),
            base: Base::Image,
            steps: vec![Step::Copy(CopyStep {
                src: "app".into(),
                dest: "/srv/app".into(),
                user: None,
                mode: None,
                files_hash: None,
            })],
            start: None,
            resources: Resources::default(),
            step_timeout: None,
            default_user: None,
        };
        let files = unpack(&pack_definition(&def, dir.path()).expect("pack"));
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, ["app/main.py", ARCHIVE_TEMPLATE_FILE]);
        let text = String::from_utf8(files[ARCHIVE_TEMPLATE_FILE].clone()).expect("utf-8");
        assert_eq!(warren_template::file::parse(&text).expect("parse"), def);
    }

    #[test]
    fn packs_the_file_and_its_copy_sources_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = "name = \"app\"\n\
                    [[steps]]\ncopy = \"src\"\ndest = \"/app\"\n\
                    [[steps]]\ncopy = \"./src/main.py\"\ndest = \"/main.py\"\n\
                    [[steps]]\ncopy = \"conf/a/../settings.ini\"\ndest = \"/etc/x.ini\"\n";
        write(dir.path(), "app.toml", file);
        write(dir.path(), "src/main.py", "print(1)\n");
        write(dir.path(), "src/lib/util.py", "x = 1\n");
        write(dir.path(), "conf/settings.ini", "[a]\n");
        write(dir.path(), "secret.txt", "not packed\n");
        let archive = pack_template(&dir.path().join("app.toml")).expect("pack");
        let files = unpack(&archive);
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "conf/settings.ini",
                "src/lib/util.py",
                "src/main.py",
                "template.toml"
            ]
        );
        assert_eq!(files["template.toml"], file.as_bytes());
    }

    #[test]
    fn the_whole_folder_is_packed_for_a_dot_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = "name = \"app\"\n[[steps]]\ncopy = \".\"\ndest = \"/app\"\n";
        write(dir.path(), "template.toml", file);
        write(dir.path(), "a.txt", "a");
        write(dir.path(), "sub/b.txt", "b");
        let archive = pack_template(&dir.path().join("template.toml")).expect("pack");
        let files = unpack(&archive);
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, ["a.txt", "sub/b.txt", "template.toml"]);
    }

    #[test]
    fn bad_files_and_missing_sources_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "bad.toml",
            "name = \"app\"\n[[steps]]\nrnu = \"x\"\n",
        );
        let err = pack_template(&dir.path().join("bad.toml")).expect_err("invalid");
        let text = format!(
            "{err}: {}",
            std::error::Error::source(&err).expect("source")
        );
        assert!(text.contains("line 3, column 1"), "{text}");
        write(
            dir.path(),
            "missing.toml",
            "name = \"app\"\n[[steps]]\ncopy = \"nope\"\ndest = \"/x\"\n",
        );
        let err = pack_template(&dir.path().join("missing.toml")).expect_err("missing");
        assert!(matches!(err, PackError::Source { .. }), "{err}");
        let err = pack_template(&dir.path().join("absent.toml")).expect_err("absent");
        assert!(matches!(err, PackError::Read { .. }), "{err}");
    }

    #[test]
    fn another_template_toml_cannot_be_packed() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "template.toml", "other");
        for src in ["template.toml", "."] {
            let file = format!("name = \"app\"\n[[steps]]\ncopy = \"{src}\"\ndest = \"/t\"\n");
            write(dir.path(), "app.toml", &file);
            let err = pack_template(&dir.path().join("app.toml")).expect_err("clash");
            assert!(matches!(err, PackError::TemplateFileClash(_)), "{err}");
        }
    }

    #[test]
    fn nested_sources_are_packed_once() {
        let steps: Vec<Step> = ["a", "a/b", "./c/../a/b/c", "d"]
            .iter()
            .map(|src| {
                Step::Copy(warren_template::model::CopyStep {
                    src: (*src).to_owned(),
                    dest: "/x".into(),
                    user: None,
                    mode: None,
                    files_hash: None,
                })
            })
            .collect();
        assert_eq!(
            copy_sources(&steps),
            [PathBuf::from("a"), PathBuf::from("d")]
        );
    }
}
