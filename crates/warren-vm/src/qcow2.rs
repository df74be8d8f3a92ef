//! Writes empty qcow2 overlays directly, without starting `qemu-img`.
//!
//! Every sandbox gets a new overlay on its template's or snapshot's disk layer, on the path of
//! starting it; `qemu-img create` spends ~6 ms starting up for a file of four clusters. The
//! overlay written here is what `qemu-img create -f qcow2 -F qcow2 -b BASE` writes for a disk
//! under 2 TiB, and the tests hold it to `qemu-img check`:
//!
//! ```text
//!  cluster 0  header (version 3, 64 KiB clusters, 16-bit refcounts), the backing format
//!             extension ("qcow2"), the end-of-extensions marker, the backing file name
//!  cluster 1  refcount table: one entry, pointing at cluster 2
//!  cluster 2  refcount block: clusters 0..=3 (and any further L1 clusters) used once
//!  cluster 3… L1 table, all zero: nothing allocated, every read falls through to the base
//! ```
//!
//! Nothing else of qcow2 is written here: QEMU allocates L2 tables and data clusters, and
//! grows the refcount structures, as the guest writes.

use std::io::{self, Write as _};
use std::path::Path;

/// log2 of the cluster size (64 KiB, QEMU's default).
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Length of the version 3 header proper; extensions follow it.
const HEADER_LEN: usize = 104;
/// Header extension type: the backing file's format name.
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
/// log2 of the refcount width in bits (16-bit refcounts, QEMU's default).
const REFCOUNT_ORDER: u32 = 4;
/// QEMU refuses backing file names longer than this.
const MAX_BACKING_NAME: usize = 1023;

/// The bytes of an empty qcow2 overlay of `size` bytes backed by the qcow2 file `backing`.
pub(crate) fn overlay_bytes(backing: &str, size: u64) -> io::Result<Vec<u8>> {
    if backing.is_empty() || backing.len() > MAX_BACKING_NAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a backing file name of {} bytes", backing.len()),
        ));
    }
    // One L2 table (a cluster of 8-byte entries) maps CLUSTER / 8 data clusters.
    let l2_span = CLUSTER * (CLUSTER / 8);
    let l1_entries = size.div_ceil(l2_span).max(1);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);
    let clusters = 3 + l1_clusters;
    // One refcount block of 16-bit entries covers CLUSTER / 2 clusters.
    if clusters > CLUSTER / 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a disk of {size} bytes is too large for this overlay layout"),
        ));
    }
    let l1_entries = u32::try_from(l1_entries).map_err(io::Error::other)?;

    // Extensions: the backing format, then the end marker; each padded to 8 bytes.
    let mut extensions = Vec::new();
    extensions.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
    extensions.extend_from_slice(&5u32.to_be_bytes());
    extensions.extend_from_slice(b"qcow2\0\0\0");
    extensions.extend_from_slice(&[0u8; 8]);
    let backing_offset = (HEADER_LEN + extensions.len()) as u64;

    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"QFI\xfb");
    header.extend_from_slice(&3u32.to_be_bytes()); // version
    header.extend_from_slice(&backing_offset.to_be_bytes());
    header.extend_from_slice(
        &u32::try_from(backing.len())
            .map_err(io::Error::other)?
            .to_be_bytes(),
    );
    header.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    header.extend_from_slice(&size.to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // no encryption
    header.extend_from_slice(&l1_entries.to_be_bytes());
    header.extend_from_slice(&(3 * CLUSTER).to_be_bytes()); // L1 table offset
    header.extend_from_slice(&CLUSTER.to_be_bytes()); // refcount table offset
    header.extend_from_slice(&1u32.to_be_bytes()); // refcount table clusters
    header.extend_from_slice(&0u32.to_be_bytes()); // snapshots
    header.extend_from_slice(&0u64.to_be_bytes()); // snapshot table offset
    header.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
    header.extend_from_slice(&0u64.to_be_bytes()); // compatible features
    header.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
    header.extend_from_slice(&REFCOUNT_ORDER.to_be_bytes());
    header.extend_from_slice(
        &u32::try_from(HEADER_LEN)
            .map_err(io::Error::other)?
            .to_be_bytes(),
    );
    debug_assert_eq!(header.len(), HEADER_LEN);

    let len = usize::try_from(clusters * CLUSTER).map_err(io::Error::other)?;
    let mut out = vec![0u8; len];
    let cluster = |n: u64| usize::try_from(n * CLUSTER).unwrap_or(usize::MAX);
    out[..HEADER_LEN].copy_from_slice(&header);
    out[HEADER_LEN..HEADER_LEN + extensions.len()].copy_from_slice(&extensions);
    let name_at = HEADER_LEN + extensions.len();
    out[name_at..name_at + backing.len()].copy_from_slice(backing.as_bytes());
    // Refcount table: its only entry is the refcount block in cluster 2.
    out[cluster(1)..cluster(1) + 8].copy_from_slice(&(2 * CLUSTER).to_be_bytes());
    // Refcount block: every cluster of the file is used once.
    for n in 0..clusters {
        let at = cluster(2) + usize::try_from(n * 2).unwrap_or(0);
        out[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Ok(out)
}

/// Writes a new overlay at `path` (which must not exist) backed by `backing`.
pub(crate) fn write_overlay(backing: &Path, size: u64, path: &Path) -> io::Result<()> {
    let name = backing.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a backing path that is not UTF-8",
        )
    })?;
    let bytes = overlay_bytes(name, size)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let written = file.write_all(&bytes);
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn qemu(tool: &str, args: &[&str]) -> std::process::Output {
        Command::new(tool)
            .args(args)
            .output()
            .expect("run a qemu tool")
    }

    /// qemu-io reports some failures (a pattern mismatch) only in its output.
    fn failed(out: &std::process::Output) -> bool {
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        text.contains("fail") || text.contains("error")
    }

    /// The written overlay passes `qemu-img check`, names its base, and reads and writes
    /// through QEMU's own qcow2 driver (`qemu-io`).
    #[test]
    fn overlays_are_valid_qcow2_that_qemu_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let base_s = base.to_str().unwrap();
        assert!(
            qemu("qemu-img", &["create", "-q", "-f", "qcow2", base_s, "3G"])
                .status
                .success()
        );
        let io = qemu("qemu-io", &["-c", "write -P 0x5a 1M 64k", base_s]);
        assert!(io.status.success(), "{io:?}");

        let top = dir.path().join("top.qcow2");
        let top_s = top.to_str().unwrap();
        write_overlay(&base, 3 << 30, &top).unwrap();
        let check = qemu("qemu-img", &["check", top_s]);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let info = qemu("qemu-img", &["info", "--output=json", top_s]);
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["virtual-size"], 3u64 << 30);
        assert_eq!(info["backing-filename"], base_s);
        assert_eq!(info["backing-filename-format"], "qcow2");

        // Reads fall through to the base; writes land in the overlay and keep it consistent.
        let read = qemu("qemu-io", &["-c", "read -P 0x5a 1M 64k", top_s]);
        assert!(read.status.success() && !failed(&read), "{read:?}");
        let write = qemu("qemu-io", &["-c", "write -P 0x33 2G 1M", top_s]);
        assert!(write.status.success() && !failed(&write), "{write:?}");
        let check = qemu("qemu-img", &["check", top_s]);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let read = qemu("qemu-io", &["-c", "read -P 0x33 2G 1M", top_s]);
        assert!(read.status.success() && !failed(&read), "{read:?}");

        // Never over an existing file.
        assert!(write_overlay(&base, 1 << 30, &top).is_err());
    }

    #[test]
    fn refuses_names_qemu_would_refuse() {
        assert!(overlay_bytes("", 1 << 20).is_err());
        assert!(overlay_bytes(&"a".repeat(1024), 1 << 20).is_err());
        assert!(overlay_bytes(&"a".repeat(1023), 1 << 20).is_ok());
    }
}
