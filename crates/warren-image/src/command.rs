//! Running the external tools of an image build (apt, dpkg-deb, lz4, debootstrap, mkfs.ext4,
//! qemu-img) with their stderr captured, so a failure reports the tool's last words.

use std::process::{Command, ExitStatus, Stdio};

/// How many bytes of a failed command's stderr are kept.
const STDERR_TAIL: usize = 2000;

/// A command that could not be run or that failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` failed ({status}): {stderr_tail}")]
    Failed {
        program: String,
        status: ExitStatus,
        stderr_tail: String,
    },
    #[error("`{program}` gave unexpected output: {detail}")]
    Output { program: String, detail: String },
}

/// Runs `cmd` to completion and returns its stdout; non-zero exit is an error.
pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>, CommandError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    tracing::debug!(command = ?cmd, "running");
    // A tool must not outlive a killed build: the next build deletes the temp dir it writes
    // to. Its own children (debootstrap's dpkg, wget) are not covered; they end with it soon.
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    if !out.status.success() {
        // Some tools (debootstrap) report their errors on stdout.
        let text = if out.stderr.iter().all(u8::is_ascii_whitespace) {
            &out.stdout
        } else {
            &out.stderr
        };
        return Err(CommandError::Failed {
            program,
            status: out.status,
            stderr_tail: tail(text),
        });
    }
    Ok(out.stdout)
}

/// The last [`STDERR_TAIL`] bytes of `bytes`, as trimmed text.
pub(crate) fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}
