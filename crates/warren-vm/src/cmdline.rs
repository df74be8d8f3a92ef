//! The kernel command line and QEMU's argument list for a Warren VM.
//!
//! Machine: `microvm` boots the ELF vmlinux through its PVH note, without firmware; devices
//! are virtio-mmio. Guest RAM is a shared file-backed memory backend (`<run_dir>/mem`) so that
//! snapshots can copy or map the guest's memory as a plain file. `-no-reboot` turns any guest
//! reboot or kernel panic (`panic=-1`) into a QEMU exit.

use std::path::{Path, PathBuf};

use crate::config::{AGENT_GUEST_PORT, Accel, MemoryBacking, VmConfig};

/// File names inside a VM's run dir.
pub(crate) const QMP_SOCKET: &str = "qmp.sock";
pub(crate) const CONSOLE_LOG: &str = "console.log";
pub(crate) const QEMU_LOG: &str = "qemu.log";
/// The descriptor number under which QEMU inherits an incoming device state (see
/// `VmConfig::incoming_state`).
pub(crate) const INCOMING_FD: i32 = 3;
pub(crate) const PID_FILE: &str = "qemu.pid";
/// The memory backend's id; a RAM-file restore must use the same id and size.
pub const RAM_BACKEND_ID: &str = "ram0";
/// The root disk's block node name, for `blockdev-snapshot` and friends.
pub const ROOT_NODE: &str = "root";
/// The CPU model under TCG, unless `WARREN_TCG_CPU` names another (for experiments: the
/// model must be the same for a VM and every VM restored from its snapshots).
const TCG_CPU: &str = "max";

fn tcg_cpu() -> String {
    std::env::var("WARREN_TCG_CPU")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| TCG_CPU.to_owned())
}

/// The guest kernel's command line.
pub fn kernel_cmdline(tsc_khz: Option<u64>, extra: &[String]) -> String {
    let mut parts = vec![
        "console=ttyS0".to_owned(),
        "root=/dev/vda".to_owned(),
        "rw".to_owned(),
        "panic=-1".to_owned(),
        "quiet".to_owned(),
        // microvm has no i8042 controller; skip its probing.
        "i8042.noaux=1".to_owned(),
        "i8042.nomux=1".to_owned(),
        "i8042.nopnp=1".to_owned(),
        "random.trust_cpu=on".to_owned(),
    ];
    if let Some(khz) = tsc_khz {
        parts.push(format!("tsc_early_khz={khz}"));
        parts.push("tsc=reliable".to_owned());
    }
    parts.extend(extra.iter().cloned());
    parts.join(" ")
}

/// QEMU's arguments (without the program name) for `cfg`, forwarding `agent_port`.
pub fn qemu_args(cfg: &VmConfig, agent_port: u16, cmdline: &str) -> Vec<String> {
    let run = |name: &str| path_arg(&cfg.run_dir.join(name));
    let cpu = match cfg.accel {
        Accel::Kvm => "host".to_owned(),
        Accel::Tcg => tcg_cpu(),
    };
    let restrict = if cfg.allow_internet { "off" } else { "on" };
    let netdev = format!(
        "user,id=net0,restrict={restrict},hostfwd=tcp:127.0.0.1:{agent_port}-:{AGENT_GUEST_PORT}"
    );
    let mut args: Vec<String> = vec![
        "-name".into(),
        format!(
            "warren-{},process=warren-{}",
            escape(&cfg.id),
            escape(&cfg.id)
        ),
        "-machine".into(),
        format!(
            "microvm,accel={},memory-backend={RAM_BACKEND_ID}",
            cfg.accel.as_qemu()
        ),
        "-cpu".into(),
        cpu,
        "-smp".into(),
        cfg.vcpus.to_string(),
        "-m".into(),
        format!("{}M", cfg.memory_mib),
        "-object".into(),
        memory_backend(cfg),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-serial".into(),
        format!("file:{}", run(CONSOLE_LOG)),
        "-kernel".into(),
        path_arg(&cfg.kernel),
        "-initrd".into(),
        path_arg(&cfg.initramfs),
        "-append".into(),
        cmdline.to_owned(),
        "-blockdev".into(),
        format!(
            "driver=qcow2,node-name={ROOT_NODE},file.driver=file,file.filename={}",
            path_arg(&cfg.root_disk)
        ),
        "-device".into(),
        format!("virtio-blk-device,drive={ROOT_NODE}"),
        "-netdev".into(),
        netdev,
        "-device".into(),
        "virtio-net-device,netdev=net0".into(),
        "-object".into(),
        "rng-random,id=rng0,filename=/dev/urandom".into(),
        "-device".into(),
        "virtio-rng-device,rng=rng0".into(),
        "-qmp".into(),
        format!(
            "unix:{},server=on,wait=off",
            path_arg(&qmp_socket(&cfg.run_dir))
        ),
        "-pidfile".into(),
        run(PID_FILE),
    ];
    if cfg.incoming {
        args.extend(["-S".into(), "-incoming".into(), "defer".into()]);
    }
    args
}

/// The `-object` value of the guest RAM backend; the id and size must be the same in a VM and
/// in every VM restored from its snapshots.
fn memory_backend(cfg: &VmConfig) -> String {
    let size = cfg.memory_mib;
    match &cfg.memory {
        MemoryBacking::Fresh => {
            format!("memory-backend-memfd,id={RAM_BACKEND_ID},size={size}M,share=on")
        }
        MemoryBacking::Private(path) | MemoryBacking::Shared(path) => {
            let share = if matches!(cfg.memory, MemoryBacking::Shared(_)) {
                "on"
            } else {
                "off"
            };
            format!(
                "memory-backend-file,id={RAM_BACKEND_ID},mem-path={},size={size}M,share={share}",
                path_arg(path)
            )
        }
    }
}

/// QEMU option values are comma-separated; a literal comma is written twice.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Where the QMP socket of the VM whose run dir is `run_dir` lives: `qmp.sock` in the run
/// dir, unless that path is too long for a Unix socket address (107 bytes; a deep data dir or
/// a snapshot's recorder run dir exceeds it). Then it is a name in the system's temporary
/// directory derived from the run dir, so that re-adopting the VM after a restart finds it
/// the same way.
pub(crate) fn qmp_socket(run_dir: &Path) -> PathBuf {
    use sha2::Digest as _;
    let inside = run_dir.join(QMP_SOCKET);
    if inside.as_os_str().len() <= MAX_SOCKET_PATH {
        return inside;
    }
    let digest = sha2::Sha256::digest(run_dir.as_os_str().as_encoded_bytes());
    let name = format!("warren-qmp-{}.sock", hex::encode(&digest[..12]));
    std::env::temp_dir().join(name)
}

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes, NUL included).
const MAX_SOCKET_PATH: usize = 107;

fn path_arg(path: &Path) -> String {
    escape(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_sockets_stay_within_the_unix_address_limit() {
        let short = Path::new("/var/lib/warren/run/sb1");
        assert_eq!(qmp_socket(short), short.join("qmp.sock"));
        let deep = PathBuf::from(format!("/data/{}/snapshots/x/recorder", "d".repeat(120)));
        let moved = qmp_socket(&deep);
        assert!(moved.as_os_str().len() <= MAX_SOCKET_PATH, "{moved:?}");
        assert_eq!(
            moved,
            qmp_socket(&deep),
            "the same run dir, the same socket"
        );
        assert_ne!(moved, qmp_socket(&deep.join("other")));
    }

    fn cfg() -> VmConfig {
        VmConfig::new("sb1", "/k/vmlinux", "/k/initrd", "/d/a,b.qcow2", "/run/sb1")
    }

    #[test]
    fn cmdline_has_tsc_only_when_known() {
        let c = kernel_cmdline(Some(2_596_128), &["foo=1".to_owned()]);
        assert!(c.starts_with("console=ttyS0 root=/dev/vda rw panic=-1"));
        assert!(c.contains("tsc_early_khz=2596128 tsc=reliable"));
        assert!(c.ends_with(" foo=1"));
        assert!(!kernel_cmdline(None, &[]).contains("tsc"));
    }

    #[test]
    fn args_wire_memory_disk_and_network() {
        let mut c = cfg();
        c.allow_internet = false;
        let args = qemu_args(&c, 40001, "console=ttyS0");
        let after = |flag: &str| -> Vec<&str> {
            args.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].as_str())
                .collect()
        };
        assert_eq!(after("-machine"), ["microvm,accel=tcg,memory-backend=ram0"]);
        assert_eq!(
            after("-object")[0],
            "memory-backend-memfd,id=ram0,size=512M,share=on"
        );
        assert!(!args.iter().any(|a| a == "-incoming"));
        c.memory = MemoryBacking::Private("/snap/mem".into());
        c.incoming = true;
        let args = qemu_args(&c, 40001, "console=ttyS0");
        assert!(
            args.iter()
                .any(|a| a == "memory-backend-file,id=ram0,mem-path=/snap/mem,size=512M,share=off")
        );
        assert!(args.ends_with(&["-S".into(), "-incoming".into(), "defer".into()]));
        assert_eq!(
            after("-netdev"),
            ["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40001-:49983"]
        );
        assert!(after("-blockdev")[0].ends_with("file.filename=/d/a,,b.qcow2"));
        assert_eq!(after("-qmp"), ["unix:/run/sb1/qmp.sock,server=on,wait=off"]);
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert_eq!(after("-cpu"), [tcg_cpu().as_str()]);
    }
}
