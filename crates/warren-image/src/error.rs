//! Errors of an image build. Each variant names the step that failed; the cause is kept in
//! `#[source]` so callers print the whole chain once.

use std::path::PathBuf;

use crate::command::CommandError;
use crate::kernel::VmlinuxError;
use crate::manifest::ManifestError;
use crate::modules::ModuleError;

/// Why [`crate::ensure_base_image`] could not produce an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageBuildError {
    #[error("cannot prepare the image cache at {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock the image cache at {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot read the agent binary {path}")]
    ReadAgent {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve the kernel package (is `apt-get update` done?)")]
    ResolveKernel {
        #[source]
        source: CommandError,
    },
    #[error("cannot download the kernel package")]
    DownloadKernel {
        #[source]
        source: CommandError,
    },
    #[error("cannot unpack the kernel package")]
    UnpackKernel {
        #[source]
        source: CommandError,
    },
    #[error("cannot extract vmlinux from {path}")]
    ExtractVmlinux {
        path: PathBuf,
        #[source]
        source: VmlinuxError,
    },
    #[error("cannot collect the initramfs modules")]
    CollectModules {
        #[source]
        source: ModuleError,
    },
    #[error("cannot write the initramfs {path}")]
    WriteInitramfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("debootstrap failed")]
    Debootstrap {
        #[source]
        source: CommandError,
    },
    #[error("cannot configure the root filesystem")]
    ConfigureRootfs {
        #[source]
        source: CommandError,
    },
    #[error("cannot read the extra CA certificates")]
    ReadCas {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the extra CA certificates in the guest")]
    InstallCas {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot stage the root filesystem")]
    StageRootfs {
        #[source]
        source: CommandError,
    },
    #[error("cannot create the ext4 filesystem")]
    MakeFilesystem {
        #[source]
        source: CommandError,
    },
    #[error("cannot convert the root disk to qcow2")]
    ConvertDisk {
        #[source]
        source: CommandError,
    },
    #[error("cannot write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the image at {path} failed verification")]
    Verify {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
}
