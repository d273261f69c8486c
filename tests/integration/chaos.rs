//! Chaos: workers killed at seeded random points of every phase of a run
//! (start, collection, a test's call, its teardown, session shutdown) by
//! SIGKILL, SIGSEGV with faulthandler off, or `os._exit`. Every run must
//! report each test exactly once in a valid JUnit file and report log,
//! fail only the tests that were running at a kill, exit 0 or 1, and
//! leave no process behind.
//!
//! `RTEST_CHAOS_SEED` replays a run; `RTEST_CHAOS_RUNS` sets how many.

use crate::harness::{junit_outcomes, Project};
use std::collections::{BTreeMap, BTreeSet};

const TESTS: usize = 40;

/// Fires the kills the run's plan (`RTEST_CHAOS`) names, each once, in
/// worker processes only.
pub(crate) const CONFTEST: &str = r#"
import faulthandler, os, signal

PLAN = [e for e in os.environ.get("RTEST_CHAOS", "").split(",") if e]
WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def _once(tag):
    try:
        os.close(os.open(".chaos-%s" % tag, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def _fire(kind):
    if kind == "drop":
        # A remote worker's parent is sshd's process for its channel: the
        # connection drops.
        os.kill(os.getppid(), signal.SIGKILL)
        os._exit(9)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "segv":
        faulthandler.disable()
        os.kill(os.getpid(), signal.SIGSEGV)
    else:
        os._exit(7)


def _maybe(phase, index=None):
    if not WORKER:
        return
    for n, entry in enumerate(PLAN):
        where, kind = entry.split(":")
        name, _, at = where.partition("@")
        if name == phase and (not at or int(at) == index) and _once(n):
            _fire(kind)


_maybe("start")


def pytest_collection_modifyitems(items):
    _maybe("collect")


def pytest_runtest_call(item):
    _maybe("call", item.callspec.params["i"])


def pytest_runtest_teardown(item, nextitem):
    _maybe("teardown", item.callspec.params["i"])


def pytest_sessionfinish(session):
    _maybe("shutdown")
"#;

pub(crate) struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A run's kills (of `kinds`), and the tests they must fail.
fn plan(rng: &mut Rng, kinds: &[&str]) -> (Vec<String>, BTreeSet<usize>) {
    let mut entries = Vec::new();
    let mut fail = BTreeSet::new();
    for _ in 0..1 + rng.below(3) {
        let kind = kinds[rng.below(kinds.len())];
        let phase = ["start", "collect", "call", "teardown", "shutdown"][rng.below(5)];
        let entry = match phase {
            "call" | "teardown" => {
                let i = rng.below(TESTS);
                fail.insert(i);
                format!("{phase}@{i}:{kind}")
            }
            _ => format!("{phase}:{kind}"),
        };
        entries.push(entry);
    }
    (entries, fail)
}

/// Processes whose environment holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let environ = entry.path().join("environ");
        if let Ok(bytes) = std::fs::read(&environ) {
            if bytes.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
                let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push(format!(
                    "{}: {}",
                    entry.file_name().to_string_lossy(),
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                ));
            }
        }
    }
    found
}

/// `runs` seeded runs of `rtest <args>` on a fresh chaos project each,
/// with kills of `kinds`; `tx_env` gives the plan to remote workers
/// through their tx spec (`Some(spec prefix)`), local ones inherit it.
pub(crate) fn chaos_runs(
    seed: u64,
    runs: usize,
    kinds: &[&str],
    args: &[String],
    tx: Option<&str>,
) {
    let mut rng = Rng(seed.max(1));
    for run in 0..runs {
        let (entries, fail) = plan(&mut rng, kinds);
        let what = format!("seed {seed}, run {run}: RTEST_CHAOS={}", entries.join(","));
        let p = Project::new().file("conftest.py", CONFTEST).file(
            "test_chaos.py",
            &format!(
                "import pytest, time\n\n@pytest.mark.parametrize('i', range({TESTS}))\ndef test_i(i):\n    time.sleep(0.01)\n"
            ),
        );
        let marker = format!("RTEST_CHAOS_RUN={seed}-{run}-{}", std::process::id());
        let (key, value) = marker.split_once('=').unwrap();
        let mut all: Vec<String> = [
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "--junitxml",
            "j.xml",
            "--report-log",
            "log.jsonl",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        all.extend(args.iter().cloned());
        if let Some(spec) = tx {
            all.push("--tx".into());
            all.push(format!(
                "{spec}//env:RTEST_CHAOS={}//env:{key}={value}",
                entries.join(",")
            ));
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        let out = p
            .command(&refs)
            .env("RTEST_CHAOS", entries.join(","))
            .env(key, value)
            .output()
            .unwrap();
        let r = crate::harness::Run::from(out);
        eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
        let context = format!("{what}\n--- stdout\n{}\n--- stderr\n{}", r.stdout, r.stderr);
        // JUnit: every test once, only the killed ones failed.
        let outcomes = junit_outcomes(&p.path().join("j.xml"));
        assert_eq!(outcomes.len(), TESTS, "{context}");
        let failed: BTreeSet<usize> = outcomes
            .iter()
            .filter(|(_, o)| o != "passed")
            .map(|(n, _)| {
                n.rsplit_once('[')
                    .and_then(|(_, i)| i.trim_end_matches(']').parse().ok())
                    .unwrap()
            })
            .collect();
        let want_code = if failed.is_empty() { 0 } else { 1 };
        assert_eq!(r.code, want_code, "{context}");
        if entries.iter().any(|e| e.ends_with(":drop")) {
            // A dropped connection takes every worker on it: the tests
            // running on them fail too, each as a crash.
            assert!(failed.is_superset(&fail), "{context}");
            for i in &failed {
                let id = format!("test_chaos.py::test_i[{i}]");
                assert!(
                    r.stdout.contains(&format!("crashed while running {id}")),
                    "{id} failed, but not as a crash\n{context}"
                );
            }
        } else {
            assert_eq!(failed, fail, "{context}");
        }
        each_test_logged_once(&p, &context);
        // Nothing left running (remote workers under the harness's sshd
        // are processes here too).
        nothing_left(&marker, &context);
    }
}

/// The report log has every test, each phase of it once.
fn each_test_logged_once(p: &Project, context: &str) {
    let mut phases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in p.read("log.jsonl").lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["$report_type"] == "TestReport" {
            phases
                .entry(v["nodeid"].as_str().unwrap().to_string())
                .or_default()
                .push(v["when"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(phases.len(), TESTS, "{context}");
    for (nodeid, whens) in &phases {
        let distinct: BTreeSet<&String> = whens.iter().collect();
        assert_eq!(
            distinct.len(),
            whens.len(),
            "{nodeid}: {whens:?}\n{context}"
        );
    }
}

/// No process of the run (its environment holds `marker`) is left, after
/// a few seconds' grace.
fn nothing_left(marker: &str, context: &str) {
    let mut left = processes_with(marker);
    for _ in 0..30 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = processes_with(marker);
    }
    assert!(left.is_empty(), "left running: {left:?}\n{context}");
}

/// The seed (`RTEST_CHAOS_SEED`) and number of runs (`RTEST_CHAOS_RUNS`).
pub(crate) fn chaos_settings(default_runs: usize) -> (u64, usize) {
    let seed = std::env::var("RTEST_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    let runs = std::env::var("RTEST_CHAOS_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_runs);
    (seed, runs)
}

#[test]
fn workers_killed_anywhere_never_cost_a_result() {
    let (seed, runs) = chaos_settings(12);
    let args = ["-n".to_string(), "2".to_string()];
    chaos_runs(seed, runs, &["kill", "segv", "exit"], &args, None);
}

/// exec= workers killed from outside at a seeded random moment of their
/// first second or so: while the agent starts, while their tree is synced
/// (a few megabytes, so the sync takes a while), while another worker syncs
/// the place they share, during collection or a test. A worker lost in its
/// sync is left out (the run goes on without it), a later loss is replaced;
/// either way every test is reported once, only tests that were running
/// fail (as crashes), and nothing is left running.
#[test]
fn exec_workers_killed_during_start_and_sync_never_cost_a_result() {
    let (seed, runs) = chaos_settings(6);
    let mut rng = Rng(seed.max(1) ^ 0x5a5a);
    let python = crate::harness::venv_python().display().to_string();
    let mut landed: BTreeMap<&str, usize> = BTreeMap::new();
    for run in 0..runs {
        let mut p = Project::new().file(
            "test_chaos.py",
            &format!(
                "import pytest, time\n\n@pytest.mark.parametrize('i', range({TESTS}))\ndef test_i(i):\n    time.sleep(0.01)\n"
            ),
        );
        // Incompressible data, so that the sync takes a while.
        for k in 0..48 {
            let bytes: Vec<u8> = (0..64 * 1024).map(|_| rng.next() as u8).collect();
            std::fs::create_dir_all(p.path().join("data")).unwrap();
            std::fs::write(p.path().join(format!("data/blob{k}.bin")), bytes).unwrap();
        }
        p = p.file(
            "pytest.ini",
            "[pytest]\naddopts = -p no:randomly -p no:cacheprovider\n",
        );
        let marker = format!("RTEST_CHAOS_RUN=exec-{seed}-{run}-{}", std::process::id());
        let (key, value) = marker.split_once('=').unwrap();
        let scratch = tempfile::tempdir().unwrap();
        // Two workers sharing one place (the default copy), one with a
        // place of its own (chdir=); each first process is killed after
        // its delay, replacements are left alone.
        let mut delays = Vec::new();
        let mut tx = Vec::new();
        for (k, extra) in [(0, ""), (1, ""), (2, "//chdir=")].iter() {
            let delay = rng.below(1500);
            delays.push(delay);
            let once = scratch.path().join(format!("once-{k}"));
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!("{extra}{}", scratch.path().join("own").display())
            };
            tx.push("--tx".to_string());
            tx.push(format!(
                "exec=sh -c 'if mkdir {} 2>/dev/null; then (sleep {}.{:03}; kill -9 $$) & fi; exec \"$@\"' sh env//python={python}{extra}",
                once.display(),
                delay / 1000,
                delay % 1000
            ));
        }
        let what = format!("seed {seed}, exec run {run}: kills after {delays:?} ms");
        let mut args: Vec<String> = [
            "-n",
            "1",
            "--junitxml",
            "j.xml",
            "--report-log",
            "log.jsonl",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(tx);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = p.command(&refs).env(key, value).output().unwrap();
        let r = crate::harness::Run::from(out);
        let context = format!("{what}\n--- stdout\n{}\n--- stderr\n{}", r.stdout, r.stderr);
        for (phase, seen) in [
            ("sync", r.stdout.contains("going on without gw")),
            ("start", r.stdout.contains("exited before it was ready")),
            ("collection", r.stdout.contains("exited during collection")),
            ("a test", r.stdout.contains("crashed while running")),
        ] {
            if seen {
                *landed.entry(phase).or_default() += 1;
            }
        }
        let outcomes = junit_outcomes(&p.path().join("j.xml"));
        assert_eq!(outcomes.len(), TESTS, "{context}");
        let failed: Vec<&String> = outcomes
            .iter()
            .filter(|(_, o)| o != "passed")
            .map(|(n, _)| n)
            .collect();
        for n in &failed {
            let id = n.replace("test_chaos::", "test_chaos.py::");
            assert!(
                r.stdout.contains(&format!("crashed while running {id}")),
                "{id} failed, but not as a crash\n{context}"
            );
        }
        assert_eq!(r.code, if failed.is_empty() { 0 } else { 1 }, "{context}");
        each_test_logged_once(&p, &context);
        nothing_left(&marker, &context);
    }
    eprintln!("exec chaos: kills landed in {landed:?}");
}
