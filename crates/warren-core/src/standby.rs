//! Standby VMs: QEMU processes started ahead of demand for the snapshots that sandboxes were
//! recently created from, each waiting (device state loaded, guest warmed up and paused) to
//! become the next sandbox of its snapshot.
//!
//! Why: starting QEMU (linking its ~50 shared libraries, setting up the machine) is 25-40 ms
//! of the ~110 ms that starting a sandbox from a snapshot takes under TCG here, and the
//! restored guest's first answer most of the rest (70-90 ms of TCG translating its code,
//! once per QEMU process). A standby has paid both: it is launched, its guest resumed until
//! the agent answers once, and paused again (`warren_vm::snapshot::warm`). A create that
//! finds one only resumes the guest and re-initialises its agent.
//!
//! Life of a standby: *starting* (reserved, so that concurrent creates from one snapshot
//! launch one between them) → *prepared* (launched, in the pool, unclaimed) → *claimed* by a
//! create, which gives its new record the standby's sandbox id → *taken* by the runtime's
//! `start_from_snapshot` for that id, which finishes the restore; from then on it is an
//! ordinary VM. A standby is dropped (its QEMU killed) when its snapshot is no longer listed,
//! when a standby for another snapshot needs its place, and when the server stops. It has a
//! run dir under the sandboxes dir like a sandbox but no record, so after a server crash the
//! restart's sweep of run dirs without a record kills it.
//!
//! Each create from a snapshot asks for the replacement as it starts. Warming one up takes
//! 100-300 ms, so the next create often arrives while it is still *starting*: that create
//! waits for it (briefly: [`StandbyPool::await_starting`] lets one create wait per launch)
//! rather than start a QEMU of its own, which would take longer and compete with the warm-up
//! for the host's cores.
//!
//! Limits, stated plainly: one unclaimed standby per snapshot and at most `capacity`
//! snapshots with one. Back-to-back creates each find one, but of a burst of concurrent
//! creates only the first (and the one waiting for the launch in progress) gets a standby;
//! the others start QEMU as before.
//!
//! This module is the bookkeeping only (generic over what is kept, so it is unit-tested
//! without QEMU); the QEMU runtime launches and kills the VMs.

use std::path::{Path, PathBuf};

struct Entry<V> {
    sandbox_id: String,
    snapshot_dir: PathBuf,
    allow_internet: bool,
    claimed: bool,
    vm: V,
}

/// The standbys of a runtime, oldest first.
pub(crate) struct StandbyPool<V> {
    capacity: usize,
    entries: Vec<Entry<V>>,
    /// Standbys being launched, so that concurrent creates from one snapshot do not all
    /// launch one.
    starting: Vec<Starting>,
}

/// A standby being launched.
struct Starting {
    snapshot_dir: PathBuf,
    allow_internet: bool,
    /// Whether a create is waiting for it (one at most).
    awaited: bool,
}

impl Starting {
    fn is(&self, snapshot_dir: &Path, allow_internet: bool) -> bool {
        self.snapshot_dir == snapshot_dir && self.allow_internet == allow_internet
    }
}

impl<V> StandbyPool<V> {
    /// A pool keeping standbys for at most `capacity` snapshots (0: no standbys).
    pub fn new(capacity: usize) -> Self {
        StandbyPool {
            capacity,
            entries: Vec::new(),
            starting: Vec::new(),
        }
    }

    /// Reserves the launch of a standby for `snapshot_dir` if one [is wanted](Self::wants)
    /// and none is being launched; the launcher ends the reservation with
    /// [`StandbyPool::release`] whatever happens.
    pub fn reserve(&mut self, snapshot_dir: &Path, allow_internet: bool) -> bool {
        if !self.wants(snapshot_dir, allow_internet)
            || self.is_starting(snapshot_dir, allow_internet)
        {
            return false;
        }
        self.starting.push(Starting {
            snapshot_dir: snapshot_dir.to_owned(),
            allow_internet,
            awaited: false,
        });
        true
    }

    /// Ends a reservation made by [`StandbyPool::reserve`].
    pub fn release(&mut self, snapshot_dir: &Path, allow_internet: bool) {
        if let Some(at) = self
            .starting
            .iter()
            .position(|s| s.is(snapshot_dir, allow_internet))
        {
            self.starting.remove(at);
        }
    }

    /// Whether a standby for `snapshot_dir` is being launched.
    pub fn is_starting(&self, snapshot_dir: &Path, allow_internet: bool) -> bool {
        self.starting
            .iter()
            .any(|s| s.is(snapshot_dir, allow_internet))
    }

    /// For a create that found no standby to claim: whether it should wait for the one being
    /// launched for `snapshot_dir`. True for the first create to ask while a launch is in
    /// progress, which then waits until the launch ends (and claims the standby if it is
    /// still there); the others start their own VM.
    pub fn await_starting(&mut self, snapshot_dir: &Path, allow_internet: bool) -> bool {
        let launch = self
            .starting
            .iter_mut()
            .find(|s| s.is(snapshot_dir, allow_internet) && !s.awaited);
        launch.map(|s| s.awaited = true).is_some()
    }

    /// Whether a standby for `snapshot_dir` should be prepared: the pool is enabled and holds
    /// no unclaimed one for it.
    pub fn wants(&self, snapshot_dir: &Path, allow_internet: bool) -> bool {
        self.capacity > 0
            && !self.entries.iter().any(|e| {
                !e.claimed && e.snapshot_dir == snapshot_dir && e.allow_internet == allow_internet
            })
    }

    /// Adds a prepared standby. Returns what no longer fits (the oldest unclaimed standbys of
    /// other snapshots, or the new one itself when the pool does not want it): the caller
    /// kills those.
    pub fn insert(
        &mut self,
        sandbox_id: String,
        snapshot_dir: PathBuf,
        allow_internet: bool,
        vm: V,
    ) -> Vec<V> {
        if !self.wants(&snapshot_dir, allow_internet) {
            return vec![vm];
        }
        self.entries.push(Entry {
            sandbox_id,
            snapshot_dir,
            allow_internet,
            claimed: false,
            vm,
        });
        let mut evicted = Vec::new();
        while self.entries.iter().filter(|e| !e.claimed).count() > self.capacity {
            let Some(oldest) = self.entries.iter().position(|e| !e.claimed) else {
                break;
            };
            evicted.push(self.entries.remove(oldest).vm);
        }
        evicted
    }

    /// Claims the standby of `snapshot_dir` for a create; returns the sandbox id it was
    /// launched under. Standbys for which `alive` is false are dropped on the way (their
    /// QEMU is gone; the disk collection removes their overlay).
    pub fn claim(
        &mut self,
        snapshot_dir: &Path,
        allow_internet: bool,
        alive: impl Fn(&V) -> bool,
    ) -> Option<String> {
        self.entries.retain(|e| e.claimed || alive(&e.vm));
        let entry = self.entries.iter_mut().find(|e| {
            !e.claimed && e.snapshot_dir == snapshot_dir && e.allow_internet == allow_internet
        })?;
        entry.claimed = true;
        Some(entry.sandbox_id.clone())
    }

    /// Removes the standby launched as `sandbox_id`, claimed or not.
    pub fn take(&mut self, sandbox_id: &str) -> Option<V> {
        let at = self
            .entries
            .iter()
            .position(|e| e.sandbox_id == sandbox_id)?;
        Some(self.entries.remove(at).vm)
    }

    /// Removes the unclaimed standbys whose snapshot `keep` rejects.
    pub fn remove_unless(&mut self, keep: impl Fn(&Path) -> bool) -> Vec<V> {
        let (gone, kept) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| !e.claimed && !keep(&e.snapshot_dir));
        self.entries = kept;
        gone.into_iter().map(|e| e.vm).collect()
    }

    /// Removes every standby.
    pub fn drain(&mut self) -> Vec<V> {
        self.entries.drain(..).map(|e| e.vm).collect()
    }

    /// Every standby, claimed or not.
    pub fn iter(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|e| &e.vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        PathBuf::from(format!("/snap/{name}"))
    }

    #[test]
    fn a_claimed_standby_is_taken_by_its_id_and_not_claimed_twice() {
        let mut pool = StandbyPool::new(2);
        assert!(pool.wants(&dir("a"), true));
        assert!(pool.insert("s1".into(), dir("a"), true, 1).is_empty());
        assert!(!pool.wants(&dir("a"), true));
        // Another network setting is another machine: no match.
        assert_eq!(pool.claim(&dir("a"), false, |_| true), None);
        assert_eq!(pool.claim(&dir("a"), true, |_| true), Some("s1".into()));
        assert_eq!(pool.claim(&dir("a"), true, |_| true), None);
        // Claimed, it no longer counts: a replacement is wanted.
        assert!(pool.wants(&dir("a"), true));
        assert_eq!(pool.take("s1"), Some(1));
        assert_eq!(pool.take("s1"), None);
    }

    #[test]
    fn one_create_waits_for_a_launch_in_progress() {
        let mut pool: StandbyPool<&str> = StandbyPool::new(2);
        assert!(
            !pool.await_starting(&dir("a"), true),
            "nothing is being launched"
        );
        assert!(pool.reserve(&dir("a"), true));
        assert!(
            !pool.await_starting(&dir("a"), false),
            "another network setting"
        );
        assert!(pool.await_starting(&dir("a"), true));
        assert!(!pool.await_starting(&dir("a"), true), "a second waiter");
        assert!(pool.is_starting(&dir("a"), true));
        pool.release(&dir("a"), true);
        assert!(!pool.is_starting(&dir("a"), true));
        // The next launch can be waited for again.
        assert!(pool.reserve(&dir("a"), true));
        assert!(pool.await_starting(&dir("a"), true));
    }

    #[test]
    fn one_launch_at_a_time_per_snapshot() {
        let mut pool = StandbyPool::<u32>::new(2);
        assert!(pool.reserve(&dir("a"), true));
        assert!(!pool.reserve(&dir("a"), true));
        assert!(pool.reserve(&dir("b"), true));
        pool.release(&dir("a"), true);
        assert!(pool.reserve(&dir("a"), true));
        pool.release(&dir("a"), true);
        pool.insert("s1".into(), dir("a"), true, 1);
        assert!(!pool.reserve(&dir("a"), true));
    }

    #[test]
    fn the_oldest_snapshot_makes_room_and_duplicates_are_refused() {
        let mut pool = StandbyPool::new(2);
        assert!(pool.insert("s1".into(), dir("a"), true, 1).is_empty());
        assert!(pool.insert("s2".into(), dir("b"), true, 2).is_empty());
        assert_eq!(pool.insert("s3".into(), dir("b"), true, 3), vec![3]);
        assert_eq!(pool.insert("s4".into(), dir("c"), true, 4), vec![1]);
        assert_eq!(pool.iter().copied().collect::<Vec<_>>(), vec![2, 4]);
    }

    #[test]
    fn a_claimed_standby_survives_eviction_and_snapshot_removal() {
        let mut pool = StandbyPool::new(1);
        pool.insert("s1".into(), dir("a"), true, 1);
        pool.claim(&dir("a"), true, |_| true);
        assert!(pool.insert("s2".into(), dir("b"), true, 2).is_empty());
        assert_eq!(pool.remove_unless(|_| false), vec![2]);
        assert_eq!(pool.drain(), vec![1]);
    }

    #[test]
    fn dead_standbys_are_skipped_and_disabled_pools_want_nothing() {
        let mut pool = StandbyPool::new(2);
        pool.insert("s1".into(), dir("a"), true, 1);
        assert_eq!(pool.claim(&dir("a"), true, |v| *v != 1), None);
        assert_eq!(pool.iter().count(), 0);
        let mut off = StandbyPool::new(0);
        assert!(!off.wants(&dir("a"), true));
        assert_eq!(off.insert("s1".into(), dir("a"), true, 1), vec![1]);
    }
}
