//! The `popen` gateway: a local Python child process.

use super::Connection;
use crate::error::Error;
use crate::protocol::{AGENT_CACHE_ENV, BOOTSTRAP};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use tokio::process::Command;

/// Start `python` with the bootstrap one-liner, in its own process group,
/// with the cache of compiled agents in rtest's cache directory.
pub fn spawn(
    python: &str,
    chdir: Option<&Path>,
    env: &BTreeMap<String, String>,
    nice: Option<i32>,
) -> Result<Connection, Error> {
    let mut cmd = Command::new(python);
    cmd.arg("-u")
        .arg("-c")
        .arg(BOOTSTRAP)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .env(AGENT_CACHE_ENV, super::provision::cache_dir().join("agent"))
        .envs(env);
    if let Some(dir) = chdir {
        cmd.current_dir(dir);
    }
    if let Some(n) = nice {
        // SAFETY: nice(2) is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(move || {
                libc::nice(n);
                Ok(())
            });
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::worker(format!("failed to start python {python:?}: {e}")))?;
    super::child_connection(child, &format!("python {python:?}"))
}
