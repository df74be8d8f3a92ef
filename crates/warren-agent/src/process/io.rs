//! Non-blocking file descriptors (pipes, PTY masters) driven by tokio's reactor.

use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use tokio::io::unix::AsyncFd;

/// A pipe end or PTY master usable from async code, for reading and writing at once.
pub struct AsyncFile {
    fd: AsyncFd<OwnedFd>,
}

impl AsyncFile {
    /// Takes ownership of `fd`, making it non-blocking and close-on-exec.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let raw = fd.as_raw_fd();
        let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
        fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        fcntl(raw, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        // SAFETY: the `OwnedFd` is owned by the `AsyncFd` for its whole life, so the
        // descriptor stays open and `as_raw_fd` always returns the same number.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// The raw descriptor (for ioctls).
    pub fn raw(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Reads some bytes; `Ok(0)` at end of file. A PTY master reports `EIO` once every
    /// slave descriptor is closed, which is its end of file.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_raw_fd(), buf).map_err(io::Error::from)
            });
            match res {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            let res =
                guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from));
            match res {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }
}
