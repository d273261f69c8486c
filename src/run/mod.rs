//! The run pipeline: interpreters, then sync, then the controller and the
//! workers in a session, then the outputs.
//!
//! The CLI parses the command line, resolves a [`Plan`] and decides how the
//! terminal looks; [`execute`] does everything after that.

mod interpreters;
mod remote;

pub use interpreters::{choose_default_python, controller_python, prepare_interpreters};
pub use remote::{copy_bases, join_all, socket_token, sync_workers};

use crate::error::{Error, ExitCode};
use crate::events::Reporter;
use crate::gateway::Remotes;
use crate::plan::Plan;
use crate::report::{self, junit::JUnit, reportlog::ReportLog, terminal};
use crate::session::{self, SessionOptions};
use std::sync::Arc;

/// How a run is shown and coordinated, beyond its plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Fail instead of creating a venv with pytest.
    pub no_provision: bool,
    /// The terminal's look (notes from provisioning and sync are added).
    pub terminal: terminal::TerminalOptions,
    /// Show workers' output as it comes (`-s`).
    pub echo_output: bool,
    /// `--continue-on-collection-errors`.
    pub continue_on_collection_errors: bool,
    /// `--require-all-hosts`.
    pub require_all_hosts: bool,
}

/// Run a plan: provision local interpreters, sync remote copies, run the
/// session with its controller, write the outputs.
pub fn execute(mut plan: Plan, opts: RunOptions) -> Result<ExitCode, Error> {
    let mut notes = prepare_interpreters(&mut plan, opts.no_provision)?;
    // Dropped on every way out of here: closes the ssh masters.
    let remotes = Arc::new(Remotes {
        token: socket_token()?,
        ..Default::default()
    });
    // One runtime for the sync and the session: exec= workers synced
    // before the session are handed over to it, their pipes still open.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("could not start the async runtime: {e}")))?;
    notes.extend(sync_workers(
        &mut plan,
        &remotes,
        opts.require_all_hosts,
        &runtime,
    )?);
    run_session(&plan, opts, notes, remotes, &runtime)
}

/// pytest's options that show something instead of running tests
/// (`--fixtures`, `--fixtures-per-test`, `--markers`, `--cache-show`): one
/// local pytest shows it, as pytest-xdist's controller does without
/// starting workers.
pub fn show(mut plan: Plan, no_provision: bool) -> Result<ExitCode, Error> {
    prepare_interpreters(&mut plan, no_provision)?;
    let python = controller_python(&plan).ok_or_else(|| {
        Error::usage(format!(
            "no local Python with pytest to show this with ({} has none); give one with --tx popen//python=PY",
            plan.default_python.0
        ))
    })?;
    let status = std::process::Command::new(&python)
        .args(["-m", "pytest"])
        .args(&plan.pytest_args)
        .envs(pytest_env(&plan, None))
        .status()
        .map_err(|e| Error::usage(format!("could not start {python}: {e}")))?;
    Ok(match status.code() {
        Some(code) => ExitCode::from_pytest(code),
        None => ExitCode::Interrupted,
    })
}

/// The `PYTHONHASHSEED` every worker gets, where neither rtest's
/// environment nor the config sets one: one process hashes strings one way,
/// so a suite that parametrizes over a set (or sorts by hash) collects alike
/// on every worker, as it would in plain pytest (pytest-xdist stops such a
/// run: "Different tests were collected"). A new seed each run (from `uid`),
/// the same for all of it: workers, the controller, what tests start.
fn hash_seed(uid: &str, env: &[(String, String)]) -> Option<String> {
    if std::env::var_os("PYTHONHASHSEED").is_some()
        || env.iter().any(|(k, _)| k == "PYTHONHASHSEED")
    {
        return None;
    }
    let n = u32::from_str_radix(uid.get(..8)?, 16).ok()?;
    // 1..=4294967295: 0 would turn hash randomization off.
    Some((n % u32::MAX + 1).to_string())
}

/// A fresh `PYTEST_XDIST_TESTRUNUID`.
pub fn testrun_uid() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run_session(
    plan: &Plan,
    opts: RunOptions,
    header_notes: Vec<String>,
    remotes: Arc<Remotes>,
    runtime: &tokio::runtime::Runtime,
) -> Result<ExitCode, Error> {
    let errors: report::WriteErrors = Default::default();
    let mut reporters: Vec<Box<dyn Reporter>> = Vec::new();
    let mut look = opts.terminal;
    look.header_notes.extend(header_notes);
    let mut env = pytest_env(plan, Some(look.width));
    if let Some(seed) = hash_seed(&testrun_uid(), &env) {
        env.push(("PYTHONHASHSEED".into(), seed.clone()));
        look.hash_seed = Some(seed);
    }
    let (cwd, color) = (look.cwd.clone(), look.color);
    reporters.push(Box::new(terminal::Terminal::new(look)));
    if let Some(path) = &plan.junitxml {
        let path = cwd.join(path);
        check_writable(&path, "--junitxml")?;
        let suite = match plan.shard {
            Some((k, n)) => format!("pytest (shard {k}/{n})"),
            None => "pytest".to_string(),
        };
        reporters.push(Box::new(JUnit::new(path, suite, errors.clone())));
    }
    if let Some(path) = &plan.report_log {
        let path = cwd.join(path);
        let log = ReportLog::create(path.clone(), errors.clone()).map_err(|e| {
            Error::usage(format!(
                "could not write --report-log {}: {e}",
                path.display()
            ))
        })?;
        reporters.push(Box::new(log));
    }
    let session_opts = SessionOptions {
        testrun_uid: plan.testrun_uid.clone().unwrap_or_else(testrun_uid),
        full_reports: plan.report_log.is_some(),
        echo_output: opts.echo_output,
        continue_on_collection_errors: opts.continue_on_collection_errors,
        env,
        remotes,
        require_all_hosts: opts.require_all_hosts,
        controller: controller_python(plan),
        color,
        mainargv: std::env::args().collect(),
    };
    let mut fanout = report::Fanout { reporters };
    let outcome = runtime.block_on(session::run(plan, &session_opts, &mut fanout));
    drop(fanout);
    let errs = errors.lock().map(|e| e.clone()).unwrap_or_default();
    for e in &errs {
        eprintln!("ERROR: {e}");
    }
    if !errs.is_empty() && outcome.exit == ExitCode::Ok {
        return Ok(ExitCode::InternalError);
    }
    Ok(outcome.exit)
}

/// Fail early (exit 4) when an output file cannot be written (without
/// creating it: it is written whole when the run has results).
fn check_writable(path: &std::path::Path, option: &str) -> Result<(), Error> {
    crate::fsutil::check_writable(path)
        .map_err(|e| Error::usage(format!("could not write {option} {}: {e}", path.display())))
}

/// The environment every pytest process of a run gets: the plan's
/// (`PYTEST_ADDOPTS` as rtest left it) and the terminal width.
pub fn pytest_env(plan: &Plan, width: Option<usize>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = plan
        .pytest_env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(w) = width {
        env.push(("COLUMNS".into(), w.to_string()));
    }
    env
}
