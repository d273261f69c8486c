//! `rtest plan`: resolve everything a run would, start nothing, and show it.

use crate::plan::{Plan, SyncSet};
use std::fmt::Write as _;

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
    let mut builder = globset::GlobSetBuilder::new();
    let mut anchored = globset::GlobSetBuilder::new();
    for ig in &set.ignore {
        if ig.pattern.contains('/') {
            let full = ig.base.join(ig.pattern.trim_end_matches('/'));
            if let Ok(g) = globset::Glob::new(&full.display().to_string()) {
                anchored.add(g);
            }
        } else if let Ok(g) = globset::Glob::new(&ig.pattern) {
            builder.add(g);
        }
    }
    let names = builder
        .build()
        .unwrap_or_else(|_| globset::GlobSet::empty());
    let paths = anchored
        .build()
        .unwrap_or_else(|_| globset::GlobSet::empty());
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![set.dir.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            if names.is_match(std::path::Path::new(&name)) || paths.is_match(&path) {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(path);
            } else {
                files += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (files, bytes)
}

/// The plan as JSON (the schema'd, stable form).
pub fn to_json(plan: &Plan) -> serde_json::Value {
    serde_json::to_value(crate::plan::view::PlanView::new(plan, &sync_size)).unwrap_or_default()
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
    let _ = writeln!(out, "dist: {}", plan.dist);
    let _ = writeln!(out, "workers ({}):", plan.workers.len());
    for w in &plan.workers {
        let mut line = format!(
            "  {}  {} on {}  python={}",
            w.id,
            w.transport.name(),
            w.transport.host(),
            w.python
        );
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
        "timeout: {}  max-worker-restart: {}  maxfail: {}",
        plan.timeout.map_or("none".to_string(), |t| format!("{t}s")),
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
