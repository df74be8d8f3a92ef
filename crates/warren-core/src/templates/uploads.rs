//! E2B file uploads: the SDK sends each COPY source as a tar (usually gzip-compressed) named
//! by its `filesHash`; it is unpacked to `uploads/<hash>/` through a `.tmp-` sibling, so a
//! half-written upload is never taken for a whole one. Entries are unpacked by the `tar`
//! crate, which refuses paths that leave the target folder.

use std::io::{self, Read};
use std::path::Path;

/// Unpacks `body` (tar, or gzip of a tar) to `root/<hash>`; an existing upload is kept.
pub(super) fn unpack(root: &Path, hash: &str, body: &[u8]) -> io::Result<()> {
    let target = root.join(hash);
    if target.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(root)?;
    let tmp = root.join(format!(".tmp-{hash}-{}", crate::ids::secret(6)));
    let result = unpack_archive(body, &tmp, true).and_then(|()| std::fs::rename(&tmp, &target));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    match result {
        // Two uploads of one hash raced; the first one stays.
        Err(_) if target.is_dir() => Ok(()),
        other => other,
    }
}

/// Unpacks `body`, a tar or a gzip-compressed tar, into `dir`. The `tar` crate skips
/// entries that would land outside `dir` (`..`, absolute paths) and refuses to write through
/// links that leave it. `preserve_permissions` keeps setuid/setgid/sticky bits too.
pub fn unpack_archive(body: &[u8], dir: &Path, preserve_permissions: bool) -> io::Result<()> {
    let reader: Box<dyn Read + '_> = if body.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(body))
    } else {
        Box::new(body)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(preserve_permissions);
    archive.unpack(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        b.append_data(&mut header, name, content).expect("append");
        b.into_inner().expect("tar")
    }

    #[test]
    fn unpacks_plain_and_gzipped_tars() {
        let dir = tempfile::tempdir().expect("tempdir");
        unpack(dir.path(), "aa", &tar_of("x.txt", b"one")).expect("plain");
        assert_eq!(
            std::fs::read(dir.path().join("aa/x.txt")).expect("read"),
            b"one"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar_of("y.txt", b"two")).expect("gz");
        unpack(dir.path(), "bb", &gz.finish().expect("finish")).expect("gzip");
        assert_eq!(
            std::fs::read(dir.path().join("bb/y.txt")).expect("read"),
            b"two"
        );
    }

    #[test]
    fn garbage_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(unpack(dir.path(), "cc", &[0x1f, 0x8b, 1, 2, 3]).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
