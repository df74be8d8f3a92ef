//! The sandbox lifecycle and the one place where state transitions are checked.
//!
//! ```text
//!  create ──► Starting ──(agent initialised)──► Running ──pause──► Pausing ──► Paused
//!                │                                 │  ▲                          │
//!                │ failure                          │  └────────── resume ────────┘
//!                ▼                                 ▼ kill / timeout / VM exit
//!             (removed)  ◄──────────────────── Stopping ──► (removed)
//! ```
//!
//! Every command names the [`Transition`] it wants; [`check`] says whether the current
//! [`Phase`] allows it, so the rules live here and nowhere else. A resume goes through
//! `Starting` again (a VM boots from the pause snapshot and its agent is re-keyed); a failed
//! pause returns to `Running` and a failed resume to `Paused` (manager/pause.rs), since in
//! both cases the previous state is still intact. Neither in-between phase is stored: the
//! record says `running` during a pause and `paused` during a resume, so a crash midway
//! finds the last complete state.

use warren_proto::api::SandboxState;

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Record written, VM booting, agent not yet initialised.
    Starting,
    /// VM up and agent initialised.
    Running,
    /// Memory and disk being captured for a pause.
    Pausing,
    /// No VM; resumable from its pause snapshot.
    Paused,
    /// Being killed; the record disappears when done.
    Stopping,
}

impl Phase {
    /// Spelling in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Pausing => "pausing",
            Phase::Paused => "paused",
            Phase::Stopping => "stopping",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "starting" => Phase::Starting,
            "running" => Phase::Running,
            "pausing" => Phase::Pausing,
            "paused" => Phase::Paused,
            "stopping" => Phase::Stopping,
            _ => return None,
        })
    }

    /// The state shown to SDKs, `None` for sandboxes not visible to clients (starting or
    /// stopping ones).
    pub fn visible_state(self) -> Option<SandboxState> {
        match self {
            Phase::Running | Phase::Pausing => Some(SandboxState::Running),
            Phase::Paused => Some(SandboxState::Paused),
            Phase::Starting | Phase::Stopping => None,
        }
    }
}

/// What a command wants to do to a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Starting → Running once the agent answered `/init`.
    Started,
    /// Connect, get, metrics, set timeout, gateway traffic: needs a live VM.
    Use,
    /// Kill (by client, timeout or VM exit).
    Kill,
    Pause,
    Resume,
    Snapshot,
    Fork,
}

/// Why a transition is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the sandbox is {}", .0.as_str())]
    Refused(Phase),
}

/// Checks a transition; returns the phase to move to (unchanged for [`Transition::Use`]).
pub fn check(from: Phase, transition: Transition) -> Result<Phase, TransitionError> {
    use Phase as P;
    use Transition as T;
    let to = match (from, transition) {
        (P::Starting, T::Started) => P::Running,
        (P::Running, T::Use | T::Snapshot | T::Fork) => P::Running,
        (P::Running, T::Pause) => P::Pausing,
        (P::Paused, T::Resume) => P::Starting,
        (P::Starting | P::Running | P::Pausing | P::Paused, T::Kill) => P::Stopping,
        _ => return Err(TransitionError::Refused(from)),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip() {
        for p in [
            Phase::Starting,
            Phase::Running,
            Phase::Pausing,
            Phase::Paused,
            Phase::Stopping,
        ] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn only_live_sandboxes_are_used_and_stopping_is_final() {
        assert_eq!(check(Phase::Running, Transition::Use), Ok(Phase::Running));
        assert!(check(Phase::Starting, Transition::Use).is_err());
        assert!(check(Phase::Paused, Transition::Use).is_err());
        assert!(check(Phase::Stopping, Transition::Kill).is_err());
        assert!(check(Phase::Stopping, Transition::Use).is_err());
        assert_eq!(
            check(Phase::Starting, Transition::Kill),
            Ok(Phase::Stopping)
        );
        assert!(check(Phase::Running, Transition::Started).is_err());
        assert_eq!(check(Phase::Running, Transition::Pause), Ok(Phase::Pausing));
        assert!(check(Phase::Paused, Transition::Pause).is_err());
    }

    #[test]
    fn pause_and_resume() {
        assert!(check(Phase::Pausing, Transition::Pause).is_err());
        assert!(check(Phase::Pausing, Transition::Use).is_err());
        assert_eq!(check(Phase::Pausing, Transition::Kill), Ok(Phase::Stopping));
        assert_eq!(
            check(Phase::Paused, Transition::Resume),
            Ok(Phase::Starting)
        );
        assert_eq!(check(Phase::Paused, Transition::Kill), Ok(Phase::Stopping));
        assert!(check(Phase::Running, Transition::Resume).is_err());
        assert!(check(Phase::Paused, Transition::Snapshot).is_err());
        assert_eq!(Phase::Paused.visible_state(), Some(SandboxState::Paused));
    }
}
