//! `--report-log`: JSON lines compatible with pytest-reportlog.
//!
//! One object per line: `SessionStart`, a `CollectReport` per collector
//! that did not pass, a `TestReport` per phase (pytest's own serialization,
//! sent by the workers), `WarningMessage`s, then `SessionFinish`.

use crate::events::{Event, Reporter, TestResult};
use crate::protocol::PhaseReport;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;

/// Streams the log as the run goes, to a temp name beside the path (a
/// crashed coordinator still leaves everything up to the crash there),
/// renamed to the path when the run ends. A run that ends in an error
/// before any test result leaves no file (and an earlier run's file as it
/// was).
pub struct ReportLog {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    errors: super::WriteErrors,
    results: usize,
}

impl ReportLog {
    /// Open the temp file now, so an unwritable path is found before any
    /// test runs.
    pub fn create(path: PathBuf, errors: super::WriteErrors) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        if path.is_dir() {
            return Err(std::io::Error::other("it is a directory"));
        }
        let tmp = crate::fsutil::temp_beside(&path);
        let file = std::fs::File::create(&tmp)?;
        Ok(ReportLog {
            path,
            tmp,
            file: Some(std::io::BufWriter::new(file)),
            errors,
            results: 0,
        })
    }

    fn error(&self, e: std::io::Error) {
        if let Ok(mut errs) = self.errors.lock() {
            errs.push(format!(
                "could not write --report-log {}: {e}",
                self.path.display()
            ));
        }
    }

    fn write(&mut self, value: Value) {
        let Some(f) = &mut self.file else { return };
        let line = serde_json::to_string(&value).unwrap_or_default();
        if let Err(e) = writeln!(f, "{line}") {
            self.error(e);
            self.file = None;
        }
    }
}

/// A warning as pytest-reportlog writes it: its category's name, file,
/// line and message, when pytest recorded it and the location pytest gave
/// (`[file, line, function]` or null), from the worker's serialized form.
fn warning_json(data: &Value) -> Option<Value> {
    let category = data
        .get("category")
        .and_then(Value::as_array)
        .and_then(|c| c.last())
        .and_then(Value::as_str)
        .map(|q| q.rsplit('.').next().unwrap_or(q).to_string());
    Some(json!({
        "category": category,
        "filename": data.get("filename")?,
        "lineno": data.get("lineno")?,
        "message": data.get("message")?,
        "$report_type": "WarningMessage",
        "when": data.get("when")?,
        "location": data.get("location").cloned().unwrap_or(Value::Null),
    }))
}

/// A phase as pytest-reportlog writes it.
pub fn phase_json(result: &TestResult, p: &PhaseReport) -> Value {
    let mut v = match p.raw.as_ref().map(|r| r.parse()) {
        Some(Value::Object(m)) => Value::Object(m),
        _ => {
            let location = result
                .location
                .as_ref()
                .map(|(a, b, c)| json!([a, b, c]))
                .unwrap_or(Value::Null);
            json!({
                "nodeid": result.nodeid,
                "location": location,
                "keywords": {},
                "outcome": p.outcome,
                "longrepr": p.longrepr,
                "when": p.when,
                "user_properties": p.user_properties,
                "sections": p.sections,
                "duration": p.duration,
            })
        }
    };
    if let Value::Object(m) = &mut v {
        m.insert("worker_id".into(), json!(result.worker));
        m.insert("$report_type".into(), json!("TestReport"));
    }
    v
}

impl Reporter for ReportLog {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::SessionStarted { worker, .. } => {
                let version = worker.info.pytest.clone().unwrap_or_default();
                self.write(json!({"pytest_version": version, "$report_type": "SessionStart"}));
            }
            Event::Collected {
                collect_reports, ..
            } => {
                for c in collect_reports {
                    let v = match c.raw.as_ref().map(|r| r.parse()) {
                        Some(Value::Object(mut m)) => {
                            m.insert("$report_type".into(), json!("CollectReport"));
                            Value::Object(m)
                        }
                        _ => json!({
                            "nodeid": c.nodeid, "outcome": c.outcome, "longrepr": c.longrepr,
                            "result": [], "sections": [], "$report_type": "CollectReport"
                        }),
                    };
                    self.write(v);
                }
            }
            Event::TestFinished(r) => {
                self.results += 1;
                for p in &r.phases {
                    self.write(phase_json(r, p));
                }
            }
            Event::Warning {
                nodeid, text, data, ..
            } => {
                let line = data
                    .as_ref()
                    .and_then(|d| warning_json(&d.parse()))
                    .unwrap_or_else(|| {
                        json!({"nodeid": nodeid, "message": text, "$report_type": "WarningMessage"})
                    });
                self.write(line);
            }
            Event::Finished { exit, error, .. } => {
                if error.is_some() && self.results == 0 {
                    self.file = None;
                    let _ = std::fs::remove_file(&self.tmp);
                    return;
                }
                self.write(json!({"exitstatus": exit.code(), "$report_type": "SessionFinish"}));
                let Some(mut f) = self.file.take() else {
                    let _ = std::fs::remove_file(&self.tmp);
                    return;
                };
                let done = f
                    .flush()
                    .and_then(|_| std::fs::rename(&self.tmp, &self.path));
                if let Err(e) = done {
                    let _ = std::fs::remove_file(&self.tmp);
                    self.error(e);
                }
            }
            _ => {}
        }
    }
}
