//! What a VM is launched with.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's binary translator; slower, works everywhere.
    Tcg,
}

impl Accel {
    /// The value of QEMU's `accel=` machine property.
    pub fn as_qemu(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The guest port the agent listens on (CONTRACTS.md).
pub const AGENT_GUEST_PORT: u16 = 49983;

/// Where the guest's RAM lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBacking {
    /// Fresh anonymous shared memory (a memfd): a cold boot.
    Fresh,
    /// A snapshot's RAM image mapped private: pages are shared with every other VM mapping
    /// the same file until written, and the file itself never changes.
    Private(PathBuf),
    /// A file mapped shared: whatever the guest (or an incoming migration) writes lands in
    /// the file. Used by the snapshot recorder.
    Shared(PathBuf),
}

/// Everything [`crate::Vm::launch`] needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmConfig {
    /// Identifies the VM in logs and in QEMU's process name.
    pub id: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Appended to the kernel command line.
    pub cmdline_extra: Vec<String>,
    /// The VM's own qcow2 (normally an overlay made by [`crate::create_overlay`]).
    pub root_disk: PathBuf,
    /// Holds `qmp.sock` (elsewhere when this path is too long for a socket: see
    /// `cmdline::qmp_socket`), `console.log`, `qemu.log`, the RAM file `mem`, `qemu.pid` and
    /// `vm.json`. Created if missing.
    pub run_dir: PathBuf,
    /// Host port forwarded to the agent; 0 picks a free one.
    pub agent_host_port: u16,
    /// When false, slirp runs with `restrict=on`: no traffic leaves the guest except the
    /// forwarded agent port.
    pub allow_internet: bool,
    pub accel: Accel,
    /// Where guest RAM lives (default: fresh memory).
    pub memory: MemoryBacking,
    /// Start paused, waiting for an incoming migration (`-S -incoming defer`) instead of
    /// booting: used to restore snapshots and by the snapshot recorder.
    pub incoming: bool,
    /// With `incoming`: a device state file that QEMU inherits as descriptor 3, for
    /// `migrate-incoming fd:3`. Restoring a snapshot uses it rather than an `exec:cat` URI,
    /// which would start a shell and `cat` on the way to a running sandbox. (QEMU 7.2 cannot
    /// start the load by itself: `x-ignore-shared` must be set over QMP first.)
    #[serde(default)]
    pub incoming_state: Option<PathBuf>,
}

impl VmConfig {
    /// A config with the defaults: 2 vCPUs, 512 MiB, free port, internet allowed, TCG.
    pub fn new(
        id: impl Into<String>,
        kernel: impl Into<PathBuf>,
        initramfs: impl Into<PathBuf>,
        root_disk: impl Into<PathBuf>,
        run_dir: impl Into<PathBuf>,
    ) -> Self {
        VmConfig {
            id: id.into(),
            vcpus: 2,
            memory_mib: 512,
            kernel: kernel.into(),
            initramfs: initramfs.into(),
            cmdline_extra: Vec::new(),
            root_disk: root_disk.into(),
            run_dir: run_dir.into(),
            agent_host_port: 0,
            allow_internet: true,
            accel: Accel::Tcg,
            memory: MemoryBacking::Fresh,
            incoming: false,
            incoming_state: None,
        }
    }
}
