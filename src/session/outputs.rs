//! The end of a run: outcomes for stranded tests, the exit code, the
//! duration history and pytest's `lastfailed` cache.

use super::*;

/// Where the duration history lives.
pub fn history_path(rootdir: &std::path::Path) -> PathBuf {
    rootdir.join(".rtest").join("durations.json")
}

/// The duration history (empty when there is none, or it is unreadable).
pub fn load_history(rootdir: &std::path::Path) -> history::History {
    std::fs::read(history_path(rootdir))
        .map(|b| history::History::parse(&b))
        .unwrap_or_default()
}

fn save_history(rootdir: &std::path::Path, h: &history::History) -> std::io::Result<()> {
    let text = serde_json::to_vec(h).unwrap_or_default();
    crate::fsutil::write_atomic(&history_path(rootdir), &text)
}

/// Keep pytest's `cache/lastfailed` current, as pytest's LFPlugin would
/// (workers do not write it: they run with `config.workerinput` set, like
/// xdist workers), so `--lf`/`--ff` work after an rtest run.
fn update_lastfailed(
    cachedir: &std::path::Path,
    updates: impl Iterator<Item = (String, bool)>,
) -> std::io::Result<()> {
    let path = cachedir.join("v").join("cache").join("lastfailed");
    let mut map: std::collections::BTreeMap<String, serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let before = map.clone();
    for (nodeid, failed) in updates {
        if failed {
            map.insert(nodeid, serde_json::Value::Bool(true));
        } else {
            map.remove(&nodeid);
        }
    }
    if map == before && (path.exists() || map.is_empty()) {
        return Ok(());
    }
    if !cachedir.exists() {
        std::fs::create_dir_all(cachedir)?;
        std::fs::write(
            cachedir.join(".gitignore"),
            "# Created by pytest automatically.\n*\n",
        )?;
        std::fs::write(
            cachedir.join("CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by pytest.\n",
        )?;
    }
    std::fs::create_dir_all(path.parent().unwrap_or(cachedir))?;
    let text = serde_json::to_string_pretty(&map).unwrap_or_else(|_| "{}".into());
    crate::fsutil::write_atomic(&path, text.as_bytes())
}

impl Session<'_> {
    /// Give stranded tests their outcome and decide the exit code.
    pub(super) fn conclude(&mut self) -> ExitCode {
        // Tests that no worker is left to run still get an outcome.
        if self.stop.is_none()
            && self.error.is_none()
            && self.collected_event
            && !self.plan.collect_only
        {
            let stranded: Vec<usize> = (0..self.items.len())
                .filter(|g| !self.items[*g].done)
                .collect();
            if !stranded.is_empty() {
                self.stop = Some(StopReason::WorkersLost);
                for g in stranded {
                    let item = &mut self.items[g];
                    item.done = true;
                    let message = "not run: every worker that could run it crashed and --max-worker-restart is used up".to_string();
                    let report = PhaseReport {
                        i: item.local,
                        when: "setup".into(),
                        outcome: "failed".into(),
                        head_line: Some(
                            item.location
                                .as_ref()
                                .map(|l| l.2.clone())
                                .unwrap_or_else(|| domain_of(&item.nodeid)),
                        ),
                        location: item.location.clone(),
                        longrepr: Some(message.clone()),
                        crash: Some(Crash {
                            path: None,
                            lineno: None,
                            message: Some(message),
                        }),
                        ..PhaseReport::default()
                    };
                    let result = TestResult {
                        nodeid: item.nodeid.clone(),
                        worker: "-".into(),
                        worker_index: usize::MAX,
                        location: item.location.clone(),
                        phases: vec![report],
                        duration: 0.0,
                        crashed: true,
                        live_log: None,
                    };
                    self.record(result);
                }
            }
        }
        if let Some(e) = &self.error {
            e.exit_code()
        } else {
            match &self.stop {
                Some(StopReason::Signal(_)) | Some(StopReason::TestInterrupted(_)) => {
                    ExitCode::Interrupted
                }
                Some(StopReason::CollectionErrors(_)) => ExitCode::Interrupted,
                Some(StopReason::PytestStop(_) | StopReason::PytestExit(..))
                    if self.pytest_exit_status.is_some() =>
                {
                    ExitCode::from_pytest(self.pytest_exit_status.unwrap_or(2))
                }
                _ if self.internal_error => ExitCode::InternalError,
                _ if self.any_failed => ExitCode::TestsFailed,
                _ if self.items.is_empty() => ExitCode::NoTestsCollected,
                _ => ExitCode::Ok,
            }
        }
    }

    /// Write the history and pytest's cache, and tell the reporters the
    /// run is over.
    pub(super) fn finish(mut self, exit: ExitCode) -> Outcome {
        if let (Some(root), Some(mut h)) = (self.rootdir.clone(), self.history.take()) {
            // Shard jobs only read the history, so that every job of a CI
            // matrix splits the suite alike.
            if !self.plan.collect_only && self.plan.shard.is_none() && !self.durations.is_empty() {
                h.merge(std::mem::take(&mut self.durations));
                if let Err(e) = save_history(&root, &h) {
                    let msg = format!("could not write {}: {e}", history_path(&root).display());
                    self.reporter.on_event(&Event::Notice(msg));
                }
            }
        }
        if let Some(dir) = &self.cachedir {
            let failed_collectors: Vec<String> = self
                .slots
                .iter()
                .flat_map(|s| s.collect_reports.iter())
                .filter(|r| r.outcome == "failed")
                .map(|r| r.nodeid.clone())
                .collect();
            if !self.plan.collect_only {
                let updates = self
                    .lastfailed
                    .iter()
                    .cloned()
                    .chain(failed_collectors.into_iter().map(|n| (n, true)));
                if let Err(e) = update_lastfailed(std::path::Path::new(dir), updates) {
                    let msg = format!("could not update pytest's cache in {dir}: {e}");
                    self.reporter.on_event(&Event::Notice(msg));
                }
            }
        }
        self.reporter.on_event(&Event::Finished {
            stop: self.stop.clone(),
            elapsed: self.start.elapsed(),
            error: self.error.clone(),
            junit_written: self.junit_written,
            exit,
            plugins: self.ctl.output(),
        });
        Outcome { exit }
    }
}
