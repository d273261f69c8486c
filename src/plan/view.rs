//! The stable, schema'd form of a plan: what `rtest plan --format json`
//! prints (`schemas/plan.json` is generated from these types).

use super::{DistMode, Plan, Setting, SyncSet};
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;

/// A plan as JSON.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanView {
    /// pytest's rootdir.
    pub rootdir: String,
    /// Absolute paths of the config files, in merge order.
    pub config_files: Vec<String>,
    /// The selected profile.
    pub profile: Option<String>,
    /// Every worker.
    pub workers: Vec<WorkerView>,
    /// Every directory synced to remote workers.
    pub sync: Vec<SyncView>,
    /// The distribution mode.
    pub dist: DistMode,
    /// Arguments every worker's pytest gets.
    pub pytest_args: Vec<String>,
    /// Per-test timeout in seconds.
    pub timeout: Option<f64>,
    /// Seconds a worker may take to report its collection.
    pub startup_timeout: Option<f64>,
    /// How many crashed workers may be replaced.
    pub max_worker_restart: usize,
    /// Stop after this many failures.
    pub maxfail: Option<usize>,
    /// Output files.
    pub outputs: OutputsView,
    /// Every effective setting with its origin.
    pub settings: BTreeMap<String, SettingView>,
    /// The interpreter local workers and the controller use when no spec
    /// or config names one.
    pub default_python: DefaultPythonView,
    /// With `--collect`: what collection found and how it would be split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collect: Option<CollectView>,
    /// With `--probe`: what each worker's interpreter is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<Vec<ProbeView>>,
}

/// The default interpreter, and why.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DefaultPythonView {
    /// The interpreter.
    pub python: String,
    /// The rule that chose it: the virtualenv rtest is installed in, the
    /// active virtualenv, the rootdir's `.venv`, or `python3` on the PATH.
    pub rule: String,
}

/// One interpreter as `rtest plan --probe` found it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProbeView {
    /// The workers that use it.
    pub workers: Vec<String>,
    /// Their host.
    pub host: String,
    /// The interpreter as configured.
    pub python: String,
    /// Its version, when it answered.
    pub python_version: Option<String>,
    /// pytest's version there (`null`: not installed; rtest would ship it).
    pub pytest: Option<String>,
    /// Why it could not be probed.
    pub error: Option<String>,
    /// exec= workers: the place their copy goes to, as the agent named it.
    /// Workers listed together see the same files there and share one
    /// sync; each other place is synced on its own.
    pub place: Option<String>,
}

/// One worker.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WorkerView {
    /// `gw0`, ...
    pub id: String,
    /// `popen`, `ssh`, `socket` or `exec`.
    pub transport: String,
    /// `localhost` or the remote host.
    pub host: String,
    /// The interpreter.
    pub python: String,
    /// Working directory.
    pub chdir: Option<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// The tx spec it came from.
    pub spec: String,
    /// For ssh workers: which of its host's master connections it uses
    /// (1, 2, ...; nine workers share one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_connection: Option<usize>,
}

/// One sync set.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SyncView {
    /// The local directory.
    pub dir: String,
    /// Ignore rules.
    pub ignore: Vec<IgnoreView>,
    /// Files a first sync would send.
    pub files: u64,
    /// Bytes a first sync would send.
    pub bytes: u64,
}

/// One ignore rule.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IgnoreView {
    /// The glob.
    pub pattern: String,
    /// The directory a pattern with `/` is relative to.
    pub base: String,
    /// Where it was declared.
    pub source: String,
}

/// Output files.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OutputsView {
    /// JUnit XML.
    pub junitxml: Option<String>,
    /// pytest-reportlog JSON lines.
    pub report_log: Option<String>,
}

/// One setting and its origin.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SettingView {
    /// The value.
    pub value: serde_json::Value,
    /// `file:line`, `RTEST_VAR`, a flag, or `default`.
    pub source: String,
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

impl PlanView {
    /// The view of `plan`; `size` gives a sync set's (files, bytes).
    pub fn new(plan: &Plan, size: &dyn Fn(&SyncSet) -> (u64, u64)) -> Self {
        PlanView {
            rootdir: path(&plan.rootdir),
            config_files: plan.config_files.iter().map(|p| path(p)).collect(),
            profile: plan.profile.clone(),
            workers: plan
                .workers
                .iter()
                .enumerate()
                .map(|(i, w)| WorkerView {
                    ssh_connection: crate::gateway::ssh::Dest::of(w).map(|_| {
                        crate::gateway::Remotes::ordinal(&plan.workers, i)
                            / crate::gateway::ssh::WORKERS_PER_MASTER
                            + 1
                    }),
                    id: w.id.clone(),
                    transport: w.transport.name().into(),
                    host: w.transport.host(),
                    python: w.python.clone(),
                    chdir: w.chdir.as_deref().map(path),
                    env: w.env.clone(),
                    spec: w.spec.clone(),
                })
                .collect(),
            sync: plan
                .sync
                .iter()
                .map(|s| {
                    let (files, bytes) = size(s);
                    SyncView {
                        dir: path(&s.dir),
                        ignore: s
                            .ignore
                            .iter()
                            .map(|i| IgnoreView {
                                pattern: i.pattern.clone(),
                                base: path(&i.base),
                                source: i.source.clone(),
                            })
                            .collect(),
                        files,
                        bytes,
                    }
                })
                .collect(),
            dist: plan.dist,
            pytest_args: plan.pytest_args.clone(),
            timeout: plan.timeout,
            startup_timeout: plan.startup_timeout,
            max_worker_restart: plan.max_worker_restart,
            maxfail: plan.maxfail,
            outputs: OutputsView {
                junitxml: plan.junitxml.as_deref().map(path),
                report_log: plan.report_log.as_deref().map(path),
            },
            default_python: DefaultPythonView {
                python: plan.default_python.0.clone(),
                rule: plan.default_python.1.clone(),
            },
            settings: plan
                .settings
                .iter()
                .map(|(k, Setting { value, source })| {
                    (
                        k.clone(),
                        SettingView {
                            value: value.clone(),
                            source: source.clone(),
                        },
                    )
                })
                .collect(),
            collect: None,
            probe: None,
        }
    }
}

/// What `rtest plan --collect` found (the `collect` key of the JSON).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CollectView {
    /// Tests collected.
    pub total: usize,
    /// Tests this job runs (its shard, or all).
    pub selected: usize,
    /// Deselected by `-k`/`-m` and plugins.
    pub deselected: usize,
    /// Collectors that failed.
    pub collect_errors: usize,
    /// Whether a duration history was found.
    pub history: bool,
    /// Units handed out whole (`loadfile`, `loadscope`).
    pub units: Option<usize>,
    /// Per worker: its fixed share, or `null` when shares are dynamic.
    pub per_worker: Vec<WorkerShare>,
    /// With `--shard`: every shard of the split.
    pub shards: Vec<ShardView>,
}

/// A worker's share of the tests.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WorkerShare {
    /// Worker id.
    pub id: String,
    /// Tests it runs, when fixed (`each`, `no`).
    pub tests: Option<usize>,
}

/// One shard of a `--shard K/N` split.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ShardView {
    /// `K/N`.
    pub shard: String,
    /// Its tests.
    pub tests: usize,
    /// Their expected time, with history.
    pub expected_seconds: Option<f64>,
    /// Whether this job runs it.
    pub this_job: bool,
}

/// The JSON Schema of [`PlanView`].
pub fn plan_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PlanView)).unwrap_or_default()
}
