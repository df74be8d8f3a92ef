//! Layer keys: the content addresses of the disk layers a build produces.
//!
//! Every step has a key, chained from the one before it:
//!
//! ```text
//! key(base)   = sha256("warren-template/v1" 0 "base" 0 <base image id>)
//! key(step i) = sha256("warren-template/v1" 0 key(step i-1) 0 <canonical step JSON> 0
//!                      <hash of the copied tree, COPY only> 0 <force nonce, if forced>)
//! ```
//!
//! so a change to step 5 changes keys 5.. and leaves 1–4 (and their cached layers) alone.
//! The canonical step JSON leaves out timeouts, which do not change what a step produces.
//! A COPY source is hashed by walking it in byte order of relative paths and hashing, per
//! entry, its kind, relative path, permission bits and content (files) or target (symlinks);
//! uploads named by E2B's `filesHash` are hashed the same way from disk rather than trusted,
//! since one tenant's claimed hash must not pick another tenant's cached layer.
//! Paths that leave the build context, lexically or through a symlink, are refused.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::model::{CopyStep, Step};
use crate::rules;

const DOMAIN: &[u8] = b"warren-template/v1";

/// Where COPY sources are read from.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// Folder that relative COPY sources are taken from (the folder of a template file).
    pub dir: Option<PathBuf>,
    /// Folder holding E2B uploads, one sub-folder per `filesHash` (unpacked by the API).
    pub uploads: Option<PathBuf>,
}

/// Why a COPY source cannot be located or hashed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The step needs a context that the build was not given.
    #[error("COPY `{src}` needs a build context, and none was given")]
    NoContext { src: String },
    /// The source (or a symlink inside it) points outside the build context.
    #[error("COPY source `{src}` leaves the build context")]
    Escapes { src: String },
    /// An E2B `filesHash` that is not a plain hex digest.
    #[error("filesHash `{hash}` is not a hex digest")]
    BadFilesHash { hash: String },
    /// Reading the source failed.
    #[error("cannot read COPY source {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Key of the base image layer (`base_image_id` names the exact base image build).
pub fn base_key(base_image_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [DOMAIN, b"base", base_image_id.as_bytes()] {
        h.update(part);
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Key of a step on top of `parent`. `copied` is [`hash_tree`] of a COPY's source;
/// `force_nonce` (the build id) makes a forced step, and every step after it, unique.
pub fn step_key(
    parent: &str,
    step: &Step,
    copied: Option<&str>,
    force_nonce: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    for part in [
        DOMAIN,
        parent.as_bytes(),
        canonical_step(step).as_bytes(),
        copied.unwrap_or("").as_bytes(),
        force_nonce.unwrap_or("").as_bytes(),
    ] {
        h.update(part);
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// The step's identity: its JSON form without the timeouts.
pub fn canonical_step(step: &Step) -> String {
    let mut step = step.clone();
    match &mut step {
        Step::Run { timeout, .. }
        | Step::Apt { timeout, .. }
        | Step::Pip { timeout, .. }
        | Step::Npm { timeout, .. } => *timeout = None,
        _ => {}
    }
    // A plain enum of strings and numbers always serializes; the fallback is unreachable.
    serde_json::to_string(&step).unwrap_or_default()
}

/// Host path of a COPY source, checked to lie inside its context.
pub fn locate_copy_source(ctx: &BuildContext, copy: &CopyStep) -> Result<PathBuf, LayerError> {
    let root = match &copy.files_hash {
        Some(hash) => {
            if hash.is_empty() || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(LayerError::BadFilesHash { hash: hash.clone() });
            }
            ctx.uploads.as_ref().map(|u| u.join(hash))
        }
        None => ctx.dir.clone(),
    };
    let root = root.ok_or_else(|| LayerError::NoContext {
        src: copy.src.clone(),
    })?;
    if rules::check_copy_src(&copy.src).is_err() {
        return Err(LayerError::Escapes {
            src: copy.src.clone(),
        });
    }
    let root = canonical(&root)?;
    let path = canonical(&root.join(&copy.src))?;
    if !path.starts_with(&root) {
        return Err(LayerError::Escapes {
            src: copy.src.clone(),
        });
    }
    Ok(path)
}

/// Hash of the tree at `path` (a file or a folder). Symlinks are hashed as links, and refused
/// when they resolve outside `root`.
pub fn hash_tree(root: &Path, path: &Path, src: &str) -> Result<String, LayerError> {
    let root = canonical(root)?;
    let mut h = Sha256::new();
    hash_entry(&root, path, Path::new(""), src, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn hash_entry(
    root: &Path,
    path: &Path,
    rel: &Path,
    src: &str,
    h: &mut Sha256,
) -> Result<(), LayerError> {
    let read_err = |source| LayerError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o7777;
    let rel_text = rel.to_string_lossy();
    if meta.file_type().is_symlink() {
        if !canonical(path)?.starts_with(root) {
            return Err(LayerError::Escapes {
                src: src.to_string(),
            });
        }
        let target = fs::read_link(path).map_err(read_err)?;
        h.update(format!("L\0{rel_text}\0{}\0", target.to_string_lossy()));
    } else if meta.is_dir() {
        h.update(format!("D\0{rel_text}\0{mode:o}\0"));
        let mut names: Vec<_> = fs::read_dir(path)
            .map_err(read_err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        names.sort();
        for name in names {
            hash_entry(root, &path.join(&name), &rel.join(&name), src, h)?;
        }
    } else {
        h.update(format!("F\0{rel_text}\0{mode:o}\0{}\0", meta.len()));
        let mut file = fs::File::open(path).map_err(read_err)?;
        let mut content = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            content.update(&buf[..n]);
        }
        h.update(content.finalize());
    }
    Ok(())
}

fn canonical(path: &Path) -> Result<PathBuf, LayerError> {
    fs::canonicalize(path).map_err(|source| LayerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(src: &str) -> CopyStep {
        CopyStep {
            src: src.into(),
            dest: "/app/".into(),
            user: None,
            mode: None,
            files_hash: None,
        }
    }

    #[test]
    fn chain_changes_only_from_the_changed_step() {
        let base = base_key("img1");
        let run = |c: &str| Step::Run {
            cmd: c.into(),
            user: None,
            timeout: None,
        };
        let a1 = step_key(&base, &run("a"), None, None);
        let b1 = step_key(&a1, &run("b"), None, None);
        let b2 = step_key(&a1, &run("b2"), None, None);
        assert_ne!(b1, b2);
        assert_eq!(a1, step_key(&base, &run("a"), None, None));
        assert_ne!(a1, step_key(&base_key("img2"), &run("a"), None, None));
        assert_ne!(a1, step_key(&base, &run("a"), None, Some("build-1")));
        let slow = Step::Run {
            cmd: "a".into(),
            user: None,
            timeout: Some(Default::default()),
        };
        assert_eq!(
            a1,
            step_key(&base, &slow, None, None),
            "timeouts are not content"
        );
    }

    #[test]
    fn copy_hash_follows_content_and_refuses_escapes() {
        let outer = tempfile::tempdir().unwrap();
        let ctx_dir = outer.path().join("ctx");
        fs::create_dir_all(ctx_dir.join("app/sub")).unwrap();
        fs::write(ctx_dir.join("app/main.py"), "print(1)").unwrap();
        fs::write(ctx_dir.join("app/sub/x.txt"), "x").unwrap();
        fs::write(outer.path().join("secret"), "s").unwrap();
        let ctx = BuildContext {
            dir: Some(ctx_dir.clone()),
            uploads: None,
        };

        let path = locate_copy_source(&ctx, &copy("app")).unwrap();
        let h1 = hash_tree(&ctx_dir, &path, "app").unwrap();
        assert_eq!(h1, hash_tree(&ctx_dir, &path, "app").unwrap());
        fs::write(ctx_dir.join("app/sub/x.txt"), "y").unwrap();
        let h2 = hash_tree(&ctx_dir, &path, "app").unwrap();
        assert_ne!(h1, h2, "a changed file changes the hash");

        let err = locate_copy_source(&ctx, &copy("../secret")).unwrap_err();
        assert!(matches!(err, LayerError::Escapes { .. }), "{err:?}");
        std::os::unix::fs::symlink(outer.path().join("secret"), ctx_dir.join("link")).unwrap();
        let err = locate_copy_source(&ctx, &copy("link")).unwrap_err();
        assert!(matches!(err, LayerError::Escapes { .. }), "{err:?}");
        std::os::unix::fs::symlink("../../secret", ctx_dir.join("app/bad")).unwrap();
        let err = hash_tree(&ctx_dir, &path, "app").unwrap_err();
        assert!(matches!(err, LayerError::Escapes { .. }), "{err:?}");

        let none = BuildContext::default();
        assert!(matches!(
            locate_copy_source(&none, &copy("app")),
            Err(LayerError::NoContext { .. })
        ));
        let mut bad = copy("app");
        bad.files_hash = Some("../x".into());
        assert!(matches!(
            locate_copy_source(&ctx, &bad),
            Err(LayerError::BadFilesHash { .. })
        ));
    }
}
