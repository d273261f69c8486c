//! pytest plugins see one session (the controller), as under pytest-xdist:
//! each test compares rtest with `pytest -n 2` on the same project.

use crate::harness::{python, side_site, venv_python, Project, Run};
use std::path::{Path, PathBuf};
use std::process::Command;

const PKG: &str = "\
def add(a, b):
    return a + b


def sub(a, b):
    if a > 100:
        return 0
    return a - b
";

/// A `src`-less package with a line no test reaches, and tests.
pub fn covered(failing: bool) -> Project {
    let extra = if failing {
        "\n\ndef test_fail():\n    assert pkg.add(1, 1) == 3\n"
    } else {
        ""
    };
    Project::new()
        .file("pkg/__init__.py", PKG)
        .file(
            "tests/test_a.py",
            &format!(
                "import pkg\n\n\ndef test_add():\n    assert pkg.add(1, 2) == 3\n\n\ndef test_sub():\n    assert pkg.sub(3, 2) == 1\n{extra}"
            ),
        )
        .file(
            "tests/test_b.py",
            "import pytest\n\n\n@pytest.mark.parametrize('i', range(6))\ndef test_p(i):\n    assert i >= 0\n",
        )
}

/// The `TOTAL` line of a coverage table.
fn total(run: &Run) -> String {
    run.stdout
        .lines()
        .find(|l| l.starts_with("TOTAL"))
        .unwrap_or_else(|| panic!("no TOTAL line\n{}\n--- stderr\n{}", run.stdout, run.stderr))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The per-file and `TOTAL` lines of a coverage table, spaces squeezed.
pub fn coverage_table(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter(|l| l.starts_with("pkg/") || l.starts_with("TOTAL"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn stray_data_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".coverage."))
        .collect()
}

fn clean_coverage(dir: &Path) {
    for name in [".coverage", "cov.xml"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

#[test]
fn coverage_is_combined_and_reported_once_as_under_xdist() {
    let p = covered(false);
    let args = [
        "-n",
        "2",
        "--cov=pkg",
        "--cov-report=term",
        "--cov-report=xml:cov.xml",
    ];
    let xdist = p.pytest(&args);
    xdist.code(0);
    let want = total(&xdist);
    clean_coverage(p.path());

    let run = p.rtest(&args);
    run.code(0)
        .stdout_has("tests coverage")
        .stdout_has("Coverage XML written to file cov.xml");
    assert_eq!(total(&run), want);
    assert!(
        p.path().join(".coverage").is_file(),
        "no combined .coverage"
    );
    assert!(p.path().join("cov.xml").is_file(), "no cov.xml");
    assert_eq!(stray_data_files(p.path()), Vec::<String>::new());
    // The coverage table comes before the final line, once.
    let table = run.stdout.find("tests coverage").unwrap();
    let last = run.stdout.rfind(" passed in ").unwrap();
    assert!(table < last, "{}", run.stdout);
    assert_eq!(run.stdout.matches("TOTAL").count(), 1, "{}", run.stdout);
}

#[test]
fn cov_fail_under_decides_the_exit_status_as_under_xdist() {
    let p = covered(false);
    let args = ["-n", "2", "--cov=pkg", "--cov-fail-under=99"];
    let xdist = p.pytest(&args);
    xdist.code(1);
    clean_coverage(p.path());
    let run = p.rtest(&args);
    run.code(1)
        .stdout_has("ERROR: Coverage failure: total of 83 is less than fail-under=99")
        .stdout_has("FAIL Required test coverage of 99% not reached");
    assert_eq!(run.summary(), "8 passed");
    clean_coverage(p.path());
    p.rtest(&["-n", "2", "--cov=pkg", "--cov-fail-under=50"])
        .code(0)
        .stdout_has("Required test coverage of 50% reached");
}

#[test]
fn html_and_json_reports_hold_every_test() {
    let p = covered(true);
    let run = p.rtest(&[
        "-n",
        "2",
        "--html=report.html",
        "--json-report",
        "--json-report-file=report.json",
    ]);
    run.code(1)
        .stdout_has("Generated html report: file://")
        .stdout_has("report saved to: report.json");
    let script = r#"
import html, json, re, sys
d = json.load(open(sys.argv[1]))
print(d["summary"]["passed"], d["summary"]["failed"], d["summary"]["total"], len(d["tests"]))
blob = re.search(r'data-jsonblob="(.*?)"', open(sys.argv[2]).read()).group(1)
tests = json.loads(html.unescape(blob))["tests"]
print(len(tests), sorted(set(t[0]["result"] for t in tests.values())))
"#;
    let out = python(
        script,
        &[&p.path().join("report.json"), &p.path().join("report.html")],
    );
    assert_eq!(out, "8 1 9 9\n9 ['Failed', 'Passed']\n");
}

#[test]
fn conftest_session_hooks_run_once_with_the_whole_run() {
    let p = covered(true).file(
        "conftest.py",
        r#"
def pytest_report_header(config):
    return ["custom header: from conftest"]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not hasattr(config, "workerinput"):
        stats = terminalreporter.stats
        terminalreporter.write_sep("-", "custom summary")
        terminalreporter.write_line(
            "passed=%d failed=%d exit=%d"
            % (len(stats.get("passed", [])), len(stats.get("failed", [])), exitstatus)
        )


def pytest_sessionfinish(session, exitstatus):
    if not hasattr(session.config, "workerinput"):
        with open("sessionfinish.log", "a") as f:
            f.write(
                "collected=%d failed=%d exit=%d\n"
                % (session.testscollected, session.testsfailed, exitstatus)
            )
"#,
    );
    let xdist = p.pytest(&["-n", "2"]);
    xdist.code(1).stdout_has("passed=8 failed=1 exit=1");
    assert_eq!(p.read("sessionfinish.log"), "collected=9 failed=1 exit=1\n");
    std::fs::remove_file(p.path().join("sessionfinish.log")).unwrap();

    let run = p.rtest(&["-n", "2"]);
    run.code(1)
        .stdout_has("custom header: from conftest")
        .stdout_has("passed=8 failed=1 exit=1");
    assert_eq!(p.read("sessionfinish.log"), "collected=9 failed=1 exit=1\n");
    // pytest's header lines, and the plugin's, before rtest's own.
    let header = run.stdout.find("custom header: from conftest").unwrap();
    let workers = run.stdout.find("rtest ").unwrap();
    assert!(header < workers, "{}", run.stdout);
    assert_eq!(run.stdout.matches("rootdir: ").count(), 1, "{}", run.stdout);
    // The plugin's summary comes where pytest puts it.
    let custom = run.stdout.find("custom summary").unwrap();
    let failures = run.stdout.find("= FAILURES =").unwrap();
    let short = run.stdout.find("short test summary info").unwrap();
    assert!(failures < custom && custom < short, "{}", run.stdout);
}

#[test]
fn a_conftest_may_change_the_exit_status_in_sessionfinish() {
    let p = Project::new()
        .file("tests/test_x.py", "def test_x():\n    pass\n")
        .file(
            "conftest.py",
            "def pytest_sessionfinish(session, exitstatus):\n    if exitstatus == 5:\n        session.exitstatus = 0\n",
        );
    p.pytest(&["-n", "2", "-k", "nothing"]).code(0);
    p.rtest(&["-n", "2", "-k", "nothing"]).code(0);
    p.rtest(&["-n", "2", "-k", "test_x"]).code(0);
}

#[test]
fn a_plugin_that_raises_in_logreport_is_an_internal_error_and_the_results_stand() {
    let p = covered(true).file(
        "raiser.py",
        r#"
import os


def pytest_runtest_logreport(report):
    if report.when == "call" and not os.environ.get("PYTEST_XDIST_WORKER"):
        raise ValueError("boom in logreport")
"#,
    );
    let run = p.rtest(&["-n", "2", "-p", "raiser"]);
    run.code(3)
        .stdout_has("INTERNALERROR>")
        .stdout_has("ValueError: boom in logreport")
        .stdout_has("raiser.py:");
    assert_eq!(run.summary(), "1 failed, 8 passed");
    // Whatever status the session's plugins set.
    let p = p.file(
        "setter.py",
        "def pytest_sessionfinish(session):\n    session.exitstatus = 42\n",
    );
    p.rtest(&["-n", "2", "-p", "raiser", "-p", "setter"])
        .code(3);
}

#[test]
fn a_controller_that_dies_mid_run_is_said_once_and_the_tests_go_on() {
    let p = covered(true).file(
        "killer.py",
        r#"
import os


def pytest_runtest_logreport(report):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        os._exit(9)
"#,
    );
    let run = p.rtest(&["-n", "2", "-p", "killer"]);
    run.code(3).stdout_has("the controller");
    assert_eq!(run.stdout.matches("exited during the run").count(), 1);
    assert_eq!(run.summary(), "1 failed, 8 passed");
}

#[test]
fn github_annotations_come_once_from_the_controller() {
    let p = covered(true);
    let out = p
        .command(&["-n", "2"])
        .env("GITHUB_ACTIONS", "true")
        .output()
        .unwrap();
    let run = Run::from(out);
    run.code(1);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("::error file=tests/test_a.py,line=") && l.contains("test_fail"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
}

#[test]
fn randomly_seeds_every_worker_from_the_controller() {
    let p = covered(false).file(
        "tests/test_seed.py",
        "import random\n\n\ndef test_seed(worker_id):\n    print('draw', worker_id, random.random())\n",
    );
    // xdist loaded; not loaded (rtest stands in for it, and randomly's own
    // xdist hook seeds the workers); switched off with -p no:xdist (rtest
    // gives every worker the controller's seed itself).
    for xdist in ["loaded", "not loaded", "switched off"] {
        let mut cmd = p.command(&["-n", "2", "-s"]);
        cmd.env("PYTHONPATH", randomly_site());
        match xdist {
            "not loaded" => {
                cmd.env("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
                    .args(["-p", "pytest_randomly"]);
            }
            "switched off" => {
                cmd.args(["-p", "no:xdist"]);
            }
            _ => {}
        }
        let run = Run::from(cmd.output().unwrap());
        run.code(0);
        let seed = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Using --randomly-seed="))
            .unwrap_or_else(|| panic!("xdist {xdist}: no seed line\n{}", run.stdout))
            .to_string();
        assert_eq!(run.summary(), "9 passed", "xdist {xdist}");
        // The worker drew what the header's seed gives.
        let mut again = p.command(&["-n", "2", "-s", &format!("--randomly-seed={seed}")]);
        again.env("PYTHONPATH", randomly_site());
        let again = Run::from(again.output().unwrap());
        let draw = |r: &Run| {
            (r.stdout.clone() + &r.stderr)
                .lines()
                .find(|l| l.contains("draw gw"))
                .and_then(|l| l.split_whitespace().last())
                .map(str::to_string)
        };
        assert!(draw(&run).is_some(), "{}\n{}", run.stdout, run.stderr);
        assert_eq!(
            draw(&run),
            draw(&again),
            "xdist {xdist}: the worker did not use the header's seed"
        );
    }
}

/// pytest-randomly installed on its own (it reshuffles every suite it is
/// installed for, so it stays out of the shared test venv).
fn randomly_site() -> PathBuf {
    side_site("pytest-randomly", "pytest_randomly")
}

/// syrupy's snapshot report: workers publish what they used through
/// `workeroutput` and the controller (its `pytest_testnodedown`, registered
/// where `hasplugin("xdist")`) finds unused snapshots. The same with xdist
/// loaded and without it (rtest stands in for it); as under `pytest -n 2`.
#[test]
fn syrupy_finds_unused_snapshots_with_or_without_xdist_loaded() {
    let site = side_site("syrupy", "syrupy");
    let p = Project::new()
        .file(
            "tests/test_snap.py",
            "import pytest\n\n\n@pytest.mark.parametrize('i', range(6))\ndef test_value(snapshot, i):\n    assert {'i': i} == snapshot\n\n\ndef test_other(snapshot):\n    assert [1, 2] == snapshot\n",
        )
        .file(
            "tests/test_more.py",
            "def test_more(snapshot):\n    assert 'more' == snapshot\n",
        );
    let run = |xdist_loaded: bool, args: &[&str]| {
        let mut cmd = p.command(&[&["-n", "2", "-p", "no:cacheprovider"][..], args].concat());
        cmd.env("PYTHONPATH", &site);
        if !xdist_loaded {
            cmd.env("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
                .args(["-p", "syrupy"]);
        }
        Run::from(cmd.output().unwrap())
    };
    let report = |r: &Run| {
        let lines: Vec<&str> = r.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("snapshot report summary"))
            .unwrap_or_else(|| panic!("no snapshot report\n{}", r.stdout));
        lines[at + 1].to_string()
    };
    report(run(false, &["--snapshot-update"]).code(0));
    assert_eq!(
        report(&run(false, &["--snapshot-update"])),
        "8 snapshots passed."
    );
    let ambr = p.path().join("tests/__snapshots__/test_snap.ambr");
    let renamed = std::fs::read_to_string(p.path().join("tests/test_snap.py"))
        .unwrap()
        .replace("def test_other", "def test_renamed");
    std::fs::write(p.path().join("tests/test_snap.py"), renamed).unwrap();

    let mut xdist = Command::new(venv_python());
    xdist
        .args(["-m", "pytest", "-n", "2", "-p", "no:cacheprovider"])
        .current_dir(p.path())
        .env("PYTHONPATH", &site)
        .env("COLUMNS", "100");
    let want = Run::from(xdist.output().unwrap());
    want.code(1);
    assert_eq!(
        report(&want),
        "1 snapshot failed. 7 snapshots passed. 1 snapshot unused."
    );
    for loaded in [true, false] {
        let got = run(loaded, &[]);
        got.code(1);
        assert_eq!(report(&got), report(&want), "xdist loaded: {loaded}");
    }
    let got = run(false, &["--snapshot-update"]);
    got.code(0).stdout_has("Deleted test_other");
    assert_eq!(
        report(&got),
        "7 snapshots passed. 1 snapshot generated. 1 unused snapshot deleted."
    );
    let text = std::fs::read_to_string(&ambr).unwrap();
    assert!(
        text.contains("test_renamed") && !text.contains("test_other"),
        "{text}"
    );
    // The workers' file locks are the controller's to clean up.
    let left: Vec<_> = std::fs::read_dir(ambr.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".ambr"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_controller_whose_session_fails_to_start_costs_no_test() {
    let p = covered(true).file(
        "conftest.py",
        r#"
def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        raise RuntimeError("no session here")
"#,
    );
    // pytest-rerunfailures' workers need its controller side (they
    // connect to its server): without a controller they cannot run.
    let run = p.rtest(&["-n", "2", "-p", "no:rerunfailures"]);
    run.code(3)
        .stdout_has("a plugin raised in the controller's session")
        .stdout_has("INTERNALERROR> ")
        .stdout_has("RuntimeError: no session here");
    assert_eq!(run.summary(), "1 failed, 8 passed");
}

#[test]
fn plugin_output_follows_quiet_and_color_options() {
    let p = covered(false);
    let quiet = p.rtest(&["-n", "2", "-q", "--cov=pkg", "--cov-report=term"]);
    quiet.code(0).stdout_has("TOTAL").stdout_lacks("\x1b[");
    assert!(!quiet.stdout.contains("rootdir:"), "{}", quiet.stdout);
    let colored = p.rtest(&["-n", "2", "--color=yes", "--cov=pkg", "--cov-fail-under=99"]);
    colored
        .code(1)
        .stdout_has("\x1b[31m\x1b[1mFAIL Required test coverage");
}

#[test]
fn workers_start_without_waiting_when_the_last_run_had_no_configure_node() {
    // No plugin implements pytest_configure_node here (pytest-rerunfailures
    // would, with xdist installed): the second run starts its workers on
    // the first run's word, and the controller still sees everything.
    let p = covered(true).file(
        "conftest.py",
        r#"
def pytest_terminal_summary(terminalreporter, config):
    if not hasattr(config, "workerinput"):
        stats = terminalreporter.stats
        terminalreporter.write_line(
            "seen passed=%d failed=%d" % (len(stats.get("passed", [])), len(stats.get("failed", [])))
        )
"#,
    );
    let args = ["-n", "2", "-p", "no:rerunfailures"];
    for _ in 0..2 {
        let run = p.rtest(&args);
        run.code(1).stdout_has("seen passed=8 failed=1");
        assert_eq!(run.summary(), "1 failed, 8 passed");
    }
    let memo = p.read(".rtest/controller.json");
    assert!(memo.contains("\"configure_node\":false"), "{memo}");

    // A plugin that now implements pytest_configure_node, which the
    // remembered files do not show (the memo is made to miss it): the
    // workers are started again and get what it puts in workerinput.
    let mut v: serde_json::Value = serde_json::from_str(&memo).unwrap();
    v["watch"] = serde_json::json!([]);
    std::fs::write(p.path().join(".rtest/controller.json"), v.to_string()).unwrap();
    std::fs::write(
        p.path().join("conftest.py"),
        r#"
import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["from_controller"] = "yes"


@pytest.fixture
def marker(request):
    return request.config.workerinput.get("from_controller")
"#,
    )
    .unwrap();
    std::fs::write(
        p.path().join("tests/test_c.py"),
        "def test_marker(marker):\n    assert marker == 'yes'\n",
    )
    .unwrap();
    let run = p.rtest(&args);
    run.code(1);
    assert_eq!(run.summary(), "1 failed, 9 passed");
}

#[test]
fn a_node_is_down_for_the_controller_once_its_session_finished() {
    // As under xdist (workerfinished): pytest_testnodedown comes when a
    // worker's session is over, not when its process has unconfigured and
    // exited (the controller then combines coverage and writes reports
    // while the workers exit). Each worker waits in pytest_unconfigure to
    // see its node brought down, and notes whether it was.
    let p = Project::new()
        .file(
            "tests/test_x.py",
            "import pytest\n\n@pytest.mark.parametrize('i', range(6))\ndef test_x(i):\n    pass\n",
        )
        .file(
            "conftest.py",
            r#"
import os
import time


def pytest_testnodedown(node, error):
    with open("down.log", "a") as f:
        f.write("%s error=%s\n" % (node.gateway.id, error))


def _down(worker):
    try:
        with open("down.log") as f:
            return worker in f.read().split()
    except OSError:
        return False


def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):
        worker = config.workerinput["workerid"]
        deadline = time.monotonic() + 20
        while not _down(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open("workers.log", "a") as f:
            f.write("%s down=%s\n" % (worker, _down(worker)))
"#,
        );
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines.join("\n")
    };
    for tool in ["xdist", "rtest"] {
        let run = if tool == "xdist" {
            p.pytest(&["-n", "2"])
        } else {
            p.rtest(&["-n", "2"])
        };
        run.code(0);
        assert_eq!(
            sorted(p.read("workers.log")),
            "gw0 down=True\ngw1 down=True",
            "{tool}"
        );
        assert_eq!(
            sorted(p.read("down.log")),
            "gw0 error=None\ngw1 error=None",
            "{tool}"
        );
        for f in ["workers.log", "down.log"] {
            std::fs::remove_file(p.path().join(f)).unwrap();
        }
    }
}

#[test]
fn workers_start_on_the_workerinput_the_last_two_runs_gave() {
    // pytest_configure_node here gives what token.txt says, and takes 3 s
    // before it marks the node configured. A worker notes in its
    // pytest_configure whether that mark was there (it waited for its
    // workerinput) and which token it got; every test notes its token.
    let p = Project::new()
        .file(
            "tests/test_t.py",
            r#"
import pytest


@pytest.mark.parametrize("i", range(4))
def test_t(i, request):
    with open("ran.log", "a") as f:
        f.write(request.config.workerinput["token"] + "\n")
"#,
        )
        .file("token.txt", "A")
        .file(
            "conftest.py",
            r#"
import os
import time

import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    with open("token.txt") as f:
        node.workerinput["token"] = f.read().strip()
    time.sleep(3)
    open("configured-" + node.gateway.id, "w").close()


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        worker = config.workerinput["workerid"]
        with open("configured.log", "a") as f:
            f.write("%s %s waited=%s\n" % (
                worker, config.workerinput.get("token"), os.path.exists("configured-" + worker)))
"#,
        );
    let args = ["-n", "2", "-p", "no:rerunfailures"];
    // The last line each worker wrote (a worker started again on a wrong
    // guess may have written one before).
    let last = |p: &Project| {
        let log = p.read("configured.log");
        let mut by: std::collections::BTreeMap<String, String> = Default::default();
        for line in log.lines() {
            let (w, rest) = line.split_once(' ').unwrap();
            by.insert(w.to_string(), rest.to_string());
        }
        let ran = p.read("ran.log");
        for f in [
            "configured.log",
            "ran.log",
            "configured-gw0",
            "configured-gw1",
        ] {
            let _ = std::fs::remove_file(p.path().join(f));
        }
        (by.into_values().collect::<Vec<_>>().join(", "), ran)
    };
    p.pytest(&args).code(0);
    assert_eq!(last(&p).0, "A waited=True, A waited=True", "xdist");
    // The first run has nothing to go on; the second finds the first's
    // answer, but only one run of it.
    for _ in 0..2 {
        p.rtest(&args).code(0);
        assert_eq!(
            last(&p),
            ("A waited=True, A waited=True".into(), "A\n".repeat(4))
        );
    }
    // Two runs gave the same: the third starts its workers on it.
    p.rtest(&args).code(0);
    assert_eq!(
        last(&p),
        ("A waited=False, A waited=False".into(), "A\n".repeat(4))
    );
    // The plugin now gives something else: the workers are started again
    // with it before they run any test.
    std::fs::write(p.path().join("token.txt"), "B").unwrap();
    p.rtest(&args).code(0);
    assert_eq!(
        last(&p),
        ("B waited=True, B waited=True".into(), "B\n".repeat(4))
    );
    let memo = p.read(".rtest/controller.json");
    assert!(memo.contains("\"stable\":false"), "{memo}");
}

#[test]
fn workers_on_a_guess_go_on_when_the_controller_dies_before_it_answers() {
    // Two runs make pytest-cov-like input a guess; in the third the
    // controller dies in pytest_configure_node, after the workers started
    // on the guess: they run every test on it, and the run says why it
    // exits 3 (it must not wait for an answer that never comes).
    let p = Project::new()
        .file(
            "tests/test_t.py",
            "import pytest\n\n@pytest.mark.parametrize('i', range(4))\ndef test_t(i, request):\n    assert request.config.workerinput['token'] == 'A'\n",
        )
        .file(
            "conftest.py",
            r#"
import os

import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    if os.path.exists("die"):
        os._exit(9)
    node.workerinput["token"] = "A"
"#,
        );
    let args = ["-n", "2", "-p", "no:rerunfailures"];
    for _ in 0..2 {
        p.rtest(&args).code(0);
    }
    std::fs::write(p.path().join("die"), "").unwrap();
    let mut child = p
        .command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("rtest waited for a controller that died");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let run = Run::from(child.wait_with_output().unwrap());
    run.code(3).stdout_has("the controller");
    assert_eq!(run.summary(), "4 passed");
}

#[test]
fn what_plugins_write_during_the_run_is_shown_as_it_comes() {
    // pytest-instafail prints each failure as it happens, from the
    // controller's logreport under xdist; rtest shows it in the flow of
    // the progress, and pytest's own progress letters stay rtest's.
    let p = covered(true).file(
        "tests/test_c.py",
        "import time\n\ndef test_slow_after():\n    time.sleep(1.5)\n",
    );
    let args = ["-n", "2", "-p", "no:randomly", "--instafail"];
    let xdist = p.pytest(&args);
    let r = p.rtest(&args);
    r.code(1);
    for run in [&xdist, &r] {
        assert_eq!(run.summary(), "1 failed, 9 passed", "{}", run.stdout);
    }
    // The failure's block is shown as it happens, and not again at the
    // end: instafail's reporter overrides summary_failures, and rtest
    // leaves that section to it, as xdist's controller does.
    let count = |run: &Run| run.stdout.matches("def test_fail():").count();
    assert_eq!(count(&xdist), 1, "{}", xdist.stdout);
    assert_eq!(count(&r), 1, "{}", r.stdout);
    for run in [&xdist, &r] {
        assert!(!run.stdout.contains("= FAILURES ="), "{}", run.stdout);
        assert!(
            run.stdout
                .contains("FAILED tests/test_a.py::test_fail - assert 2 == 3"),
            "{}",
            run.stdout
        );
    }
    let block = r.stdout.find("def test_fail():").unwrap();
    assert!(r.stdout[block..].contains("assert 2 == 3"), "{}", r.stdout);
    // Before the slow test (last in collection order) finished.
    assert!(block < r.stdout.find("[100%]").unwrap(), "{}", r.stdout);
    // No progress letters of pytest's own from the controller: every
    // line of dots and Fs is rtest's, and there are 10 results in all.
    let letters: usize = r
        .stdout
        .lines()
        .filter(|l| {
            !l.is_empty()
                && l.split(' ')
                    .next()
                    .unwrap()
                    .chars()
                    .all(|c| c == '.' || c == 'F')
        })
        .map(|l| l.split(' ').next().unwrap().len())
        .sum();
    assert_eq!(letters, 10, "{}", r.stdout);
}

#[test]
fn what_plugins_write_at_session_start_is_above_the_header_as_under_xdist() {
    // SQLAlchemy's plugin writes a section of its own in
    // pytest_sessionstart, before pytest's header; a trylast plugin
    // registered in pytest_configure writes before it too. Neither hooks
    // the run, so the controller is not needed for anything else.
    let p = Project::new()
        .file(
            "conftest.py",
            "import pytest\n\n\
             class Late:\n    @pytest.hookimpl(trylast=True)\n    def pytest_sessionstart(self, session):\n        \
             session.config.pluginmanager.get_plugin('terminalreporter').write_line('late line')\n\n\
             def pytest_configure(config):\n    if not hasattr(config, 'workerinput'):\n        \
             config.pluginmanager.register(Late(), 'late')\n\n\
             def pytest_sessionstart(session):\n    if hasattr(session.config, 'workerinput'):\n        return\n    \
             tr = session.config.pluginmanager.get_plugin('terminalreporter')\n    \
             tr.write_sep('=', 'my installation')\n    tr.write_line('version 1.2')\n",
        )
        .file("test_a.py", "def test_a():\n    pass\n");
    // The plugins' three lines come first, as under xdist.
    let top = |out: &str| -> Vec<String> { out.lines().take(3).map(str::to_string).collect() };
    for verbosity in [&[][..], &["-q"][..]] {
        let args = [&["-n", "2", "-p", "no:randomly"][..], verbosity].concat();
        let xdist = p.pytest(&args);
        let r = p.rtest(&args);
        r.code(0);
        let want = top(&xdist.stdout);
        assert_eq!(want[1..], ["version 1.2", "late line"], "{}", xdist.stdout);
        assert_eq!(top(&r.stdout), want, "{}", r.stdout);
        assert_eq!(r.stdout.matches("version 1.2").count(), 1, "{}", r.stdout);
    }
}

#[test]
fn plugins_hear_from_every_worker_until_it_exits_as_under_xdist() {
    // xdist's controller tears its nodes down in its first sessionfinish
    // implementation, waiting for the workers to exit: what they leave at
    // unconfigure and at exit (atexit) is there for the controller's
    // sessionfinish and summary. pytest-retry relies on it (it reads each
    // worker's socket until the worker's process closes it).
    let p = Project::new()
        .file(
            "conftest.py",
            r#"
import atexit, os


def pytest_configure(config):
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        atexit.register(lambda: open("heard/%s-atexit" % worker, "w").close())


def pytest_unconfigure(config):
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        open("heard/%s-unconfigure" % worker, "w").close()


def heard():
    return " ".join(sorted(f for f in os.listdir("heard") if not f.startswith(".")))


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        with open("sessionfinish.log", "w") as f:
            f.write(heard())


def pytest_terminal_summary(terminalreporter, config):
    terminalreporter.write_line("heard in the summary: " + heard())
"#,
        )
        .file("heard/.keep", "")
        .file(
            "test_a.py",
            "import pytest\n\n@pytest.mark.parametrize('i', range(6))\ndef test_a(i):\n    pass\n",
        );
    let all = "gw0-atexit gw0-unconfigure gw1-atexit gw1-unconfigure";
    let clean = || {
        for f in [
            "gw0-atexit",
            "gw0-unconfigure",
            "gw1-atexit",
            "gw1-unconfigure",
        ] {
            let _ = std::fs::remove_file(p.path().join("heard").join(f));
        }
    };
    let xdist = p.pytest(&["-n", "2"]);
    xdist
        .code(0)
        .stdout_has(&format!("heard in the summary: {all}"));
    assert_eq!(p.read("sessionfinish.log"), all);
    clean();
    let run = p.rtest(&["-n", "2"]);
    run.code(0)
        .stdout_has(&format!("heard in the summary: {all}"));
    assert_eq!(p.read("sessionfinish.log"), all);
}

#[test]
fn what_plugins_write_at_the_end_is_laid_out_as_pytest_lays_it_out() {
    // Their blank lines kept; what sessionfinish writes comes right below
    // the progress (before the failures); what the controller prints or
    // writes to the terminal at unconfigure comes after the final line, and a worker's not at all
    // (xdist drops a worker's stdout). Against serial pytest: xdist glues
    // the sessionfinish line to its progress line.
    let p = Project::new()
        .file(
            "conftest.py",
            r#"
def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        tr.write_line("sessionfinish line")


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write("\n")
    terminalreporter.section("mine", sep="=")
    terminalreporter.write_line("a line")
    terminalreporter.write("\n")


def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):
        print("a worker's unconfigure line")
    else:
        # pytest-md-report's way: its table through the reporter's writer.
        tr = config.pluginmanager.get_plugin("terminalreporter")
        tr._tw.write("written at unconfigure\n")
        print("unconfigure line")
"#,
        )
        .file(
            "test_a.py",
            "def test_a():\n    pass\n\ndef test_b():\n    assert 0\n",
        );
    // From the end of the progress to the end, the time taken out (pytest
    // -q glues the sessionfinish line to its progress line).
    let tail = |out: &str| -> Vec<String> {
        let (_, rest) = out
            .rsplit_once("[100%]")
            .unwrap_or_else(|| panic!("no progress line in\n{out}"));
        let rest = rest.strip_prefix('\n').unwrap_or(rest);
        rest.lines()
            .filter(|l| !l.starts_with("[gw"))
            .map(|l| match l.rsplit_once(" in ") {
                Some((a, _)) if l.contains(" passed") => a.to_string(),
                _ => l.to_string(),
            })
            .collect()
    };
    for quiet in [&[][..], &["-q"][..]] {
        let want = p.pytest(&[&["-p", "no:randomly"][..], quiet].concat());
        let run = p.rtest(&[&["-n", "2", "-p", "no:randomly"][..], quiet].concat());
        run.code(1).stdout_lacks("a worker's unconfigure line");
        assert!(
            !run.stderr.contains("a worker's unconfigure line"),
            "{}",
            run.stderr
        );
        let want = tail(&want.stdout);
        assert_eq!(want[..2], ["sessionfinish line", ""], "{want:?}");
        assert_eq!(
            want[want.len() - 2..],
            ["written at unconfigure", "unconfigure line"],
            "{want:?}"
        );
        assert_eq!(tail(&run.stdout), want, "{}", run.stdout);
    }
}

#[test]
fn a_plugin_that_fails_every_session_is_shown_once() {
    // A conftest's pytest_configure that raises in every process: pytest
    // shows the INTERNALERROR once, and so does rtest, however many
    // workers and the controller hit it.
    let p = Project::new()
        .file(
            "conftest.py",
            "def pytest_configure(config):\n    raise RuntimeError('nowhere works')\n",
        )
        .file("test_a.py", "def test_a():\n    pass\n");
    let serial = p.pytest(&["-p", "no:randomly"]);
    serial.code(3);
    let run = p.rtest(&["-n", "3", "-p", "no:randomly"]);
    run.code(3);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(
        all.matches("RuntimeError: nowhere works").count(),
        1,
        "{all}"
    );
    assert!(
        all.contains("the controller's error above") || all.contains("(the error above)"),
        "{all}"
    );
}
