//! The initramfs: a gzip-compressed cpio ("newc") archive written here directly, so that the
//! device nodes the kernel needs before `/init` runs (`/dev/console`) can be included without
//! root privileges and the archive is byte-for-byte reproducible (all mtimes are 0).
//!
//! Contents: static busybox, the `/init` script of `assets/initramfs-init.sh`, the modules
//! from [`crate::modules`] flattened into `/lib/modules/<name>.ko`, and their load order in
//! `/etc/warren-modules`.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::modules::Module;

/// The `/init` script.
pub(crate) const INIT_SCRIPT: &str = include_str!("assets/initramfs-init.sh");

/// Where Debian's busybox-static installs its binary.
pub(crate) const BUSYBOX: &str = "/bin/busybox";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// Writes the initramfs to `out` (fsynced).
pub(crate) fn write(out: &Path, busybox: &Path, modules: &[Module]) -> std::io::Result<()> {
    let file = std::fs::File::create(out)?;
    let mut cpio = Cpio {
        out: GzEncoder::new(std::io::BufWriter::new(file), Compression::new(6)),
        ino: 1,
    };
    for dir in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "newroot",
        "proc",
        "sys",
        "tmp",
    ] {
        cpio.entry(dir, S_IFDIR | 0o755, &[], (0, 0))?;
    }
    cpio.entry("dev/console", S_IFCHR | 0o600, &[], (5, 1))?;
    cpio.entry("dev/null", S_IFCHR | 0o666, &[], (1, 3))?;
    cpio.entry("init", S_IFREG | 0o755, INIT_SCRIPT.as_bytes(), (0, 0))?;
    cpio.entry(
        "bin/busybox",
        S_IFREG | 0o755,
        &std::fs::read(busybox)?,
        (0, 0),
    )?;
    let mut order = String::new();
    for module in modules {
        let data = std::fs::read(&module.path)?;
        cpio.entry(
            &format!("lib/modules/{}.ko", module.name),
            S_IFREG | 0o644,
            &data,
            (0, 0),
        )?;
        order.push_str(&module.name);
        order.push('\n');
    }
    cpio.entry(
        "etc/warren-modules",
        S_IFREG | 0o644,
        order.as_bytes(),
        (0, 0),
    )?;
    cpio.entry("TRAILER!!!", 0, &[], (0, 0))?;
    let file = cpio
        .out
        .finish()?
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    file.sync_all()
}

struct Cpio<W: Write> {
    out: W,
    ino: u32,
}

impl<W: Write> Cpio<W> {
    /// One newc record: a 110-byte ASCII header, the NUL-terminated name and the data, each
    /// padded to a multiple of 4 bytes.
    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> std::io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| std::io::Error::other(format!("{name} is too large for cpio")))?;
        let name_size = u32::try_from(name.len() + 1)
            .map_err(|_| std::io::Error::other("cpio name too long"))?;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let ino = if mode == 0 { 0 } else { self.ino };
        self.ino += 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, written: usize) -> std::io::Result<()> {
        let pad = (4 - written % 4) % 4;
        self.out.write_all(&[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_records_are_aligned() {
        let mut cpio = Cpio {
            out: Vec::new(),
            ino: 1,
        };
        cpio.entry("init", S_IFREG | 0o755, b"hello", (0, 0))
            .expect("entry");
        let bytes = cpio.out;
        assert_eq!(&bytes[..6], b"070701");
        // header 110 + "init\0" 5 = 115 → padded to 116, data 5 → padded to 8.
        assert_eq!(bytes.len(), 116 + 8);
        assert_eq!(&bytes[116..121], b"hello");
        let size = std::str::from_utf8(&bytes[6 + 6 * 8..6 + 7 * 8]).expect("ascii");
        assert_eq!(u32::from_str_radix(size, 16).expect("hex"), 5);
    }
}
