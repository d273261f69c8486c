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

/// The bootstrap every gateway runs with `python -u -c`: read a length
/// line, then exactly that many bytes of source, and exec it. It reads the
/// raw fd byte-exactly (no buffered `sys.stdin`), so the frames that follow
/// the source stay in the pipe for the agent. Works on every Python 3.
pub const BOOTSTRAP: &str = "import os
def r(n):
 b=b''
 while len(b)<n:
  c=os.read(0,n-len(b))
  if not c:raise SystemExit(70)
  b+=c
 return b
n=b''
while not n.endswith(b'\\n'):n+=r(1)
exec(compile(r(int(n)),'<rtest-agent>','exec'),{'__name__':'__main__'})
";

/// The bytes a gateway writes first: the agent's length and source.
pub fn bootstrap_payload() -> Vec<u8> {
    let mut out = format!("{}\n", AGENT_SOURCE.len()).into_bytes();
    out.extend_from_slice(AGENT_SOURCE.as_bytes());
    out
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
    },
    /// pytest rejected its command line.
    UsageError {
        /// pytest's message.
        message: String,
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
    Warning {
        /// Node id, empty for session-level warnings.
        #[serde(default)]
        nodeid: String,
        /// `config`, `collect` or `runtest`.
        #[serde(default)]
        when: String,
        /// The formatted warning.
        text: String,
    },
    /// A test raised KeyboardInterrupt.
    Interrupted {
        /// Index of the test.
        i: usize,
        /// The traceback.
        message: String,
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
    /// pytest's serialized report (report-log only).
    #[serde(default)]
    pub raw: Option<serde_json::Value>,
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
    /// pytest's serialized report (report-log only).
    #[serde(default)]
    pub raw: Option<serde_json::Value>,
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
    /// A frame larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
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
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    match reader.read_exact(&mut buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    serde_json::from_slice(&buf).map_err(|e| {
        let preview: String = String::from_utf8_lossy(&buf).chars().take(200).collect();
        FrameError::Malformed(format!("{e}: {preview}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bootstrap_starts_with_the_source_length() {
        let payload = bootstrap_payload();
        let first_line = payload.split(|b| *b == b'\n').next().unwrap();
        let len: usize = std::str::from_utf8(first_line).unwrap().parse().unwrap();
        assert_eq!(len, AGENT_SOURCE.len());
    }
}
