//! Makes a pre-copied RAM image exact: compares it with the stopped source's memory and
//! rewrites the pages that differ.
//!
//! Why: under TCG on a loaded host, QEMU 7.2's pre-copy sometimes fails to re-send a page the
//! guest wrote while the copy ran; a clone of such a snapshot has memory that disagrees with
//! its CPU state and its kernel soon oopses. Rather than stopping the guest for a whole copy
//! (seconds), Warren lets pre-copy run live and then, with the source stopped after the last
//! pass and before it resumes, checks every page the source has resident against the image.
//! A page the guest wrote is necessarily resident, so a page QEMU missed is always among
//! those checked; pages never touched are the same in both (zero, or the snapshot file a
//! restored source maps). After this the image equals the source's RAM at the instant its
//! device state was captured.
//!
//! How: the source's guest RAM is the mapping of size `memory` in its `/proc/<pid>/maps`
//! (`/memfd:memory-backend-memfd`, or a snapshot's RAM file for a restored VM);
//! `/proc/<pid>/pagemap` says which pages are resident (bit 63), and `/proc/<pid>/mem` reads
//! them.
//!
//! A restored source maps its snapshot's RAM file privately: a page it wrote since its restore
//! is an anonymous copy, a page it only read is still the file's page (pagemap bit 61) and
//! holds what the parent snapshot holds, which pre-copy sent unchanged. Only the anonymous
//! pages can have been missed, so only they are compared; for a source that has run briefly
//! since its restore that is a small part of its RAM.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

const PAGE: u64 = 4096;
/// [`PAGE`] as a length.
const PAGE_LEN: usize = 4096;
/// Pages compared per read.
const BATCH_PAGES: u64 = 512;

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Resident source pages compared.
    pub checked_pages: u64,
    /// Pages that differed and were rewritten in the image.
    pub patched_pages: u64,
}

/// Finds the start address of the guest RAM mapping of `pid`: a mapping exactly
/// `memory_bytes` long whose path names the RAM backend (QEMU names a memfd backend
/// `memory-backend-memfd`) or `hint`.
fn ram_mapping(pid: u32, memory_bytes: u64, hint: Option<&Path>) -> io::Result<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let hint = hint.map(|h| h.to_string_lossy().into_owned());
    let mut file_backed = Vec::new();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(_perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        let path: String = parts.skip(3).collect::<Vec<_>>().join(" ");
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let named = path.contains("memory-backend-memfd")
            || path.contains("ram0")
            || hint.as_deref().is_some_and(|h| path.starts_with(h));
        if end - start == memory_bytes && named {
            return Ok(start);
        }
        if end - start == memory_bytes && path.starts_with('/') {
            file_backed.push(start);
        }
    }
    // A restored VM maps its snapshot's RAM file; with no hint, accept the one such mapping.
    if let [only] = file_backed[..] {
        return Ok(only);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no guest RAM mapping of {memory_bytes} bytes in process {pid}"),
    ))
}

/// Faults in every page of the guest RAM of QEMU `pid` by reading it through
/// `/proc/<pid>/mem` (allocating the pages the guest never touched, as any full copy does).
///
/// Used before a write-tracked snapshot (see `background`): QEMU reads every page itself
/// before protecting them, and it does so after the guest was stopped; done here first, while
/// the guest still runs, that read finds every page present and costs next to nothing.
///
/// Only the pages that are not present are read: after a VM's first snapshot that is usually
/// none, and the call costs one pass over the pagemap.
pub fn populate(pid: u32, memory_bytes: u64, hint: Option<&Path>) -> io::Result<()> {
    let base = ram_mapping(pid, memory_bytes, hint)?;
    let missing = page_runs(pid, base, memory_bytes / PAGE, |entry| {
        entry & PM_PRESENT == 0
    })?;
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let mut buf = vec![0u8; usize::try_from(BATCH_PAGES * PAGE).unwrap_or(1 << 21)];
    for run in missing {
        let len = usize::try_from(run.pages * PAGE).unwrap_or(0);
        mem.read_exact_at(&mut buf[..len], base + run.first * PAGE)?;
    }
    Ok(())
}

/// Which of the source's resident pages can differ from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidates {
    /// Every resident page (RAM in a memfd or a shared file: written pages stay file pages).
    Resident,
    /// Resident anonymous pages only (RAM a private mapping of a snapshot file: a written page
    /// is a private copy, an unwritten one still the file's).
    Anonymous,
}

/// pagemap: the page is present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// pagemap: the page is a file page or shared anonymous memory.
const PM_FILE: u64 = 1 << 61;

impl Candidates {
    fn wants(self, entry: u64) -> bool {
        match self {
            Candidates::Resident => entry & PM_PRESENT != 0,
            Candidates::Anonymous => entry & (PM_PRESENT | PM_FILE) == PM_PRESENT,
        }
    }
}

/// Compares the candidate guest pages of the (stopped) QEMU `pid` with `image` and rewrites
/// the differing ones. `hint` is the source's own RAM file, if it maps one.
pub fn patch_image(
    pid: u32,
    memory_bytes: u64,
    hint: Option<&Path>,
    candidates: Candidates,
    image: &Path,
) -> io::Result<Verified> {
    let base = ram_mapping(pid, memory_bytes, hint)?;
    let runs = page_runs(pid, base, memory_bytes / PAGE, |entry| {
        candidates.wants(entry)
    })?;
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)?;
    // The guest is stopped and the recorder done: both host cores are free for the pass,
    // which is memory-bound (reading the source and the image) and splits evenly.
    let total: u64 = runs.iter().map(|r| r.pages).sum();
    let split = runs
        .iter()
        .scan(0, |seen, r| {
            *seen += r.pages;
            Some(*seen)
        })
        .position(|seen| seen * 2 >= total)
        .map_or(runs.len(), |i| i + 1);
    let (first, second) = runs.split_at(split);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| compare_runs(&mem, &out, base, second));
        let mine = compare_runs(&mem, &out, base, first)?;
        let theirs = other
            .join()
            .map_err(|_| io::Error::other("the verification thread panicked"))??;
        Ok(Verified {
            checked_pages: mine.checked_pages + theirs.checked_pages,
            patched_pages: mine.patched_pages + theirs.patched_pages,
        })
    })
}

/// Consecutive candidate pages, at most [`BATCH_PAGES`] long.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Index of the first page in guest RAM.
    first: u64,
    pages: u64,
}

/// Reads the pagemap of the `pages` guest pages at `base` in process `pid` and lists the runs
/// of pages whose entry `wanted` accepts.
fn page_runs(
    pid: u32,
    base: u64,
    pages: u64,
    wanted: impl Fn(u64) -> bool,
) -> io::Result<Vec<Run>> {
    let pagemap = File::open(format!("/proc/{pid}/pagemap"))?;
    let mut entries = vec![0u8; usize::try_from(BATCH_PAGES * 8).unwrap_or(4096)];
    let mut runs = Vec::new();
    let mut first = 0;
    while first < pages {
        let count = BATCH_PAGES.min(pages - first);
        let len = usize::try_from(count * 8).unwrap_or(0);
        pagemap.read_exact_at(&mut entries[..len], (base / PAGE + first) * 8)?;
        let wanted = |i: u64| {
            let at = usize::try_from(i * 8).unwrap_or(0);
            wanted(u64::from_le_bytes(
                entries[at..at + 8].try_into().unwrap_or_default(),
            ))
        };
        let mut i = 0;
        while i < count {
            if !wanted(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < count && wanted(i) {
                i += 1;
            }
            runs.push(Run {
                first: first + start,
                pages: i - start,
            });
        }
        first += count;
    }
    Ok(runs)
}

/// Compares `runs` of the source's RAM (at `base` in `/proc/<pid>/mem`) with the image and
/// rewrites the pages that differ.
fn compare_runs(mem: &File, out: &File, base: u64, runs: &[Run]) -> io::Result<Verified> {
    let batch_bytes = usize::try_from(BATCH_PAGES * PAGE).unwrap_or(1 << 21);
    let mut src = vec![0u8; batch_bytes];
    let mut dst = vec![0u8; batch_bytes];
    let mut result = Verified {
        checked_pages: 0,
        patched_pages: 0,
    };
    for run in runs {
        let bytes = usize::try_from(run.pages * PAGE).unwrap_or(0);
        let offset = run.first * PAGE;
        mem.read_exact_at(&mut src[..bytes], base + offset)?;
        out.read_exact_at(&mut dst[..bytes], offset)?;
        for (n, (s_page, d_page)) in src[..bytes]
            .chunks(PAGE_LEN)
            .zip(dst[..bytes].chunks(PAGE_LEN))
            .enumerate()
        {
            result.checked_pages += 1;
            if s_page != d_page {
                out.write_all_at(s_page, offset + u64::try_from(n).unwrap_or(0) * PAGE)?;
                result.patched_pages += 1;
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd as _;

    /// A mapping of a file in this very process, which plays the source QEMU; unmapped on drop.
    struct Mapping {
        ptr: *mut libc::c_void,
        len: usize,
    }

    impl Mapping {
        /// Maps `pages` pages of `path` (created as zeros when `shared`, else read as is):
        /// shared like a memfd RAM backend, or private like a restored VM's snapshot file.
        fn new(path: &Path, pages: usize, shared: bool) -> Mapping {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(shared)
                .create(shared)
                .truncate(shared)
                .open(path)
                .unwrap();
            let len = pages * PAGE_LEN;
            if shared {
                file.set_len(len as u64).unwrap();
            }
            let flags = if shared {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
            // SAFETY: a new mapping of a file this test owns, `len` bytes long; no other code
            // refers to that address range, and `drop` unmaps it.
            let ptr = unsafe {
                let prot = libc::PROT_READ | libc::PROT_WRITE;
                libc::mmap(std::ptr::null_mut(), len, prot, flags, file.as_raw_fd(), 0)
            };
            assert_ne!(ptr, libc::MAP_FAILED);
            Mapping { ptr, len }
        }

        fn bytes(&mut self) -> &mut [u8] {
            // SAFETY: the mapping is `len` bytes long, readable and writable, and lives as
            // long as `self`, which the returned slice borrows.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u8>(), self.len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmaps the mapping made in `new`; no slice of it outlives `self`.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }

    #[test]
    fn patches_exactly_the_differing_resident_pages() {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("ram0-test");
        let mut ram = Mapping::new(&backing, 64, true);
        ram.bytes()[0] = 1; // resident, and will match
        ram.bytes()[5 * PAGE_LEN + 7] = 9; // resident, will differ
        let image = dir.path().join("mem");
        let mut copy = vec![0u8; 64 * PAGE_LEN];
        copy[0] = 1;
        std::fs::write(&image, &copy).unwrap();

        let pid = std::process::id();
        let size = 64 * PAGE;
        let found = patch_image(pid, size, Some(&backing), Candidates::Resident, &image).unwrap();
        assert_eq!(found.patched_pages, 1);
        assert!(found.checked_pages >= 2);
        let patched = std::fs::read(&image).unwrap();
        assert_eq!(&patched[..], &ram.bytes()[..]);
    }

    /// `populate` leaves every page of the RAM mapping present.
    #[test]
    fn populate_faults_in_every_page() {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("ram0-populate");
        let ram = Mapping::new(&backing, 32, true);
        let (pid, base) = (std::process::id(), ram.ptr as u64);
        let present = || page_runs(pid, base, 32, |e| e & PM_PRESENT != 0).unwrap();
        assert!(present().is_empty(), "untouched pages are not present yet");
        populate(pid, 32 * PAGE, Some(&backing)).unwrap();
        let runs = present();
        assert_eq!(runs.iter().map(|r| r.pages).sum::<u64>(), 32, "{runs:?}");
    }

    /// A private mapping of a "snapshot" file: only the page written through it is a
    /// candidate; a page that was only read stays the file's and is skipped, even where the
    /// image (deliberately, for the test) disagrees with it.
    #[test]
    fn anonymous_candidates_are_the_written_private_pages() {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("parent-mem");
        let mut parent = vec![0u8; 16 * PAGE_LEN];
        parent[2 * PAGE_LEN] = 7;
        std::fs::write(&backing, &parent).unwrap();
        let mut ram = Mapping::new(&backing, 16, false);
        assert_eq!(std::hint::black_box(ram.bytes()[2 * PAGE_LEN]), 7); // read: a file page
        ram.bytes()[9 * PAGE_LEN] = 3; // written: an anonymous copy
        let image = dir.path().join("mem");
        let mut stale = vec![0u8; 16 * PAGE_LEN];
        stale[2 * PAGE_LEN] = 1; // differs from a page the source only read
        std::fs::write(&image, &stale).unwrap();

        let pid = std::process::id();
        let size = 16 * PAGE;
        let found = patch_image(pid, size, Some(&backing), Candidates::Anonymous, &image).unwrap();
        assert_eq!(found.checked_pages, 1);
        assert_eq!(found.patched_pages, 1);
        let patched = std::fs::read(&image).unwrap();
        assert_eq!(patched[9 * PAGE_LEN], 3);
        assert_eq!(patched[2 * PAGE_LEN], 1, "a file page was compared");
    }
}
