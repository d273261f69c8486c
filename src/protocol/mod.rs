//! The wire protocol between the coordinator and the Python agent.
//!
//! Frames are a 4-byte big-endian length followed by one UTF-8 JSON object
//! whose `"t"` field names the message. [`ToAgent`] and [`FromAgent`] are the
//! two directions; `python/agent.py` mirrors them. The version is checked in
//! the `hello`/`ready` handshake.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the framing and message set; bumped on incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts (a guard against a corrupt stream).
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// The agent's source, embedded in the binary and sent over the bootstrap.
pub const AGENT_SOURCE: &str = include_str!("../../python/agent.py");

/// The bootstrap every gateway runs with `python -u -c`: read a line with
/// the source's length and key, then exactly that many bytes of source,
/// and exec it. It reads the raw fd byte-exactly (no buffered `sys.stdin`),
/// so the frames that follow the source stay in the pipe for the agent.
/// Works on every Python 3.
///
/// Where `RTEST_AGENT_CACHE` names a directory (local workers and the
/// controller: see [`AGENT_CACHE_ENV`]), the compiled source is kept there
/// under its key and this interpreter's exact version, so later starts
/// load it instead of compiling it again (30-40 ms each); the variable is
/// gone from the environment before anything else runs.
pub const BOOTSTRAP: &str = "import os,sys
def r(n):
 b=b''
 while len(b)<n:
  c=os.read(0,n-len(b))
  if not c:raise SystemExit(70)
  b+=c
 return b
n=b''
while not n.endswith(b'\\n'):n+=r(1)
n,k=n.split()
s=r(int(n))
d=os.environ.pop('RTEST_AGENT_CACHE','')
c=f=None
if d:
 import marshal
 f=os.path.join(d,'%s-%x-%s.bin'%(k.decode(),sys.hexversion,sys.implementation.cache_tag))
 try:
  with open(f,'rb') as h:c=marshal.load(h)
 except Exception:pass
if c is None:
 c=compile(s,'<rtest-agent>','exec')
 if f:
  try:
   os.makedirs(d,exist_ok=True);t='%s.%d'%(f,os.getpid())
   with open(t,'wb') as h:marshal.dump(c,h)
   os.replace(t,f)
  except Exception:pass
del r,n,k,s,d,f
exec(c,{'__name__':'__main__'})
";

/// The variable that turns on the bootstrap's cache of compiled agents.
pub const AGENT_CACHE_ENV: &str = "RTEST_AGENT_CACHE";

/// The controller role, sent after the agent to the controller process.
pub const CONTROLLER_SOURCE: &str = include_str!("../../python/controller.py");

/// What ends every payload: the agent's entry point.
const ENTRY: &str = "\n_entry()\n";

/// The bytes a gateway writes first: the agent's length and source.
pub fn bootstrap_payload() -> Vec<u8> {
    payload(&[AGENT_SOURCE, ENTRY])
}

/// The bootstrap bytes of the controller: the agent with its controller
/// role.
pub fn controller_payload() -> Vec<u8> {
    payload(&[AGENT_SOURCE, "\n", CONTROLLER_SOURCE, ENTRY])
}

/// The keys this build's payloads go by in the bootstrap's cache (the
/// worker's and the controller's).
pub fn payload_keys() -> [String; 2] {
    [
        key(&[AGENT_SOURCE, ENTRY]),
        key(&[AGENT_SOURCE, "\n", CONTROLLER_SOURCE, ENTRY]),
    ]
}

/// A digest of the source `parts` make.
fn key(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for p in parts {
        digest.update(p.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `LEN KEY\n` then the source: KEY names this exact source (a digest),
/// for the bootstrap's cache.
fn payload(parts: &[&str]) -> Vec<u8> {
    let source = parts.concat().into_bytes();
    let mut out = format!("{} {}\n", source.len(), key(parts)).into_bytes();
    out.extend_from_slice(&source);
    out
}

/// A JSON value carried as it came (pytest's serialized reports,
/// `workerinput`, `workeroutput`): the coordinator passes it on without
/// parsing it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<serde_json::value::RawValue>);

impl RawJson {
    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Wrap a value (serialized once).
    pub fn from_value(value: &serde_json::Value) -> Self {
        RawJson(
            serde_json::value::to_raw_value(value)
                .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
        )
    }

    /// Parse it (for outputs that add to it, such as the report log).
    pub fn parse(&self) -> serde_json::Value {
        serde_json::from_str(self.get()).unwrap_or(serde_json::Value::Null)
    }

    /// Whether it is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.get().trim() == "null"
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// Messages the coordinator sends to an agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToAgent {
    /// First message: protocol version, extra `sys.path` entries, and a
    /// directory to change into before anything else.
    Hello {
        /// Protocol version the coordinator speaks.
        protocol: u32,
        /// Entries prepended to `sys.path` (a shipped pytest, for example).
        sys_path: Vec<String>,
        /// Directory the worker runs in.
        chdir: Option<String>,
    },
    /// Start pytest with these arguments and collect.
    Start(StartArgs),
    /// Run these test indices, in order, after those already queued.
    Run {
        /// Indices into the worker's collected items.
        indices: Vec<usize>,
    },
    /// Take back these queued (not yet started) indices.
    Steal {
        /// Indices the coordinator wants back.
        indices: Vec<usize>,
    },
    /// Drop everything queued and end after the current test.
    Stop,
    /// Send (or stop sending) every report in pytest's serialized form.
    Stream {
        /// Whether to.
        on: bool,
    },
    /// A local worker's `--basetemp` in the run's numbered directory (the
    /// controller's), for a worker started before it was known: used
    /// unless the worker's pytest made its own already.
    Basetemp {
        /// The directory.
        path: String,
    },
    /// A worker's `config.workerinput` (after the controller's
    /// `pytest_configure_node`), for a worker started without it.
    WorkerInput {
        /// The dict.
        input: RawJson,
        /// Send every report in pytest's serialized form (the controller
        /// replays them).
        stream: bool,
    },
    /// Become the controller: a pytest session that hosts plugins.
    Control(ControlArgs),
    /// Controller: call `pytest_configure_node` for a worker about to
    /// start (answered by `node_configured`).
    ConfigureNode {
        /// Worker id.
        id: String,
        /// Its tx spec.
        spec: String,
        /// The synced directories (xdist's `nodemanager.roots`).
        roots: Vec<String>,
        /// rtest's part of its `workerinput`.
        workerinput: serde_json::Value,
    },
    /// Controller: a worker's pytest is configured (`pytest_testnodeready`).
    NodeReady {
        /// Worker id.
        id: String,
        /// What xdist calls `workerinfo`.
        info: Option<RawJson>,
    },
    /// Controller: a worker collected
    /// (`pytest_xdist_node_collection_finished`).
    NodeCollected {
        /// Worker id.
        id: String,
        /// How many items.
        count: usize,
        /// The ids, when a plugin implements the hook.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ids: Option<Vec<String>>,
    },
    /// Controller: collectors that did not pass (`pytest_collectreport`).
    CollectReports {
        /// pytest's serialized reports.
        reports: Vec<RawJson>,
    },
    /// Controller: one test's reports (`logstart`, `logreport`s,
    /// `logfinish`).
    Test(TestReplay),
    /// Controller: a test crashed its worker; plugins decide whether it
    /// runs again (`pytest_handlecrashitem`), answered by `crash_verdict`.
    CrashItem(CrashItem),
    /// Controller: a recorded warning (`pytest_warning_recorded`).
    Warning {
        /// The agent's serialized warning.
        data: RawJson,
    },
    /// Controller: a worker ended (`pytest_testnodedown`).
    NodeDown {
        /// Worker id.
        id: String,
        /// Its `config.workeroutput`, when it ended its session.
        output: Option<RawJson>,
        /// Why it went down, when it crashed.
        error: Option<String>,
    },
    /// Controller: the run is over; finish the session with this status
    /// (answered by `controller_done`).
    Finish {
        /// rtest's exit status before plugins had their say.
        exitstatus: i32,
        /// Items collected.
        collected: usize,
        /// Failed reports.
        failed: usize,
    },
    /// Controller: every worker's process has exited; its session's
    /// `pytest_sessionfinish` goes on (xdist's tears its nodes down first).
    WorkersGone,
    /// Sync: list what `base` holds under `dirs` (answered by `sync_manifest`).
    SyncList {
        /// The directory the tree is mirrored into (`~` expanded remotely).
        base: String,
        /// Synced top directories, relative to `base`.
        dirs: Vec<String>,
        /// Single files that are synced too (the rootdir's ini files).
        #[serde(default)]
        files: Vec<String>,
    },
    /// Sync: one chunk of a file (base64 of zlib-compressed bytes).
    SyncPut {
        /// Path relative to `base`.
        path: String,
        /// Where this chunk goes.
        offset: u64,
        /// The chunk, base64 of its zlib stream (or of the bytes, `raw`).
        data: String,
        /// Sent as is: compression would not have made it smaller.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        raw: bool,
        /// Whether this is the file's last chunk.
        last: bool,
        /// Permission bits.
        mode: u32,
        /// Modification time, ns since the epoch.
        mtime_ns: i64,
    },
    /// Sync: a symlink.
    SyncLink {
        /// Path relative to `base`.
        path: String,
        /// Its target.
        target: String,
    },
    /// Sync: paths to delete.
    SyncDelete {
        /// Paths relative to `base`.
        paths: Vec<String>,
    },
    /// Sync: done (answered by `synced`).
    SyncEnd,
    /// Sync: which place each of `dirs` is (answered by `places`). Two
    /// workers that get the same id for a directory see the same files
    /// there (one container, one shared volume), so one sync serves both.
    SyncPlace {
        /// Directories (`~` expanded remotely).
        dirs: Vec<String>,
        /// Create each directory and its place marker if missing (a run);
        /// without it nothing is written (`rtest plan --probe`).
        create: bool,
    },
    /// No more tests: finish the queue, tear down, and exit.
    Shutdown,
}

/// The arguments of [`ToAgent::Start`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StartArgs {
    /// pytest's command line, as pytest would get it.
    pub args: Vec<String>,
    /// Extra environment variables for the worker.
    pub env: BTreeMap<String, String>,
    /// `PYTEST_XDIST_WORKER`, e.g. `gw0`.
    pub worker_id: String,
    /// `PYTEST_XDIST_WORKER_COUNT`.
    pub worker_count: usize,
    /// `PYTEST_XDIST_TESTRUNUID`.
    pub testrun_uid: String,
    /// Send pytest's own serialized report with every report (report-log).
    pub full_reports: bool,
    /// Send each item's `xdist_group` names (`--dist loadgroup`).
    #[serde(default)]
    pub groups: bool,
    /// `config.workerinput`; without it the worker parses its arguments
    /// and waits for [`ToAgent::WorkerInput`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workerinput: Option<RawJson>,
    /// Send every report in pytest's serialized form.
    #[serde(default)]
    pub stream: bool,
    /// Seconds until the worker dumps its stack and exits unless it has
    /// reported its collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timeout: Option<f64>,
    /// `--timeout`: pytest's own option too, where a plugin defines it
    /// (pytest-timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Not a popen worker: as xdist's remote workers, its working
    /// directory (the synced tree) goes on `PYTHONPATH` too, for the
    /// subprocesses tests start (every worker has it on `sys.path`).
    #[serde(default)]
    pub remote: bool,
}

/// The arguments of [`ToAgent::Control`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ControlArgs {
    /// pytest's command line, as the workers get it.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// How many workers the run starts.
    pub numprocesses: usize,
    /// The distribution mode (`load`, `each`, ...).
    pub dist: String,
    /// Terminal markup for what plugins write.
    pub color: bool,
    /// Terminal width.
    pub width: usize,
    /// `--shard K/N`: the JUnit suite's name says which shard it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<(usize, usize)>,
    /// The JUnit file the controller's temp file becomes (what pytest's
    /// "generated xml file" line names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junitxml: Option<String>,
    /// `--timeout`, for a plugin that defines pytest's (its header line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// The workers are `-n auto` or `-n logical` (that word): ask plugins'
    /// `pytest_xdist_auto_num_workers` how many, and answer with
    /// [`FromAgent::AutoWorkers`] before configuring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_workers: Option<String>,
    /// `--maxprocesses`, which caps what plugins say there (the count
    /// the controller answers is capped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_cap: Option<usize>,
    /// The `-n` the run was given (a number, `auto` or `logical`), which
    /// plugins' `pytest_cmdline_main` sees as xdist's option parsing
    /// leaves it; none where the worker count is rtest's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_numprocesses: Option<serde_json::Value>,
    /// The `--dist` the run was given; none where it is the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_dist: Option<String>,
    /// Make pytest's numbered base temporary directory for the run and
    /// say it in [`ControllerReady::basetemp`]: the local workers' lie in
    /// it (`popen-gw0`, ...), as under xdist.
    #[serde(default)]
    pub basetemp: bool,
}

/// A test that crashed its worker, for the controller's plugins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrashItem {
    /// The coordinator's index of the test (echoed in the verdict).
    pub item: usize,
    /// The worker it crashed.
    pub node: String,
    /// pytest node id.
    pub nodeid: String,
    /// `(path, line, domain)`.
    pub location: Option<(String, Option<u64>, String)>,
    /// The phase it crashed in.
    pub when: String,
    /// What happened.
    pub longrepr: String,
    /// Seconds.
    pub duration: f64,
    /// Whether the distribution mode can run this one test again (xdist's
    /// `mark_test_pending`).
    pub requeue: bool,
    /// JUnit properties saying where it ran.
    #[serde(default)]
    pub environment: Vec<(String, String)>,
}

/// What the controller's plugins made of a crashed test.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrashVerdict {
    /// The [`CrashItem::item`] answered.
    pub item: usize,
    /// A plugin marked it to run again.
    pub rerun: bool,
    /// The report's outcome as plugins left it (`rerun`, `failed`).
    pub outcome: String,
    /// Its text as plugins left it.
    #[serde(default)]
    pub longrepr: Option<String>,
    /// pytest's status category, letter and word for it.
    #[serde(default)]
    pub category: Option<String>,
    /// The progress letter.
    #[serde(default)]
    pub letter: Option<String>,
    /// The verbose word.
    #[serde(default)]
    pub word: Option<String>,
}

/// One test's reports as the controller replays them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestReplay {
    /// The worker that ran it.
    pub node: String,
    /// pytest node id.
    pub nodeid: String,
    /// `(path, line, domain)`.
    pub location: Option<(String, Option<u64>, String)>,
    /// pytest's serialized reports, in order.
    pub reports: Vec<RawJson>,
    /// The test had no reports of its own: its worker crashed or none
    /// was left to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<CrashReplay>,
    /// Where it ran (host, Python), when the run has several such places:
    /// JUnit properties of its testcase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<(String, String)>,
}

/// A failure rtest made up for a test its worker could not report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrashReplay {
    /// The phase.
    pub when: String,
    /// What happened.
    pub longrepr: String,
    /// Seconds.
    pub duration: f64,
}

/// Messages an agent sends to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromAgent {
    /// Answer to `hello`: what this Python is.
    Ready(ReadyInfo),
    /// pytest is configured: the options it will run with.
    Configured {
        /// The effective options.
        options: PytestOptions,
        /// What xdist's controller keeps as `node.workerinfo` (when a
        /// controller hears of this worker).
        #[serde(default)]
        workerinfo: Option<RawJson>,
    },
    /// pytest rejected its command line.
    UsageError {
        /// pytest's message.
        message: String,
        /// The message is pytest's whole output for it (a conftest that
        /// failed to import): shown as it is, without `ERROR:`.
        #[serde(default)]
        verbatim: bool,
    },
    /// A collector that did not pass (error or skip).
    CollectReport(CollectReport),
    /// Collection finished.
    Collected(Collected),
    /// A phase report worth sending in full (not a plain pass).
    Report(Box<PhaseReport>),
    /// A test's protocol finished.
    Finished(Finished),
    /// A warning pytest recorded.
    Warning(WarningMsg),
    /// A test raised KeyboardInterrupt.
    Interrupted {
        /// Index of the test.
        i: usize,
        /// The exception's line (`KeyboardInterrupt`), pytest's title for
        /// it; absent from agents that could not make pytest's report.
        #[serde(default)]
        title: Option<String>,
        /// Where it was raised (the innermost frame), unless --full-trace.
        #[serde(default)]
        location: Option<(String, Option<u64>)>,
        /// The exception's first line, or the whole traceback.
        message: String,
    },
    /// `pytest.exit()` ended the worker's session.
    Exit {
        /// pytest's line for it (`_pytest.outcomes.Exit: why`).
        message: String,
        /// The status it gives the session.
        #[serde(default)]
        status: Option<i32>,
        /// At configure time: pytest writes only `Exit: why` to stderr,
        /// no line on stdout.
        #[serde(default)]
        quiet: bool,
    },
    /// pytest's session asked to stop (`-x`/`--maxfail` from an ini file).
    ShouldStop {
        /// pytest's reason.
        reason: Option<String>,
    },
    /// Answer to `steal`.
    Stolen {
        /// Indices actually removed from the queue.
        indices: Vec<usize>,
    },
    /// pytest or the agent hit an internal error.
    InternalError {
        /// The traceback.
        message: String,
    },
    /// A worker's `config.workeroutput` at the end of its session.
    WorkerOutput {
        /// The dict.
        output: RawJson,
    },
    /// What plugins' `pytest_xdist_auto_num_workers` said.
    AutoWorkers {
        /// The number of workers to start (at least one, capped by
        /// `--maxprocesses`); `None` when no plugin implements the hook,
        /// all returned None, or it failed.
        count: Option<usize>,
        /// The hook said 0: one worker, without distribution.
        #[serde(default)]
        undistributed: bool,
        /// The plugins that implement the hook.
        #[serde(default)]
        by: Vec<String>,
        /// The hook raised or returned what is not a number: pytest's
        /// INTERNALERROR lines.
        #[serde(default)]
        error: Option<String>,
    },
    /// The controller's session started.
    ControllerReady(ControllerReady),
    /// The controller's `pytest_configure_node` ran for a worker.
    NodeConfigured {
        /// Worker id.
        id: String,
        /// The worker's `workerinput`, as plugins left it.
        workerinput: RawJson,
    },
    /// The controller's session finished.
    ControllerDone(ControllerDone),
    /// The controller's plugins decided about a crashed test.
    CrashVerdict(CrashVerdict),
    /// What plugins wrote to the controller's terminal while it replayed
    /// a test (pytest-instafail's failure), to show as it comes.
    PluginText {
        /// The text, with the terminal's markup if colors are on.
        text: String,
    },
    /// The manifest of the remote copy.
    SyncManifest {
        /// The absolute base directory on the worker's host.
        base: String,
        /// Its files: path, size, mtime (ns), mode (compact: a 10,000-file
        /// tree is one small frame).
        #[serde(default)]
        files: Vec<(String, u64, i64, u32)>,
        /// Its symlinks: path, target.
        #[serde(default)]
        links: Vec<(String, String)>,
    },
    /// Answer to `sync_place`: one id per directory asked about.
    Places {
        /// The ids, in the order asked.
        ids: Vec<String>,
    },
    /// A sync finished.
    Synced {
        /// Files written.
        files: u64,
        /// Bytes written.
        bytes: u64,
        /// Operations refused (unsafe paths) or failed.
        errors: Vec<String>,
    },
    /// The session ended with this exit status.
    Done {
        /// pytest's exit status.
        status: i32,
    },
}

/// A warning pytest recorded on a worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WarningMsg {
    /// Node id, empty for session-level warnings.
    #[serde(default)]
    pub nodeid: String,
    /// `config`, `collect` or `runtest`.
    #[serde(default)]
    pub when: String,
    /// The formatted warning.
    pub text: String,
    /// Where a warning outside any test came from, as pytest's summary
    /// says it (`path:line`, relative to where pytest started).
    #[serde(default)]
    pub place: Option<String>,
    /// The warning serialized for the controller (when it replays).
    #[serde(default)]
    pub data: Option<RawJson>,
}

/// What the controller's session is, once started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ControllerReady {
    /// A plugin turned the distribution off before xdist would have
    /// read it (`numprocesses` 0 or `dist` "no" in its
    /// `pytest_cmdline_main` or `pytest_configure`): the run goes on as
    /// with `-n 0`.
    #[serde(default)]
    pub undistributed: bool,
    /// Lines plugins add to the header (`pytest_report_header`), pytest's
    /// `rootdir:`/`configfile:`/`plugins:` lines among them.
    #[serde(default)]
    pub header: Vec<String>,
    /// Whether a plugin or conftest.py implements a hook the controller
    /// replays; if not, the controller has ended and gets nothing more.
    #[serde(default)]
    pub needed: bool,
    /// Whether a plugin wants every worker's collected ids.
    #[serde(default)]
    pub wants_ids: bool,
    /// Which plugins hook the run (`hook (plugin)`).
    #[serde(default)]
    pub hooked: Vec<String>,
    /// Keys every worker's `workerinput` gets.
    #[serde(default)]
    pub workerinput: serde_json::Map<String, serde_json::Value>,
    /// Whether a plugin implements `pytest_configure_node`.
    #[serde(default)]
    pub configure_node: bool,
    /// Whether a plugin implements `pytest_handlecrashitem`.
    #[serde(default)]
    pub crash_items: bool,
    /// What decided its plugins: path, mtime (ns), size.
    #[serde(default)]
    pub watch: Vec<(String, i64, u64)>,
    /// Initial conftest.py files that would change its plugins if they
    /// appeared.
    #[serde(default)]
    pub absent: Vec<String>,
    /// Sections of the terminal summary a plugin's own terminal reporter
    /// draws its way (`summary_failures`, `short_test_summary`, ...).
    #[serde(default)]
    pub sections: Vec<String>,
    /// What plugins wrote to the terminal before pytest's header (a
    /// section of their own in `pytest_sessionstart`).
    #[serde(default)]
    pub before_header: String,
    /// What they wrote after it, before the run.
    #[serde(default)]
    pub after_header: String,
    /// The run's numbered base temporary directory, where asked for and
    /// pytest could make it. A controller that made it keeps its session
    /// (its lock on it) until told to finish, needed or not.
    #[serde(default)]
    pub basetemp: Option<String>,
}

/// How the controller's session ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ControllerDone {
    /// The session's final exit status, as plugins left it.
    pub exitstatus: i32,
    /// What plugins wrote to the terminal after the test loop.
    #[serde(default)]
    pub after_loop: String,
    /// What plugins wrote in the terminal summary.
    #[serde(default)]
    pub summary: String,
    /// What plugins printed at unconfigure, after pytest's final line.
    #[serde(default)]
    pub after_final: String,
    /// How many replayed hooks raised.
    #[serde(default)]
    pub errors: u32,
}

/// The oldest Python the agent runs on.
pub const MIN_PYTHON: (u32, u32) = (3, 8);

impl ReadyInfo {
    /// Whether this Python is older than [`MIN_PYTHON`].
    pub fn too_old(&self) -> bool {
        let v: Vec<u32> = self
            .python_version
            .split('.')
            .filter_map(|p| p.parse().ok())
            .collect();
        v.len() >= 2 && (v[0], v[1]) < MIN_PYTHON
    }

    /// The error for a Python that is [`too_old`](Self::too_old).
    pub fn too_old_message(&self, python: &str, host: &str) -> String {
        format!(
            "{python} on {host} is Python {}; rtest's agent needs Python {}.{} or newer: name another interpreter with python=",
            self.python_version, MIN_PYTHON.0, MIN_PYTHON.1
        )
    }
}

/// What a worker's Python is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ReadyInfo {
    /// The agent's protocol version.
    pub protocol: u32,
    /// `3.11.7`.
    pub python_version: String,
    /// `CPython`, `PyPy`.
    #[serde(default)]
    pub implementation: String,
    /// `sys.executable`.
    pub executable: String,
    /// `sys.platform`.
    pub platform: String,
    /// The working directory.
    pub cwd: String,
    /// The worker's process id.
    #[serde(default)]
    pub pid: u32,
    /// pytest's version, or `None` when pytest is not importable.
    pub pytest: Option<String>,
    /// pluggy's version.
    pub pluggy: Option<String>,
}

/// The options a worker's pytest ended up with (command line, addopts,
/// `PYTEST_ADDOPTS`, ini files), which the coordinator renders with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PytestOptions {
    /// `-v` count (negative for `-q`).
    #[serde(default)]
    pub verbose: i32,
    /// Expanded `-r` characters (pytest's `getreportopt`), `w` included
    /// when warnings are shown.
    #[serde(default = "default_reportchars")]
    pub reportchars: String,
    /// `--tb`.
    #[serde(default = "default_tbstyle")]
    pub tbstyle: String,
    /// `--show-capture`.
    #[serde(default = "default_showcapture")]
    pub showcapture: String,
    /// `--durations`.
    #[serde(default)]
    pub durations: Option<usize>,
    /// `--durations-min`.
    #[serde(default)]
    pub durations_min: Option<f64>,
    /// `--maxfail` / `-x` (0: none).
    #[serde(default)]
    pub maxfail: usize,
    /// `--continue-on-collection-errors`.
    #[serde(default)]
    pub continue_on_collection_errors: bool,
    /// `--capture` (`no` for `-s`).
    #[serde(default)]
    pub capture: String,
    /// The progress information pytest's terminal shows
    /// (`console_output_style` after `-s` and `--setup-show`): `progress`,
    /// `count`, `times`, or empty for none.
    #[serde(default = "default_progress")]
    pub progress: String,
    /// `--no-header`.
    #[serde(default)]
    pub no_header: bool,
    /// `--no-summary`.
    #[serde(default)]
    pub no_summary: bool,
    /// Skips folded in the short summary (`--no-fold-skipped` clears it).
    #[serde(default = "yes")]
    pub fold_skipped: bool,
    /// `--force-short-summary`.
    #[serde(default)]
    pub force_short_summary: bool,
    /// pytest's terminal reporter is there (`-p no:terminal` removes it).
    #[serde(default = "yes")]
    pub terminal: bool,
}

fn yes() -> bool {
    true
}

fn default_progress() -> String {
    "progress".into()
}

fn default_reportchars() -> String {
    "wfE".into()
}

fn default_tbstyle() -> String {
    "auto".into()
}

fn default_showcapture() -> String {
    "all".into()
}

impl Default for PytestOptions {
    fn default() -> Self {
        PytestOptions {
            verbose: 0,
            reportchars: default_reportchars(),
            tbstyle: default_tbstyle(),
            showcapture: default_showcapture(),
            durations: None,
            durations_min: None,
            maxfail: 0,
            continue_on_collection_errors: false,
            capture: "fd".into(),
            progress: default_progress(),
            no_header: false,
            no_summary: false,
            fold_skipped: true,
            force_short_summary: false,
            terminal: true,
        }
    }
}

/// A non-passing collector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectReport {
    /// The collector's node id.
    pub nodeid: String,
    /// `failed` or `skipped`.
    pub outcome: String,
    /// pytest's rendering of the error.
    pub longrepr: Option<String>,
    /// For skips: path, line, reason.
    #[serde(default)]
    pub skip: Option<Vec<Option<String>>>,
    /// For errors: the short summary's message, where pytest has one.
    #[serde(default)]
    pub crash: Option<String>,
    /// pytest's serialized report (report log, controller).
    #[serde(default)]
    pub raw: Option<RawJson>,
}

/// The result of collection on one worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Collected {
    /// pytest's rootdir.
    pub rootdir: String,
    /// Node ids in collection order.
    pub ids: Vec<String>,
    /// `(path, line, domain)` per item.
    #[serde(default)]
    pub locations: Vec<Option<(String, Option<u64>, String)>>,
    /// `xdist_group` names per item.
    #[serde(default)]
    pub groups: Vec<Option<Vec<String>>>,
    /// How many items `-k`/`-m` and plugins deselected.
    #[serde(default)]
    pub deselected: usize,
    /// pytest's cache directory, when the cacheprovider is active.
    #[serde(default)]
    pub cachedir: Option<String>,
    /// Each item's limit where a pytest plugin enforces `--timeout` in the
    /// worker (pytest-timeout); absent where none does.
    #[serde(default)]
    pub limits: Option<TimeLimits>,
    /// What plugins report once collection is done
    /// (`pytest_report_collectionfinish`: `run-last-failure: ...`).
    #[serde(default)]
    pub report_lines: Vec<String>,
    /// With `--collect-only`: the items as pytest's terminal reporter lists
    /// them at the run's verbosity.
    #[serde(default)]
    pub listing: Option<String>,
    /// pytest's logging plugin shows records live (`log_cli`,
    /// `--log-cli-level`).
    #[serde(default)]
    pub log_cli: bool,
}

/// The time limits a worker's pytest plugin (pytest-timeout) enforces on
/// its items, in seconds; `None` is no limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TimeLimits {
    /// The limit of every item not in `except`.
    pub default: Option<f64>,
    /// `(item index, limit)` where an item's differs (a `timeout` marker),
    /// in index order.
    #[serde(default)]
    pub except: Vec<(usize, Option<f64>)>,
}

impl TimeLimits {
    /// Item `index`'s limit (`except` must be in index order).
    pub fn of(&self, index: usize) -> Option<f64> {
        match self.except.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.except[at].1,
            Err(_) => self.default,
        }
    }
}

/// Where pytest says a failure happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Crash {
    /// File path.
    pub path: Option<String>,
    /// Line number.
    pub lineno: Option<i64>,
    /// The exception message line(s).
    pub message: Option<String>,
}

/// One phase (`setup`, `call`, `teardown`) of one test, in full.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PhaseReport {
    /// Item index on the sending worker.
    pub i: usize,
    /// Which of the test's reports this is (its place in `finished.ph`).
    #[serde(default)]
    pub k: Option<usize>,
    /// pytest's status category where it is not the outcome's usual one
    /// (`subtests passed`; empty: not counted).
    #[serde(default)]
    pub category: Option<String>,
    /// pytest's verbose word where it is not the usual one
    /// (`SUBFAILED(i=2)`).
    #[serde(default)]
    pub word: Option<String>,
    /// The progress letter of a plugin's own category (`R` for `rerun`).
    #[serde(default)]
    pub letter: Option<String>,
    /// `setup`, `call` or `teardown`.
    pub when: String,
    /// `passed`, `failed` or `skipped`.
    pub outcome: String,
    /// Seconds.
    pub duration: f64,
    /// Captured output: (section title, content).
    #[serde(default)]
    pub sections: Vec<(String, String)>,
    /// `(path, line, domain)`.
    #[serde(default)]
    pub location: Option<(String, Option<u64>, String)>,
    /// The failure section title.
    #[serde(default)]
    pub head_line: Option<String>,
    /// xfail reason, when the test was expected to fail.
    #[serde(default)]
    pub wasxfail: Option<String>,
    /// `record_property` pairs.
    #[serde(default)]
    pub user_properties: Vec<(String, String)>,
    /// pytest's rendering of the failure, with the user's `--tb`.
    #[serde(default)]
    pub longrepr: Option<String>,
    /// The crash line.
    #[serde(default)]
    pub crash: Option<Crash>,
    /// For skips: path, line, reason.
    #[serde(default)]
    pub skip: Option<Vec<Option<String>>>,
    /// A skip at setup by a `skip` marker that does not decorate the test
    /// function itself (one a conftest adds, a module's `pytestmark`;
    /// pytest asks for "skip" and no "pytestmark" among the report's
    /// keywords): pytest's short summary folds it by file and reason,
    /// without a line.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_file: bool,
    /// pytest's serialized report (report log, controller).
    #[serde(default)]
    pub raw: Option<RawJson>,
}

/// A test's protocol finished; `ph` holds every phase's outcome compactly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finished {
    /// Item index on the sending worker.
    pub i: usize,
    /// Wall time of the whole protocol, seconds.
    pub d: f64,
    /// `[when, outcome, duration]` for each report the test made (a test
    /// with subtests makes several `call` reports), with a fourth element,
    /// pytest's status category, where it is not the outcome's usual one
    /// (`"subtests passed"`, or `""` for a report pytest does not count).
    pub ph: Vec<Vec<serde_json::Value>>,
    /// pytest's serialized form of each report not sent in full, aligned
    /// with `ph` (when the controller gets every report).
    #[serde(default)]
    pub rw: Vec<Option<RawJson>>,
    /// With live logging on: the "live log" sections the logging plugin
    /// wrote to the terminal during the test.
    #[serde(default)]
    pub log: Option<String>,
}

impl Finished {
    /// The phases as bare reports (what was not sent in full).
    pub fn phases(&self) -> Vec<PhaseReport> {
        self.ph
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let text = |i: usize| p.get(i).and_then(|v| v.as_str()).map(str::to_string);
                PhaseReport {
                    i: self.i,
                    k: Some(k),
                    when: text(0).unwrap_or_default(),
                    outcome: text(1).unwrap_or_default(),
                    duration: p.get(2).and_then(|v| v.as_f64()).unwrap_or(0.0),
                    category: text(3),
                    letter: text(4),
                    raw: self.rw.get(k).cloned().flatten(),
                    ..PhaseReport::default()
                }
            })
            .collect()
    }
}

/// What a manifest entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A symlink (to a target inside the synced tree).
    Link,
}

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the sync root, `/`-separated.
    pub path: String,
    /// File or symlink.
    pub kind: Kind,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// Symlink target (as written in the link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Encode a message as one frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let payload = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Errors reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended.
    #[error("connection closed")]
    Closed,
    /// An I/O error.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// A length prefix larger than [`MAX_FRAME`] (with the four bytes, as
    /// text: often the start of something that is not a frame at all).
    #[error("a frame claims {0} bytes, more than the {MAX_FRAME}-byte limit; its first bytes were {1:?}")]
    TooLarge(usize, String),
    /// A frame that is not a known message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Read one frame from an async reader.
pub async fn read_frame<R>(reader: &mut R) -> Result<FromAgent, FrameError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        let text = String::from_utf8_lossy(&header).into_owned();
        return Err(FrameError::TooLarge(len, text));
    }
    // Grown as bytes arrive: a bogus length below the limit costs no more
    // memory than what was really sent.
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    let got = (&mut *reader)
        .take(len as u64)
        .read_to_end(&mut buf)
        .await?;
    if got < len {
        return Err(FrameError::Closed);
    }
    decode(&buf).map_err(|e| {
        let preview: String = String::from_utf8_lossy(&buf).chars().take(200).collect();
        FrameError::Malformed(format!("{e}: {preview}"))
    })
}

/// Decode one frame's JSON. Messages that carry raw JSON are read straight
/// into their structs: serde cannot keep a raw value inside an internally
/// tagged enum.
pub fn decode(buf: &[u8]) -> Result<FromAgent, serde_json::Error> {
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(borrow)]
        t: std::borrow::Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct Output {
        output: RawJson,
    }
    #[derive(Deserialize)]
    struct NodeConfigured {
        id: String,
        workerinput: RawJson,
    }
    #[derive(Deserialize)]
    struct Configured {
        options: PytestOptions,
        #[serde(default)]
        workerinfo: Option<RawJson>,
    }
    let tag: Tag = serde_json::from_slice(buf)?;
    Ok(match tag.t.as_ref() {
        "report" => FromAgent::Report(Box::new(serde_json::from_slice(buf)?)),
        "finished" => FromAgent::Finished(serde_json::from_slice(buf)?),
        "collect_report" => FromAgent::CollectReport(serde_json::from_slice(buf)?),
        "warning" => FromAgent::Warning(serde_json::from_slice(buf)?),
        "ready" => FromAgent::Ready(serde_json::from_slice(buf)?),
        "workeroutput" => {
            let o: Output = serde_json::from_slice(buf)?;
            FromAgent::WorkerOutput { output: o.output }
        }
        "configured" => {
            let c: Configured = serde_json::from_slice(buf)?;
            FromAgent::Configured {
                options: c.options,
                workerinfo: c.workerinfo,
            }
        }
        "node_configured" => {
            let c: NodeConfigured = serde_json::from_slice(buf)?;
            FromAgent::NodeConfigured {
                id: c.id,
                workerinput: c.workerinput,
            }
        }
        _ => serde_json::from_slice(buf)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_go_by_the_keys_the_cache_keeps() {
        let head = |p: Vec<u8>| {
            let line = p.split(|b| *b == b'\n').next().unwrap().to_vec();
            String::from_utf8(line)
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            [head(bootstrap_payload()), head(controller_payload())],
            payload_keys()
        );
    }

    #[test]
    fn to_agent_shapes_match_the_python_side() {
        let run = serde_json::to_value(ToAgent::Run {
            indices: vec![1, 2],
        })
        .unwrap();
        assert_eq!(run, serde_json::json!({"t": "run", "indices": [1, 2]}));
        let stop = serde_json::to_value(ToAgent::Stop).unwrap();
        assert_eq!(stop, serde_json::json!({"t": "stop"}));
    }

    #[test]
    fn finished_decodes_compact_phases() {
        let msg: FromAgent = serde_json::from_str(
            r#"{"t":"finished","i":3,"d":0.5,"ph":[["setup","passed",0.1],["call","failed",0.3]]}"#,
        )
        .unwrap();
        match msg {
            FromAgent::Finished(f) => {
                assert_eq!(f.i, 3);
                assert_eq!(f.phases()[1].outcome, "failed");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_eof_is_closed() {
        let msg = FromAgent::Done { status: 1 };
        let bytes = encode(&msg);
        let mut reader = &bytes[..];
        assert_eq!(read_frame(&mut reader).await.unwrap(), msg);
        assert!(matches!(
            read_frame(&mut reader).await,
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn bootstrap_starts_with_the_source_length_and_its_key() {
        let head = |payload: &[u8]| {
            let first = payload.split(|b| *b == b'\n').next().unwrap().to_vec();
            let line = String::from_utf8(first.clone()).unwrap();
            let (len, key) = line.split_once(' ').unwrap();
            let len: usize = len.parse().unwrap();
            assert_eq!(len, payload.len() - first.len() - 1);
            assert_eq!(key.len(), 24);
            assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
            key.to_string()
        };
        let payload = bootstrap_payload();
        assert!(payload.ends_with(b"\n_entry()\n"));
        let controller = controller_payload();
        // Each source its own compiled copy.
        assert_ne!(head(&payload), head(&controller));
        assert_eq!(head(&payload), head(&bootstrap_payload()));
    }

    #[test]
    fn raw_payloads_pass_through_unparsed() {
        let frame = br#"{"t":"report","i":1,"when":"call","outcome":"passed","duration":0.1,"raw":{"nodeid":"t.py::x","keep":[1, 2]}}"#;
        let FromAgent::Report(r) = decode(frame).unwrap() else {
            panic!("not a report")
        };
        assert_eq!(
            r.raw.as_ref().unwrap().get(),
            r#"{"nodeid":"t.py::x","keep":[1, 2]}"#
        );
        let replay = ToAgent::Test(TestReplay {
            node: "gw0".into(),
            nodeid: "t.py::x".into(),
            location: None,
            reports: vec![r.raw.clone().unwrap()],
            crash: None,
            environment: Vec::new(),
        });
        let text = String::from_utf8(encode(&replay)[4..].to_vec()).unwrap();
        assert_eq!(
            text,
            r#"{"t":"test","node":"gw0","nodeid":"t.py::x","location":null,"reports":[{"nodeid":"t.py::x","keep":[1, 2]}]}"#
        );
        let out =
            decode(br#"{"t":"workeroutput","output":{"cov":{"__rtest_bytes__":"AAE="}}}"#).unwrap();
        assert!(matches!(out, FromAgent::WorkerOutput { output } if output.get().contains("AAE=")));
    }
}
