//! Kernel modules for the initramfs. Debian's cloud kernel builds the virtio drivers as
//! modules; the package ships no `modules.dep` (depmod runs at install time), so dependencies
//! are read from each module's `.modinfo` (`depends=a,b`) and ordered so that a module's
//! dependencies are loaded before it. Modules listed in `modules.builtin` need no file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The drivers a Warren guest needs: the virtio-mmio transport of `microvm`, the root disk,
/// the network, the console and the entropy source. ext4 is built into this kernel; if it is
/// not, it is loaded like the rest.
pub(crate) const WANTED: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "ext4",
];

/// Why the module set could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("module {name} is neither built in nor shipped as a file")]
    Missing { name: String },
    #[error("module dependency cycle through {name}")]
    Cycle { name: String },
}

/// A module to load, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    pub name: String,
    pub path: PathBuf,
}

/// Module names use `_` and `-` interchangeably; the kernel treats them as equal.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Returns `wanted` plus their dependencies in load order, skipping built-in modules.
pub(crate) fn collect(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>, ModuleError> {
    let builtin_path = modules_dir.join("modules.builtin");
    let builtin_text =
        std::fs::read_to_string(&builtin_path).map_err(|source| ModuleError::Read {
            path: builtin_path,
            source,
        })?;
    let builtin: HashSet<String> = builtin_text.lines().filter_map(module_name).collect();
    let mut files = HashMap::new();
    index_files(&modules_dir.join("kernel"), &mut files)?;
    let mut order = Vec::new();
    let mut state = HashMap::new();
    for name in wanted {
        visit(&normalize(name), &builtin, &files, &mut state, &mut order)?;
    }
    Ok(order)
}

/// `kernel/drivers/block/virtio_blk.ko` → `virtio_blk`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    file.strip_suffix(".ko").map(normalize)
}

fn index_files(dir: &Path, out: &mut HashMap<String, PathBuf>) -> Result<(), ModuleError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ModuleError::Read {
        path: dir.into(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ModuleError::Read {
            path: dir.into(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            index_files(&path, out)?;
        } else if let Some(name) = path.to_str().and_then(module_name) {
            out.insert(name, path);
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Visiting,
    Done,
}

fn visit(
    name: &str,
    builtin: &HashSet<String>,
    files: &HashMap<String, PathBuf>,
    state: &mut HashMap<String, Mark>,
    order: &mut Vec<Module>,
) -> Result<(), ModuleError> {
    match state.get(name) {
        Some(Mark::Done) => return Ok(()),
        Some(Mark::Visiting) => {
            return Err(ModuleError::Cycle {
                name: name.to_owned(),
            });
        }
        None => {}
    }
    if builtin.contains(name) {
        state.insert(name.to_owned(), Mark::Done);
        return Ok(());
    }
    let path = files.get(name).ok_or_else(|| ModuleError::Missing {
        name: name.to_owned(),
    })?;
    state.insert(name.to_owned(), Mark::Visiting);
    let bytes = std::fs::read(path).map_err(|source| ModuleError::Read {
        path: path.clone(),
        source,
    })?;
    for dep in depends(&bytes) {
        visit(&dep, builtin, files, state, order)?;
    }
    state.insert(name.to_owned(), Mark::Done);
    order.push(Module {
        name: name.to_owned(),
        path: path.clone(),
    });
    Ok(())
}

/// The `depends=` entry of a module's `.modinfo` section: NUL-separated `key=value` strings.
fn depends(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = module.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &module[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(normalize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_module(dir: &Path, rel: &str, deps: &str) {
        let path = dir.join("kernel").join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let body = format!("\x7fELF junk\0license=GPL\0depends={deps}\0vermagic=6.1\0");
        std::fs::write(path, body).expect("write");
    }

    #[test]
    fn dependencies_come_first_and_builtins_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/fs/ext4/ext4.ko\n",
        )
        .expect("write");
        fake_module(dir.path(), "drivers/virtio/virtio.ko", "");
        fake_module(dir.path(), "drivers/virtio/virtio_ring.ko", "virtio");
        fake_module(
            dir.path(),
            "drivers/block/virtio_blk.ko",
            "virtio,virtio_ring",
        );
        fake_module(
            dir.path(),
            "drivers/char/hw_random/virtio-rng.ko",
            "virtio_ring,virtio",
        );
        let got = collect(dir.path(), &["virtio_blk", "virtio-rng", "ext4"]).expect("collect");
        let names: Vec<_> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["virtio", "virtio_ring", "virtio_blk", "virtio_rng"]);
    }

    #[test]
    fn missing_module_and_cycle_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("modules.builtin"), "").expect("write");
        fake_module(dir.path(), "a.ko", "b");
        fake_module(dir.path(), "b.ko", "a");
        assert!(matches!(
            collect(dir.path(), &["nope"]),
            Err(ModuleError::Missing { .. })
        ));
        assert!(matches!(
            collect(dir.path(), &["a"]),
            Err(ModuleError::Cycle { .. })
        ));
    }

    #[test]
    fn depends_without_entry_is_empty() {
        assert!(depends(b"\0license=GPL\0").is_empty());
        assert_eq!(depends(b"x\0depends=a-b,c\0"), ["a_b", "c"]);
    }
}
