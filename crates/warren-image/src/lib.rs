//! Builds and caches Warren's guest image: an ELF `vmlinux` that QEMU's `microvm` boots
//! directly, an initramfs that loads the virtio drivers and switches to the root disk, and a
//! read-only `rootfs.qcow2` with Debian bookworm, the guest agent and `/sbin/warren-init`.
//!
//! [`ensure_base_image`] is the entry point. It is **blocking** (it runs apt, debootstrap,
//! mkfs and qemu-img and waits for them, up to a few minutes on a cold cache); async callers
//! run it in `tokio::task::spawn_blocking`. It needs root and the Debian packages of
//! `scripts/install-deps.sh`.
//!
//! Modules: [`kernel`] (package and vmlinux), `modules` (driver set), `initramfs` (cpio
//! writer), `rootfs` (debootstrap and disk), `cache` (layout, locking, atomic publish),
//! [`manifest`] (`image.json`), [`progress`], `command` (running tools).

mod cache;
mod command;
mod error;
mod initramfs;
pub mod kernel;
pub mod manifest;
mod modules;
pub mod progress;
mod rootfs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use command::CommandError;
pub use error::ImageBuildError;
pub use kernel::VmlinuxError;
pub use manifest::ManifestError;
pub use modules::ModuleError;
pub use progress::{LogProgress, NoProgress, Progress, Step};

use cache::Cache;
use progress::run_step;

/// Where the debootstrap mirror defaults to (the one apt uses on these hosts).
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The Debian suite of the root filesystem.
pub const DEFAULT_SUITE: &str = "bookworm";
/// Virtual size of the root disk; the qcow2 only stores what is used.
pub const DEFAULT_DISK_MIB: u64 = 2048;

/// Version of the rootfs recipe (package list handling, configure script semantics). Bump to
/// force a new debootstrap layer when the recipe changes in ways the hashed inputs miss.
const ROOTFS_RECIPE: &str = "1";

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Root of the cache (see [`default_cache_dir`]).
    pub cache_dir: PathBuf,
    /// The `warren-agent` binary installed as `/usr/local/bin/warren-agent`.
    pub agent_bin: PathBuf,
    /// Debian mirror for debootstrap; `None` means [`DEFAULT_MIRROR`].
    pub mirror: Option<String>,
    /// Debian suite; [`DEFAULT_SUITE`] by default.
    pub suite: String,
    /// Packages installed in addition to the built-in list.
    pub extra_packages: Vec<String>,
    /// Virtual size of the root disk in MiB.
    pub disk_size_mib: u64,
    /// Verify sha256 checksums of a cached image before using it, not only sizes and magics.
    pub verify_checksums: bool,
    /// Folder of extra CA certificates (`*.crt`) that guests trust in addition to Debian's:
    /// by default the host's own (`/usr/local/share/ca-certificates`), so that guests can
    /// reach package registries through the same TLS-inspecting proxy as the host.
    pub extra_ca_dir: Option<PathBuf>,
}

impl ImageOptions {
    /// Options with defaults for everything but the cache and the agent.
    pub fn new(cache_dir: impl Into<PathBuf>, agent_bin: impl Into<PathBuf>) -> Self {
        ImageOptions {
            cache_dir: cache_dir.into(),
            agent_bin: agent_bin.into(),
            mirror: None,
            suite: DEFAULT_SUITE.to_owned(),
            extra_packages: Vec::new(),
            disk_size_mib: DEFAULT_DISK_MIB,
            verify_checksums: false,
            extra_ca_dir: Some(PathBuf::from(HOST_CA_DIR)),
        }
    }
}

/// A verified image in the cache. The files must not be modified: VMs use `rootfs_qcow2` as a
/// backing file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs_qcow2: PathBuf,
    /// The input hash naming `<cache_dir>/images/<key>/`.
    pub key: String,
}

/// `$WARREN_CACHE_DIR`, else `$XDG_CACHE_HOME/warren`, else `~/.cache/warren`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WARREN_CACHE_DIR").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("warren");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/warren")
}

/// Where Debian keeps locally added CA certificates (on the host and in the guest).
pub const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";

const VMLINUX: &str = "vmlinux";
const INITRAMFS: &str = "initramfs.cpio.gz";
const ROOTFS: &str = "rootfs.qcow2";

/// Returns the image for `opts`, building whatever layer is missing or invalid. Blocking.
pub fn ensure_base_image(
    opts: &ImageOptions,
    progress: &dyn Progress,
) -> Result<BaseImage, ImageBuildError> {
    let cache = Cache::open(&opts.cache_dir)?;
    let agent_hash =
        manifest::sha256_file(&opts.agent_bin).map_err(|source| ImageBuildError::ReadAgent {
            path: opts.agent_bin.clone(),
            source,
        })?;
    let pkg = run_step(progress, Step::ResolveKernel, kernel::resolve_package)
        .map_err(|source| ImageBuildError::ResolveKernel { source })?;

    let mut kernel_inputs = BTreeMap::new();
    kernel_inputs.insert("kernel-package".into(), pkg.name.clone());
    kernel_inputs.insert("kernel-version".into(), pkg.version.clone());
    kernel_inputs.insert("modules".into(), modules::WANTED.join(","));
    kernel_inputs.insert("initramfs-init".into(), initramfs::INIT_SCRIPT.into());
    let kernel_key = cache::key(&kernel_inputs);

    let mut rootfs_inputs = BTreeMap::new();
    rootfs_inputs.insert("suite".into(), opts.suite.clone());
    rootfs_inputs.insert("packages".into(), rootfs::PACKAGES.join(","));
    rootfs_inputs.insert("extra-packages".into(), opts.extra_packages.join(","));
    rootfs_inputs.insert("configure".into(), rootfs::CONFIGURE_SCRIPT.into());
    rootfs_inputs.insert("recipe".into(), ROOTFS_RECIPE.into());
    let rootfs_key = cache::key(&rootfs_inputs);

    let mut image_inputs = BTreeMap::new();
    image_inputs.insert("kernel".into(), kernel_key.clone());
    image_inputs.insert("rootfs".into(), rootfs_key.clone());
    image_inputs.insert("agent-sha256".into(), agent_hash);
    image_inputs.insert("warren-init".into(), rootfs::WARREN_INIT.into());
    image_inputs.insert("pip-conf".into(), rootfs::PIP_CONF.into());
    let cas = rootfs::extra_cas(opts.extra_ca_dir.as_deref())
        .map_err(|source| ImageBuildError::ReadCas { source })?;
    if !cas.is_empty() {
        image_inputs.insert("extra-cas".into(), rootfs::cas_digest(&cas));
    }
    image_inputs.insert("disk-size-mib".into(), opts.disk_size_mib.to_string());
    let image_key = cache::key(&image_inputs);

    let image_dir = cache.layer("images", &image_key);
    match manifest::verify(&image_dir, "image", opts.verify_checksums) {
        Ok(_) => return Ok(base_image(&image_dir, image_key)),
        Err(error) if image_dir.exists() => {
            tracing::warn!(dir = %image_dir.display(), error = %error, "cached image is invalid");
        }
        Err(_) => {}
    }

    let kernel_dir = ensure_kernel(&cache, &pkg, &kernel_key, kernel_inputs, progress)?;
    let tree_dir = ensure_rootfs_tree(&cache, opts, &rootfs_key, rootfs_inputs, progress)?;

    let tmp = cache.temp_dir("image")?;
    let built = run_step(progress, Step::BuildDisk, || {
        build_image(&tmp, &kernel_dir, &tree_dir, opts, &image_key, image_inputs)
    });
    if let Err(e) = built {
        cache.discard(&tmp);
        return Err(e);
    }
    cache.publish(&tmp, &image_dir)?;
    run_step(progress, Step::Verify, || {
        manifest::verify(&image_dir, "image", true)
    })
    .map_err(|source| ImageBuildError::Verify {
        path: image_dir.clone(),
        source,
    })?;
    Ok(base_image(&image_dir, image_key))
}

/// Removes every cached image (`images/<key>/`) whose key is not in `keep`, returning the
/// removed keys. The caller decides what is in use: overlays of running or snapshotted VMs
/// name their base image's `rootfs.qcow2` as backing file, so removing that breaks them. The
/// kernel and rootfs layers are kept (they make the next build fast).
pub fn prune_images(cache_dir: &Path, keep: &[&str]) -> Result<Vec<String>, ImageBuildError> {
    let cache = Cache::open(cache_dir)?;
    let images = cache_dir.join("images");
    let entries = match std::fs::read_dir(&images) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ImageBuildError::Cache {
                path: images,
                source,
            });
        }
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ImageBuildError::Cache {
            path: images.clone(),
            source,
        })?;
        let key = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&key.as_str()) {
            continue;
        }
        let path = entry.path();
        cache::remove_tree(&path).map_err(|source| ImageBuildError::Cache { path, source })?;
        tracing::info!(key = %key, "removed cached image");
        removed.push(key);
    }
    drop(cache);
    Ok(removed)
}

fn base_image(dir: &Path, key: String) -> BaseImage {
    BaseImage {
        vmlinux: dir.join(VMLINUX),
        initramfs: dir.join(INITRAMFS),
        rootfs_qcow2: dir.join(ROOTFS),
        key,
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageBuildError + '_ {
    move |source| ImageBuildError::WriteFile {
        path: path.to_owned(),
        source,
    }
}

/// Runs `build` in a fresh temp dir and publishes it as `dest`; discards it on failure.
fn build_layer(
    cache: &Cache,
    label: &str,
    dest: &Path,
    build: impl FnOnce(&Path) -> Result<(), ImageBuildError>,
) -> Result<(), ImageBuildError> {
    let tmp = cache.temp_dir(label)?;
    if let Err(e) = build(&tmp) {
        cache.discard(&tmp);
        return Err(e);
    }
    cache.publish(&tmp, dest)
}

fn ensure_kernel(
    cache: &Cache,
    pkg: &kernel::KernelPackage,
    key: &str,
    inputs: BTreeMap<String, String>,
    progress: &dyn Progress,
) -> Result<PathBuf, ImageBuildError> {
    let dest = cache.layer("kernel", key);
    if manifest::verify(&dest, "kernel", false).is_ok() {
        return Ok(dest);
    }
    build_layer(cache, "kernel", &dest, |tmp| {
        let deb = run_step(progress, Step::DownloadKernel, || {
            progress.message(
                Step::DownloadKernel,
                &format!("{} {}", pkg.name, pkg.version),
            );
            let dl = tmp.join("download");
            std::fs::create_dir(&dl).map_err(write_err(&dl))?;
            kernel::download(pkg, &dl).map_err(|source| ImageBuildError::DownloadKernel { source })
        })?;
        let root = tmp.join("pkg");
        run_step(progress, Step::ExtractKernel, || {
            kernel::unpack(&deb, &root)
                .map_err(|source| ImageBuildError::UnpackKernel { source })?;
            let bz = root.join("boot").join(format!("vmlinuz-{}", pkg.release()));
            kernel::extract_vmlinux(&bz, &tmp.join(VMLINUX)).map_err(|source| {
                ImageBuildError::ExtractVmlinux {
                    path: bz.clone(),
                    source,
                }
            })
        })?;
        run_step(progress, Step::BuildInitramfs, || {
            let mods_dir = root.join("lib/modules").join(pkg.release());
            let mods = modules::collect(&mods_dir, modules::WANTED)
                .map_err(|source| ImageBuildError::CollectModules { source })?;
            let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
            progress.message(
                Step::BuildInitramfs,
                &format!("modules: {}", names.join(" ")),
            );
            let out = tmp.join(INITRAMFS);
            initramfs::write(&out, Path::new(initramfs::BUSYBOX), &mods).map_err(|source| {
                ImageBuildError::WriteInitramfs {
                    path: out.clone(),
                    source,
                }
            })
        })?;
        let remove = |p: &Path| cache::remove_tree(p).map_err(write_err(p));
        remove(&root)?;
        remove(&tmp.join("download"))?;
        manifest::write(tmp, "kernel", key, inputs, &[VMLINUX, INITRAMFS])
            .map_err(write_err(tmp))?;
        Ok(())
    })?;
    Ok(dest)
}

fn ensure_rootfs_tree(
    cache: &Cache,
    opts: &ImageOptions,
    key: &str,
    inputs: BTreeMap<String, String>,
    progress: &dyn Progress,
) -> Result<PathBuf, ImageBuildError> {
    let dest = cache.layer("rootfs", key);
    if manifest::verify(&dest, "rootfs", false).is_ok() && dest.join("tree/sbin").exists() {
        return Ok(dest);
    }
    let mirror = opts.mirror.as_deref().unwrap_or(DEFAULT_MIRROR);
    build_layer(cache, "rootfs", &dest, |tmp| {
        let tree = tmp.join("tree");
        run_step(progress, Step::Debootstrap, || {
            progress.message(Step::Debootstrap, &format!("{} from {mirror}", opts.suite));
            rootfs::debootstrap(&tree, &opts.suite, mirror, &opts.extra_packages)
                .map_err(|source| ImageBuildError::Debootstrap { source })
        })?;
        run_step(progress, Step::ConfigureRootfs, || {
            rootfs::configure(&tree).map_err(|source| ImageBuildError::ConfigureRootfs { source })
        })?;
        let mut inputs = inputs;
        inputs.insert("mirror".into(), mirror.to_owned());
        manifest::write(tmp, "rootfs", key, inputs, &[]).map_err(write_err(tmp))?;
        Ok(())
    })?;
    Ok(dest)
}

fn build_image(
    tmp: &Path,
    kernel_dir: &Path,
    tree_dir: &Path,
    opts: &ImageOptions,
    key: &str,
    inputs: BTreeMap<String, String>,
) -> Result<(), ImageBuildError> {
    for name in [VMLINUX, INITRAMFS] {
        let (src, dst) = (kernel_dir.join(name), tmp.join(name));
        std::fs::hard_link(&src, &dst)
            .or_else(|_| std::fs::copy(&src, &dst).map(drop))
            .map_err(write_err(&dst))?;
    }
    let staging = tmp.join("staging");
    rootfs::stage(&tree_dir.join("tree"), &staging)
        .map_err(|source| ImageBuildError::StageRootfs { source })?;
    install_file(
        &staging.join("usr/local/bin/warren-agent"),
        &std::fs::read(&opts.agent_bin).map_err(|source| ImageBuildError::ReadAgent {
            path: opts.agent_bin.clone(),
            source,
        })?,
    )?;
    install_file(
        &staging.join("usr/sbin/warren-init"),
        rootfs::WARREN_INIT.as_bytes(),
    )?;
    let pip_conf = staging.join("etc/pip.conf");
    std::fs::write(&pip_conf, rootfs::PIP_CONF).map_err(write_err(&pip_conf))?;
    let cas = rootfs::extra_cas(opts.extra_ca_dir.as_deref())
        .map_err(|source| ImageBuildError::ReadCas { source })?;
    rootfs::install_cas(&staging, &cas).map_err(|source| ImageBuildError::InstallCas { source })?;
    let raw = tmp.join("rootfs.raw");
    rootfs::make_ext4(&staging, &raw, opts.disk_size_mib)
        .map_err(|source| ImageBuildError::MakeFilesystem { source })?;
    cache::remove_tree(&staging).map_err(write_err(&staging))?;
    rootfs::convert_qcow2(&raw, &tmp.join(ROOTFS))
        .map_err(|source| ImageBuildError::ConvertDisk { source })?;
    std::fs::remove_file(&raw).map_err(write_err(&raw))?;
    manifest::write(tmp, "image", key, inputs, &[VMLINUX, INITRAMFS, ROOTFS])
        .map_err(write_err(tmp))?;
    Ok(())
}

/// Writes an executable (0755, root-owned) file, creating its directory.
fn install_file(path: &Path, contents: &[u8]) -> Result<(), ImageBuildError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(write_err(parent))?;
    }
    std::fs::write(path, contents).map_err(write_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(write_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_only_named_images() {
        let cache = tempfile::tempdir().expect("tempdir");
        for key in ["aaa", "bbb"] {
            std::fs::create_dir_all(cache.path().join("images").join(key)).expect("mkdir");
        }
        std::fs::create_dir_all(cache.path().join("rootfs/r1")).expect("mkdir");
        assert_eq!(
            prune_images(cache.path(), &["aaa"]).expect("prune"),
            ["bbb"]
        );
        assert!(cache.path().join("images/aaa").exists());
        assert!(!cache.path().join("images/bbb").exists());
        assert!(cache.path().join("rootfs/r1").exists());
    }
}
