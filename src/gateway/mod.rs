//! Gateways: a byte stream to a fresh Python running the agent, and a way to
//! kill it.
//!
//! Every transport yields a [`Connection`]; the session does not care which
//! one it talks to. `popen` starts a local child process in its own process
//! group, so that killing a worker also kills whatever its tests started.

pub mod exec;
pub mod paced;
pub mod popen;
pub mod provision;
pub mod serve;
pub mod socket;
pub mod ssh;

use crate::error::Error;
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
    /// The agent already runs (an exec= worker synced over this
    /// connection): the session sends no bootstrap, only a new hello.
    pub agent_started: bool,
    /// How the session paces reading `reader` (local agents' pipes).
    pub pacer: Option<std::sync::Arc<paced::Pacer>>,
}

/// How to kill a worker.
#[derive(Debug, Clone)]
pub enum Killer {
    /// A local process group.
    ProcessGroup(i32),
    /// A socket-server connection: shutting it down makes the server kill
    /// the process and everything it started.
    Socket(i32),
    /// An ssh worker: its remote process group, killed over the master.
    Ssh(std::sync::Arc<ssh::RemoteKill>),
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
            Killer::Ssh(remote) => remote.kill(),
        }
    }
}

/// A local child started in a process group of its own, as a connection:
/// its pipes, how it ends, and its group to kill. `what` names it in the
/// error when it is gone at once.
fn child_connection(mut child: tokio::process::Child, what: &str) -> Result<Connection, Error> {
    let pid = child
        .id()
        .ok_or_else(|| Error::worker(format!("{what} exited at once")))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Error::internal("child streams missing"));
    };
    let exit = Box::pin(async move {
        match child.wait().await {
            Ok(status) => describe_exit(&status),
            Err(e) => format!("lost track of the process: {e}"),
        }
    });
    let (reader, pacer) = stdout
        .into_owned_fd()
        .and_then(paced::reader)
        .map_err(|e| Error::internal(format!("cannot read the pipe of {what}: {e}")))?;
    Ok(Connection {
        reader: Box::new(reader),
        writer: Box::new(stdin),
        stderr: Some(Box::new(stderr)),
        exit,
        killer: Killer::ProcessGroup(pid as i32),
        agent_started: false,
        pacer: Some(pacer),
    })
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

/// How one run reaches its remote workers: the socket servers' token, the
/// ssh master connections (closed when this is dropped) and what exec=
/// workers are synced with.
#[derive(Debug, Default)]
pub struct Remotes {
    /// The socket servers' shared token.
    pub token: Option<Vec<u8>>,
    /// ssh masters, by host.
    pub ssh: ssh::Pool,
    /// exec= workers.
    pub exec: exec::Syncs,
}

impl Remotes {
    /// Start a Python with the agent for remote worker `w` (socket or
    /// ssh), with `env` set for it; `ordinal` is from [`Remotes::ordinal`].
    pub async fn connect(
        &self,
        w: &crate::plan::WorkerPlan,
        ordinal: usize,
        env: std::collections::BTreeMap<String, String>,
    ) -> Result<Connection, crate::error::Error> {
        match &w.transport {
            crate::spec::Transport::Socket { host, port } => {
                let mut request = socket::Request::agent(&w.python, env);
                if let Some(n) = w.nice {
                    let nice = ["nice".to_string(), "-n".into(), n.to_string()];
                    request.argv.splice(0..0, nice);
                }
                socket::connect(
                    host,
                    *port,
                    self.token.as_deref(),
                    &request,
                    socket::CONNECT_TIMEOUT,
                )
                .await
            }
            crate::spec::Transport::Ssh { .. } => {
                let dest = ssh::Dest::of(w).ok_or_else(|| {
                    crate::error::Error::internal("an ssh worker without a destination")
                })?;
                self.ssh
                    .spawn(&dest, ordinal, &w.python, &env, w.nice)
                    .await
            }
            crate::spec::Transport::Exec { .. } => match self.exec.take_ready(&w.id) {
                Some(conn) => Ok(conn),
                None => Ok(self.exec.connect(w, &env).await?.0),
            },
            crate::spec::Transport::Popen => Err(crate::error::Error::internal(
                "a local worker is not a remote one",
            )),
        }
    }

    /// Which of its host's workers `workers[index]` is (this picks its ssh
    /// master).
    pub fn ordinal(workers: &[crate::plan::WorkerPlan], index: usize) -> usize {
        let dest = ssh::Dest::of(&workers[index]);
        workers[..index]
            .iter()
            .filter(|o| dest.is_some() && ssh::Dest::of(o) == dest)
            .count()
    }
}
