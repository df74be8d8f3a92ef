//! The root filesystem, in two cached layers:
//! 1. the slow one (≈1 min): a Debian tree from `debootstrap --variant=minbase` plus the
//!    packages a sandbox user expects, configured by `assets/configure-rootfs.sh` (user
//!    `user` with passwordless sudo, hostname, slirp's DNS in resolv.conf);
//! 2. the fast one (seconds): a copy of that tree plus the agent binary and
//!    `/sbin/warren-init`, turned into an ext4 filesystem (`mkfs.ext4 -d`) and converted to a
//!    sparse qcow2 that VMs use as the read-only base of their overlays.
//!
//! Needs root: debootstrap, chroot, and ownership-preserving copies all require it.

use std::path::Path;
use std::process::Command;

use crate::command::{self, CommandError};

/// Packages added to minbase. tini reaps orphans as PID 1 of the guest.
pub(crate) const PACKAGES: &[&str] = &[
    "bash",
    "ca-certificates",
    "coreutils",
    "curl",
    "git",
    "iproute2",
    "iputils-ping",
    "less",
    "nano",
    "netbase",
    "procps",
    "python3",
    "python3-pip",
    "sudo",
    "tini",
];

/// Configuration run in the chroot of the debootstrapped tree.
pub(crate) const CONFIGURE_SCRIPT: &str = include_str!("assets/configure-rootfs.sh");
/// The guest's `/sbin/warren-init`.
pub(crate) const WARREN_INIT: &str = include_str!("assets/warren-init.sh");
/// `/etc/pip.conf` of the guest: lets `pip install` write to the system Python.
pub(crate) const PIP_CONF: &str = include_str!("assets/pip.conf");
/// slirp's built-in DNS forwarder.
const RESOLV_CONF: &str = "nameserver 10.0.2.3\n";

/// Runs debootstrap into `tree` (which must not exist yet).
pub(crate) fn debootstrap(
    tree: &Path,
    suite: &str,
    mirror: &str,
    extra: &[String],
) -> Result<(), CommandError> {
    let mut include: Vec<&str> = PACKAGES.to_vec();
    include.extend(extra.iter().map(String::as_str));
    let result = command::run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", include.join(",")))
            .arg(suite)
            .arg(tree)
            .arg(mirror),
    );
    // debootstrap's own stderr is terse; its log inside the target says what went wrong.
    result.map(drop).map_err(|e| match e {
        CommandError::Failed {
            program,
            status,
            stderr_tail,
        } => {
            let log = std::fs::read(tree.join("debootstrap/debootstrap.log")).unwrap_or_default();
            let log_tail = command::tail(&log);
            CommandError::Failed {
                program,
                status,
                stderr_tail: format!("{stderr_tail}\n--- debootstrap.log ---\n{log_tail}"),
            }
        }
        other => other,
    })
}

/// Applies Warren's configuration to a debootstrapped tree.
pub(crate) fn configure(tree: &Path) -> Result<(), CommandError> {
    let resolv = tree.join("etc/resolv.conf");
    // debootstrap may leave a copy of the host's file or a symlink; replace either.
    let _ = std::fs::remove_file(&resolv);
    std::fs::write(&resolv, RESOLV_CONF).map_err(|source| CommandError::Spawn {
        program: "write resolv.conf".into(),
        source,
    })?;
    command::run(
        Command::new("chroot")
            .arg(tree)
            .args(["/bin/sh", "-c", CONFIGURE_SCRIPT]),
    )
    .map(drop)
}

/// Copies `tree` to `staging` (preserving owners, modes, links and device nodes).
pub(crate) fn stage(tree: &Path, staging: &Path) -> Result<(), CommandError> {
    let mut src = tree.as_os_str().to_owned();
    src.push("/.");
    command::run(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(src)
            .arg(staging),
    )
    .map(drop)
}

/// The `*.crt` files of `dir` (name and content, by name); none when `dir` is `None` or
/// does not exist.
pub(crate) fn extra_cas(dir: Option<&Path>) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut cas = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".crt") && entry.path().is_file() {
            cas.push((name, std::fs::read(entry.path())?));
        }
    }
    cas.sort();
    Ok(cas)
}

/// A digest of the CA files, an input of the image key.
pub(crate) fn cas_digest(cas: &[(String, Vec<u8>)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, content) in cas {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(content);
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Adds the CA files to the staged tree and regenerates its trust store in a chroot (so the
/// bundle, the hash links and later `update-ca-certificates` runs all include them).
pub(crate) fn install_cas(
    staging: &Path,
    cas: &[(String, Vec<u8>)],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if cas.is_empty() {
        return Ok(());
    }
    let dir = staging.join("usr/local/share/ca-certificates");
    std::fs::create_dir_all(&dir)?;
    for (name, content) in cas {
        std::fs::write(dir.join(name), content)?;
    }
    command::run(
        Command::new("chroot")
            .arg(staging)
            .args(["update-ca-certificates", "--fresh"]),
    )?;
    Ok(())
}

/// Makes an ext4 image of `size_mib` MiB at `raw` holding the contents of `root`.
pub(crate) fn make_ext4(root: &Path, raw: &Path, size_mib: u64) -> Result<(), CommandError> {
    let file = std::fs::File::create(raw)
        .and_then(|f| f.set_len(size_mib * 1024 * 1024).map(|()| f))
        .map_err(|source| CommandError::Spawn {
            program: "create raw disk".into(),
            source,
        })?;
    drop(file);
    command::run(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                "warren-root",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(root)
            .arg(raw),
    )
    .map(drop)
}

/// Converts the raw disk to a (sparse) qcow2.
pub(crate) fn convert_qcow2(raw: &Path, out: &Path) -> Result<(), CommandError> {
    command::run(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(raw)
            .arg(out),
    )
    .map(drop)
}
