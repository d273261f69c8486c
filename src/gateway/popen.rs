//! The `popen` gateway: a local Python child process.

use super::{describe_exit, Connection, Killer};
use crate::error::Error;
use crate::protocol::BOOTSTRAP;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use tokio::process::Command;

/// Start `python` with the bootstrap one-liner, in its own process group.
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
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::worker(format!("failed to start python {python:?}: {e}")))?;
    let pid = child
        .id()
        .ok_or_else(|| Error::worker(format!("python {python:?} exited at once")))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::internal("child stdin missing"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::internal("child stdout missing"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| Error::internal("child stderr missing"))?;
    let exit = Box::pin(async move {
        match child.wait().await {
            Ok(status) => describe_exit(&status),
            Err(e) => format!("lost track of the process: {e}"),
        }
    });
    Ok(Connection {
        reader: Box::new(stdout),
        writer: Box::new(stdin),
        stderr: Some(Box::new(stderr)),
        exit,
        killer: Killer::ProcessGroup(pid as i32),
        agent_started: false,
    })
}
