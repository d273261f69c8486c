//! rtest's command line, stage one: the raw, pytest-compatible argument list.
//!
//! rtest is a drop-in for `pytest`: every option it does not own is passed to
//! pytest verbatim and in order (including options a conftest.py adds). It
//! owns the distribution options (`-n`, `--tx`, `--dist`, ...) and reads,
//! without swallowing, the pytest options that change coordination (`-v`,
//! `--tb`, `-r`, `-s`, ...). `-x`/`--maxfail` are handled by the coordinator
//! and not forwarded. Stage two (validation) is in `cli::settings`.

use std::path::PathBuf;

pub use crate::config::NumProcesses;

/// The raw command line of a run (or a plan).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawArgs {
    /// `-n`.
    pub numprocesses: Option<NumProcesses>,
    /// `--maxprocesses`.
    pub maxprocesses: Option<usize>,
    /// `--tx`, in order.
    pub tx: Vec<String>,
    /// `--dist`.
    pub dist: Option<String>,
    /// `--rsyncdir`.
    pub rsyncdirs: Vec<PathBuf>,
    /// `--rsyncignore`.
    pub rsyncignore: Vec<String>,
    /// `--max-worker-restart`.
    pub max_worker_restart: Option<usize>,
    /// `--maxschedchunk`: at most this many tests sent to a worker at once.
    pub max_sched_chunk: Option<usize>,
    /// `--loadscope-reorder` (true) / `--no-loadscope-reorder` (false).
    pub loadscope_reorder: Option<bool>,
    /// `--testrunuid`: the run's id (`testrun_uid`), instead of a fresh one.
    pub testrun_uid: Option<String>,
    /// `--timeout`, seconds.
    pub timeout: Option<f64>,
    /// `--startup-timeout`, seconds (0: none).
    pub startup_timeout: Option<f64>,
    /// `--junitxml`/`--junit-xml`.
    pub junitxml: Option<PathBuf>,
    /// `--report-log`.
    pub report_log: Option<PathBuf>,
    /// `--no-provision`.
    pub no_provision: bool,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--shard K/N`.
    pub shard: Option<(usize, usize)>,
    /// `--no-config`.
    pub no_config: bool,
    /// `--require-all-hosts`.
    pub require_all_hosts: bool,
    /// `--strict-config` (also passed to pytest).
    pub strict_config: bool,
    /// pytest's `-c`/`--config-file`.
    pub inifile: Option<PathBuf>,
    /// pytest's `--rootdir`.
    pub rootdir: Option<PathBuf>,
    /// `-x` or `--maxfail`.
    pub maxfail: Option<usize>,
    /// Verbosity: `-v` adds one, `-q` takes one.
    pub verbosity: i32,
    /// `--tb`.
    pub tb: Option<String>,
    /// `-r`.
    pub report_chars: Option<String>,
    /// `-s` or `--capture=no`.
    pub capture_no: bool,
    /// `--collect-only`/`--co`.
    pub collect_only: bool,
    /// One of pytest's options that show something instead of running
    /// tests (`--fixtures`, `--markers`, ...).
    pub informational: Option<String>,
    /// `--show-capture`.
    pub show_capture: Option<String>,
    /// `--continue-on-collection-errors`.
    pub continue_on_collection_errors: bool,
    /// `--durations`.
    pub durations: Option<usize>,
    /// `--durations-min`.
    pub durations_min: Option<f64>,
    /// `--color`.
    pub color: Option<String>,
    /// `--basetemp` (rewritten per worker).
    pub basetemp: Option<String>,
    /// `-h`/`--help`.
    pub help: bool,
    /// `-V`/`--version`.
    pub version: bool,
    /// Arguments forwarded to pytest, in order.
    pub pytest_args: Vec<String>,
    /// Positional arguments (test paths and node ids, and perhaps values of
    /// options rtest does not know).
    pub positionals: Vec<String>,
}

/// A usage error in rtest's own options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgError(pub String);

/// Options rtest owns and that take a value.
pub(crate) const OWN_WITH_VALUE: &[&str] = &[
    "--numprocesses",
    "--maxprocesses",
    "--tx",
    "--dist",
    "--rsyncdir",
    "--rsyncignore",
    "--max-worker-restart",
    "--maxschedchunk",
    "--testrunuid",
    "--timeout",
    "--startup-timeout",
    "--junitxml",
    "--junit-xml",
    "--report-log",
    "--maxfail",
    "--profile",
    "--shard",
];

/// pytest options (and common plugins') that take a separate value; needed
/// to tell their values from test paths.
const PYTEST_WITH_VALUE: &[&str] = &[
    "-k",
    "-m",
    "-p",
    "-c",
    "-o",
    "-W",
    "-r",
    "--tb",
    "--show-capture",
    "--capture",
    "--durations",
    "--durations-min",
    "--basetemp",
    "--rootdir",
    "--confcutdir",
    "--ignore",
    "--ignore-glob",
    "--deselect",
    "--import-mode",
    "--junit-prefix",
    "--log-level",
    "--log-format",
    "--log-date-format",
    "--log-cli-level",
    "--log-cli-format",
    "--log-cli-date-format",
    "--log-file",
    "--log-file-mode",
    "--log-file-level",
    "--log-file-format",
    "--log-file-date-format",
    "--log-auto-indent",
    "--log-disable",
    "--color",
    "--code-highlight",
    "--pastebin",
    "--doctest-glob",
    "--doctest-report",
    "--last-failed-no-failures",
    "--lfnf",
    "--pdbcls",
    "--assert",
    "--verbosity",
    "--config-file",
    "--override-ini",
    "--pythonwarnings",
    "--cov-report",
    "--cov-config",
    "--cov-fail-under",
    "--hypothesis-seed",
    "--hypothesis-profile",
    "-P",
    "--randomly-seed",
    "--report-log-exclude-logs-on-passed-tests",
    "--max-worker-restart",
];

/// Short options that take a value (the rest of the cluster or the next arg).
const SHORT_WITH_VALUE: &[char] = &['k', 'm', 'p', 'c', 'o', 'W', 'r', 'n', 'P'];

pub(crate) fn own_long(name: &str) -> bool {
    OWN_WITH_VALUE.contains(&name)
        || matches!(
            name,
            "--no-provision"
                | "--exitfirst"
                | "--help"
                | "--version"
                | "--distload"
                | "--no-config"
                | "--require-all-hosts"
                | "--loadscope-reorder"
                | "--no-loadscope-reorder"
        )
}

/// Parse a run's command line (without the program name).
pub fn parse(args: &[String]) -> Result<RawArgs, ArgError> {
    let mut out = RawArgs::default();
    let mut i = 0;
    let mut passthrough = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if passthrough {
            classify_forwarded(&mut out, arg, args, &mut i)?;
            continue;
        }
        if arg == "--" {
            passthrough = true;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (format!("--{n}"), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            if own_long(&name) {
                let value = if OWN_WITH_VALUE.contains(&name.as_str()) {
                    Some(take_value(&name, inline, args, &mut i)?)
                } else {
                    if inline.is_some() {
                        return Err(ArgError(format!("option {name} takes no value")));
                    }
                    None
                };
                apply_own(&mut out, &name, value)?;
                continue;
            }
            classify_forwarded(&mut out, arg, args, &mut i)?;
            continue;
        }
        if arg.starts_with('-') && arg.len() > 1 {
            short_cluster(&mut out, arg, args, &mut i)?;
            continue;
        }
        out.positionals.push(arg.clone());
        out.pytest_args.push(arg.clone());
    }
    Ok(out)
}

fn take_value(
    name: &str,
    inline: Option<String>,
    args: &[String],
    i: &mut usize,
) -> Result<String, ArgError> {
    if let Some(v) = inline {
        return Ok(v);
    }
    match args.get(*i) {
        Some(v) => {
            *i += 1;
            Ok(v.clone())
        }
        None => Err(ArgError(format!("option {name} needs a value"))),
    }
}

/// Handle a `-xyz` cluster: strip what rtest owns, forward the rest.
fn short_cluster(
    out: &mut RawArgs,
    arg: &str,
    args: &[String],
    i: &mut usize,
) -> Result<(), ArgError> {
    let chars: Vec<char> = arg[1..].chars().collect();
    let mut kept = String::new();
    let mut j = 0;
    while j < chars.len() {
        let c = chars[j];
        j += 1;
        if SHORT_WITH_VALUE.contains(&c) {
            let rest: String = chars[j..].iter().collect();
            let value = if !rest.is_empty() {
                rest.strip_prefix('=').unwrap_or(&rest).to_string()
            } else {
                take_value(&format!("-{c}"), None, args, i)?
            };
            if c == 'n' {
                out.numprocesses = Some(parse_numprocesses(&value)?);
            } else {
                if c == 'r' {
                    out.report_chars = Some(value.clone());
                }
                if c == 'c' {
                    out.inifile = Some(PathBuf::from(&value));
                }
                kept.push(c);
                flush_short(out, &kept);
                out.pytest_args.push(value);
                kept.clear();
            }
            j = chars.len();
            continue;
        }
        match c {
            'x' => out.maxfail = Some(1),
            'v' => {
                out.verbosity += 1;
                kept.push(c);
            }
            'q' => {
                out.verbosity -= 1;
                kept.push(c);
            }
            's' => {
                out.capture_no = true;
                kept.push(c);
            }
            'h' => out.help = true,
            'V' => out.version = true,
            'd' => out.dist = Some("load".into()),
            'f' => return Err(looponfail()),
            _ => kept.push(c),
        }
    }
    flush_short(out, &kept);
    Ok(())
}

/// pytest-xdist's `-f`/`--looponfail` would wait for file changes forever
/// inside every pytest process rtest starts.
fn looponfail() -> ArgError {
    ArgError(
        "-f/--looponfail (pytest-xdist's loop on failure) is not supported by rtest; \
         rerun on changes with a file watcher (e.g. `watchexec -e py -- rtest --lf`)"
            .into(),
    )
}

fn flush_short(out: &mut RawArgs, kept: &str) {
    if !kept.is_empty() {
        out.pytest_args.push(format!("-{kept}"));
    }
}

/// A pytest option (or positional after `--`): forward it, note what
/// rtest needs to know, and keep its value with it.
fn classify_forwarded(
    out: &mut RawArgs,
    arg: &str,
    args: &[String],
    i: &mut usize,
) -> Result<(), ArgError> {
    if !arg.starts_with('-') || arg == "-" {
        out.positionals.push(arg.to_string());
        out.pytest_args.push(arg.to_string());
        return Ok(());
    }
    if !arg.starts_with("--") {
        return short_cluster(out, arg, args, i);
    }
    let (name, inline) = match arg.split_once('=') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (arg.to_string(), None),
    };
    match name.as_str() {
        "--maxfail" | "--exitfirst" => {
            let value = if name == "--maxfail" {
                Some(take_value(&name, inline, args, i)?)
            } else {
                None
            };
            return apply_own(out, &name, value);
        }
        "--junitxml"
        | "--junit-xml"
        | "--report-log"
        | "--timeout"
        | "--max-worker-restart"
        | "--maxschedchunk"
        | "--testrunuid" => {
            let value = take_value(&name, inline, args, i)?;
            return apply_own(out, &name, Some(value));
        }
        _ => {}
    }
    let takes_value = PYTEST_WITH_VALUE.contains(&name.as_str());
    let value = if takes_value {
        Some(take_value(&name, inline.clone(), args, i)?)
    } else {
        inline.clone()
    };
    match name.as_str() {
        "--verbose" => out.verbosity += 1,
        "--quiet" => out.verbosity -= 1,
        "--verbosity" => {
            out.verbosity = value
                .as_deref()
                .unwrap_or("0")
                .parse()
                .map_err(|_| ArgError(format!("--verbosity: invalid value {:?}", value.as_deref().unwrap_or(""))))?
        }
        "--tb" => out.tb = value.clone(),
        "--capture" => out.capture_no = value.as_deref() == Some("no"),
        "--collect-only" | "--co" => out.collect_only = true,
        "--fixtures" | "--funcargs" | "--fixtures-per-test" | "--markers" | "--cache-show" => {
            out.informational = Some(name.clone())
        }
        "--show-capture" => out.show_capture = value.clone(),
        "--continue-on-collection-errors" => out.continue_on_collection_errors = true,
        "--durations" => {
            out.durations = Some(
                value
                    .as_deref()
                    .unwrap_or("")
                    .parse()
                    .map_err(|_| ArgError(format!("--durations: invalid value {:?}", value.as_deref().unwrap_or(""))))?,
            )
        }
        "--durations-min" => out.durations_min = value.as_deref().and_then(|v| v.parse().ok()),
        "--strict-config" => out.strict_config = true,
        "--config-file" => out.inifile = value.clone().map(PathBuf::from),
        "--rootdir" => out.rootdir = value.clone().map(PathBuf::from),
        "--color" => out.color = value.clone(),
        "--basetemp" => {
            out.basetemp = value;
            return Ok(());
        }
        "--pdb" | "--trace" => {
            return Err(ArgError(format!(
                "{name} cannot be used with rtest: tests run in worker processes without a terminal; run that test with plain pytest"
            )))
        }
        "--looponfail" => return Err(looponfail()),
        _ => {}
    }
    match (takes_value, inline) {
        (true, None) => {
            out.pytest_args.push(name);
            out.pytest_args.push(value.unwrap_or_default());
        }
        _ => out.pytest_args.push(arg.to_string()),
    }
    Ok(())
}

fn apply_own(out: &mut RawArgs, name: &str, value: Option<String>) -> Result<(), ArgError> {
    let v = value.unwrap_or_default();
    match name {
        "--numprocesses" => out.numprocesses = Some(parse_numprocesses(&v)?),
        "--maxprocesses" => {
            out.maxprocesses = Some(v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ArgError(format!(
                    "--maxprocesses: expected a whole number of 1 or more, got {v:?}"
                ))
            })?)
        }
        "--tx" => out.tx.push(v),
        "--dist" => out.dist = Some(v),
        "--distload" => out.dist = Some("load".into()),
        "--rsyncdir" => out.rsyncdirs.push(PathBuf::from(v)),
        "--rsyncignore" => out.rsyncignore.push(v),
        "--maxschedchunk" => {
            out.max_sched_chunk = Some(v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ArgError(format!(
                    "--maxschedchunk: expected a whole number of 1 or more, got {v:?}"
                ))
            })?)
        }
        "--testrunuid" => {
            if v.is_empty() {
                return Err(ArgError(
                    "--testrunuid: expected an id, got an empty value".into(),
                ));
            }
            out.testrun_uid = Some(v)
        }
        "--max-worker-restart" => {
            out.max_worker_restart = Some(v.parse().map_err(|_| {
                ArgError(format!(
                    "--max-worker-restart: expected a whole number, got {v:?}"
                ))
            })?)
        }
        "--timeout" => {
            let secs: f64 = v.parse().map_err(|_| {
                ArgError(format!(
                    "--timeout: expected a number of seconds, got {v:?}"
                ))
            })?;
            if !(secs.is_finite() && secs >= 0.0) {
                return Err(ArgError(format!(
                    "--timeout: expected a number of seconds, got {v:?}"
                )));
            }
            // 0 is "no timeout": kept, so it overrides a config file's and
            // reaches pytest-timeout as `--timeout 0` does.
            out.timeout = Some(secs);
        }
        "--startup-timeout" => {
            let secs: f64 = v
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| {
                    ArgError(format!(
                        "--startup-timeout: expected a number of seconds, got {v:?}"
                    ))
                })?;
            out.startup_timeout = Some(secs);
        }
        "--junitxml" | "--junit-xml" => out.junitxml = Some(PathBuf::from(v)),
        "--report-log" => out.report_log = Some(PathBuf::from(v)),
        "--no-provision" => out.no_provision = true,
        "--profile" => out.profile = Some(v),
        "--shard" => out.shard = Some(parse_shard(&v)?),
        "--no-config" => out.no_config = true,
        "--require-all-hosts" => out.require_all_hosts = true,
        "--loadscope-reorder" => out.loadscope_reorder = Some(true),
        "--no-loadscope-reorder" => out.loadscope_reorder = Some(false),
        "--exitfirst" => out.maxfail = Some(1),
        "--maxfail" => {
            let n: usize = v
                .parse()
                .map_err(|_| ArgError(format!("--maxfail: expected a whole number, got {v:?}")))?;
            out.maxfail = if n == 0 { None } else { Some(n) };
        }
        "--help" => out.help = true,
        "--version" => out.version = true,
        _ => return Err(ArgError(format!("internal: unhandled option {name}"))),
    }
    Ok(())
}

/// Parse `--shard K/N` (1 <= K <= N).
pub fn parse_shard(v: &str) -> Result<(usize, usize), ArgError> {
    let bad = || {
        ArgError(format!(
            "--shard: expected K/N with 1 <= K <= N (e.g. 2/4), got {v:?}"
        ))
    };
    let (k, n) = v.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if k == 0 || n == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// Parse `-n`'s value.
pub fn parse_numprocesses(v: &str) -> Result<NumProcesses, ArgError> {
    v.parse()
        .map_err(|e| ArgError(format!("-n/--numprocesses: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RawArgs {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap()
    }

    fn e(s: &str) -> String {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
            .unwrap_err()
            .0
    }

    #[test]
    fn own_options_are_consumed_and_the_rest_forwarded_in_order() {
        let a =
            p("-n 4 --flavor x -k not_slow tests/ --tx 2*popen --dist=each -p no:cacheprovider");
        assert_eq!(a.numprocesses, Some(NumProcesses::Count(4)));
        assert_eq!(a.tx, vec!["2*popen"]);
        assert_eq!(a.dist.as_deref(), Some("each"));
        assert_eq!(
            a.pytest_args,
            vec![
                "--flavor",
                "x",
                "-k",
                "not_slow",
                "tests/",
                "-p",
                "no:cacheprovider"
            ]
        );
        assert_eq!(a.positionals, vec!["x", "tests/"]);
    }

    #[test]
    fn short_clusters_are_split() {
        let a = p("-vxn2 -rA -sq");
        assert_eq!(a.numprocesses, Some(NumProcesses::Count(2)));
        assert_eq!(a.maxfail, Some(1));
        assert_eq!(a.verbosity, 0);
        assert!(a.capture_no);
        assert_eq!(a.report_chars.as_deref(), Some("A"));
        assert_eq!(a.pytest_args, vec!["-v", "-r", "A", "-sq"]);
        assert_eq!(p("-nauto").numprocesses, Some(NumProcesses::Auto));
        assert_eq!(p("-n logical").numprocesses, Some(NumProcesses::Logical));
    }

    #[test]
    fn coordination_options_are_read_and_forwarded() {
        let a = p(
            "--tb=short -vv --maxfail 3 --junitxml out.xml --report-log=l.jsonl --timeout 2.5 t",
        );
        assert_eq!(a.tb.as_deref(), Some("short"));
        assert_eq!(a.verbosity, 2);
        assert_eq!(a.maxfail, Some(3));
        assert_eq!(a.junitxml, Some(PathBuf::from("out.xml")));
        assert_eq!(a.report_log, Some(PathBuf::from("l.jsonl")));
        assert_eq!(a.timeout, Some(2.5));
        assert_eq!(a.pytest_args, vec!["--tb=short", "-vv", "t"]);
    }

    #[test]
    fn double_dash_forwards_the_rest() {
        let a = p("-n 2 -- --flavor x -x tests");
        assert_eq!(a.pytest_args, vec!["--flavor", "x", "tests"]);
        assert_eq!(a.maxfail, Some(1));
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            e("-n -3"),
            "-n/--numprocesses: expected a whole number of 0 or more, 'auto' or 'logical', got \"-3\""
        );
        assert_eq!(
            e("-n many"),
            "-n/--numprocesses: expected a whole number of 0 or more, 'auto' or 'logical', got \"many\""
        );
        assert_eq!(e("--tx"), "option --tx needs a value");
        assert_eq!(
            e("--timeout soon"),
            "--timeout: expected a number of seconds, got \"soon\""
        );
        assert_eq!(
            e("--maxfail x"),
            "--maxfail: expected a whole number, got \"x\""
        );
        assert!(e("--pdb").starts_with("--pdb cannot be used with rtest"));
        for looponfail in ["-f", "--looponfail", "-vf"] {
            assert!(
                e(looponfail).starts_with(
                    "-f/--looponfail (pytest-xdist's loop on failure) is not supported"
                ),
                "{looponfail}"
            );
        }
        assert_eq!(
            e("--maxschedchunk 0"),
            "--maxschedchunk: expected a whole number of 1 or more, got \"0\""
        );
    }

    #[test]
    fn xdists_scheduling_and_run_id_options_are_rtests() {
        let a = p("--maxschedchunk 4 --testrunuid=run-7 --no-loadscope-reorder -k x");
        assert_eq!(a.max_sched_chunk, Some(4));
        assert_eq!(a.testrun_uid.as_deref(), Some("run-7"));
        assert_eq!(a.loadscope_reorder, Some(false));
        assert_eq!(a.pytest_args, vec!["-k", "x"]);
        let a = p("--no-loadscope-reorder --loadscope-reorder");
        assert_eq!(a.loadscope_reorder, Some(true));
        assert!(a.pytest_args.is_empty());
        assert_eq!(p("-k x").loadscope_reorder, None);
    }

    #[test]
    fn basetemp_is_held_back_for_per_worker_rewriting() {
        let a = p("--basetemp /tmp/bt t");
        assert_eq!(a.basetemp.as_deref(), Some("/tmp/bt"));
        assert_eq!(a.pytest_args, vec!["t"]);
    }
}
