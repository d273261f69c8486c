//! Outputs: JUnit XML, report-log, `-s`, raw bytes on fd 1 and 2.

use crate::harness::{junit_outcomes, Project};

#[test]
fn junit_is_well_formed_with_pytest_names_and_stripped_control_chars() {
    let p = Project::new().file(
        "tests/test_j.py",
        "import pytest, sys\n\nclass TestC:\n    @pytest.mark.parametrize('x', ['a::b', 'ünï'])\n    def test_p(self, x):\n        pass\n\ndef test_esc():\n    print('\\x1b[31mred\\x1b[0m and \\x00 nul')\n    assert False, '\\x1b[1mbold\\x1b[0m'\n\n@pytest.mark.skip(reason='why not')\ndef test_s():\n    pass\n\ndef test_prop(record_property):\n    record_property('answer', 42)\n",
    );
    let r = p.rtest(&[
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--junitxml",
        "out/j.xml",
    ]);
    r.code(1);
    let outcomes = junit_outcomes(&p.path().join("out/j.xml"));
    let names: Vec<&str> = outcomes.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"tests.test_j.TestC::test_p[a::b]"),
        "{names:?}"
    );
    assert!(names.contains(&"tests.test_j::test_esc"), "{names:?}");
    let xml = p.read("out/j.xml");
    assert!(!xml.contains('\u{1b}'));
    assert!(xml.contains("<skipped type=\"pytest.skip\" message=\"why not\">"));
    assert!(xml.contains("<property name=\"answer\" value=\"42\" />"));
    assert!(xml.contains("failures=\"1\""));
    assert!(xml.contains("skipped=\"1\""));
}

#[test]
fn report_log_is_pytest_reportlog_json_lines() {
    let p = Project::new().file(
        "test_r.py",
        "def test_a():\n    pass\n\ndef test_b():\n    assert 0\n",
    );
    p.rtest(&[
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--report-log",
        "log.jsonl",
    ])
    .code(1);
    let text = p.read("log.jsonl");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["$report_type"], "SessionStart");
    assert_eq!(lines.last().unwrap()["$report_type"], "SessionFinish");
    assert_eq!(lines.last().unwrap()["exitstatus"], 1);
    let reports: Vec<_> = lines
        .iter()
        .filter(|l| l["$report_type"] == "TestReport")
        .collect();
    assert_eq!(reports.len(), 6);
    let failed = reports.iter().find(|r| r["outcome"] == "failed").unwrap();
    assert_eq!(failed["nodeid"], "test_r.py::test_b");
    assert_eq!(failed["when"], "call");
    assert!(failed["longrepr"].is_object() || failed["longrepr"].is_string());
}

#[test]
fn report_log_warnings_are_pytest_reportlogs() {
    // The same WarningMessage lines as pytest-reportlog writes in a plain
    // pytest session: at configure time (once, though every worker
    // configures), at import, in a test.
    let p = Project::new()
        .file("pytest.ini", "[pytest]\nno_such_key = 1\n")
        .file(
            "test_w.py",
            "import warnings\n\nwarnings.warn(UserWarning('at import'))\n\n\
             def test_w():\n    warnings.warn(DeprecationWarning('in a test'))\n",
        );
    let warnings = |log: &str| {
        let mut lines: Vec<serde_json::Value> = p
            .read(log)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["$report_type"] == "WarningMessage")
            .collect();
        lines.sort_by_key(|l| l.to_string());
        lines
    };
    let site = crate::harness::side_site("pytest-reportlog", "pytest_reportlog");
    let serial = std::process::Command::new(crate::harness::venv_python())
        .args([
            "-m",
            "pytest",
            "-p",
            "no:randomly",
            "--report-log",
            "serial.jsonl",
        ])
        .current_dir(p.path())
        .env("PYTHONPATH", &site)
        .output()
        .unwrap();
    assert!(serial.status.success(), "{serial:?}");
    let want = warnings("serial.jsonl");
    assert_eq!(want.len(), 3, "{want:?}");
    p.rtest(&[
        "-n",
        "2",
        "-p",
        "no:randomly",
        "--report-log",
        "rtest.jsonl",
    ])
    .code(0);
    assert_eq!(warnings("rtest.jsonl"), want);
}

#[test]
fn raw_non_utf8_writes_to_fd_1_and_2_do_not_break_the_protocol() {
    let p = Project::new().file(
        "test_raw.py",
        "import os\n\ndef test_raw():\n    os.write(1, b'\\xff\\xfe\\x00 raw out\\n')\n    os.write(2, b'\\xc3\\x28 raw err\\n')\n\ndef test_after():\n    pass\n",
    );
    let r = p.rtest(&["-n", "2", "-p", "no:cacheprovider", "-rP"]);
    r.code(0).stdout_has("raw out").stdout_has("raw err");
    assert_eq!(r.summary(), "2 passed");
    let s = p.rtest(&["-n", "2", "-p", "no:cacheprovider", "-s"]);
    s.code(0).stderr_has("raw out");
}

#[test]
fn capture_no_streams_a_mebibyte_with_worker_prefixes() {
    let p = Project::new().file(
        "test_big.py",
        "import sys\n\ndef test_big():\n    line = 'x' * 1023\n    for _ in range(1024):\n        print(line)\n\ndef test_small():\n    print('marker-line')\n",
    );
    let r = p.rtest(&["-n", "2", "-s", "-p", "no:cacheprovider"]);
    r.code(0);
    let big_lines = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("[gw") && l.ends_with(&"x".repeat(1023)))
        .count();
    assert_eq!(big_lines, 1024);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("[gw") && l.ends_with("] marker-line")),
        "{}",
        &r.stderr[..200.min(r.stderr.len())]
    );
}

#[test]
fn subtests_count_and_read_as_under_pytest() {
    // unittest's subTest and pytest's `subtests` fixture (pytest 9): the
    // same final line and short summary as plain pytest.
    let p = Project::new().file(
        "test_sub.py",
        r#"
import unittest

class T(unittest.TestCase):
    def test_a(self):
        for i in range(4):
            with self.subTest(i=i):
                self.assertNotEqual(i, 2)

def test_fixture(subtests):
    for i in range(3):
        with subtests.test(msg="sub", i=i):
            assert i != 1

def test_plain():
    pass
"#,
    );
    let args = ["-p", "no:cacheprovider", "-rfE"];
    let base = p.pytest(&args);
    let mut ours_args = vec!["-n", "2"];
    ours_args.extend(args);
    let ours = p.rtest(&ours_args);
    assert_eq!(ours.summary(), base.summary(), "{}", ours.stdout);
    let summary_lines = |r: &crate::harness::Run| {
        let mut v: Vec<String> = r
            .stdout
            .lines()
            .skip_while(|l| !l.contains("short test summary info"))
            .skip(1)
            .take_while(|l| !l.starts_with('='))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        summary_lines(&ours),
        summary_lines(&base),
        "{}",
        ours.stdout
    );
    assert_eq!(ours.code, base.code);
}

#[test]
fn what_workers_write_outside_tests_is_shown_once() {
    // pytest-benchmark's way: a warning at unconfigure from gw0 only
    // (uncaptured there, as under xdist), and a message every process
    // prints at configure time (controller and workers alike), which
    // plain pytest shows once. Output of tests stays captured.
    let p = Project::new()
        .file(
            "conftest.py",
            "import os, sys, warnings\n\n\
             def pytest_configure(config):\n    sys.stderr.write('configured: one message for all\\n')\n\n\
             def pytest_unconfigure(config):\n    if os.environ.get('PYTEST_XDIST_WORKER') == 'gw0':\n        warnings.warn(UserWarning('gw0 alone says goodbye'))\n\n\
             def pytest_runtest_logreport(report):\n    if report.when == 'call' and not os.environ.get('PYTEST_XDIST_WORKER'):\n        sys.stderr.write('the controller saw a test\\n')\n        sys.stderr.flush()\n",
        )
        .file(
            "test_a.py",
            "import sys, pytest\n\n@pytest.mark.parametrize('i', range(6))\ndef test_i(i):\n    sys.stderr.write('captured %d\\n' % i)\n",
        );
    let r = p.rtest(&["-n", "2", "-p", "no:randomly"]);
    r.code(0);
    assert_eq!(
        r.stderr.matches("configured: one message for all").count(),
        1,
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr
            .matches("UserWarning: gw0 alone says goodbye")
            .count(),
        1,
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("[gw0] ") && r.stderr.contains("UserWarning: gw0 alone says goodbye"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("captured"), "{}", r.stderr);
    // One process saying the same again is shown again.
    assert_eq!(
        r.stderr.matches("the controller saw a test").count(),
        6,
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("captured"), "{}", r.stdout);
    // Six progress letters in all, the last line with its percentage
    // (stderr in the middle ends the progress line; the progress goes on
    // below it).
    let progress: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with('.')).collect();
    let letters: usize = progress
        .iter()
        .map(|l| l.chars().take_while(|c| *c == '.').count())
        .sum();
    assert_eq!(letters, 6, "{}", r.stdout);
    assert!(progress.last().unwrap().ends_with("[100%]"), "{}", r.stdout);
}

#[test]
fn a_workers_summary_is_quiet_even_where_plugins_print_it() {
    // A worker's terminal summary is its (quiet) terminal reporter's; a
    // plugin that prints its part with print() (pytest-sugar's "Results")
    // is quiet there too, as under xdist (which drops a worker's stdout),
    // while what it writes to stderr passes, and the controller's summary
    // is shown once.
    let p = Project::new()
        .file(
            "conftest.py",
            "import sys\n\n\
             def pytest_terminal_summary(config):\n    \
                 who = config.workerinput['workerid'] if hasattr(config, 'workerinput') else 'controller'\n    \
                 print('summary printed by', who)\n    \
                 sys.stderr.write('summary to stderr by %s\\n' % who)\n\n\
             def pytest_sessionfinish(session):\n    \
                 if hasattr(session.config, 'workerinput'):\n        \
                     print('finish printed by', session.config.workerinput['workerid'])\n",
        )
        .file("test_a.py", "def test_a():\n    pass\n\n\ndef test_b():\n    pass\n");
    let base = p.pytest(&["-n", "2", "-p", "no:randomly"]);
    base.code(0);
    let r = p.rtest(&["-n", "2", "-p", "no:randomly"]);
    r.code(0);
    for run in [&base, &r] {
        let said = run.stdout.clone() + &run.stderr;
        assert!(!said.contains("printed by gw"), "{said}");
        assert!(said.contains("summary to stderr by gw0"), "{said}");
        assert!(said.contains("summary to stderr by gw1"), "{said}");
    }
    assert_eq!(
        r.stdout.matches("summary printed by controller").count(),
        1,
        "{}",
        r.stdout
    );
}

#[test]
fn what_a_test_writes_past_the_capture_is_shown_as_under_xdist() {
    // --capture=sys captures Python's streams only: what C code or a
    // subprocess writes to the worker's stderr during a test reaches the
    // terminal under pytest and xdist, and so under rtest, once.
    let p = Project::new().file(
        "test_leak.py",
        "import os\n\n\
         def test_leaks():\n    os.write(2, b'written past the capture\\n')\n\n\
         def test_quiet():\n    pass\n",
    );
    let args = ["-n", "2", "--capture=sys", "-p", "no:randomly"];
    let base = p.pytest(&args);
    base.code(0);
    let r = p.rtest(&args);
    r.code(0);
    for run in [&base, &r] {
        let said = run.stdout.clone() + &run.stderr;
        assert_eq!(
            said.matches("written past the capture").count(),
            1,
            "{said}"
        );
    }
}

/// Live logging (`log_cli`): pytest shows each test on its own line, as
/// with `-v`, and the records as they come, in "live log" sections. rtest
/// shows each test's sections when it ends, below a line naming it, before
/// its result line; xdist shows none of them.
#[test]
fn live_logs_are_shown_with_their_test() {
    let test = "import logging\n\nlog = logging.getLogger('x')\n\n\
        import pytest\n\n\
        @pytest.fixture\ndef fx():\n    log.info('setting up')\n    yield\n    log.info('tearing down')\n\n\
        def test_a(fx):\n    log.info('hello from a')\n    log.warning('warn from a')\n\n\
        def test_b():\n    log.error('err from b')\n    assert 0\n\n\
        def test_quiet():\n    pass\n";
    let p = Project::new().file("test_l.py", test);
    let r = p.rtest(&["-n", "2", "-p", "no:cacheprovider", "--log-cli-level=INFO"]);
    r.code(1);
    let out = &r.stdout;
    let pos = |text: &str| {
        out.find(text)
            .unwrap_or_else(|| panic!("{text:?} not in\n{out}"))
    };
    // test_a: its line, then its setup, call and teardown sections, then
    // its result.
    let head = pos("] test_l.py::test_a \n");
    let setup = pos("live log setup");
    let hello = pos("INFO     x:test_l.py:14 hello from a");
    let warn = pos("WARNING  x:test_l.py:15 warn from a");
    let teardown = pos("live log teardown");
    let result = pos("PASSED test_l.py::test_a");
    assert!(
        head < setup && setup < hello && hello < warn && warn < teardown && teardown < result,
        "{out}"
    );
    assert!(
        out[setup..].contains("INFO     x:test_l.py:9 setting up"),
        "{out}"
    );
    assert!(
        out[teardown..].contains("INFO     x:test_l.py:11 tearing down"),
        "{out}"
    );
    // test_b's record, and its failure as usual.
    assert!(pos("ERROR    x:test_l.py:18 err from b") < pos("FAILED test_l.py::test_b"));
    // A test that logged nothing has its result line alone, as under -v.
    r.stdout_has("PASSED test_l.py::test_quiet")
        .stdout_lacks("] test_l.py::test_quiet \n");
    // From the ini too, and -q does not take the lines away (pytest turns
    // -v on for live logs).
    let p = p.file(
        "pytest.ini",
        "[pytest]\nlog_cli = true\nlog_cli_level = INFO\n",
    );
    p.rtest(&["-n", "2", "-q", "-p", "no:cacheprovider"])
        .code(1)
        .stdout_has("INFO     x:test_l.py:14 hello from a")
        .stdout_has("PASSED test_l.py::test_quiet");
    // Without live logging: progress dots, no records.
    let p = p.file("pytest.ini", "[pytest]\n");
    p.rtest(&["-n", "2", "-p", "no:cacheprovider"])
        .code(1)
        .stdout_lacks("hello from a")
        .stdout_lacks("PASSED test_l.py::test_quiet");
}
