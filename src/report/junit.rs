//! JUnit XML in pytest's layout (`junit_family=xunit2`).
//!
//! The junit-report crate cannot express what pytest writes (a `<skipped>`
//! with a message, `<system-out>` beside a `<failure>`, `<properties>`), so
//! this writer builds the document itself. Every string is stripped of
//! characters XML 1.0 forbids (ANSI escapes' ESC among them), so the file is
//! always well-formed.

use crate::events::{categorize, Category, Event, Reporter, TestResult};
use crate::protocol::CollectReport;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Collects results and writes the XML file when the run finishes.
pub struct JUnit {
    path: PathBuf,
    suite_name: String,
    results: Vec<TestResult>,
    collect_reports: Vec<CollectReport>,
    /// Per worker id, the properties that say which environment it is
    /// (host, python), when the run has more than one.
    envs: std::collections::HashMap<String, Vec<(String, String)>>,
    started: std::time::SystemTime,
    errors: super::WriteErrors,
}

impl JUnit {
    /// A writer for `path`; write failures are pushed to `errors`.
    pub fn new(path: PathBuf, suite_name: String, errors: super::WriteErrors) -> Self {
        JUnit {
            path,
            suite_name,
            results: Vec::new(),
            collect_reports: Vec::new(),
            envs: Default::default(),
            started: std::time::SystemTime::now(),
            errors,
        }
    }

    /// Render the document.
    pub fn render(&self, elapsed: f64) -> String {
        let mut cases = String::new();
        let (mut tests, mut failures, mut errors, mut skipped) = (0, 0, 0, 0);
        for c in self
            .collect_reports
            .iter()
            .filter(|c| c.outcome == "failed")
        {
            tests += 1;
            errors += 1;
            let (classname, name) = mangle(&c.nodeid);
            let _ = write!(
                cases,
                "<testcase classname=\"{}\" name=\"{}\" time=\"0.000\"><error message=\"collection failure\">{}</error></testcase>",
                attr(&classname),
                attr(&name),
                text(c.longrepr.as_deref().unwrap_or(""))
            );
        }
        for c in self
            .collect_reports
            .iter()
            .filter(|c| c.outcome == "skipped")
        {
            tests += 1;
            skipped += 1;
            let (classname, name) = mangle(&c.nodeid);
            let reason = c
                .skip
                .as_ref()
                .and_then(|s| s.get(2).cloned().flatten())
                .unwrap_or_default();
            let reason = reason
                .strip_prefix("Skipped: ")
                .unwrap_or(&reason)
                .to_string();
            let _ = write!(
                cases,
                "<testcase classname=\"{}\" name=\"{}\" time=\"0.000\"><skipped type=\"pytest.skip\" message=\"{}\">{}</skipped></testcase>",
                attr(&classname),
                attr(&name),
                attr(&reason),
                text(&reason)
            );
        }
        for r in &self.results {
            tests += 1;
            let (classname, name) = mangle(&r.nodeid);
            let mut inner = String::new();
            let mut out = String::new();
            let mut err = String::new();
            let mut log = String::new();
            // Each phase's report repeats the sections of the phases before
            // it: the last one that has any holds them all.
            if let Some(p) = r.phases.iter().rev().find(|p| !p.sections.is_empty()) {
                for (title, content) in &p.sections {
                    let target = if title.contains("stdout") {
                        &mut out
                    } else if title.contains("stderr") {
                        &mut err
                    } else {
                        &mut log
                    };
                    let _ = writeln!(target, "{:-^40}\n{content}", format!(" {title} "));
                }
            }
            for p in &r.phases {
                let msg = p
                    .crash
                    .as_ref()
                    .and_then(|c| c.message.clone())
                    .unwrap_or_default();
                let body = p.longrepr.clone().unwrap_or_default();
                match (categorize(p), p.when.as_str()) {
                    (Some(Category::Failed), _) => {
                        failures += 1;
                        let _ = write!(
                            inner,
                            "<failure message=\"{}\">{}</failure>",
                            attr(&msg),
                            text(&body)
                        );
                    }
                    (Some(Category::Error), when) => {
                        errors += 1;
                        let _ = write!(
                            inner,
                            "<error message=\"failed on {when} with &quot;{}&quot;\">{}</error>",
                            attr(&msg),
                            text(&body)
                        );
                    }
                    (Some(Category::Skipped), _) => {
                        skipped += 1;
                        let (loc, reason) = skip_parts(p);
                        let _ = write!(
                            inner,
                            "<skipped type=\"pytest.skip\" message=\"{}\">{}</skipped>",
                            attr(&reason),
                            text(&format!("{loc}: {reason}"))
                        );
                    }
                    (Some(Category::XFailed), _) => {
                        skipped += 1;
                        let reason = p.wasxfail.clone().unwrap_or_default();
                        let _ = write!(
                            inner,
                            "<skipped type=\"pytest.xfail\" message=\"{}\" />",
                            attr(&reason)
                        );
                    }
                    _ => {}
                }
            }
            let props: Vec<(String, String)> = r
                .phases
                .iter()
                .flat_map(|p| p.user_properties.iter().cloned())
                .chain(std::iter::once(("worker".to_string(), r.worker.clone())))
                .chain(self.envs.get(&r.worker).into_iter().flatten().cloned())
                .collect();
            let mut props_xml = String::from("<properties>");
            for (k, v) in &props {
                let _ = write!(
                    props_xml,
                    "<property name=\"{}\" value=\"{}\" />",
                    attr(k),
                    attr(v)
                );
            }
            props_xml.push_str("</properties>");
            if !log.is_empty() {
                out.push_str(&log);
            }
            let _ = write!(
                cases,
                "<testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">{props_xml}{inner}",
                attr(&classname),
                attr(&name),
                r.duration
            );
            if !out.is_empty() {
                let _ = write!(cases, "<system-out>{}</system-out>", text(&out));
            }
            if !err.is_empty() {
                let _ = write!(cases, "<system-err>{}</system-err>", text(&err));
            }
            cases.push_str("</testcase>");
        }
        let timestamp = format_timestamp(self.started);
        let host = hostname();
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><testsuites name=\"pytest tests\"><testsuite name=\"{}\" errors=\"{errors}\" failures=\"{failures}\" skipped=\"{skipped}\" tests=\"{tests}\" time=\"{elapsed:.3}\" timestamp=\"{timestamp}\" hostname=\"{}\">{cases}</testsuite></testsuites>\n",
            attr(&self.suite_name),
            attr(&host)
        )
    }
}

impl Reporter for JUnit {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Collected {
                collect_reports,
                workers,
                ..
            } => {
                self.collect_reports = collect_reports.clone();
                // Several hosts or interpreters: each case says which ran it.
                let distinct: std::collections::HashSet<(&str, &str)> = workers
                    .iter()
                    .map(|w| (w.host.as_str(), w.info.executable.as_str()))
                    .collect();
                if distinct.len() > 1 {
                    self.envs = workers
                        .iter()
                        .map(|w| {
                            let python = format!(
                                "{} {} {}",
                                w.info.implementation, w.info.python_version, w.info.executable
                            );
                            let props = vec![
                                ("host".to_string(), w.host.clone()),
                                ("python".to_string(), python.trim().to_string()),
                            ];
                            (w.id.clone(), props)
                        })
                        .collect();
                }
            }
            Event::TestFinished(r) => self.results.push((**r).clone()),
            Event::Finished {
                elapsed,
                error,
                junit_written,
                ..
            } => {
                if *junit_written || error.is_some() && self.results.is_empty() {
                    return;
                }
                let xml = self.render(elapsed.as_secs_f64());
                if let Err(e) = crate::fsutil::write_atomic(&self.path, xml.as_bytes()) {
                    if let Ok(mut errs) = self.errors.lock() {
                        errs.push(format!(
                            "could not write --junitxml {}: {e}",
                            self.path.display()
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

/// pytest's `mangle_test_address`: classname and name of a node id.
pub fn mangle(nodeid: &str) -> (String, String) {
    let (path, bracket) = match nodeid.find('[') {
        Some(i) => (&nodeid[..i], &nodeid[i..]),
        None => (nodeid, ""),
    };
    let mut names: Vec<String> = path.split("::").map(String::from).collect();
    let first = names[0].replace('/', ".");
    names[0] = first.strip_suffix(".py").map(String::from).unwrap_or(first);
    if let Some(last) = names.last_mut() {
        last.push_str(bracket);
    }
    let name = names.pop().unwrap_or_default();
    (names.join("."), name)
}

fn skip_parts(p: &crate::protocol::PhaseReport) -> (String, String) {
    match &p.skip {
        Some(s) => {
            let path = s.first().cloned().flatten().unwrap_or_default();
            let line = s.get(1).cloned().flatten().unwrap_or_default();
            let reason = s.get(2).cloned().flatten().unwrap_or_default();
            let reason = reason
                .strip_prefix("Skipped: ")
                .unwrap_or(&reason)
                .to_string();
            (format!("{path}:{line}"), reason)
        }
        None => (String::new(), String::new()),
    }
}

/// Drop characters XML 1.0 cannot contain.
pub fn xml_clean(s: &str) -> String {
    s.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r')
                || ('\u{20}'..='\u{D7FF}').contains(&c)
                || ('\u{E000}'..='\u{FFFD}').contains(&c)
                || c >= '\u{10000}'
        })
        .collect()
}

fn text(s: &str) -> String {
    xml_clean(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn attr(s: &str) -> String {
    text(s)
        .replace('"', "&quot;")
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // or truncates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// ISO 8601 local-less timestamp, as pytest writes it (UTC here).
fn format_timestamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mangle_like_pytest() {
        assert_eq!(
            mangle("tests/test_a.py::TestC::test_d[x]"),
            ("tests.test_a.TestC".into(), "test_d[x]".into())
        );
        assert_eq!(
            mangle("test_a.py::test_b[a::b/c]"),
            ("test_a".into(), "test_b[a::b/c]".into())
        );
        assert_eq!(
            mangle("test_a.py::test_b"),
            ("test_a".into(), "test_b".into())
        );
    }

    #[test]
    fn forbidden_characters_are_dropped_and_markup_escaped() {
        assert_eq!(text("\x1b[31mred\x1b[0m <&>"), "[31mred[0m &lt;&amp;&gt;");
        assert_eq!(attr("a\"b\nc"), "a&quot;b&#10;c");
    }

    #[test]
    fn timestamps_are_iso() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(format_timestamp(t), "2023-11-14T22:13:20+00:00");
    }
}
