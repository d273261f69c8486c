//! Gateways: a byte stream to a fresh Python running the agent, and a way to
//! kill it.
//!
//! Every transport yields a [`Connection`]; the session does not care which
//! one it talks to. `popen` starts a local child process in its own process
//! group, so that killing a worker also kills whatever its tests started.

pub mod popen;
pub mod provision;
pub mod serve;
pub mod socket;

use std::future::Future;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

/// A future that resolves, once the worker is gone, to how it ended
/// (`exit code 1`, `killed by signal 9 (SIGKILL)`).
pub type ExitFuture = Pin<Box<dyn Future<Output = String> + Send>>;

/// A live connection to a worker process.
pub struct Connection {
    /// Frames from the agent.
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    /// Frames to the agent.
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// The worker's stderr (and, through the agent's redirection, stdout).
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Resolves when the worker process has ended.
    pub exit: ExitFuture,
    /// Kills the worker and everything it started.
    pub killer: Killer,
}

/// How to kill a worker.
#[derive(Debug, Clone)]
pub enum Killer {
    /// A local process group.
    ProcessGroup(i32),
    /// A socket-server connection: shutting it down makes the server kill
    /// the process and everything it started.
    Socket(i32),
}

impl Killer {
    /// Kill now (SIGKILL). Safe to call more than once.
    pub fn kill(&self) {
        match self {
            Killer::ProcessGroup(pgid) => {
                // SAFETY: killpg has no memory-safety preconditions; a stale
                // group id at worst fails with ESRCH.
                unsafe {
                    libc::killpg(*pgid, libc::SIGKILL);
                }
            }
            Killer::Socket(fd) => {
                // SAFETY: shutdown(2) on a descriptor we still own; a stale
                // one fails with ENOTSOCK/EBADF and nothing happens.
                unsafe {
                    libc::shutdown(*fd, libc::SHUT_RDWR);
                }
            }
        }
    }
}

/// Describe how a process ended, as users read it.
pub fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGSEGV => " (SIGSEGV, segmentation fault)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGFPE => " (SIGFPE)",
            libc::SIGILL => " (SIGILL)",
            _ => "",
        };
        return format!("killed by signal {sig}{name}");
    }
    "ended".to_string()
}
