//! `rtest plan`: resolve everything a run would, start nothing, and show it.

use crate::error::Error;
use crate::events::{Event, Reporter};
use crate::plan::view::{CollectView, ShardView, WorkerShare};
use crate::plan::{DistMode, Plan, SyncSet};
use crate::sched::{self, history, ItemInfo};
use std::fmt::Write as _;

/// What a local collection found.
#[derive(Debug, Clone, Default)]
pub struct Collection {
    /// Node ids.
    pub ids: Vec<String>,
    /// Deselected by `-k`/`-m`.
    pub deselected: usize,
    /// Collectors that failed.
    pub errors: usize,
    /// pytest's rootdir.
    pub rootdir: String,
}

/// A reporter that keeps what collection found.
#[derive(Debug, Default)]
pub struct Capture {
    collection: Option<Collection>,
    error: Option<String>,
}

impl Reporter for Capture {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Collected {
                ids,
                deselected,
                collect_reports,
                rootdir,
                ..
            } => {
                self.collection = Some(Collection {
                    ids: ids.clone(),
                    deselected: *deselected,
                    errors: collect_reports
                        .iter()
                        .filter(|r| r.outcome == "failed")
                        .count(),
                    rootdir: rootdir.clone(),
                })
            }
            Event::Finished { error: Some(e), .. } => self.error = Some(e.message.clone()),
            _ => {}
        }
    }
}

impl Capture {
    /// The collection, or the error that prevented it.
    pub fn finish(self) -> Result<Collection, Error> {
        match (self.collection, self.error) {
            (Some(c), _) => Ok(c),
            (None, Some(e)) => Err(Error::usage(e)),
            (None, None) => Err(Error::internal("collection ended without a result")),
        }
    }
}

/// How the collected tests would be spread, for the static cases.
pub fn collect_view(plan: &Plan, c: &Collection) -> CollectView {
    let hist = history::History::parse(
        &std::fs::read(crate::session::history_path(std::path::Path::new(
            &c.rootdir,
        )))
        .unwrap_or_default(),
    );
    let expected = hist.estimate(&c.ids);
    let infos: Vec<ItemInfo> = c
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| ItemInfo {
            id: i,
            key: None,
            module: history::module_of(id).to_string(),
            expected: expected.as_ref().map(|e| e[i]),
        })
        .collect();
    let mut shards = Vec::new();
    let mut selected: Vec<usize> = (0..c.ids.len()).collect();
    if let Some((k, n)) = plan.shard {
        for j in 1..=n {
            let mine = sched::shard(&infos, j, n);
            let secs = expected
                .as_ref()
                .map(|e| mine.iter().map(|i| e[*i]).sum::<f64>());
            if j == k {
                selected = mine.clone();
            }
            shards.push(ShardView {
                shard: format!("{j}/{n}"),
                tests: mine.len(),
                expected_seconds: secs,
                this_job: j == k,
            });
        }
    }
    let count = selected.len();
    let per_worker = plan
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| WorkerShare {
            id: w.id.clone(),
            tests: match plan.dist {
                DistMode::Each => Some(count),
                DistMode::No => Some(if i == 0 { count } else { 0 }),
                _ => None,
            },
        })
        .collect();
    let units = match plan.dist {
        DistMode::LoadFile | DistMode::LoadScope => {
            let mut keys: Vec<String> = selected
                .iter()
                .filter_map(|i| sched::unit_key(plan.dist, &c.ids[*i], None))
                .collect();
            keys.sort();
            keys.dedup();
            Some(keys.len())
        }
        _ => None,
    };
    CollectView {
        total: c.ids.len(),
        selected: count,
        deselected: c.deselected,
        collect_errors: c.errors,
        history: expected.is_some(),
        units,
        per_worker,
        shards,
    }
}

/// The collection part of the text plan.
pub fn collect_text(v: &CollectView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "collection: {} tests{}{}{}",
        v.total,
        if v.deselected > 0 {
            format!(", {} deselected", v.deselected)
        } else {
            String::new()
        },
        if v.collect_errors > 0 {
            format!(", {} errors", v.collect_errors)
        } else {
            String::new()
        },
        if v.history {
            " (with duration history)"
        } else {
            " (no duration history)"
        }
    );
    for s in &v.shards {
        let _ = writeln!(
            out,
            "  shard {}: {} tests{}{}",
            s.shard,
            s.tests,
            s.expected_seconds
                .map_or(String::new(), |t| format!(", ~{t:.2}s expected")),
            if s.this_job { "  <- this job" } else { "" }
        );
    }
    if let Some(u) = v.units {
        let _ = writeln!(out, "  {} tests in {u} units, handed out whole", v.selected);
    }
    for w in &v.per_worker {
        match w.tests {
            Some(t) => {
                let _ = writeln!(out, "  {}: {t} tests", w.id);
            }
            None => {
                let _ = writeln!(out, "  {}: dynamic share of {} tests", w.id, v.selected);
            }
        }
    }
    out
}

/// Output formats of `rtest plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A readable tree.
    Text,
    /// Stable JSON (see `schemas/plan.json`).
    Json,
    /// Graphviz of the execution graph.
    Dot,
}

/// File count and bytes a sync set would send (a full, first sync).
pub fn sync_size(set: &SyncSet) -> (u64, u64) {
    let entries = crate::sync::walk_set(&set.dir, set).unwrap_or_default();
    (entries.len() as u64, entries.iter().map(|e| e.size).sum())
}

/// The plan as a readable tree.
pub fn to_text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rootdir: {}", plan.rootdir.display());
    let _ = writeln!(out, "config files (merge order):");
    if plan.config_files.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for f in &plan.config_files {
        let _ = writeln!(out, "  {}", f.display());
    }
    if let Some(p) = &plan.profile {
        let _ = writeln!(out, "profile: {p}");
    }
    let _ = writeln!(out, "settings:");
    for (k, s) in &plan.settings {
        match &s.value {
            serde_json::Value::Array(items) if items.iter().all(|i| i.get("source").is_some()) => {
                let _ = writeln!(out, "  {k}:");
                for i in items {
                    let shown = i
                        .get("spec")
                        .or_else(|| i.get("dir"))
                        .or_else(|| i.get("pattern"))
                        .cloned()
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "    {}  ({})",
                        show(&shown),
                        i["source"].as_str().unwrap_or("")
                    );
                }
            }
            v => {
                let _ = writeln!(out, "  {k} = {}  ({})", show(v), s.source);
            }
        }
    }
    let _ = writeln!(
        out,
        "default python: {}  ({})",
        plan.default_python.0, plan.default_python.1
    );
    let _ = writeln!(out, "dist: {}", plan.dist);
    let _ = writeln!(out, "workers ({}):", plan.workers.len());
    for (i, w) in plan.workers.iter().enumerate() {
        let mut line = match crate::gateway::ssh::Dest::of(w) {
            // user@host:port, and which of the host's connections it shares
            Some(dest) => format!(
                "  {}  ssh on {}  python={}  connection={}",
                w.id,
                dest.to_string().trim_start_matches("ssh="),
                w.python,
                crate::gateway::Remotes::ordinal(&plan.workers, i)
                    / crate::gateway::ssh::WORKERS_PER_MASTER
                    + 1
            ),
            None => format!(
                "  {}  {} on {}  python={}",
                w.id,
                w.transport.name(),
                w.transport.host(),
                w.python
            ),
        };
        if let Some(c) = &w.chdir {
            line.push_str(&format!("  chdir={}", c.display()));
        }
        for (k, v) in &w.env {
            line.push_str(&format!("  {k}={v}"));
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "sync:");
    if plan.sync.is_empty() {
        let _ = writeln!(out, "  (nothing: no rsyncdirs)");
    }
    for s in &plan.sync {
        let (files, bytes) = sync_size(s);
        let _ = writeln!(out, "  {}  ({files} files, {bytes} bytes)", s.dir.display());
        for i in &s.ignore {
            let _ = writeln!(out, "    ignore {}  ({})", i.pattern, i.source);
        }
    }
    let _ = writeln!(
        out,
        "pytest args: {}",
        if plan.pytest_args.is_empty() {
            "(none)".to_string()
        } else {
            plan.pytest_args.join(" ")
        }
    );
    let _ = writeln!(
        out,
        "timeout: {}  startup-timeout: {}  max-worker-restart: {}  maxfail: {}",
        plan.timeout
            .filter(|t| *t > 0.0)
            .map_or("none".to_string(), |t| format!("{t}s")),
        plan.startup_timeout
            .map_or("none".to_string(), |t| format!("{t}s")),
        plan.max_worker_restart,
        plan.maxfail.map_or("none".to_string(), |m| m.to_string())
    );
    let _ = writeln!(
        out,
        "outputs: junitxml={}  report-log={}",
        plan.junitxml
            .as_ref()
            .map_or("none".to_string(), |p| p.display().to_string()),
        plan.report_log
            .as_ref()
            .map_or("none".to_string(), |p| p.display().to_string())
    );
    out
}

fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The execution graph in Graphviz dot: per worker, gateway setup -> sync
/// -> start -> collect -> run, all joining in report.
pub fn to_dot(plan: &Plan) -> String {
    let mut out = String::from(
        "digraph rtest {\n  rankdir=LR;\n  node [shape=box];\n  report [label=\"report\"];\n",
    );
    let remote_sync = !plan.sync.is_empty();
    for w in &plan.workers {
        let id = &w.id;
        let _ = writeln!(
            out,
            "  subgraph \"cluster_{id}\" {{\n    label=\"{id} ({} on {})\";",
            w.transport.name(),
            w.transport.host()
        );
        let mut steps = vec![(
            "gateway",
            format!("gateway setup\\n{}", w.python.replace('"', "\\\"")),
        )];
        if remote_sync && w.transport.name() != "popen" {
            steps.push(("sync", format!("sync {} dirs", plan.sync.len())));
        }
        steps.push(("start", "start pytest".into()));
        steps.push(("collect", "collect".into()));
        steps.push(("run", format!("run ({})", plan.dist)));
        for (name, label) in &steps {
            let _ = writeln!(out, "    \"{id}_{name}\" [label=\"{label}\"];");
        }
        for pair in steps.windows(2) {
            let _ = writeln!(out, "    \"{id}_{}\" -> \"{id}_{}\";", pair[0].0, pair[1].0);
        }
        let _ = writeln!(out, "  }}\n  \"{id}_run\" -> report;");
    }
    out.push_str("}\n");
    out
}

/// The probe part of the text plan.
pub fn probe_text(probes: &[crate::plan::view::ProbeView]) -> String {
    let mut out = String::from("probe:\n");
    for p in probes {
        let what = match (&p.error, &p.python_version) {
            (Some(e), _) => format!("unreachable or unusable: {e}"),
            (None, Some(v)) => format!(
                "Python {v}, pytest {}",
                p.pytest
                    .as_deref()
                    .unwrap_or("missing (rtest ships the local one)")
            ),
            (None, None) => "no answer".to_string(),
        };
        // exec= workers: which of them see the same files (one sync).
        let place = match (&p.place, p.workers.len()) {
            (None, _) => String::new(),
            (Some(_), 1) => "; a place of its own (synced on its own)".to_string(),
            (Some(_), n) => format!("; one place: these {n} share their files (synced once)"),
        };
        let _ = writeln!(
            out,
            "  {} on {} ({}): {what}{place}",
            p.python,
            p.host,
            p.workers.join(", ")
        );
    }
    out
}
