//! Before workers start: mirror the rsyncdirs to the hosts and copies
//! that need them, and ship pytest to remote Pythons without it.

use crate::config;
use crate::error::Error;
use crate::gateway::Remotes;
use crate::plan::{self, Plan};
use crate::spec::Transport;
use crate::sync as rtest_sync;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket servers' shared token: `RTEST_TOKEN_FILE`, else `RTEST_TOKEN`.
pub fn socket_token() -> Result<Option<Vec<u8>>, Error> {
    if let Some(file) = std::env::var_os("RTEST_TOKEN_FILE").filter(|f| !f.is_empty()) {
        let text = std::fs::read(&file).map_err(|e| {
            Error::usage(format!(
                "RTEST_TOKEN_FILE {}: {e}",
                PathBuf::from(&file).display()
            ))
        })?;
        return Ok(Some(
            String::from_utf8_lossy(&text).trim().as_bytes().to_vec(),
        ));
    }
    Ok(std::env::var("RTEST_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(String::into_bytes))
}

/// Prepare workers that do not run in this tree: mirror the rsyncdirs for
/// `popen//chdir=DIR` and remote workers (once per host and directory) and
/// point them at their copy (same layout, so the same node ids); give a
/// remote host without pytest the local one.
///
/// A host lost during its sync (a dropped connection, a full disk) costs
/// its workers, not the run, unless `require_all_hosts`: they are left out
/// (never started on a copy that is not whole) and the others go on.
pub fn sync_workers(
    plan: &mut Plan,
    remotes: &Remotes,
    require_all_hosts: bool,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<String>, Error> {
    let remote = plan.workers.iter().any(|w| w.transport != Transport::Popen);
    if plan.sync.is_empty() && !remote {
        return Ok(Vec::new());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Error::usage(format!("the current directory is unusable: {e}")))?;
    let root = rtest_sync::sync_root(&plan.rootdir, &cwd, &plan.sync);
    let rel_cwd = cwd
        .strip_prefix(&root)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let rel_rootdir = plan
        .rootdir
        .strip_prefix(&root)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let sync = plan.sync.clone();
    let rootdir = plan.rootdir.clone();
    let limit = plan.startup_timeout;
    let bases = copy_bases(plan, &cwd);
    // exec= workers are synced over their own connections (their files
    // may live no longer than their process), once per place.
    let tree = (!sync.is_empty()).then(|| rtest_sync::Job {
        base: String::new(),
        root: root.clone(),
        rootdir: rootdir.clone(),
        sets: sync.clone(),
        files: Vec::new(),
    });
    let local_python = plan.default_python.0.clone();
    let shared = remotes.exec.set_plan(crate::gateway::exec::SyncPlan {
        tree: tree.clone(),
        bases: plan
            .workers
            .iter()
            .zip(&bases)
            .filter_map(|(w, b)| Some((w.id.clone(), b.clone()?)))
            .collect(),
        ship: Default::default(),
        // Only a remote without pytest needs the local one: found when one
        // does, once.
        find_ship: Box::new(move || local_pytest(&local_python).map_err(|e| e.message)),
        limit,
    });
    let get_ship = || shared.ship();
    // Each (host, python, copy) once, all hosts at the same time; each
    // exec= worker on its own.
    let mut keys: Vec<Option<(String, String, String)>> = plan
        .workers
        .iter()
        .zip(&bases)
        .map(|(w, base)| {
            let b = base.as_ref()?;
            let host = match &w.transport {
                Transport::Exec { .. } => format!("exec {}", w.id),
                _ => format!("{:?} {:?}", w.transport, w.ssh_config),
            };
            Some((host, w.python.clone(), b.clone()))
        })
        .collect();
    let mut firsts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        if let Some(key) = key {
            firsts.entry(key.clone()).or_insert(i);
        }
    }
    let jobs: Vec<((String, String, String), usize)> = firsts.into_iter().collect();
    let syncs = jobs.iter().map(|(key, i)| {
        let w = &plan.workers[*i];
        let job = tree.as_ref().map(|j| j.at(&key.2));
        let get_ship = &get_ship;
        async move {
            let started = std::time::Instant::now();
            let push = async {
                let conn = match &w.transport {
                    Transport::Popen => {
                        crate::gateway::popen::spawn(&w.python, None, &Default::default(), None)
                    }
                    Transport::Exec { .. } => {
                        // The worker itself, synced: it waits for the session.
                        let (conn, outcome) = remotes
                            .exec
                            .connect(w, &w.env)
                            .await
                            .map_err(|e| rtest_sync::SyncError(e.message))?;
                        remotes.exec.keep_ready(&w.id, conn);
                        return Ok(outcome);
                    }
                    // The spec's env: it may matter to the interpreter itself.
                    _ => remotes.connect(w, 0, w.env.clone()).await,
                }
                .map_err(|e| rtest_sync::SyncError(e.message))?;
                rtest_sync::push_over(conn, &w.python, job, Some(get_ship)).await
            };
            // A connection that stalls (open, but nothing moves) is bounded
            // like a worker's start, and costs that host like any failed
            // sync (an exec= worker bounds itself, killing what it started).
            let bounded = limit.filter(|_| !matches!(w.transport, Transport::Exec { .. }));
            let outcome = match bounded {
                Some(secs) => tokio::time::timeout(Duration::from_secs_f64(secs), push)
                    .await
                    .map_err(|_| {
                        rtest_sync::SyncError(format!(
                            "the sync made no progress within {secs}s (--startup-timeout)"
                        ))
                    })??,
                None => push.await?,
            };
            Ok::<_, rtest_sync::SyncError>((outcome, started.elapsed()))
        }
    });
    let all = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = join_all(syncs.collect()) => Some(r),
            // Ctrl-C or SIGTERM while syncing stops here (and the masters
            // close on the way out).
            _ = tokio::signal::ctrl_c() => None,
            _ = terminated => None,
        }
    };
    let Some(results) = runtime.block_on(all) else {
        return Err(Error {
            kind: crate::error::ErrorKind::Interrupted,
            message: "interrupted while syncing".into(),
        });
    };
    let mut done: BTreeMap<(String, String, String), rtest_sync::Outcome> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut lost: Vec<(String, String, String)> = Vec::new();
    for ((key, i), result) in jobs.into_iter().zip(results) {
        let w = &plan.workers[i];
        let (outcome, took) = match result {
            Ok(o) => o,
            // An unreachable remote is the session's to report (and to go
            // on without, unless --require-all-hosts); everything else
            // stops here.
            Err(e) if e.0.contains(": cannot connect") || e.0.contains(": no answer within") => {
                continue
            }
            Err(e) if require_all_hosts => {
                return Err(Error::usage(format!(
                    "worker {} ({}): {e} (--require-all-hosts)",
                    w.id, w.spec
                )))
            }
            Err(e) => {
                let ids: Vec<&str> = plan
                    .workers
                    .iter()
                    .zip(&keys)
                    .filter(|(_, k)| k.as_ref() == Some(&key))
                    .map(|(w, _)| w.id.as_str())
                    .collect();
                notes.push(format!(
                    "worker {} ({}): {e}; going on without {}",
                    w.id,
                    w.spec,
                    ids.join(", ")
                ));
                lost.push(key);
                continue;
            }
        };
        let host = match &w.transport {
            Transport::Exec { .. } => format!("exec worker {}", w.id),
            other => other.host(),
        };
        if let (Some(stats), Some(by)) = (&outcome.tree, &outcome.shared_from) {
            notes.push(format!(
                "{} shares {by}'s copy in {} (the same files there)",
                w.id, stats.base
            ));
        } else if let Some(stats) = &outcome.tree {
            notes.push(format!(
                "synced to {} on {host}: {} of {} files sent ({} bytes), {} deleted in {:.2}s",
                stats.base,
                stats.files,
                stats.total,
                stats.bytes,
                stats.deleted,
                took.as_secs_f64()
            ));
        }
        if let (Some(stats), Some(Ok(ship))) = (&outcome.shipped, shared.ship.get()) {
            let how = if stats.files == 0 {
                "uses the copy already in".to_string()
            } else {
                format!("shipped {} files to", stats.files)
            };
            notes.push(format!(
                "{} on {host} has no pytest: pytest {}, {how} {}",
                w.python, ship.version, stats.base,
            ));
        }
        done.insert(key, outcome);
    }
    if !lost.is_empty() {
        let before = plan.workers.len();
        let kept: Vec<(plan::WorkerPlan, Option<CopyKey>)> = plan
            .workers
            .drain(..)
            .zip(keys)
            .filter(|(_, k)| !k.as_ref().is_some_and(|k| lost.contains(k)))
            .collect();
        if kept.is_empty() {
            return Err(Error::usage(format!(
                "no worker is left: the sync failed for all {before} ({})",
                notes.join("; ")
            )));
        }
        let (workers, kept_keys): (Vec<_>, Vec<_>) = kept.into_iter().unzip();
        plan.workers = workers;
        keys = kept_keys;
    }
    finish_sync(plan, &keys, &done, &rel_cwd, &rel_rootdir, &root)?;
    Ok(notes)
}

/// Where each worker's copy goes: chdir= (relative to here for popen, as
/// given remotely: to the home directory over ssh, to where the command
/// starts for exec=), else a per-rootdir cache remotely; `None` for a
/// worker that runs in this tree.
pub fn copy_bases(plan: &Plan, cwd: &Path) -> Vec<Option<String>> {
    let cache_key = short_hash(&plan.rootdir.display().to_string());
    plan.workers
        .iter()
        .map(|w| match (&w.transport, &w.chdir) {
            (Transport::Popen, None) => None,
            (Transport::Popen, Some(_)) if plan.sync.is_empty() => None,
            (Transport::Popen, Some(c)) => Some(
                config::rootdir::normalize(&cwd.join(c))
                    .display()
                    .to_string(),
            ),
            (_, Some(c)) => Some(c.display().to_string()),
            (_, None) => Some(format!("~/.cache/rtest/{cache_key}")),
        })
        .collect()
}

/// One copy of the tree: (host, Python, directory).
type CopyKey = (String, String, String);

/// Point each synced worker at its copy.
fn finish_sync(
    plan: &mut Plan,
    keys: &[Option<CopyKey>],
    done: &BTreeMap<CopyKey, rtest_sync::Outcome>,
    rel_cwd: &Path,
    rel_rootdir: &Path,
    root: &Path,
) -> Result<(), Error> {
    for (w, key) in plan.workers.iter_mut().zip(keys) {
        let Some(outcome) = key.as_ref().and_then(|k| done.get(k)) else {
            continue;
        };
        let (shipped, tree) = (outcome.shipped.clone(), outcome.tree.clone());
        if let Some(stats) = shipped {
            w.sys_path.push(stats.base.clone());
        }
        if let Some(stats) = tree {
            let abs_base = PathBuf::from(&stats.base);
            let dir = abs_base.join(rel_cwd);
            if w.transport == Transport::Popen {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::usage(format!("cannot create {}: {e}", dir.display())))?;
            }
            w.chdir = Some(dir);
            let copy_rootdir = abs_base.join(rel_rootdir).display().to_string();
            w.extra_args.push(format!("--rootdir={copy_rootdir}"));
            w.copy_rootdir = Some(copy_rootdir);
            w.copy_root = Some((stats.base.clone(), root.to_path_buf()));
        }
    }
    Ok(())
}

/// The first 8 bytes of a text's SHA-256, in hex (cache directory names).
fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// Await every future, all at once (on one thread), in their order.
pub async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The local pure-Python pytest and what it requires (pluggy, iniconfig,
/// packaging, pygments, and tomli/exceptiongroup where installed), as a
/// tree to ship.
fn local_pytest(python: &str) -> Result<rtest_sync::Ship, Error> {
    const SCRIPT: &str = r#"
import json, re, importlib.metadata as m
out = {"site": None, "dirs": [], "files": [], "version": None, "requires": None}
# pytest and everything it requires (whatever the marker: the remote's
# Python may need what this one does not), found installed here.
todo, seen = ["pytest"], set()
while todo:
    name = todo.pop()
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        continue
    seen.add(key)
    try:
        d = m.distribution(name)
    except Exception:
        continue
    for req in d.requires or []:
        if "extra ==" in req or "extra==" in req:
            continue
        todo.append(re.split(r"[ ;<>=!~\[(]", req.strip(), 1)[0])
    site = str(d.locate_file(""))
    out["site"] = out["site"] or site
    if name == "pytest":
        out["version"] = d.version
        out["requires"] = d.metadata.get("Requires-Python")
    tops, singles = set(), set()
    for f in d.files or []:
        if not f.parts or f.parts[0] in ("..", "__pycache__"):
            continue
        if len(f.parts) > 1:
            tops.add(f.parts[0])
        elif f.parts[0].endswith(".py"):
            singles.add(f.parts[0])  # single-module packages, like py.py
    out["dirs"] += sorted(tops)
    out["files"] += sorted(singles)
print(json.dumps(out))
"#;
    let fail = |why: String| {
        Error::usage(format!(
            "cannot find the local pytest to ship to remote workers ({python}): {why}"
        ))
    };
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| fail(String::from_utf8_lossy(&out.stderr).trim().to_string()))?;
    let site = PathBuf::from(
        v["site"]
            .as_str()
            .ok_or_else(|| fail("pytest is not installed here".into()))?,
    );
    let version = v["version"].as_str().unwrap_or("?").to_string();
    let min_python = v["requires"].as_str().and_then(|r| {
        let r = r.trim().strip_prefix(">=")?;
        let mut it = r.split('.').map(|p| p.trim().parse::<u32>().ok());
        Some((it.next()??, it.next().flatten().unwrap_or(0)))
    });
    let ignore = plan::DEFAULT_IGNORES
        .iter()
        .map(|p| plan::SyncIgnore {
            pattern: p.to_string(),
            base: site.clone(),
            source: "default".into(),
        })
        .collect::<Vec<_>>();
    let sets = v["dirs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str())
        .map(|d| plan::SyncSet {
            dir: site.join(d),
            ignore: ignore.clone(),
        })
        .filter(|s| s.dir.is_dir())
        .collect();
    Ok(rtest_sync::Ship {
        job: rtest_sync::Job {
            base: format!(
                "~/.cache/rtest/site-{}",
                short_hash(&format!("{version}{}", site.display()))
            ),
            root: site.clone(),
            rootdir: site.join(".no-rootdir"),
            sets,
            files: v["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .map(|f| site.join(f))
                .collect(),
        },
        version,
        min_python,
    })
}
