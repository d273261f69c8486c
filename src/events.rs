//! The one-way contract between the session and the reporters.
//!
//! The session emits [`Event`]s; reporters (terminal, JUnit, report-log)
//! consume them and never look back into the session. A [`TestResult`] is
//! complete when emitted: every phase, every captured section, the worker.

use crate::protocol::{CollectReport, PhaseReport, PytestOptions, ReadyInfo};
use std::time::Duration;

/// A worker as reporters see it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerDesc {
    /// `gw0`.
    pub id: String,
    /// The tx spec it came from.
    pub spec: String,
    /// `localhost` or the remote host.
    pub host: String,
    /// What its Python said in the handshake.
    pub info: ReadyInfo,
}

impl WorkerDesc {
    /// The host to name beside the worker: none for a local one, nor for
    /// an exec= one (its spec is the command that reaches it).
    pub fn named_host(&self) -> Option<&str> {
        (self.host != "localhost" && !self.spec.starts_with("exec=")).then_some(self.host.as_str())
    }

    /// ` on HOST` (`localhost` included) to follow the worker's name, or
    /// nothing for an exec= worker (its spec is the command that reaches
    /// it).
    pub fn on_host(&self) -> String {
        if self.spec.starts_with("exec=") {
            String::new()
        } else {
            format!(" on {}", self.host)
        }
    }

    /// `linux -- Python 3.11.7 /usr/bin/python3`, as xdist prints it.
    pub fn platform_line(&self) -> String {
        format!(
            "{} -- Python {} {}",
            self.info.platform, self.info.python_version, self.info.executable
        )
    }
}

/// What a phase counts as in the summary, as pytest's terminal reporter
/// decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// A failed call.
    Failed,
    /// A passed call.
    Passed,
    /// Skipped.
    Skipped,
    /// Expected failure.
    XFailed,
    /// Unexpected pass (non-strict).
    XPassed,
    /// A failed setup or teardown.
    Error,
    /// A passed subtest (pytest's `subtests passed`).
    SubtestsPassed,
}

impl Category {
    /// pytest's word in the final line (`failed`, `passed`, ...).
    pub fn word(self) -> &'static str {
        match self {
            Category::Failed => "failed",
            Category::Passed => "passed",
            Category::Skipped => "skipped",
            Category::XFailed => "xfailed",
            Category::XPassed => "xpassed",
            Category::Error => "error",
            Category::SubtestsPassed => "subtests passed",
        }
    }

    /// The progress letter.
    pub fn letter(self) -> char {
        match self {
            Category::Failed => 'F',
            Category::Passed => '.',
            Category::Skipped => 's',
            Category::XFailed => 'x',
            Category::XPassed => 'X',
            Category::Error => 'E',
            Category::SubtestsPassed => ',',
        }
    }

    /// The verbose word (`PASSED`, `FAILED`, `XFAIL`, ...).
    pub fn verbose_word(self) -> &'static str {
        match self {
            Category::Failed => "FAILED",
            Category::Passed => "PASSED",
            Category::Skipped => "SKIPPED",
            Category::XFailed => "XFAIL",
            Category::XPassed => "XPASS",
            Category::Error => "ERROR",
            Category::SubtestsPassed => "SUBPASSED",
        }
    }
}

/// The category of one phase report, or `None` for a phase that does not
/// count (a passing setup or teardown).
pub fn categorize(report: &PhaseReport) -> Option<Category> {
    match report.category.as_deref() {
        Some("") => return None,
        Some("subtests passed") => return Some(Category::SubtestsPassed),
        // pytest's own word where it differs from the phase's (a report of
        // pytest-forked's crashed child fails "???", not setup: a failure).
        Some("passed") => return Some(Category::Passed),
        Some("failed") => return Some(Category::Failed),
        Some("error") => return Some(Category::Error),
        Some("skipped") => return Some(Category::Skipped),
        Some("xfailed") => return Some(Category::XFailed),
        Some("xpassed") => return Some(Category::XPassed),
        _ => {}
    }
    let xfail = report.wasxfail.is_some();
    match (report.when.as_str(), report.outcome.as_str()) {
        ("call", "passed") => Some(if xfail {
            Category::XPassed
        } else {
            Category::Passed
        }),
        (_, "passed") => None,
        ("call", "failed") => Some(Category::Failed),
        (_, "failed") => Some(Category::Error),
        (_, "skipped") => Some(if xfail {
            Category::XFailed
        } else {
            Category::Skipped
        }),
        _ => None,
    }
}

/// One finished test with all its phases.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    /// pytest node id.
    pub nodeid: String,
    /// The worker that ran it.
    pub worker: String,
    /// Index of the worker (for environment details).
    pub worker_index: usize,
    /// `(path, line, domain)`.
    pub location: Option<(String, Option<u64>, String)>,
    /// Every phase, in order.
    pub phases: Vec<PhaseReport>,
    /// Wall time of the whole test protocol, seconds.
    pub duration: f64,
    /// The worker died or was killed while running it.
    pub crashed: bool,
    /// With live logging on (`log_cli`): the "live log" sections pytest's
    /// logging plugin wrote to the worker's terminal during the test.
    pub live_log: Option<String>,
}

impl TestResult {
    /// Categories of its phases, in order.
    pub fn categories(&self) -> impl Iterator<Item = (Category, &PhaseReport)> {
        self.phases
            .iter()
            .filter_map(|p| categorize(p).map(|c| (c, p)))
    }

    /// Whether any phase failed.
    pub fn failed(&self) -> bool {
        self.phases.iter().any(|p| p.outcome == "failed")
    }
}

/// A test's KeyboardInterrupt, as pytest's reporter shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interruption {
    /// The banner's title: the exception's line.
    pub title: String,
    /// Where it was raised (path, line), shown with a hint to use
    /// --full-trace; none when `text` is the whole traceback.
    pub location: Option<(String, Option<u64>)>,
    /// The exception's first line, or the whole traceback.
    pub text: String,
}

/// Why a run stopped early.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopReason {
    /// `-x`/`--maxfail` reached.
    MaxFail(usize),
    /// pytest itself asked to stop (from an ini `-x`).
    PytestStop(String),
    /// `pytest.exit()` in a worker: pytest's line for it
    /// (`_pytest.outcomes.Exit: why`), and whether pytest says it after the
    /// final line (it does when the call gave a return code).
    PytestExit(String, bool),
    /// Errors during collection.
    CollectionErrors(usize),
    /// A test raised KeyboardInterrupt.
    TestInterrupted(Interruption),
    /// Ctrl-C or SIGTERM.
    Signal(String),
    /// Every worker died and none can be replaced.
    WorkersLost,
}

/// What the session tells reporters.
#[derive(Debug, Clone)]
pub enum Event {
    /// The first worker's pytest is configured: the header can be printed.
    SessionStarted {
        /// That worker.
        worker: Box<WorkerDesc>,
        /// The options its pytest runs with.
        options: Box<PytestOptions>,
        /// What plugins wrote before pytest's header, in the controller.
        plugin_text: String,
    },
    /// Collection is done and agreed on.
    Collected {
        /// pytest's rootdir.
        rootdir: String,
        /// Every worker, in id order.
        workers: Vec<WorkerDesc>,
        /// Items that will run (per environment, for `each`).
        total: usize,
        /// Items per environment.
        per_worker: usize,
        /// How many `-k`/`-m` deselected.
        deselected: usize,
        /// Collectors that errored or were skipped.
        collect_reports: Vec<CollectReport>,
        /// Node ids (for `--collect-only`).
        ids: Vec<String>,
        /// `--collect-only`'s listing as pytest's terminal reporter draws
        /// it (a tree, node ids, counts per file); `None` where the worker
        /// gave none.
        listing: Option<String>,
        /// pytest's logging plugin shows records live (`log_cli`): pytest
        /// then shows every test on its own line, as with `-v`.
        live_logging: bool,
        /// pytest's header lines from the controller's session
        /// (`rootdir:`, `configfile:`, `plugins:` and what plugins add);
        /// empty without a controller.
        header: Vec<String>,
        /// What plugins report once collection is done, from the first
        /// collection (`pytest_report_collectionfinish`).
        collection_lines: Vec<String>,
        /// What plugins wrote after pytest's header, before the run.
        plugin_text: String,
        /// Summary sections a plugin's terminal reporter draws its way
        /// (`summary_failures`, ...): rtest draws none of its own for them.
        left_to_plugins: Vec<String>,
    },
    /// A test finished.
    TestFinished(Box<TestResult>),
    /// Output a worker wrote to its stderr (with `-s`, everything a test
    /// prints).
    WorkerOutput {
        /// Worker id.
        worker: String,
        /// Raw bytes.
        data: Vec<u8>,
    },
    /// What the controller's session wrote to its stdout or stderr (a
    /// plugin's prints, GitHub annotations), passed on as it is.
    ControllerOutput(Vec<u8>),
    /// What plugins wrote to the controller's terminal during the run
    /// (pytest-instafail's failures), shown in the flow of the progress.
    PluginText(String),
    /// Something the user should know (a worker replaced, provisioning).
    Notice(String),
    /// A warning pytest recorded.
    Warning {
        /// Node id ("" for session warnings).
        nodeid: String,
        /// The formatted warning.
        text: String,
        /// Where a warning outside any test came from (`path:line`).
        place: Option<String>,
        /// The warning as the worker serialized it (for the report log).
        data: Option<crate::protocol::RawJson>,
    },
    /// The run is over.
    Finished {
        /// Why it stopped early, if it did.
        stop: Option<StopReason>,
        /// Wall time.
        elapsed: Duration,
        /// An error that ended the run (usage, worker start), shown last.
        error: Option<crate::error::Error>,
        /// pytest's junitxml (in the controller) wrote the JUnit file.
        junit_written: bool,
        /// The run's exit code.
        exit: crate::error::ExitCode,
        /// What plugins wrote to the terminal in the controller's session.
        plugins: PluginOutput,
    },
}

/// Terminal output of plugins in the controller's session, placed where
/// pytest puts it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginOutput {
    /// Written right after the test loop (pytest-cov's fail-under error).
    pub after_loop: String,
    /// Written in the terminal summary (the coverage table), shown before
    /// the short test summary.
    pub summary: String,
    /// Printed at unconfigure, shown after the final line.
    pub after_final: String,
}

/// Anything that consumes events.
pub trait Reporter {
    /// Handle one event.
    fn on_event(&mut self, event: &Event);
    /// Called on a timer while tests run (live status on a TTY).
    fn tick(&mut self) {}
}
