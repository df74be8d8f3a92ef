//! The guest kernel: Debian's `linux-image-cloud-amd64`, resolved to its versioned package,
//! downloaded with apt and unpacked. QEMU's `microvm` machine boots an uncompressed ELF
//! `vmlinux` with a PVH note directly, so the LZ4 payload of the bzImage is cut out (its offset
//! and length are in the x86 boot protocol header) and decompressed with `lz4`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::{self, CommandError};

/// The meta package that always depends on the current cloud kernel.
const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// The legacy LZ4 frame magic that the kernel's LZ4 compressor writes.
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];

/// The versioned kernel package that the meta package currently points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelPackage {
    /// E.g. `linux-image-6.1.0-57-cloud-amd64`.
    pub name: String,
    /// The Debian version, e.g. `6.1.192-3`.
    pub version: String,
}

impl KernelPackage {
    /// The kernel release (`uname -r`), which names `/lib/modules/<release>`.
    pub fn release(&self) -> &str {
        self.name.strip_prefix("linux-image-").unwrap_or(&self.name)
    }
}

/// Why a vmlinux could not be cut out of a bzImage.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    #[error("cannot read or write the kernel image")]
    Io(#[source] std::io::Error),
    #[error("not a bzImage (boot protocol header missing or truncated)")]
    NotBzImage,
    #[error("the bzImage payload is not legacy-LZ4 compressed")]
    NotLz4,
    #[error("cannot decompress the payload")]
    Decompress(#[source] CommandError),
    #[error("decompressed {actual} bytes, the bzImage announces {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("the decompressed kernel is not an ELF file")]
    NotElf,
}

/// Resolves the versioned package behind [`META_PACKAGE`] with the local apt cache. One
/// `apt-cache` call (about a second on hosts without apt's binary cache): the meta package's
/// `Depends` pins the versioned package with `(= version)`.
pub(crate) fn resolve_package() -> Result<KernelPackage, CommandError> {
    let out =
        command::run(Command::new("apt-cache").args(["show", "--no-all-versions", META_PACKAGE]))?;
    let text = String::from_utf8_lossy(&out);
    parse_meta(&text).ok_or_else(|| not_found(format!("no pinned cloud kernel in: {text}")))
}

/// Finds `linux-image-<release>-cloud-amd64 (= <version>)` in the `Depends` field.
fn parse_meta(show: &str) -> Option<KernelPackage> {
    let depends = show.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    depends.split(',').find_map(|dep| {
        let (name, rest) = dep.trim().split_once(' ')?;
        let version = rest.trim().strip_prefix("(=")?.strip_suffix(')')?.trim();
        (name.starts_with("linux-image-") && name.ends_with("-cloud-amd64")).then(|| {
            KernelPackage {
                name: name.to_owned(),
                version: version.to_owned(),
            }
        })
    })
}

fn not_found(detail: String) -> CommandError {
    CommandError::Output {
        program: "apt-cache".to_owned(),
        detail,
    }
}

/// Downloads the package's .deb into `dir` and returns its path.
pub(crate) fn download(pkg: &KernelPackage, dir: &Path) -> Result<PathBuf, CommandError> {
    let spec = format!("{}={}", pkg.name, pkg.version);
    command::run(
        Command::new("apt-get")
            .args(["download", "-q", &spec])
            .current_dir(dir),
    )?;
    let entries = std::fs::read_dir(dir).map_err(|source| CommandError::Spawn {
        program: "apt-get".to_owned(),
        source,
    })?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| CommandError::Output {
            program: "apt-get".to_owned(),
            detail: format!("no .deb appeared in {}", dir.display()),
        })
}

/// Unpacks `deb` into `dest` (a plain extraction; no maintainer scripts run).
pub(crate) fn unpack(deb: &Path, dest: &Path) -> Result<(), CommandError> {
    command::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest)).map(drop)
}

/// Writes the ELF vmlinux contained in the bzImage `bzimage` to `out`.
pub(crate) fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), VmlinuxError> {
    let image = std::fs::read(bzimage).map_err(VmlinuxError::Io)?;
    let (payload, expected) = lz4_payload(&image)?;
    let compressed = out.with_extension("lz4");
    std::fs::write(&compressed, payload).map_err(VmlinuxError::Io)?;
    let result = command::run(
        Command::new("lz4")
            .args(["-d", "-f", "-q"])
            .arg(&compressed)
            .arg(out),
    );
    // Best effort: the file lives in the build's temp dir, which is removed anyway.
    let _ = std::fs::remove_file(&compressed);
    result.map_err(VmlinuxError::Decompress)?;
    let actual = std::fs::metadata(out).map_err(VmlinuxError::Io)?.len();
    if actual != u64::from(expected) {
        return Err(VmlinuxError::SizeMismatch {
            expected: expected.into(),
            actual,
        });
    }
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(
        &mut std::fs::File::open(out).map_err(VmlinuxError::Io)?,
        &mut magic,
    )
    .map_err(VmlinuxError::Io)?;
    if magic != *b"\x7fELF" {
        return Err(VmlinuxError::NotElf);
    }
    Ok(())
}

/// Locates the compressed payload with the boot protocol header (`setup_sects` at 0x1f1,
/// `payload_offset`/`payload_length` at 0x248/0x24c). The payload is an LZ4 legacy frame
/// followed by the 4-byte little-endian size of the decompressed kernel, which is returned
/// separately so that `lz4` sees no trailing garbage.
fn lz4_payload(image: &[u8]) -> Result<(&[u8], u32), VmlinuxError> {
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(VmlinuxError::NotBzImage);
    }
    let read_u32 = |at: usize| -> Result<u32, VmlinuxError> {
        let bytes = image.get(at..at + 4).ok_or(VmlinuxError::NotBzImage)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + read_u32(0x248)? as usize;
    let len = read_u32(0x24c)? as usize;
    let payload = image
        .get(start..start + len)
        .ok_or(VmlinuxError::NotBzImage)?;
    if len < 8 || payload[..4] != LZ4_LEGACY_MAGIC {
        return Err(VmlinuxError::NotLz4);
    }
    let (frame, size) = payload.split_at(len - 4);
    Ok((
        frame,
        u32::from_le_bytes([size[0], size[1], size[2], size[3]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 5 * 512];
        img[0x1f1] = 4;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        let len = u32::try_from(payload.len()).expect("small payload");
        img[0x24c..0x250].copy_from_slice(&len.to_le_bytes());
        img.extend_from_slice(&[0u8; 16]);
        img.extend_from_slice(payload);
        img.extend_from_slice(b"trailing");
        img
    }

    #[test]
    fn payload_is_located_by_header() {
        let mut payload = LZ4_LEGACY_MAGIC.to_vec();
        payload.extend_from_slice(b"data");
        payload.extend_from_slice(&1234u32.to_le_bytes());
        let img = fake_bzimage(&payload);
        let (frame, size) = lz4_payload(&img).expect("payload");
        assert_eq!(frame, &payload[..8]);
        assert_eq!(size, 1234);
    }

    #[test]
    fn non_lz4_payload_is_rejected() {
        let img = fake_bzimage(b"\x1f\x8b\x08\x00gzipdata");
        assert!(matches!(lz4_payload(&img), Err(VmlinuxError::NotLz4)));
        assert!(matches!(
            lz4_payload(b"short"),
            Err(VmlinuxError::NotBzImage)
        ));
    }

    #[test]
    fn meta_package_pins_the_kernel() {
        let show = "Package: linux-image-cloud-amd64\nVersion: 6.1.192-3\n\
                    Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)\n";
        let pkg = parse_meta(show).expect("parsed");
        assert_eq!(pkg.name, "linux-image-6.1.0-57-cloud-amd64");
        assert_eq!(pkg.version, "6.1.192-3");
        assert!(parse_meta("Depends: linux-image-6.1.0-57-cloud-amd64\n").is_none());
    }

    #[test]
    fn release_strips_prefix() {
        let pkg = KernelPackage {
            name: "linux-image-6.1.0-57-cloud-amd64".into(),
            version: "6.1.192-3".into(),
        };
        assert_eq!(pkg.release(), "6.1.0-57-cloud-amd64");
    }
}
