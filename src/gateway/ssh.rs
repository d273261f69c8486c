//! The `ssh` gateway: a Python started over an OpenSSH connection.
//!
//! One master connection (the `openssh` crate, native multiplexing) serves
//! up to [`WORKERS_PER_MASTER`] workers of a host, so a host is
//! authenticated once however many workers it runs; a host with more
//! workers gets more masters. sshd allows 10 sessions on one connection by
//! default (`MaxSessions`): nine workers leave one channel free for the
//! short commands that kill a hung worker.
//!
//! Host keys are checked the way the user's ssh config says (read with
//! `ssh -G`): rtest never turns checking off on its own. Masters are closed
//! when the [`Pool`] is dropped, on every way out of a run; should rtest be
//! killed outright, they exit on their own after a minute without use.

use super::{Connection, Killer};
use crate::error::Error;
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Workers that share one master connection.
pub const WORKERS_PER_MASTER: usize = 9;

/// The connect timeout when the user's ssh config sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keep-alive interval when the user's ssh config sets none: a host that
/// stops answering is noticed within about three of these.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How long a master with no channel left outlives a vanished rtest.
const PERSIST_SECS: usize = 60;

/// Where an ssh worker goes: everything that makes a master distinct.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dest {
    /// Login user, if given.
    pub user: Option<String>,
    /// Host name or address.
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// `ssh_config=FILE`, if given.
    pub config: Option<PathBuf>,
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ssh=")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct HostState {
    masters: Vec<Option<Arc<Session>>>,
    failed: Option<String>,
}

/// The master connections of a run, by host. Dropping it closes them.
#[derive(Default)]
pub struct Pool {
    hosts: Mutex<HashMap<Dest, Arc<tokio::sync::Mutex<HostState>>>>,
    /// Kill commands under way, awaited by [`Pool::settle`].
    kills: Kills,
}

/// Kill commands under way.
type Kills = Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>;

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// What the user's ssh config says about a destination (`ssh -G`).
#[derive(Debug, Clone, PartialEq)]
struct Resolved {
    known_hosts: HostKeys,
    connect_timeout: Duration,
    keepalive: Duration,
}

/// `StrictHostKeyChecking` as the user's config sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKeys {
    /// `yes`, and `ask` (nobody can answer in batch mode): known hosts only.
    Strict,
    /// `accept-new`.
    AcceptNew,
    /// `no`: the user turned checking off.
    Off,
}

impl HostKeys {
    fn for_openssh(self) -> KnownHosts {
        match self {
            HostKeys::Strict => KnownHosts::Strict,
            HostKeys::AcceptNew => KnownHosts::Add,
            HostKeys::Off => KnownHosts::Accept,
        }
    }
}

/// Read `ssh -G` output: host key policy, connect timeout, keep-alive.
fn parse_resolved(text: &str) -> Resolved {
    let mut r = Resolved {
        known_hosts: HostKeys::Strict,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        keepalive: KEEPALIVE,
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let value = value.trim();
        match key {
            "stricthostkeychecking" => {
                r.known_hosts = match value {
                    "accept-new" => HostKeys::AcceptNew,
                    "no" | "false" | "off" => HostKeys::Off,
                    _ => HostKeys::Strict,
                }
            }
            "connecttimeout" => {
                if let Ok(secs) = value.parse::<u64>() {
                    r.connect_timeout = Duration::from_secs(secs.max(1));
                }
            }
            "serveraliveinterval" => {
                if let Ok(secs) = value.parse::<u64>() {
                    if secs > 0 {
                        r.keepalive = Duration::from_secs(secs);
                    }
                }
            }
            _ => {}
        }
    }
    r
}

impl Dest {
    /// Where an ssh worker goes (`None` for other transports).
    pub fn of(w: &crate::plan::WorkerPlan) -> Option<Dest> {
        match &w.transport {
            crate::spec::Transport::Ssh { user, host, port } => Some(Dest {
                user: user.clone(),
                host: host.clone(),
                port: *port,
                config: w.ssh_config.clone(),
            }),
            _ => None,
        }
    }

    /// The `ssh` options that name this destination.
    fn ssh_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(c) = &self.config {
            args.push("-F".to_string());
            args.push(c.display().to_string());
        }
        if let Some(p) = self.port {
            args.push("-p".to_string());
            args.push(p.to_string());
        }
        if let Some(u) = &self.user {
            args.push("-l".to_string());
            args.push(u.clone());
        }
        args
    }

    async fn resolve(&self) -> Result<Resolved, String> {
        if let Some(c) = &self.config {
            if !c.is_file() {
                return Err(format!(
                    "ssh_config={}: no such file (give a path to an ssh config file)",
                    c.display()
                ));
            }
        }
        let out = tokio::process::Command::new("ssh")
            .arg("-G")
            .args(self.ssh_args())
            .arg("--")
            .arg(&self.host)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| {
                format!("cannot run the local `ssh` command: {e} (install OpenSSH's client)")
            })?;
        if !out.status.success() {
            return Err(format!(
                "ssh rejects this destination: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(parse_resolved(&String::from_utf8_lossy(&out.stdout)))
    }

    async fn connect(&self) -> Result<Session, String> {
        let r = self.resolve().await?;
        let mut b = SessionBuilder::default();
        b.known_hosts_check(r.known_hosts.for_openssh())
            .connect_timeout(r.connect_timeout)
            .server_alive_interval(r.keepalive)
            .control_persist(ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(PERSIST_SECS).expect("nonzero"),
            ))
            .control_directory(std::env::temp_dir());
        if let Some(u) = &self.user {
            b.user(u.clone());
        }
        if let Some(p) = self.port {
            b.port(p);
        }
        if let Some(c) = &self.config {
            b.config_file(c);
        }
        // ConnectTimeout covers the TCP connect; a peer that accepts and then
        // says nothing is bounded here.
        let limit = r.connect_timeout + Duration::from_secs(5);
        match tokio::time::timeout(limit, b.connect_mux(&self.host)).await {
            Err(_) => Err(format!("no answer within {}s", limit.as_secs())),
            Ok(Err(e)) => Err(chain(&e)),
            Ok(Ok(s)) => Ok(s),
        }
    }
}

/// An error with its causes, one after the other.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(more.trim());
        }
        source = s.source();
    }
    text
}

impl Pool {
    /// The master for the `ordinal`-th worker of a host, connecting it
    /// first if needed. A host that failed once fails at once afterwards.
    pub async fn master(&self, dest: &Dest, ordinal: usize) -> Result<Arc<Session>, Error> {
        let state = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts.entry(dest.clone()).or_default().clone()
        };
        let mut state = state.lock().await;
        if let Some(why) = &state.failed {
            return Err(Error::worker(format!("{dest}: cannot connect: {why}")));
        }
        let index = ordinal / WORKERS_PER_MASTER;
        if state.masters.len() <= index {
            state.masters.resize(index + 1, None);
        }
        if let Some(s) = &state.masters[index] {
            return Ok(s.clone());
        }
        match dest.connect().await {
            Ok(s) => {
                let s = Arc::new(s);
                state.masters[index] = Some(s.clone());
                Ok(s)
            }
            Err(why) => {
                let msg = format!("{dest}: cannot connect: {why}");
                state.failed = Some(why);
                Err(Error::worker(msg))
            }
        }
    }

    /// Wait (a few seconds at most) for the kill commands sent so far, so
    /// that a run that ends right after killing its workers does not drop
    /// them unsent.
    pub async fn settle(&self) {
        let pending: Vec<_> =
            std::mem::take(&mut *self.kills.lock().unwrap_or_else(|p| p.into_inner()));
        let all = async {
            for handle in pending {
                let _ = handle.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), all).await;
    }

    /// Close every master now (also done on drop).
    pub fn close(&self) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.clear();
    }

    /// Start `python` with rtest's bootstrap on the `ordinal`-th worker
    /// slot of `dest`.
    pub async fn spawn(
        &self,
        dest: &Dest,
        ordinal: usize,
        python: &str,
        env: &BTreeMap<String, String>,
        nice: Option<i32>,
    ) -> Result<Connection, Error> {
        let session = self.master(dest, ordinal).await?;
        let how = Launch { python, env, nice };
        match spawn_on(session.clone(), dest, &how, &self.kills).await {
            Err(_) if session.check().await.is_err() => {
                // The master died (a dropped connection): a new one, once.
                self.forget(dest, &session).await;
                let session = self.master(dest, ordinal).await?;
                spawn_on(session, dest, &how, &self.kills).await
            }
            other => other,
        }
    }

    /// Drop a master that no longer works, so the next worker reconnects.
    async fn forget(&self, dest: &Dest, dead: &Arc<Session>) {
        let state = {
            let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts.get(dest).cloned()
        };
        if let Some(state) = state {
            let mut state = state.lock().await;
            for m in state.masters.iter_mut() {
                if m.as_ref().is_some_and(|s| Arc::ptr_eq(s, dead)) {
                    *m = None;
                }
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}

/// First line the remote Python writes to stderr: its process group, so
/// that a hung worker can be killed with everything it started.
const PGID_LINE: &str = "import os\nos.write(2,b'rtest-pgid %d\\n'%os.getpgid(0))\n";

/// `rtest-pgid 1234\n` -> 1234.
fn parse_pgid(line: &[u8]) -> Option<u32> {
    std::str::from_utf8(line)
        .ok()?
        .trim_end()
        .strip_prefix("rtest-pgid ")?
        .parse()
        .ok()
}

/// Shared between a worker's [`Killer`] and its relays.
pub struct RemoteKill {
    session: Arc<Session>,
    python: String,
    pgid: OnceLock<u32>,
    killed: watch::Sender<bool>,
    under_way: Kills,
}

impl std::fmt::Debug for RemoteKill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKill")
            .field("pgid", &self.pgid.get())
            .finish_non_exhaustive()
    }
}

impl RemoteKill {
    /// Kill the remote process group (over a channel of its own), and stop
    /// waiting for the worker's streams either way.
    pub fn kill(&self) {
        if self.killed.send_replace(true) {
            return;
        }
        let (Some(pgid), Ok(handle)) = (
            self.pgid.get().copied(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let session = self.session.clone();
        let python = self.python.clone();
        let task = handle.spawn(async move {
            let mut cmd = session.arc_command(python);
            cmd.arg("-c")
                .arg(format!("import os,signal\ntry: os.killpg({pgid}, signal.SIGKILL)\nexcept OSError: pass"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = tokio::time::timeout(Duration::from_secs(10), cmd.status()).await;
        });
        self.under_way
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
}

/// Resolves once the worker has been killed.
async fn killed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|k| *k).await;
}

/// Start the agent over `session`.
/// How to start a worker's Python on the host.
struct Launch<'a> {
    python: &'a str,
    env: &'a BTreeMap<String, String>,
    nice: Option<i32>,
}

async fn spawn_on(
    session: Arc<Session>,
    dest: &Dest,
    how: &Launch<'_>,
    kills: &Kills,
) -> Result<Connection, Error> {
    let (python, env) = (how.python, how.env);
    // `exec` makes the Python the leader of the process group sshd gave
    // the command, so killing that group kills what the tests started too
    // (`nice` and `env` exec it in turn).
    let mut cmd = session.clone().arc_raw_command("exec");
    if let Some(n) = how.nice {
        cmd.arg("nice").arg("-n").arg(n.to_string());
    }
    if !env.is_empty() {
        cmd.arg("env");
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
    }
    cmd.arg(python)
        .arg("-u")
        .arg("-c")
        .arg(format!("{PGID_LINE}{}", crate::protocol::BOOTSTRAP))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .await
        .map_err(|e| Error::worker(format!("{dest}: cannot start {python:?}: {}", chain(&e))))?;
    let (stdin, stdout, stderr) = match (
        child.stdin().take(),
        child.stdout().take(),
        child.stderr().take(),
    ) {
        (Some(i), Some(o), Some(e)) => (i, o, e),
        _ => return Err(Error::internal("ssh child streams missing")),
    };
    let (killed_tx, _) = watch::channel(false);
    let kill = Arc::new(RemoteKill {
        session,
        python: python.to_string(),
        pgid: OnceLock::new(),
        killed: killed_tx,
        under_way: kills.clone(),
    });

    // stdout: relayed until it ends or the worker is killed (a hung remote
    // must not keep the session waiting for frames).
    let (mut out_tx, out_rx) = tokio::io::duplex(1 << 20);
    let mut stop = kill.killed.subscribe();
    tokio::spawn(async move {
        let mut stdout = stdout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                n = stdout.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => if out_tx.write_all(&buf[..n]).await.is_err() { break },
                },
                _ = killed(&mut stop) => break,
            }
        }
    });

    // stderr: the first line carries the process group; the rest is the
    // worker's output.
    let (mut err_tx, err_rx) = tokio::io::duplex(1 << 16);
    let mut stop = kill.killed.subscribe();
    let k = kill.clone();
    tokio::spawn(async move {
        let mut stderr = stderr;
        let mut buf = vec![0u8; 64 * 1024];
        let mut head: Option<Vec<u8>> = Some(Vec::new());
        loop {
            let n = tokio::select! {
                n = stderr.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = killed(&mut stop) => break,
            };
            if let Some(h) = head.as_mut() {
                // Whole lines until the pgid line; what a login shell says
                // before it is the worker's output like any other.
                h.extend_from_slice(&buf[..n]);
                while let Some(end) = h.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = h.drain(..=end).collect();
                    match parse_pgid(&line) {
                        Some(pgid) => {
                            let _ = k.pgid.set(pgid);
                            let rest = head.take().unwrap_or_default();
                            let _ = err_tx.write_all(&rest).await;
                            break;
                        }
                        None => {
                            let _ = err_tx.write_all(&line).await;
                        }
                    }
                }
                if head.as_ref().is_some_and(|h| h.len() > 64 * 1024) {
                    let all = head.take().unwrap_or_default();
                    let _ = err_tx.write_all(&all).await;
                }
                continue;
            }
            // Keep draining even if nobody reads, so the remote never blocks.
            let _ = err_tx.write_all(&buf[..n]).await;
        }
        if let Some(h) = head {
            let _ = err_tx.write_all(&h).await;
        }
    });

    let mut stop = kill.killed.subscribe();
    let exit = Box::pin(async move {
        tokio::select! {
            status = child.wait() => match status {
                Ok(s) => super::describe_exit(&s),
                Err(openssh::Error::RemoteProcessTerminated) => {
                    "the remote process was terminated (killed by a signal, or the connection dropped)".to_string()
                }
                Err(e) => format!("ssh: {}", chain(&e)),
            },
            _ = async {
                killed(&mut stop).await;
                // Give the remote kill a moment to show as an exit status.
                tokio::time::sleep(Duration::from_secs(5)).await;
            } => "killed (the remote host did not confirm)".to_string(),
        }
    });
    Ok(Connection {
        reader: Box::new(out_rx),
        writer: Box::new(stdin),
        stderr: Some(Box::new(err_rx)),
        exit,
        killer: Killer::Ssh(kill),
        agent_started: false,
        pacer: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_policy_follows_the_users_config() {
        let r = parse_resolved("user root\nstricthostkeychecking ask\nconnecttimeout none\n");
        assert_eq!(r.known_hosts, HostKeys::Strict);
        assert_eq!(r.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(r.keepalive, KEEPALIVE);
        let r = parse_resolved(
            "stricthostkeychecking accept-new\nconnecttimeout 3\nserveraliveinterval 7\n",
        );
        assert_eq!(r.known_hosts, HostKeys::AcceptNew);
        assert_eq!(r.connect_timeout, Duration::from_secs(3));
        assert_eq!(r.keepalive, Duration::from_secs(7));
        assert_eq!(
            parse_resolved("stricthostkeychecking false\n").known_hosts,
            HostKeys::Off
        );
        assert_eq!(
            parse_resolved("stricthostkeychecking true\n").known_hosts,
            HostKeys::Strict
        );
    }

    #[test]
    fn the_process_group_line_is_found() {
        assert_eq!(parse_pgid(b"rtest-pgid 4242\n"), Some(4242));
        assert_eq!(parse_pgid(b"welcome to build1\n"), None);
        assert_eq!(parse_pgid(b"rtest-pgid x\n"), None);
    }

    #[test]
    fn destinations_print_as_specs() {
        let d = Dest {
            user: Some("ci".into()),
            host: "::1".into(),
            port: Some(2222),
            config: None,
        };
        assert_eq!(d.to_string(), "ssh=ci@[::1]:2222");
        assert_eq!(d.ssh_args(), ["-p", "2222", "-l", "ci"]);
    }
}
