//! The `popen` gateway: a local Python child process.

use super::Connection;
use crate::error::Error;
use crate::protocol::{payload_keys, AGENT_CACHE_ENV, BOOTSTRAP};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};
use tokio::process::Command;

/// How long the compiled agents of other rtest builds stay in the cache
/// after they were written (two builds used in turn keep theirs).
const OTHER_BUILDS_KEPT: Duration = Duration::from_secs(14 * 24 * 3600);

/// The cache of compiled agents, pruned once per run: what other rtest
/// builds wrote there more than [`OTHER_BUILDS_KEPT`] ago goes (and what a
/// process killed while writing left behind), so that upgrading rtest does
/// not grow it forever.
fn agent_cache() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = super::provision::cache_dir().join("agent");
        prune_agent_cache(&dir, &payload_keys(), SystemTime::now());
        dir
    })
}

/// Remove from `dir` the files no key in `keep` names that were written
/// more than [`OTHER_BUILDS_KEPT`] before `now`. Best effort: a file
/// another run removes first, or one that cannot be read, is left alone.
fn prune_agent_cache(dir: &Path, keep: &[String], now: SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if keep.iter().any(|k| name.starts_with(&format!("{k}-"))) && name.ends_with(".bin") {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > OTHER_BUILDS_KEPT);
        if old && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

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
        .env(AGENT_CACHE_ENV, agent_cache())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_cache_keeps_this_builds_files_and_recent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let keep = vec!["aaaa".to_string()];
        let write = |name: &str, age_days: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            let when = SystemTime::now() - Duration::from_secs(age_days * 24 * 3600);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        write("aaaa-30b07f0-cpython-311.bin", 400); // this build's: kept
        write("bbbb-30b07f0-cpython-311.bin", 2); // another build's, recent: kept
        write("cccc-30b07f0-cpython-311.bin", 30); // another build's, old: gone
        write("aaaa-30b07f0-cpython-311.bin.4242", 30); // a killed writer's: gone
        prune_agent_cache(dir.path(), &keep, SystemTime::now());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "aaaa-30b07f0-cpython-311.bin",
                "bbbb-30b07f0-cpython-311.bin"
            ]
        );
        // A directory that is not there is no error.
        prune_agent_cache(&dir.path().join("none"), &keep, SystemTime::now());
    }
}
