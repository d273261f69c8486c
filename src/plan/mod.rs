//! The plan: everything a run will do, resolved before anything starts.
//!
//! [`build`] is pure and deterministic: settings (from the command line and,
//! later, config files) plus facts about this machine go in, a [`Plan`]
//! comes out. A run executes exactly the plan it was given, so `rtest plan`
//! and a run cannot disagree.

pub mod view;

use crate::config::Sourced;
use crate::error::Error;
use crate::spec::{Transport, TxSpec};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use crate::config::DistMode;

/// One worker of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerPlan {
    /// `gw0`, `gw1`, ... (or the spec's `id=`).
    pub id: String,
    /// Where it runs.
    pub transport: Transport,
    /// The interpreter command or path.
    pub python: String,
    /// Working directory, if not the current one.
    pub chdir: Option<PathBuf>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Niceness (`nice=`), locally or on the worker's host.
    pub nice: Option<i32>,
    /// The spec this worker came from (its environment, for `--dist each`).
    pub spec: String,
    /// Arguments for this worker's pytest only (a synced copy's
    /// `--rootdir`).
    pub extra_args: Vec<String>,
    /// Entries put first on the worker's `sys.path` (a shipped pytest).
    pub sys_path: Vec<String>,
    /// The ssh config file for an ssh worker (`ssh_config=`).
    pub ssh_config: Option<PathBuf>,
    /// For a worker in a synced copy: the copy's rootdir there, whose paths
    /// in reports stand for the local rootdir's.
    pub copy_rootdir: Option<String>,
    /// For a worker in a synced copy: the copy's top there and the local
    /// directory it mirrors (paths in reports under the one stand for the
    /// other's).
    pub copy_root: Option<(String, PathBuf)>,
}

/// Settings a plan is built from (stage two of the command line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// Local workers from `-n` (`None`: not given).
    pub numprocesses: Option<usize>,
    /// `-n auto` or `-n logical` (the word) gave `numprocesses`.
    pub auto_word: Option<String>,
    /// `--maxprocesses`: a cap on local workers.
    pub maxprocesses: Option<usize>,
    /// Parsed `--tx` specs.
    pub tx: Vec<TxSpec>,
    /// `--dist`.
    pub dist: Option<DistMode>,
    /// pytest's arguments.
    pub pytest_args: Vec<String>,
    /// Environment for every pytest process (`PYTEST_ADDOPTS` without
    /// what rtest took out of it).
    pub pytest_env: BTreeMap<String, String>,
    /// `--basetemp`.
    pub basetemp: Option<String>,
    /// `--timeout` seconds (0: none, given to say so).
    pub timeout: Option<f64>,
    /// `--startup-timeout` seconds (`Some(0.0)`: none).
    pub startup_timeout: Option<f64>,
    /// `--max-worker-restart`.
    pub max_worker_restart: Option<usize>,
    /// `--maxschedchunk`.
    pub max_sched_chunk: Option<usize>,
    /// `--loadscope-reorder` (the default) / `--no-loadscope-reorder`.
    pub loadscope_reorder: bool,
    /// `--testrunuid`.
    pub testrun_uid: Option<String>,
    /// `-x`/`--maxfail`.
    pub maxfail: Option<usize>,
    /// `--junitxml`.
    pub junitxml: Option<PathBuf>,
    /// `--report-log`.
    pub report_log: Option<PathBuf>,
    /// `--collect-only`.
    pub collect_only: bool,
    /// `--shard K/N`.
    pub shard: Option<(usize, usize)>,
    /// pytest's rootdir, as config discovery found it.
    pub rootdir: PathBuf,
    /// Config files in merge order.
    pub config_files: Vec<PathBuf>,
    /// The selected profile.
    pub profile: Option<String>,
    /// Directories to sync to remote workers.
    pub rsyncdirs: Vec<Sourced<PathBuf>>,
    /// Ignore patterns, each with the directory it is relative to.
    pub rsyncignore: Vec<Sourced<(String, PathBuf)>>,
    /// Every effective setting with its origin, for `rtest plan`.
    pub sources: BTreeMap<String, Setting>,
}

/// One effective setting, for display.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting {
    /// The value.
    pub value: serde_json::Value,
    /// `file:line`, `RTEST_VAR`, `--flag` or `default`.
    pub source: String,
}

/// Seconds a worker may take to start and report its collection, unless
/// configured: generous for large suites, finite so that a hung import
/// cannot hold a CI job until its own limit.
pub const DEFAULT_STARTUP_TIMEOUT: f64 = 300.0;

/// Files that sync always leaves out.
pub const DEFAULT_IGNORES: &[&str] = &[".git", "__pycache__", "*.pyc", ".rtest"];

/// Also left out when rtest mirrors the whole rootdir on its own (remote
/// workers and no rsyncdirs): environments and caches, not sources.
pub const ROOTDIR_IGNORES: &[&str] = &[
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hg",
    ".svn",
];

/// One directory to sync, with its ignore rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncSet {
    /// The local directory (absolute).
    pub dir: PathBuf,
    /// Ignore patterns: (pattern, base dir, origin).
    pub ignore: Vec<SyncIgnore>,
}

/// One rsyncignore rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncIgnore {
    /// The glob.
    pub pattern: String,
    /// Directory a pattern with `/` is relative to.
    pub base: PathBuf,
    /// Where it was declared.
    pub source: String,
}

/// Facts about the machine the plan needs (kept out of [`build`] so it
/// stays pure).
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// The default interpreter (see `run::choose_default_python`).
    pub default_python: String,
    /// The rule that chose it.
    pub default_python_rule: String,
    /// Workers for `-n auto` when no `-n`/`--tx` is given.
    pub default_workers: usize,
}

/// Everything a run does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The workers, in id order.
    pub workers: Vec<WorkerPlan>,
    /// The distribution mode.
    pub dist: DistMode,
    /// Arguments every worker's pytest gets (before per-worker additions).
    pub pytest_args: Vec<String>,
    /// Environment every pytest process gets (under a tx spec's `env:`).
    pub pytest_env: BTreeMap<String, String>,
    /// `--basetemp`, split per worker.
    pub basetemp: Option<String>,
    /// Per-test timeout, seconds (0: none, given to say so).
    pub timeout: Option<f64>,
    /// Seconds a worker may take to report its collection.
    pub startup_timeout: Option<f64>,
    /// How many crashed workers may be replaced.
    pub max_worker_restart: usize,
    /// At most this many tests go to a worker at once (`--maxschedchunk`).
    #[serde(skip)]
    pub max_sched_chunk: Option<usize>,
    /// Scopes, files and groups go out largest first (`--loadscope-reorder`,
    /// the default) or in collection order (`--no-loadscope-reorder`).
    #[serde(skip)]
    pub loadscope_reorder: bool,
    /// The run's id, where `--testrunuid` gave one.
    #[serde(skip)]
    pub testrun_uid: Option<String>,
    /// Stop after this many failures.
    pub maxfail: Option<usize>,
    /// JUnit XML output.
    pub junitxml: Option<PathBuf>,
    /// pytest-reportlog output.
    pub report_log: Option<PathBuf>,
    /// Only collect.
    pub collect_only: bool,
    /// Run only shard K of N (1-based).
    pub shard: Option<(usize, usize)>,
    /// pytest's rootdir.
    pub rootdir: PathBuf,
    /// Config files in merge order.
    pub config_files: Vec<PathBuf>,
    /// The selected profile.
    pub profile: Option<String>,
    /// What is synced to remote workers.
    pub sync: Vec<SyncSet>,
    /// Every effective setting with its origin.
    pub settings: BTreeMap<String, Setting>,
    /// The interpreter local workers and the controller use when none is
    /// named, and the rule that chose it.
    pub default_python: (String, String),
    /// Every worker is a local one counted by `-n auto` or `-n logical`
    /// (or the default, which is auto): plugins'
    /// `pytest_xdist_auto_num_workers` may say how many there are.
    #[serde(skip)]
    pub auto_workers: Option<AutoWorkers>,
}

/// Local workers whose number plugins may decide, as under xdist's
/// `-n auto`.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoWorkers {
    /// `auto` or `logical`.
    pub word: String,
    /// `--maxprocesses`, which caps what plugins say (the controller
    /// answers with the capped number).
    pub cap: Option<usize>,
}

/// Resolve settings into a plan.
pub fn build(settings: &Settings, machine: &Machine) -> Result<Plan, Error> {
    let mut specs: Vec<TxSpec> = Vec::new();
    let mut dist = settings.dist;
    let cap = |n: usize| settings.maxprocesses.map_or(n, |m| n.min(m));
    match settings.numprocesses {
        Some(0) => {
            // `-n 0`, as in xdist: no distribution.
            if settings.tx.is_empty() {
                specs.push(TxSpec::popen(None));
            }
            dist.get_or_insert(DistMode::No);
        }
        Some(n) => {
            let mut spec = TxSpec::popen(None);
            spec.count = cap(n);
            specs.push(spec);
        }
        None if settings.tx.is_empty() => {
            let mut spec = TxSpec::popen(None);
            spec.count = cap(machine.default_workers.max(1));
            specs.push(spec);
        }
        None => {}
    }
    let auto_word = match settings.numprocesses {
        Some(n) if n > 0 => settings.auto_word.clone(),
        None => Some("auto".to_string()),
        Some(_) => None,
    };
    let auto_workers = auto_word
        .filter(|_| settings.tx.is_empty() && !settings.collect_only)
        .filter(|_| dist != Some(DistMode::No))
        .map(|word| AutoWorkers {
            word,
            cap: settings.maxprocesses,
        });
    specs.extend(settings.tx.iter().cloned());
    let dist = dist.unwrap_or(DistMode::Load);

    let mut workers = Vec::new();
    for spec in &specs {
        for k in 0..spec.count {
            let id = match &spec.id {
                Some(id) if spec.count == 1 => id.clone(),
                Some(id) => format!("{id}{k}"),
                None => format!("gw{}", workers.len()),
            };
            if workers.iter().any(|w: &WorkerPlan| w.id == id) {
                return Err(Error::usage(format!(
                    "two workers are named {id:?}: give each tx spec a different id="
                )));
            }
            let mut env: BTreeMap<String, String> = spec.env.iter().cloned().collect();
            if spec.dont_write_bytecode {
                env.insert("PYTHONDONTWRITEBYTECODE".into(), "1".into());
            }
            let mut one = spec.clone();
            one.count = 1;
            workers.push(WorkerPlan {
                id,
                transport: spec.transport.clone(),
                // A remote host has its own interpreters: the local venv's
                // path means nothing there.
                python: spec.python.clone().unwrap_or_else(|| match spec.transport {
                    Transport::Popen => machine.default_python.clone(),
                    _ => "python3".to_string(),
                }),
                chdir: spec.chdir.as_ref().map(PathBuf::from),
                env,
                nice: spec.nice,
                spec: one.to_string(),
                extra_args: Vec::new(),
                sys_path: Vec::new(),
                ssh_config: spec.ssh_config.as_ref().map(PathBuf::from),
                copy_rootdir: None,
                copy_root: None,
            });
        }
    }
    if dist == DistMode::No || settings.collect_only {
        workers.truncate(1);
    }
    if workers.is_empty() {
        return Err(Error::usage("no workers: give -n N or --tx SPEC"));
    }
    let max_worker_restart = settings.max_worker_restart.unwrap_or(4 * workers.len());
    let ignore: Vec<SyncIgnore> = DEFAULT_IGNORES
        .iter()
        .map(|p| SyncIgnore {
            pattern: p.to_string(),
            base: settings.rootdir.clone(),
            source: "default".into(),
        })
        .chain(settings.rsyncignore.iter().map(|s| SyncIgnore {
            pattern: s.value.0.clone(),
            base: s.value.1.clone(),
            source: s.source.clone(),
        }))
        .collect();
    let mut sync: Vec<SyncSet> = settings
        .rsyncdirs
        .iter()
        .map(|d| SyncSet {
            dir: d.value.clone(),
            ignore: ignore.clone(),
        })
        .collect();
    // A remote worker with nowhere to run (no chdir=) and nothing synced
    // would collect whatever its home holds: mirror the rootdir instead.
    let homeless = workers
        .iter()
        .any(|w| w.transport != Transport::Popen && w.chdir.is_none());
    if sync.is_empty() && homeless && !settings.rootdir.as_os_str().is_empty() {
        let mut ignore = ignore;
        ignore.extend(ROOTDIR_IGNORES.iter().map(|p| SyncIgnore {
            pattern: p.to_string(),
            base: settings.rootdir.clone(),
            source: "default: no rsyncdirs, so the rootdir is mirrored".into(),
        }));
        sync.push(SyncSet {
            dir: settings.rootdir.clone(),
            ignore,
        });
    }
    let mut all_settings = settings.sources.clone();
    all_settings.insert(
        "max-worker-restart".into(),
        all_settings
            .get("max-worker-restart")
            .cloned()
            .unwrap_or(Setting {
                value: max_worker_restart.into(),
                source: "default (4 per worker)".into(),
            }),
    );
    let startup_timeout = settings.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT);
    all_settings
        .entry("startup-timeout".into())
        .or_insert(Setting {
            value: startup_timeout.into(),
            source: "default".into(),
        });
    let startup_timeout = (startup_timeout > 0.0).then_some(startup_timeout);
    all_settings.entry("dist".into()).or_insert(Setting {
        value: dist.name().into(),
        source: "default".into(),
    });
    Ok(Plan {
        workers,
        dist,
        pytest_args: settings.pytest_args.clone(),
        pytest_env: settings.pytest_env.clone(),
        basetemp: settings.basetemp.clone(),
        timeout: settings.timeout,
        startup_timeout,
        max_worker_restart,
        max_sched_chunk: settings.max_sched_chunk,
        loadscope_reorder: settings.loadscope_reorder,
        testrun_uid: settings.testrun_uid.clone(),
        maxfail: settings.maxfail,
        junitxml: settings.junitxml.clone(),
        report_log: settings.report_log.clone(),
        collect_only: settings.collect_only,
        shard: settings.shard,
        rootdir: settings.rootdir.clone(),
        config_files: settings.config_files.clone(),
        profile: settings.profile.clone(),
        sync,
        settings: all_settings,
        default_python: (
            machine.default_python.clone(),
            machine.default_python_rule.clone(),
        ),
        auto_workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            default_python: "python3".into(),
            default_python_rule: "python3 on the PATH".into(),
            default_workers: 2,
        }
    }

    #[test]
    fn numprocesses_and_tx_add_up_with_sequential_ids() {
        let settings = Settings {
            numprocesses: Some(2),
            tx: vec!["popen//python=python3.12//env:A=1".parse().unwrap()],
            ..Settings::default()
        };
        let plan = build(&settings, &machine()).unwrap();
        let ids: Vec<_> = plan.workers.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["gw0", "gw1", "gw2"]);
        assert_eq!(plan.workers[2].python, "python3.12");
        assert_eq!(plan.workers[2].env.get("A").map(String::as_str), Some("1"));
        assert_eq!(plan.workers[0].python, "python3");
        assert_eq!(plan.max_worker_restart, 12);
        assert_eq!(plan.dist, DistMode::Load);
    }

    #[test]
    fn default_is_one_worker_per_core_and_n0_is_no_distribution() {
        let plan = build(&Settings::default(), &machine()).unwrap();
        assert_eq!(plan.workers.len(), 2);
        let plan = build(
            &Settings {
                numprocesses: Some(0),
                ..Settings::default()
            },
            &machine(),
        )
        .unwrap();
        assert_eq!(plan.workers.len(), 1);
        assert_eq!(plan.dist, DistMode::No);
    }

    #[test]
    fn ids_from_specs_must_be_unique() {
        let settings = Settings {
            tx: vec![
                "popen//id=a".parse().unwrap(),
                "popen//id=a".parse().unwrap(),
            ],
            ..Settings::default()
        };
        assert_eq!(
            build(&settings, &machine()).unwrap_err().message,
            "two workers are named \"a\": give each tx spec a different id="
        );
    }

    #[test]
    fn dist_mode_names() {
        assert_eq!("loadfile".parse::<DistMode>(), Ok(DistMode::LoadFile));
        assert_eq!(
            "fast".parse::<DistMode>().unwrap_err(),
            "unknown dist mode \"fast\" (expected one of: load, loadscope, loadfile, loadgroup, worksteal, each, no)"
        );
    }
}
