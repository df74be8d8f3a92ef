//! Warren's VM runtime: one QEMU `microvm` process per sandbox, driven over QMP.
//!
//! - [`Vm`] (`vm`): launch, re-attach after a server restart, agent readiness, stop/kill, exit
//!   watch. QEMU outlives the launching process on purpose; see the `vm` module docs.
//! - [`qmp`]: the async QMP client (commands with ids, events fanned out).
//! - `cmdline`: the kernel command line and QEMU arguments (guest RAM under the backend id
//!   [`RAM_BACKEND_ID`]: fresh memory, or a snapshot's RAM image; root disk node [`ROOT_NODE`]).
//! - [`snapshot`]: live snapshots and VMs started from them.
//! - [`probe_accel`]: KVM only when a probe guest really boots on it, TCG otherwise.
//! - [`host_tsc_khz`]: the host TSC frequency for `tsc_early_khz=`.
//! - [`create_overlay`]: per-VM qcow2 overlays on a read-only base.
//!
//! Known shortcoming: [`Vm::stop`] does not ask the guest to flush its page cache before
//! `quit` (the agent has no such route yet), so writes the guest has not synced are lost.

mod cmdline;
mod config;
mod disk;
mod error;
mod health;
mod probe;
mod qcow2;
pub mod qmp;
pub mod snapshot;
mod tsc;
mod vm;

pub use cmdline::{RAM_BACKEND_ID, ROOT_NODE, kernel_cmdline, qemu_args};
pub use config::{AGENT_GUEST_PORT, Accel, MemoryBacking, VmConfig};
pub use disk::{OverlayError, create_overlay, qcow2_backing_file, qcow2_chain};
pub use error::{AgentWaitError, AttachError, LaunchError, StopError};
pub use probe::{PROBE_TIMEOUT, probe_accel};
pub use qmp::{Qmp, QmpError, QmpEvent};
pub use tsc::host_tsc_khz;
pub use vm::{Vm, VmExit};
