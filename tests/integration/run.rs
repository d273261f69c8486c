//! Ordinary runs: results, modes, pytest options, xdist compatibility.

use crate::harness::{junit_outcomes, Project, Run};

fn example() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart")
}

#[test]
fn quickstart_example_passes_on_two_workers() {
    let p = Project::new();
    let ex = example();
    let r = p.rtest(&["-n", "2", "-p", "no:cacheprovider", ex.to_str().unwrap()]);
    r.code(0)
        .stdout_has("rtest 0.1.0: 2 workers [20 items]")
        .stdout_has("test session starts");
    assert_eq!(r.summary(), "18 passed, 1 skipped, 1 xfailed");
}

const MIXED: &str = r#"
import pytest

def test_pass():
    pass

def test_fail():
    print("some output")
    assert 1 == 2, "numbers differ"

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_setup_error(broken):
    pass

@pytest.fixture
def bad_teardown():
    yield
    raise ValueError("teardown broke")

def test_teardown_error(bad_teardown):
    pass

@pytest.mark.skip(reason="not today")
def test_skip():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="fixed?")
def test_xpass():
    pass

@pytest.mark.parametrize("x", ["a::b", "ünï", "sp ace"])
def test_ids(x):
    assert x
"#;

#[test]
fn outcomes_match_plain_pytest_node_by_node() {
    let p = Project::new().file("test_mixed.py", MIXED).file(
        "test_more.py",
        "import pytest\n\nclass TestK:\n    def test_a(self):\n        pass\n\n    @pytest.mark.parametrize('n', range(20))\n    def test_n(self, n):\n        assert n != 7\n",
    );
    let base = p.pytest(&["-p", "no:cacheprovider", "--junitxml", "base.xml", "-q"]);
    assert_eq!(base.code, 1, "{}", base.stdout);
    let r = p.rtest(&[
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--junitxml",
        "ours.xml",
    ]);
    r.code(1);
    let base = junit_outcomes(&p.path().join("base.xml"));
    let ours = junit_outcomes(&p.path().join("ours.xml"));
    assert_eq!(base, ours);
    assert_eq!(
        r.summary(),
        "2 failed, 25 passed, 1 skipped, 1 xfailed, 1 xpassed, 2 errors"
    );
}

#[test]
fn failure_sections_use_pytest_rendering_and_respect_tb() {
    let p = Project::new().file("test_mixed.py", MIXED);
    let r = p.rtest(&["-n", "2", "-p", "no:cacheprovider"]);
    r.code(1)
        .stdout_has("= FAILURES =")
        .stdout_has("___ test_fail ___")
        .stdout_has(">       assert 1 == 2, \"numbers differ\"")
        .stdout_has("E       AssertionError: numbers differ")
        .stdout_has("- Captured stdout call -")
        .stdout_has("some output")
        .stdout_has("ERROR at setup of test_setup_error")
        .stdout_has("ERROR at teardown of test_teardown_error")
        .stdout_has("FAILED test_mixed.py::test_fail - AssertionError: numbers differ")
        .stdout_has("ERROR test_mixed.py::test_setup_error - RuntimeError: fixture broke");
    let short = p.rtest(&["-n", "2", "-p", "no:cacheprovider", "--tb=line"]);
    short
        .code(1)
        .stdout_lacks(">       assert 1 == 2")
        .stdout_has("/test_mixed.py:9: AssertionError: numbers differ");
    let none = p.rtest(&["-n", "2", "-p", "no:cacheprovider", "--tb=no"]);
    none.code(1)
        .stdout_lacks("= FAILURES =")
        .stdout_has("FAILED test_mixed.py::test_fail");
}

#[test]
fn verbose_lines_name_the_worker_and_quiet_is_terse() {
    let p = Project::new().file(
        "test_a.py",
        "def test_one():\n    pass\n\ndef test_two():\n    pass\n",
    );
    let r = p.rtest(&["-n", "2", "-v", "-p", "no:cacheprovider"]);
    r.code(0);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("[gw") && l.contains("PASSED test_a.py::test_one")),
        "{}",
        r.stdout
    );
    // As xdist's (and pytest's) -v: a blank line below the last result
    // line, none below quiet progress.
    let xdist = p.pytest(&["-n", "2", "-v", "-p", "no:cacheprovider"]);
    let tail = |out: &str| -> Vec<bool> {
        let lines: Vec<&str> = out.lines().collect();
        lines[lines.len() - 3..]
            .iter()
            .map(|l| l.is_empty())
            .collect()
    };
    assert_eq!(
        tail(&r.stdout),
        tail(&xdist.stdout),
        "{}\n{}",
        r.stdout,
        xdist.stdout
    );
    assert_eq!(tail(&r.stdout), [false, true, false], "{}", r.stdout);
    let plain = p.rtest(&["-n", "2", "-p", "no:cacheprovider"]);
    assert_eq!(tail(&plain.stdout)[1..], [false, false], "{}", plain.stdout);
    let q = p.rtest(&["-n", "2", "-q", "-p", "no:cacheprovider"]);
    q.code(0).stdout_lacks("test session starts");
    assert!(
        q.stdout.lines().any(|l| l.starts_with("2 passed in ")),
        "{}",
        q.stdout
    );
}

#[test]
fn selection_options_are_forwarded() {
    let p = Project::new().file(
        "test_sel.py",
        "import pytest\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n\ndef test_fast():\n    pass\n\ndef test_other():\n    pass\n",
    )
    .file("pytest.ini", "[pytest]\nmarkers =\n    slow: slow\n");
    let r = p.rtest(&["-n", "2", "-m", "not slow", "-k", "fast or slow"]);
    r.code(0).stdout_has("1 item / 2 deselected");
    assert_eq!(r.summary(), "1 passed, 2 deselected");
}

#[test]
fn conftest_options_pass_through() {
    let p = Project::new()
        .file(
            "conftest.py",
            "def pytest_addoption(parser):\n    parser.addoption('--flavor', default='plain')\n\nimport pytest\n\n@pytest.fixture\ndef flavor(request):\n    return request.config.getoption('--flavor')\n",
        )
        .file("tests/test_f.py", "def test_flavor(flavor):\n    assert flavor == 'x'\n");
    p.rtest(&["-n", "2", "--flavor", "x", "tests/"]).code(0);
    p.rtest(&["-n", "2", "tests/"]).code(1);
}

#[test]
fn xdist_environment_and_fixtures_are_set() {
    // PYTEST_VERSION (pytest 8.2+) is set while conftests load and tests
    // run, also for the processes they start: xdist's workers inherit it
    // from the controller's pytest.main.
    let p = Project::new()
        .file(
            "conftest.py",
            "import os\nimport pytest\n\nAT_IMPORT = os.environ.get('PYTEST_VERSION')\n",
        )
        .file(
            "test_env.py",
            "import os, subprocess, sys\nimport pytest\nfrom conftest import AT_IMPORT\n\ndef test_env(worker_id, testrun_uid):\n    assert os.environ['PYTEST_XDIST_WORKER'] == worker_id\n    assert worker_id in ('gw0', 'gw1', 'gw2')\n    assert os.environ['PYTEST_XDIST_WORKER_COUNT'] == '3'\n    assert os.environ['PYTEST_XDIST_TESTRUNUID'] == testrun_uid\n    assert len(testrun_uid) == 32\n\ndef test_pytest_version():\n    assert AT_IMPORT == pytest.__version__\n    assert os.environ['PYTEST_VERSION'] == pytest.__version__\n    out = subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"PYTEST_VERSION\"))'], capture_output=True, text=True).stdout\n    assert out.strip() == pytest.__version__\n",
        );
    p.pytest(&["-n", "3", "-p", "no:cacheprovider"]).code(0);
    p.rtest(&["-n", "3", "-p", "no:cacheprovider"]).code(0);
}

#[test]
fn dist_each_runs_every_test_on_every_worker() {
    let py = crate::harness::venv_python();
    let tx = format!("2*popen//python={}", py.display());
    let p = Project::new().file(
        "test_e.py",
        "def test_a():\n    pass\n\ndef test_b():\n    pass\n",
    );
    let r = p.rtest(&[
        "--tx",
        &tx,
        "--dist",
        "each",
        "-v",
        "-p",
        "no:cacheprovider",
    ]);
    r.code(0);
    assert_eq!(r.summary(), "4 passed");
    for w in ["gw0", "gw1"] {
        for t in ["test_a", "test_b"] {
            let line = format!("[{w}]");
            assert!(
                r.stdout
                    .lines()
                    .any(|l| l.starts_with(&line)
                        && l.trim_end().ends_with(&format!("test_e.py::{t}"))),
                "{}",
                r.stdout
            );
        }
    }
}

#[test]
fn loadfile_keeps_files_together() {
    let mut p = Project::new();
    for f in 0..4 {
        p = p.file(
            &format!("test_f{f}.py"),
            "import os\n\ndef test_1():\n    open('log-' + os.environ['PYTEST_XDIST_WORKER'], 'a').write(__name__ + '\\n')\n\ndef test_2():\n    open('log-' + os.environ['PYTEST_XDIST_WORKER'], 'a').write(__name__ + '\\n')\n",
        );
    }
    p.rtest(&["-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider"])
        .code(0);
    let mut seen = std::collections::HashMap::new();
    for w in ["gw0", "gw1"] {
        let path = p.path().join(format!("log-{w}"));
        for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
            let prev = seen.insert(line.to_string(), w);
            assert!(
                prev.is_none() || prev == Some(w),
                "{line} ran on two workers"
            );
        }
    }
    assert_eq!(seen.len(), 4);
}

#[test]
fn exitfirst_stops_early() {
    let p = Project::new().file(
        "test_x.py",
        "import time\n\ndef test_0():\n    assert False\n\n"
            .to_string()
            .as_str(),
    );
    let mut body = String::from("import time\n\ndef test_0():\n    assert False\n");
    for i in 1..40 {
        body.push_str(&format!("\ndef test_{i}():\n    time.sleep(0.05)\n"));
    }
    let p = p.file("test_x.py", &body);
    let r = p.rtest(&["-n", "2", "-x", "-p", "no:cacheprovider"]);
    r.code(1).stdout_has("stopping after 1 failures");
    let passed: usize = r
        .summary()
        .split(", ")
        .find_map(|part| part.strip_suffix(" passed").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    assert!(passed < 39, "{}", r.stdout);
}

#[test]
fn no_tests_is_exit_5_and_collect_only_lists_ids() {
    let p = Project::new().file("test_none.py", "x = 1\n");
    p.rtest(&["-n", "2"]).code(5).stdout_has("no tests ran");
    let p = Project::new().file(
        "test_c.py",
        "def test_a():\n    pass\n\ndef test_b():\n    pass\n",
    );
    let r = p.rtest(&["-n", "2", "--collect-only", "-q", "-p", "no:cacheprovider"]);
    r.code(0)
        .stdout_has("test_c.py::test_a\ntest_c.py::test_b")
        .stdout_has("2 tests collected");
}

/// `--collect-only` lists what pytest lists, as pytest lists it at every
/// verbosity: the tree of collectors (with docstrings under `-v`), node ids
/// under `-q`, counts per file under `-qq`.
#[test]
fn collect_only_lists_as_pytest_does_at_every_verbosity() {
    let p = Project::new()
        .file(
            "tests/test_a.py",
            "import pytest\n\n\
             def test_one():\n    '''The first.\n\n    Two lines.'''\n\n\
             @pytest.mark.parametrize('x', [1, 2])\ndef test_two(x):\n    pass\n\n\
             class TestThing:\n    \"A class.\"\n    def test_m(self):\n        pass\n",
        )
        .file("tests/test_b.py", "def test_b():\n    pass\n");
    // pytest's listing: what comes between its header and its final line.
    let listing = |out: &str| -> String {
        out.lines()
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("===")
                    && !l.contains("tests collected in")
                    && !l.contains("collected 5 items")
                    && !l.starts_with("  gw0: ")
                    && ![
                        "platform ",
                        "rootdir:",
                        "cachedir:",
                        "plugins:",
                        "rtest ",
                        "PYTHONHASHSEED",
                    ]
                    .iter()
                    .any(|h| l.starts_with(h))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for flags in [&[][..], &["-q"], &["-qq"], &["-v"]] {
        let mut args = vec![
            "--collect-only",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
        ];
        args.extend_from_slice(flags);
        let want = p.pytest(&args);
        want.code(0);
        let want = listing(&want.stdout);
        assert!(!want.is_empty(), "{flags:?}");
        let mut rargs = vec!["-n", "2"];
        rargs.extend_from_slice(&args);
        let got = p.rtest(&rargs);
        got.code(0).stdout_has("5 tests collected");
        assert_eq!(listing(&got.stdout), want, "{flags:?}\n{}", got.stdout);
    }
    // The final line in pytest's words, with deselection and without.
    let last = |out: &str| -> String {
        let line = out
            .lines()
            .rev()
            .find(|l| l.contains("collected"))
            .unwrap_or("");
        let body = line.trim_matches(|c| c == '=' || c == ' ');
        body.rsplit_once(" in ")
            .map_or(body, |(a, _)| a)
            .to_string()
    };
    for k in ["two", "nothing_matches"] {
        let args = [
            "--co",
            "-k",
            k,
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
        ];
        let want = p.pytest(&args);
        let mut rargs = vec!["-n", "2"];
        rargs.extend_from_slice(&args);
        let got = p.rtest(&rargs);
        got.code(want.code);
        assert_eq!(last(&got.stdout), last(&want.stdout), "{}", got.stdout);
        assert!(last(&got.stdout).contains("deselected)"), "{}", got.stdout);
    }
}

#[test]
fn collection_errors_are_reported_like_pytest() {
    let p = Project::new()
        .file("test_ok.py", "def test_ok():\n    pass\n")
        .file(
            "test_broken.py",
            "import nonexistent_module_xyz\n\ndef test_x():\n    pass\n",
        );
    let r = p.rtest(&["-n", "2", "-p", "no:cacheprovider"]);
    r.code(2)
        .stdout_has("ERROR collecting test_broken.py")
        .stdout_has("ModuleNotFoundError")
        .stdout_has("Interrupted: 1 error during collection");
    let r = p.rtest(&[
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
    ]);
    r.code(1);
    assert_eq!(r.summary(), "1 passed, 1 error");
}

#[test]
fn different_collections_stop_with_a_diff_naming_workers() {
    let p = Project::new().file(
        "test_rand.py",
        "import os, pytest\n\n@pytest.mark.parametrize('x', [os.environ['PYTEST_XDIST_WORKER']])\ndef test_r(x):\n    pass\n",
    );
    let r = p.rtest(&["-n", "2", "-p", "no:cacheprovider"]);
    assert_ne!(r.code, 0);
    r.stderr_has("different tests were collected by gw")
        .stderr_has("only on gw");
}

/// Every file named `name` under `dir`, relative to it.
fn files_named(dir: &std::path::Path, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                todo.push(path);
            } else if entry.file_name() == name {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn temporary_directories_are_one_numbered_directory_per_run_as_under_xdist() {
    // Each worker made a pytest-N of its own: a run on 3 workers took all
    // three that pytest keeps, and the cleanup of the workers that ended
    // first removed the failed tests' files of the others. As xdist's,
    // the run has one (the controller's), with a directory per local
    // worker in it, and pytest's retention keeps the last three runs. The
    // controller's lock on it lasts the run: another pytest's cleanup (a
    // test that runs pytest) must not take it while the workers use it.
    let p = Project::new().file(
        "test_t.py",
        "import pytest\n\n@pytest.mark.parametrize('i', range(9))\n\
         def test_t(tmp_path, i, worker_id):\n    \
         assert tmp_path.parent.name == 'popen-' + worker_id\n    \
         assert (tmp_path.parent.parent / '.lock').is_file()\n    \
         (tmp_path / 'evidence').write_text(str(i))\n    assert i < 0\n",
    );
    let root = p.path().join("temproot");
    std::fs::create_dir(&root).unwrap();
    for _ in 0..4 {
        let out = p
            .command(&["-n", "3", "-p", "no:randomly"])
            .env("PYTEST_DEBUG_TEMPROOT", &root)
            .output()
            .unwrap();
        let r = crate::harness::Run::from(out);
        r.code(1).stdout_has("9 failed");
        assert!(
            !r.stdout.contains("AssertionError: assert 'popen"),
            "{}",
            r.stdout
        );
    }
    let users: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().collect();
    assert_eq!(users.len(), 1);
    let user = users[0].path();
    let files = files_named(&user, "evidence");
    let runs: std::collections::BTreeSet<_> =
        files.iter().map(|f| f.split('/').next().unwrap()).collect();
    assert_eq!(
        runs.into_iter().collect::<Vec<_>>(),
        ["pytest-1", "pytest-2", "pytest-3"],
        "{files:?}"
    );
    assert_eq!(files.len(), 27, "{files:?}");
    let current = std::fs::read_link(user.join("pytest-current")).unwrap();
    assert!(current.ends_with("pytest-3"), "{}", current.display());

    // tmp_path_retention_policy = "failed" and every test passed: nothing
    // is left, as pytest and xdist leave nothing.
    let p = Project::new()
        .file(
            "pytest.ini",
            "[pytest]\ntmp_path_retention_policy = failed\n",
        )
        .file(
            "test_t.py",
            "import pytest\n\n@pytest.mark.parametrize('i', range(4))\n\
             def test_t(tmp_path, i):\n    (tmp_path / 'evidence').write_text('x')\n",
        );
    let root = p.path().join("temproot");
    std::fs::create_dir(&root).unwrap();
    let out = p
        .command(&["-n", "2", "-p", "no:randomly"])
        .env("PYTEST_DEBUG_TEMPROOT", &root)
        .output()
        .unwrap();
    crate::harness::Run::from(out).code(0);
    for user in std::fs::read_dir(&root).unwrap().flatten() {
        let left: Vec<_> = std::fs::read_dir(user.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn basetemp_is_split_per_worker() {
    // Each test waits until both workers run one (the first to collect
    // would otherwise run all six before the other has collected).
    let p = Project::new().file(
        "test_t.py",
        "import os, time, pytest\n\n@pytest.mark.parametrize('i', range(6))\ndef test_t(tmp_path, i, worker_id):\n    assert worker_id in str(tmp_path)\n    (tmp_path / 'f').write_text('x')\n    open('started.' + worker_id, 'w').close()\n    deadline = time.time() + 60\n    while not all(os.path.exists('started.' + w) for w in ('gw0', 'gw1')):\n        assert time.time() < deadline\n        time.sleep(0.01)\n",
    );
    let bt = p.path().join("bt");
    p.rtest(&[
        "-n",
        "2",
        "--basetemp",
        bt.to_str().unwrap(),
        "-p",
        "no:cacheprovider",
    ])
    .code(0);
    // As xdist names a local worker's.
    assert!(bt.join("popen-gw0").is_dir() && bt.join("popen-gw1").is_dir());
}

#[test]
fn ini_settings_and_conftest_files_work_unchanged() {
    let p = Project::new()
        .file("pyproject.toml", "[tool.pytest.ini_options]\naddopts = \"-p no:cacheprovider\"\ntestpaths = [\"suite\"]\n")
        .file("suite/conftest.py", "import pytest\n\n@pytest.fixture\ndef answer():\n    return 42\n")
        .file("suite/test_s.py", "def test_answer(answer):\n    assert answer == 42\n")
        .file("other/test_o.py", "def test_never():\n    assert False\n");
    let r = p.rtest(&["-n", "2"]);
    r.code(0);
    assert_eq!(r.summary(), "1 passed");
    let _ = junit_outcomes;
}

#[test]
fn last_failed_cache_is_kept_for_lf() {
    let p = Project::new().file(
        "test_lf.py",
        "import os\n\ndef test_a():\n    pass\n\ndef test_b():\n    assert os.environ.get('FIXED')\n\ndef test_c():\n    pass\n",
    );
    p.rtest(&["-n", "2"]).code(1);
    let cache = p.read(".pytest_cache/v/cache/lastfailed");
    assert!(
        cache.contains("test_lf.py::test_b") && !cache.contains("test_a"),
        "{cache}"
    );
    let r = p.rtest(&["-n", "2", "--lf"]);
    r.code(1);
    assert_eq!(r.summary(), "1 failed");
    let fixed = crate::harness::Run::from(
        p.command(&["-n", "2", "--lf"])
            .env("FIXED", "1")
            .output()
            .unwrap(),
    );
    fixed.code(0);
    assert_eq!(p.read(".pytest_cache/v/cache/lastfailed").trim(), "{}");
}

#[test]
fn addopts_shape_the_report_and_module_skips_count() {
    let p = Project::new()
        .file("pytest.ini", "[pytest]\naddopts = -ra -p no:cacheprovider --maxfail=1\n")
        .file("test_skipmod.py", "import pytest\n\npytest.importorskip('no_such_module_abc')\n\ndef test_never():\n    pass\n")
        .file("test_s.py", "import pytest\n\n@pytest.mark.skip(reason='later')\ndef test_s():\n    pass\n\ndef test_ok():\n    pass\n");
    let r = p.rtest(&["-n", "2", "--junitxml", "j.xml"]);
    r.code(0)
        .stdout_has("SKIPPED [1] test_s.py:3: later")
        .stdout_has("SKIPPED [1] test_skipmod.py:3: could not import 'no_such_module_abc'");
    assert_eq!(r.summary(), "1 passed, 2 skipped");
    assert_eq!(junit_outcomes(&p.path().join("j.xml")).len(), 3);
    // --maxfail from addopts is counted across workers, by the coordinator.
    let mut body = String::new();
    for i in 0..10 {
        body.push_str(&format!("\ndef test_f{i}():\n    assert False\n"));
    }
    let p = p.file("test_fails.py", &body);
    let r = p.rtest(&["-n", "2", "test_fails.py"]);
    r.code(1).stdout_has("stopping after ");
}

#[test]
fn loadgroup_keeps_a_group_on_one_worker() {
    let mut body = String::from("import os, pytest\n\ndef log(name):\n    open('log-' + os.environ['PYTEST_XDIST_WORKER'], 'a').write(name + '\\n')\n");
    for i in 0..6 {
        body.push_str(&format!(
            "\n@pytest.mark.xdist_group(name='db')\ndef test_db{i}():\n    log('db')\n"
        ));
        body.push_str(&format!("\ndef test_free{i}():\n    log('free')\n"));
    }
    let p = Project::new().file("test_g.py", &body);
    p.rtest(&["-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider"])
        .code(0);
    let holders: Vec<&str> = ["gw0", "gw1"]
        .into_iter()
        .filter(|w| {
            std::fs::read_to_string(p.path().join(format!("log-{w}")))
                .unwrap_or_default()
                .contains("db")
        })
        .collect();
    assert_eq!(holders.len(), 1, "the db group ran on {holders:?}");
}

#[test]
fn a_seed_from_pytest_configure_node_reaches_every_worker() {
    // What shuffling plugins (pytest-randomly) do under xdist: the
    // controller picks a seed in pytest_configure_node, every worker
    // shuffles with it from config.workerinput and collects the same order.
    let mut body = String::new();
    for i in 0..30 {
        body.push_str(&format!("def test_{i}():\n    pass\n\n"));
    }
    let p = Project::new()
        .file(
            "conftest.py",
            r#"
import random

SEED = random.randrange(1 << 30)


@pytest_hookimpl_optional
def pytest_configure_node(node):
    node.workerinput["shuffle_seed"] = SEED


def pytest_collection_modifyitems(config, items):
    random.Random(config.workerinput["shuffle_seed"]).shuffle(items)
"#
            .replace(
                "@pytest_hookimpl_optional",
                "import pytest\n\n\n@pytest.hookimpl(optionalhook=True)",
            )
            .as_str(),
        )
        .file("test_r.py", &body);
    let r = p.rtest(&["-n", "3", "-p", "no:cacheprovider"]);
    r.code(0);
    assert_eq!(r.summary(), "30 passed");
}

#[test]
fn flaky_tests_rerun_with_pytest_rerunfailures_as_under_pytest() {
    // pytest-rerunfailures (installed in the test venv) next to xdist: its
    // reruns work in rtest's workers and count as pytest counts them.
    let p = Project::new().file(
        "test_flaky.py",
        r#"
import os, pytest

@pytest.mark.flaky(reruns=2)
def test_flaky():
    marker = os.path.join(os.path.dirname(__file__), "ran-once")
    if not os.path.exists(marker):
        open(marker, "w").close()
        assert False, "first try fails"

def test_ok():
    pass
"#,
    );
    let r = p.rtest(&["-n", "2", "-p", "no:cacheprovider"]);
    r.code(0);
    assert_eq!(r.summary(), "2 passed, 1 rerun");
    // the rerun shows with the plugin's letter in the progress
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(".R.") || l.starts_with("R..")),
        "{}",
        r.stdout
    );
    std::fs::remove_file(p.path().join("ran-once")).unwrap();
    let base = p.pytest(&["-p", "no:cacheprovider"]);
    assert_eq!(base.summary(), r.summary());
    std::fs::remove_file(p.path().join("ran-once")).unwrap();
    p.rtest(&["-n", "1", "-v", "-p", "no:cacheprovider"])
        .code(0)
        .stdout_has("RERUN test_flaky.py::test_flaky");
}

#[test]
fn a_test_that_crashes_its_worker_reruns_as_under_xdist() {
    // pytest-rerunfailures' pytest_handlecrashitem, in the controller as in
    // xdist's: a crashed test runs again on another worker while reruns
    // are left, and counts as pytest-xdist counts it.
    let p = Project::new().file(
        "test_crash.py",
        r#"
import os


def test_crashes_once():
    marker = os.path.join(os.environ["MARKER_DIR"], "crashed")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)


def test_always_crashes():
    os._exit(1)


def test_ok():
    pass
"#,
    );
    let run = |tool: &str| {
        let marks = p.path().join(format!("marks-{tool}"));
        std::fs::create_dir_all(&marks).unwrap();
        let args = ["-n", "2", "-p", "no:cacheprovider", "--reruns", "1"];
        let xml = format!("--junitxml={tool}.xml");
        let mut cmd = if tool == "rtest" {
            p.command(&args)
        } else {
            let mut c = std::process::Command::new(crate::harness::venv_python());
            c.args(["-m", "pytest"]).args(args).current_dir(p.path());
            c
        };
        cmd.arg(&xml).env("MARKER_DIR", &marks);
        crate::harness::Run::from(cmd.output().unwrap())
    };
    let r = run("rtest");
    r.code(1)
        .stdout_has("worker gw")
        .stdout_has("crashed while running test_crash.py::test_always_crashes");
    assert_eq!(r.summary(), "1 failed, 2 passed, 2 rerun");
    // xdist's own count depends on which of two crashes at once its
    // controller handles first (under load it once counted one rerun
    // fewer): the first of up to three of its runs that agrees.
    let agreeing = (0..3)
        .map(|k| format!("xdist{k}"))
        .find(|tool| run(tool).summary() == r.summary())
        .expect("no xdist run gave rtest's summary");
    // The same testcases; a crash is a failure in rtest's JUnit (xdist's
    // crash report has no phase, which pytest's junitxml makes an error).
    let xdist: Vec<(String, String)> = junit_outcomes(&p.path().join(format!("{agreeing}.xml")))
        .into_iter()
        .map(|(case, outcome)| (case, outcome.replace("error", "failure")))
        .collect();
    assert_eq!(junit_outcomes(&p.path().join("rtest.xml")), xdist);
    // A mode that cannot take one test back (loadfile, as xdist's
    // LoadFileScheduling): no rerun.
    std::fs::remove_dir_all(p.path().join("marks-rtest")).unwrap();
    std::fs::create_dir_all(p.path().join("marks-rtest")).unwrap();
    let mut cmd = p.command(&[
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--reruns",
        "1",
        "--dist",
        "loadfile",
    ]);
    cmd.env("MARKER_DIR", p.path().join("marks-rtest"));
    let r = crate::harness::Run::from(cmd.output().unwrap());
    r.code(1);
    assert_eq!(r.summary(), "2 failed, 1 passed");
}

#[test]
fn tb_line_failures_are_pytests_own() {
    // pytest 9 shows a failure's one-line report and what the test printed
    // before its crash line under --tb=line (older pytest: the crash line
    // alone); rtest's section is pytest's, with the worker line xdist adds.
    let p = Project::new().file(
        "test_line.py",
        "def test_fail():\n    print('said before')\n    assert 1 == 2\n\ndef test_ok():\n    pass\n",
    );
    let section = |run: &Run| {
        let out = &run.stdout;
        let start = out.find("= FAILURES =").expect("a FAILURES section");
        let end = out
            .find("short test summary info")
            .expect("a short summary");
        out[start..end]
            .lines()
            .filter(|l| !l.starts_with("[gw"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let args = ["-p", "no:cacheprovider", "-p", "no:randomly", "--tb=line"];
    let serial = p.pytest(&args);
    serial.code(1);
    let want = section(&serial);
    assert!(want.contains("said before"), "{want}");
    let run = p.rtest(&[&["-n", "2"][..], &args[..]].concat());
    run.code(1);
    assert_eq!(section(&run), want);
    // A crash line is the first line of the message (an assertion's
    // explanation is not); a text report (a strict xpass) is its first 50
    // characters, as pytest's _getcrashline makes them. One worker keeps
    // pytest's order.
    let p = Project::new().file(
        "test_line.py",
        "import pytest\n\ndef test_list():\n    assert [1, 2] == [1, 3]\n\n\
         @pytest.mark.xfail(strict=True)\ndef test_xpass():\n    pass\n",
    );
    let serial = p.pytest(&args);
    serial.code(1);
    let want = section(&serial);
    assert!(
        want.contains("test_line.py:4: assert [1, 2] == [1, 3]\n"),
        "{want}"
    );
    let run = p.rtest(&[&["-n", "1"][..], &args[..]].concat());
    run.code(1);
    assert_eq!(section(&run), want);
}

#[test]
fn collect_only_with_a_broken_module_ends_as_pytest_does() {
    let p = Project::new()
        .file("test_ok.py", "def test_ok():\n    pass\n")
        .file("test_bad.py", "import nonexistent_module_xyz\n");
    let want = p.pytest(&["--co", "-q", "-p", "no:cacheprovider"]);
    let got = p.rtest(&["-n", "2", "--co", "-q", "-p", "no:cacheprovider"]);
    got.code(want.code)
        .stdout_has("test_ok.py::test_ok\n")
        .stdout_has("ERROR collecting test_bad.py")
        .stdout_has("short test summary info")
        .stdout_has("ERROR test_bad.py")
        .stdout_has("Interrupted: 1 error during collection")
        .stdout_has("\n1 test collected, 1 error in ");
}
