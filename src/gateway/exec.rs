//! The `exec` gateway: any command that gives a pipe to a Python somewhere
//! (`docker exec -i C`, `kubectl exec -i POD --`, `srun`, `bwrap ...`).
//!
//! rtest runs the command itself (no shell) with the Python invocation
//! appended: `COMMAND [nice -n N] [env K=V ...] PYTHON -u -c BOOTSTRAP`.
//! The local client runs in its own process group, killed with everything
//! it started; on the far side the agent makes itself a process group
//! leader, and kills that group when its pipe closes (the client killed,
//! the container's exec session ended), so nothing outlives the worker on
//! either side.

use super::Connection;
use crate::error::Error;
use crate::protocol::BOOTSTRAP;
use std::collections::BTreeMap;
use std::process::Stdio;
use tokio::process::Command;

/// Before the bootstrap: lead a process group of its own, so that the
/// agent's exit on a closed pipe takes what its tests started with it.
const OWN_GROUP: &str = "import os\ntry: os.setpgid(0, 0)\nexcept OSError: pass\n";

/// The full command line: the user's command, then the Python invocation.
pub fn command_line(
    argv: &[String],
    python: &str,
    env: &BTreeMap<String, String>,
    nice: Option<i32>,
) -> Vec<String> {
    let mut out = argv.to_vec();
    if let Some(n) = nice {
        out.extend(["nice".to_string(), "-n".into(), n.to_string()]);
    }
    if !env.is_empty() {
        out.push("env".into());
        out.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    out.extend([
        python.to_string(),
        "-u".into(),
        "-c".into(),
        format!("{OWN_GROUP}{BOOTSTRAP}"),
    ]);
    out
}

/// Start the command with the Python invocation appended.
pub fn spawn(
    argv: &[String],
    python: &str,
    env: &BTreeMap<String, String>,
    nice: Option<i32>,
) -> Result<Connection, Error> {
    let mut full = command_line(argv, python, env, nice);
    // No shell runs the command: `~/` is expanded here.
    if let (Some(rest), Some(home)) = (full[0].strip_prefix("~/"), std::env::var_os("HOME")) {
        full[0] = std::path::Path::new(&home).join(rest).display().to_string();
    }
    let shown = crate::config::pytest_ini::join(argv);
    let mut cmd = Command::new(&full[0]);
    cmd.args(&full[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (not found: give a path, or put it on PATH)"
        } else {
            ""
        };
        Error::worker(format!("cannot run {:?}: {e}{hint}", full[0]))
    })?;
    super::child_connection(child, &shown)
}

/// What exec= workers are synced with. Their files may live only as long
/// as their process (`docker run --rm -i`, a fresh pod), so each worker is
/// synced over its own connection, once per place (see
/// [`crate::sync::Places`]); the connections synced before the session
/// starts wait here for it.
#[derive(Default)]
pub struct Syncs {
    /// Set by the sync phase.
    plan: std::sync::OnceLock<SyncPlan>,
    /// Synced connections, by worker id, each taken once.
    ready: std::sync::Mutex<std::collections::HashMap<String, Connection>>,
    /// The places synced in this run.
    places: crate::sync::Places,
}

/// What each exec= worker gets.
pub struct SyncPlan {
    /// The tree (its base unset), if the run syncs one.
    pub tree: Option<crate::sync::Job>,
    /// Each worker's copy, by worker id.
    pub bases: std::collections::HashMap<String, String>,
    /// The local pytest, for a Python without one (found when needed).
    pub ship: std::sync::OnceLock<Result<crate::sync::Ship, String>>,
    /// How to find it.
    pub find_ship: Box<dyn Fn() -> Result<crate::sync::Ship, String> + Send + Sync>,
    /// `--startup-timeout`: a command, agent or sync that makes no
    /// progress for this long costs that worker (it is killed).
    pub limit: Option<f64>,
}

impl SyncPlan {
    /// The local pytest to ship, found once.
    pub fn ship(&self) -> Result<&crate::sync::Ship, String> {
        self.ship
            .get_or_init(|| (self.find_ship)())
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl std::fmt::Debug for Syncs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncs").finish_non_exhaustive()
    }
}

impl Syncs {
    /// Say what exec= workers are synced with (once per run).
    pub fn set_plan(&self, plan: SyncPlan) -> &SyncPlan {
        let _ = self.plan.set(plan);
        self.plan.get().expect("just set")
    }

    /// The synced connection of worker `id`, if one waits.
    pub fn take_ready(&self, id: &str) -> Option<Connection> {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Keep worker `id`'s synced connection until the session starts it.
    pub fn keep_ready(&self, id: &str, conn: Connection) {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), conn);
    }

    /// Start exec= worker `w` and sync it (when its place is not synced
    /// yet); its agent runs, waiting for where to run.
    pub async fn connect(
        &self,
        w: &crate::plan::WorkerPlan,
        env: &BTreeMap<String, String>,
    ) -> Result<(Connection, crate::sync::Outcome), Error> {
        let crate::spec::Transport::Exec { argv } = &w.transport else {
            return Err(Error::internal("not an exec= worker"));
        };
        let conn = spawn(argv, &w.python, env, w.nice)?;
        let plan = self.plan.get();
        let job = plan.and_then(|p| {
            let base = p.bases.get(&w.id)?;
            p.tree.as_ref().map(|j| j.at(base))
        });
        let ship = plan.map(|p| move || p.ship());
        let ship_ref: Option<crate::sync::ShipSource<'_>> = ship.as_ref().map(|f| f as _);
        // Whatever stops this before the worker is handed on (a timeout,
        // the run interrupted mid-sync) kills what the command started.
        let mut guard = KillUnlessKept(Some(conn.killer.clone()));
        let prepare = crate::sync::prepare_in_place(
            conn,
            &w.id,
            &w.python,
            job.as_ref(),
            ship_ref,
            &self.places,
        );
        let limit = plan.and_then(|p| p.limit);
        let result = match limit {
            Some(secs) => tokio::time::timeout(std::time::Duration::from_secs_f64(secs), prepare)
                .await
                .unwrap_or_else(|_| {
                    Err(crate::sync::SyncError(format!(
                        "the command, its Python or the sync made no progress within {secs}s (--startup-timeout)"
                    )))
                }),
            None => prepare.await,
        };
        if result.is_ok() {
            guard.0 = None;
        }
        result.map_err(|e| Error::worker(e.0))
    }
}

/// Kills a worker when dropped, unless it was kept (`.0` taken).
struct KillUnlessKept(Option<super::Killer>);

impl Drop for KillUnlessKept {
    fn drop(&mut self) {
        if let Some(k) = self.0.take() {
            k.kill();
        }
    }
}

impl Drop for Syncs {
    fn drop(&mut self) {
        // Synced workers the session never started (a run stopped first).
        let ready = std::mem::take(self.ready.get_mut().unwrap_or_else(|p| p.into_inner()));
        for conn in ready.into_values() {
            conn.killer.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_invocation_follows_the_command() {
        let argv: Vec<String> = ["kubectl", "exec", "-i", "runner-0", "--"]
            .map(String::from)
            .to_vec();
        let env = BTreeMap::from([("A".to_string(), "1 2".to_string())]);
        let line = command_line(&argv, "python3", &env, Some(5));
        assert_eq!(
            &line[..11],
            [
                "kubectl", "exec", "-i", "runner-0", "--", "nice", "-n", "5", "env", "A=1 2",
                "python3"
            ]
        );
        assert_eq!(&line[11..13], ["-u", "-c"]);
        assert!(line[13].starts_with(OWN_GROUP) && line[13].ends_with(BOOTSTRAP));
        let plain = command_line(&argv, "python3", &BTreeMap::new(), None);
        assert_eq!(plain[5], "python3");
    }
}
