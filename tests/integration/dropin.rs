//! Drop-in for existing pytest-xdist setups: xdist options in ini
//! `addopts` and `PYTEST_ADDOPTS`, xdist's ini keys, and their precedence.

use crate::harness::{Project, Run};
use serde_json::Value;

fn plan(p: &Project, args: &[&str], addopts: Option<&str>) -> Value {
    let mut cmd = p.command(&[&["plan", "--format", "json"], args].concat());
    if let Some(a) = addopts {
        cmd.env("PYTEST_ADDOPTS", a);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

fn setting(j: &Value, key: &str) -> (Value, String) {
    let s = &j["settings"][key];
    (
        s["value"].clone(),
        s["source"].as_str().unwrap_or("").to_string(),
    )
}

const TESTS: &str = "import os\n\ndef test_a():\n    pass\n\ndef test_b():\n    assert os.environ['PYTEST_XDIST_WORKER'].startswith('gw')\n";

#[test]
fn xdist_options_in_every_ini_file_pytest_reads() {
    for (file, text) in [
        ("pytest.ini", "[pytest]\naddopts = -n 3 --dist loadfile\n"),
        (
            "pyproject.toml",
            "[project]\nname = \"x\"\n\n[tool.pytest.ini_options]\naddopts = \"-n 3 --dist loadfile\"\n",
        ),
        ("tox.ini", "[tox]\nenvlist = py\n\n[pytest]\naddopts = -n 3 --dist loadfile\n"),
        ("setup.cfg", "[metadata]\nname = x\n[tool:pytest]\naddopts =\n    -n 3\n    --dist loadfile\n"),
    ] {
        let p = Project::new().file(file, text).file("tests/test_a.py", TESTS);
        let root = p.path().canonicalize().unwrap();
        let j = plan(&p, &[], None);
        let (dist, src) = setting(&j, "dist");
        assert_eq!(dist, "loadfile", "{file}");
        let line = text.lines().position(|l| l.starts_with("addopts")).unwrap() + 1;
        assert_eq!(src, format!("{}:{line} addopts", root.join(file).display()));
        assert_eq!(j["workers"].as_array().unwrap().len(), 3, "{file}");
    }
}

#[test]
fn precedence_ini_then_env_then_rtest_config_then_command_line() {
    let p = Project::new()
        .file(
            "pytest.ini",
            "[pytest]\naddopts = -n 1 --maxfail 5 --dist loadscope\n",
        )
        .file("tests/test_a.py", TESTS);
    let j = plan(&p, &[], Some("-n 2 --dist loadfile"));
    assert_eq!(
        setting(&j, "numprocesses"),
        (2.into(), "PYTEST_ADDOPTS".into())
    );
    assert_eq!(setting(&j, "dist").0, "loadfile");
    assert_eq!(setting(&j, "maxfail").0, 5);
    let p = p.file("conftest.kdl", "numprocesses 3\n");
    let j = plan(&p, &[], Some("-n 2"));
    assert!(setting(&j, "numprocesses").1.ends_with("conftest.kdl:1"));
    let j = plan(&p, &["-n", "4", "--maxprocesses", "2"], Some("-n 2"));
    assert_eq!(setting(&j, "numprocesses"), (4.into(), "-n".into()));
    assert_eq!(j["workers"].as_array().unwrap().len(), 2);
}

#[test]
fn rsyncdirs_and_rsyncignore_ini_keys_are_relative_to_the_ini_file() {
    let p = Project::new()
        .file(
            "proj/pytest.ini",
            "[pytest]\nrsyncdirs = src tests\nrsyncignore = *.log\n",
        )
        .file("proj/src/m.py", "x = 1\n")
        .file("proj/src/big.log", "x\n")
        .file("proj/tests/test_a.py", TESTS);
    let root = p.path().canonicalize().unwrap().join("proj");
    let mut cmd = p.command(&["plan", "--format", "json", "--tx", "popen//chdir=/tmp/x"]);
    cmd.current_dir(root.join("tests"));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dirs: Vec<&str> = j["settings"]["rsyncdirs"]["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dir"].as_str().unwrap())
        .collect();
    let want = [root.join("src"), root.join("tests")];
    assert_eq!(
        dirs,
        want.iter().map(|d| d.to_str().unwrap()).collect::<Vec<_>>()
    );
    assert_eq!(
        j["settings"]["rsyncignore"]["value"][0]["source"],
        format!("{}:3", root.join("pytest.ini").display())
    );
    assert_eq!(j["sync"][0]["files"], 1, "{}", j["sync"]);
}

#[test]
fn options_rtest_takes_never_reach_pytest() {
    // With xdist disabled, pytest itself would reject -n, --dist and --tx:
    // the run works only if rtest took them out of addopts and of
    // PYTEST_ADDOPTS, and left pytest the rest (-rA, -v).
    let p = Project::new()
        .file(
            "pytest.ini",
            "[pytest]\naddopts = -n 2 --dist loadfile -rA -p no:xdist\n",
        )
        .file("tests/test_a.py", TESTS);
    let out = p
        .command(&[])
        .env("PYTEST_ADDOPTS", "--tx popen -v")
        .output()
        .unwrap();
    let r = Run::from(out);
    r.code(0)
        .stdout_has("3 workers")
        .stdout_has("PASSED tests/test_a.py::test_b")
        .stdout_has("PASSED tests/test_a.py::test_a");
    assert_eq!(r.summary(), "2 passed");
}

#[test]
fn bad_values_in_addopts_name_the_file_and_line() {
    let p = Project::new()
        .file("pytest.ini", "[pytest]\n\naddopts = --dist sideways\n")
        .file("tests/test_a.py", TESTS);
    let root = p.path().canonicalize().unwrap();
    p.rtest(&[]).code(4).stderr_has(&format!(
        "{}:3 addopts: dist: unknown dist mode \"sideways\"",
        root.join("pytest.ini").display()
    ));
    let out = p
        .command(&[])
        .env("PYTEST_ADDOPTS", "-n lots")
        .output()
        .unwrap();
    Run::from(out)
        .code(4)
        .stderr_has("PYTEST_ADDOPTS: -n/--numprocesses: expected a whole number");
}

#[test]
fn a_broken_root_conftest_reads_as_pytest_says_it_and_leaves_no_files() {
    let p = Project::new()
        .file("conftest.py", "import helpers_that_are_not_there\n")
        .file("tests/test_a.py", TESTS)
        .file("old.xml", "<testsuites/>\n");
    let want = p.pytest(&["-p", "no:randomly"]);
    want.code(4);
    let r = p.rtest(&[
        "-n",
        "2",
        "--junitxml",
        "new.xml",
        "--report-log",
        "log.jsonl",
    ]);
    r.code(4);
    let got = r.stderr.trim_end();
    assert_eq!(got, want.stderr.trim_end(), "stdout: {}", r.stdout);
    assert!(
        got.starts_with("ImportError while loading conftest"),
        "{got}"
    );
    assert!(!got.contains("agent"), "{got}");
    let mut left: Vec<String> = std::fs::read_dir(p.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') || n.contains("tmp"))
        .collect();
    left.sort();
    assert_eq!(left, ["conftest.py", "old.xml", "tests"]);
    // A later run that fails the same way leaves an existing file as it was.
    let r = p.rtest(&["--junitxml", "old.xml"]);
    r.code(4);
    assert_eq!(p.read("old.xml"), "<testsuites/>\n");
}

#[test]
fn the_header_has_pytests_own_lines() {
    let p = Project::new()
        .file(
            "pyproject.toml",
            "[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n",
        )
        .file("tests/test_a.py", TESTS);
    let lines = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| {
                ["rootdir:", "configfile:", "testpaths:", "plugins:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(String::from)
            .collect()
    };
    let want = lines(&p.pytest(&["-p", "no:randomly"]).stdout);
    assert_eq!(want.len(), 4, "{want:?}");
    let got = lines(&p.rtest(&["-n", "2", "-p", "no:randomly"]).stdout);
    assert_eq!(got, want);
}

#[test]
fn the_seeds_popen_command_line_works_as_written() {
    // `rtest --tx 3*popen//python=pythonX`, from above a mypkg with its
    // own pytest.ini.
    let p = crate::harness::seed_project();
    let local = crate::harness::seed_local(&p);
    let tx = format!(
        "3*popen//python={}",
        crate::harness::venv_python().display()
    );
    let r = p.rtest(&["--tx", &tx, "mypkg", "--junitxml", "popen.xml"]);
    r.code(1).stdout_has("3 workers");
    assert_eq!(
        crate::harness::junit_outcomes(&p.path().join("popen.xml")),
        local
    );
}

#[test]
fn node_ids_are_shown_from_where_the_run_started_as_pytest_shows_them() {
    // Run from tests/unit (rootdir two levels up): pytest -n 2 shows every
    // node id relative to the invocation directory, `../` where a test
    // lies outside it; rtest's verbose lines and short summary do the same.
    let p = Project::new()
        .file("pytest.ini", "[pytest]\n")
        .file(
            "tests/unit/test_u.py",
            "import pytest\n\ndef test_ok():\n    pass\n\ndef test_bad():\n    assert 0\n\n@pytest.mark.xfail(reason='known')\ndef test_known():\n    assert 0\n",
        )
        .file("tests/test_top.py", "def test_top():\n    assert 0\n")
        .file("tests/test_broken.py", "import nonexistent_module_x\n");
    let dir = p.path().join("tests").join("unit");
    let run = |cmd: &mut std::process::Command| -> Vec<String> {
        let out = cmd
            .current_dir(&dir)
            .args(["-v", "-rA", "-p", "no:randomly", "-p", "no:cacheprovider"])
            .args(["-n", "2", "--continue-on-collection-errors"])
            .args([".", "../test_top.py", "../test_broken.py"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with('[') && l.contains("%]"))
            .map(|l| {
                // "[gw0] [ 25%] PASSED test_u.py::test_ok " -> "PASSED test_u.py::test_ok"
                let rest = &l[l.find("%]").unwrap() + 3..];
                rest.split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .chain(
                text.lines()
                    .filter(|l| {
                        ["PASSED ", "FAILED ", "XFAIL ", "ERROR "]
                            .iter()
                            .any(|w| l.starts_with(w))
                    })
                    .map(|l| format!("summary: {}", l.split(" - ").next().unwrap())),
            )
            .collect();
        lines.sort();
        lines
    };
    let mut pytest = std::process::Command::new(crate::harness::venv_python());
    pytest.args(["-m", "pytest"]).env("COLUMNS", "100");
    let want = run(&mut pytest);
    assert!(
        want.contains(&"summary: FAILED ../test_top.py::test_top".to_string()),
        "{want:#?}"
    );
    assert!(
        want.contains(&"summary: ERROR ../test_broken.py".to_string()),
        "{want:#?}"
    );
    assert!(
        want.contains(&"PASSED test_u.py::test_ok".to_string()),
        "{want:#?}"
    );
    let got = run(&mut p.command(&[]));
    assert_eq!(got, want);
}

#[test]
fn summary_lines_are_trimmed_as_pytest_trims_them() {
    // pytest trims a short-summary message to the line's width unless
    // -vv or on CI (`CI` or `BUILD_NUMBER` set); -v alone still trims.
    let long = "x".repeat(150);
    let p = Project::new().file(
        "test_long.py",
        &format!("def test_long():\n    assert 0, '{long}'\n"),
    );
    let summary = |out: &str| -> String {
        out.lines()
            .find(|l| l.starts_with("FAILED "))
            .unwrap_or_default()
            .to_string()
    };
    for (args, ci) in [
        (&["-n", "2", "-p", "no:randomly"][..], None),
        (&["-n", "2", "-p", "no:randomly", "-v"][..], None),
        (&["-n", "2", "-p", "no:randomly", "-vv"][..], None),
        (&["-n", "2", "-p", "no:randomly", "-v"][..], Some("true")),
    ] {
        let mut pytest = std::process::Command::new(crate::harness::venv_python());
        pytest
            .args(["-m", "pytest"])
            .args(args)
            .current_dir(p.path())
            .env("COLUMNS", "100")
            .env_remove("CI")
            .env_remove("BUILD_NUMBER");
        let mut rtest = p.command(args);
        if let Some(v) = ci {
            pytest.env("CI", v);
            rtest.env("CI", v);
        }
        let want = summary(&String::from_utf8_lossy(&pytest.output().unwrap().stdout));
        let got = summary(&String::from_utf8_lossy(&rtest.output().unwrap().stdout));
        assert!(!want.is_empty(), "{args:?}");
        assert_eq!(got, want, "{args:?} CI={ci:?}");
        assert_eq!(
            want.ends_with("..."),
            ci.is_none() && !args.contains(&"-vv"),
            "{want}"
        );
    }
}

#[test]
fn summary_messages_are_pytests_in_full_on_ci_and_for_collection_errors() {
    // On CI and with -vv pytest writes the whole message, every line of an
    // assertion diff; a collector's error has the crash line of its
    // traceback (pytest.fail at collection) or none (an import error).
    let p = Project::new()
        .file(
            "test_multi.py",
            "def test_list():\n    assert [1, 2, 3] == [1, 2, 4]\n\n\
             def test_lines():\n    raise ValueError('one\\ntwo\\nthree')\n",
        )
        .file("test_imports.py", "import no_such_module_here\n")
        .file(
            "test_fails.py",
            "import pytest\npytest.fail('not at collection', pytrace=False)\n",
        );
    let summary = |out: &str| -> Vec<String> {
        let mut lines: Vec<String> = out
            .lines()
            .skip_while(|l| !l.contains("short test summary info"))
            .skip(1)
            .take_while(|l| !l.starts_with('!') && !l.starts_with('='))
            .map(str::to_string)
            .collect();
        // Failures come in the order they happened; compare as a set of
        // entries (each with its continuation lines).
        let mut entries: Vec<String> = Vec::new();
        for l in lines.drain(..) {
            if l.starts_with("FAILED ") || l.starts_with("ERROR ") || entries.is_empty() {
                entries.push(l);
            } else if let Some(last) = entries.last_mut() {
                last.push('\n');
                last.push_str(&l);
            }
        }
        entries.sort();
        entries
    };
    for (args, ci) in [
        (
            &["-p", "no:randomly", "--continue-on-collection-errors"][..],
            Some("1"),
        ),
        (
            &[
                "-p",
                "no:randomly",
                "--continue-on-collection-errors",
                "-vv",
            ][..],
            None,
        ),
        (
            &["-p", "no:randomly", "--continue-on-collection-errors"][..],
            None,
        ),
    ] {
        let mut pytest = std::process::Command::new(crate::harness::venv_python());
        pytest
            .args(["-m", "pytest"])
            .args(args)
            .current_dir(p.path())
            .env("COLUMNS", "100")
            .env_remove("CI")
            .env_remove("BUILD_NUMBER");
        let mut rtest = p.command(&[&["-n", "2"][..], args].concat());
        if let Some(v) = ci {
            pytest.env("CI", v);
            rtest.env("CI", v);
        }
        let want = summary(&String::from_utf8_lossy(&pytest.output().unwrap().stdout));
        let got = summary(&String::from_utf8_lossy(&rtest.output().unwrap().stdout));
        assert_eq!(want.len(), 4, "{want:?}");
        assert_eq!(got, want, "{args:?} CI={ci:?}");
        let full = ci.is_some() || args.contains(&"-vv");
        assert_eq!(want.iter().any(|e| e.contains("three")), full, "{want:?}");
    }
}

#[test]
fn the_passes_section_is_pytests() {
    // -rP / -rA: the PASSES heading once any test passed, a test's own
    // heading and output when its call captured any, a fixture's
    // teardown output in any case (pytest -n 1 for a fixed order).
    // A fresh project each time: no duration history reorders the tests.
    let project = || {
        Project::new().file(
            "test_p.py",
            "import pytest\n\n\
             @pytest.fixture\ndef noisy():\n    yield\n    print('tearing down')\n\n\
             def test_quiet():\n    pass\n\n\
             def test_loud():\n    print('hello from call')\n\n\
             def test_teardown_only(noisy):\n    pass\n",
        )
    };
    let section = |out: &str| -> String {
        let start = out.find("= PASSES =").unwrap_or(out.len());
        let end = out
            .find("short test summary info")
            .or_else(|| out.rfind("passed in "))
            .unwrap_or(out.len());
        let text = &out[start..end.max(start)];
        // Up to the line that holds the end (its own `=` run differs).
        text[..text.rfind('\n').unwrap_or(0)].to_string()
    };
    for chars in ["-rP", "-rA"] {
        let args = ["-n", "1", "-p", "no:randomly", chars];
        let want = section(&project().pytest(&args).stdout);
        let got = section(&project().rtest(&args).stdout);
        assert!(want.contains("hello from call"), "{want}");
        assert!(want.contains("tearing down"), "{want}");
        assert_eq!(got, want, "{chars}");
    }
    // Nothing captured anywhere: the heading alone, as pytest prints it.
    let q = Project::new().file("test_q.py", "def test_a():\n    pass\n");
    let args = ["-n", "1", "-p", "no:randomly", "-rA"];
    let want = section(&q.pytest(&args).stdout);
    assert!(want.starts_with("= PASSES ="), "{want}");
    assert_eq!(section(&q.rtest(&args).stdout), want);
}

#[test]
fn xfail_and_xpass_read_as_in_pytest() {
    // The XPASSES section (-rX) with an xpass's output, and the summary
    // lines with the reason in full (however long, on several lines) and
    // the phase of an xfail outside the call, as `pytest -n 2` prints them.
    let p = Project::new().file(
        "test_x.py",
        "import pytest\n\n\n\
         @pytest.mark.xfail(reason='a reason long enough to go past the edge of a hundred column terminal, for sure')\n\
         def test_xpass_long():\n    print('output of the xpass')\n\n\n\
         @pytest.mark.xfail(reason='short')\ndef test_xpass():\n    pass\n\n\n\
         @pytest.mark.xfail(reason='two\\nlines')\ndef test_xfail():\n    assert 0\n\n\n\
         @pytest.fixture\ndef fx():\n    pytest.xfail('in setup')\n\n\n\
         def test_setup_xfail(fx):\n    pass\n",
    );
    let tail = |out: &str| -> Vec<String> {
        let mut lines: Vec<String> = out
            .lines()
            .skip_while(|l| !l.contains("XPASSES") && !l.contains("short test summary"))
            // The worker that ran it: `[gw0] linux -- Python ...`.
            .map(
                |l| match l.strip_prefix("[gw").and_then(|r| r.split_once(']')) {
                    Some((_, rest)) => format!("[gw]{rest}"),
                    None => l.to_string(),
                },
            )
            .collect();
        lines.pop(); // the final line (its time)
        lines.sort(); // which worker ran which test, and in what order
        lines
    };
    for chars in ["-rxX", "-rA"] {
        let args = ["-n", "2", "-p", "no:randomly", chars];
        let want = tail(&p.pytest(&args).stdout);
        assert!(want.iter().any(|l| l.contains("= XPASSES =")), "{want:?}");
        assert!(want.iter().any(|l| l == "output of the xpass"), "{want:?}");
        assert!(
            want.iter()
                .any(|l| l.starts_with("XFAIL at setup of test_x.py::test_setup_xfail")),
            "{want:?}"
        );
        assert_eq!(tail(&p.rtest(&args).stdout), want, "{chars}");
    }
}

#[test]
fn a_strict_xpass_reads_as_in_pytest() {
    let p = Project::new().file(
        "test_x.py",
        "import pytest\n\n@pytest.mark.xfail(strict=True)\ndef test_xpass_strict():\n    pass\n",
    );
    let line = |out: &str| -> String {
        out.lines()
            .find(|l| l.starts_with("FAILED "))
            .unwrap_or_default()
            .to_string()
    };
    let want = line(&p.pytest(&["-n", "1", "-p", "no:randomly"]).stdout);
    assert_eq!(
        want,
        "FAILED test_x.py::test_xpass_strict - [XPASS(strict)] "
    );
    assert_eq!(
        line(&p.rtest(&["-n", "1", "-p", "no:randomly"]).stdout),
        want
    );
}

#[test]
fn progress_lines_are_pytests_in_every_console_output_style() {
    // Where a progress line breaks, what ends it, and how -s, --setup-show
    // and the ini's console_output_style change it, as under pytest -n 2.
    let tests: String = (0..150)
        .map(|i| format!("def test_{i}():\n    pass\n"))
        .collect();
    let progress = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with('.'))
            .map(str::to_string)
            .collect()
    };
    for style in [
        None,
        Some("count"),
        Some("classic"),
        Some("progress-even-when-capture-no"),
    ] {
        let mut p = Project::new().file("test_many.py", &tests);
        if let Some(style) = style {
            p = p.file(
                "pytest.ini",
                &format!("[pytest]\nconsole_output_style = {style}\n"),
            );
        }
        for extra in [&[][..], &["-s"][..], &["--setup-show"][..]] {
            let args = [&["-n", "2", "-q", "-p", "no:randomly"][..], extra].concat();
            let want = progress(&p.pytest(&args).stdout);
            let got = progress(&p.rtest(&args).stdout);
            assert!(!want.is_empty(), "{style:?} {extra:?}");
            assert_eq!(got, want, "{style:?} {extra:?}");
        }
    }
    // -v: the worker, the progress (or none), the word and the location.
    let p = Project::new()
        .file("test_many.py", &tests)
        .file("pytest.ini", "[pytest]\nconsole_output_style = count\n");
    let out = p.rtest(&["-n", "2", "-v", "-p", "no:randomly"]).stdout;
    let line = out.lines().find(|l| l.starts_with("[gw")).unwrap();
    let shape: String = line
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert!(
        shape.starts_with("[gw9] [  9/999] PASSED test_many.py::test_") && shape.ends_with(' '),
        "{line:?}"
    );
}

#[test]
fn options_that_show_instead_of_running_are_pytests_own() {
    // --fixtures, --fixtures-per-test, --markers and --cache-show show
    // what plain pytest shows (xdist's controller shows them without
    // workers), also with -n from the ini file.
    let p = Project::new()
        .file(
            "pytest.ini",
            "[pytest]\naddopts = -n 2\nmarkers =\n    slowish: takes a while\n",
        )
        .file(
            "test_f.py",
            "import pytest\n\n@pytest.fixture\ndef thing():\n    \"\"\"A thing for tests.\"\"\"\n    return 1\n\n\
             def test_a(thing):\n    assert thing\n\ndef test_b():\n    assert 0\n",
        );
    p.rtest(&["-p", "no:randomly"]).code(1);
    for (args, want) in [
        (&["--fixtures"][..], "A thing for tests."),
        (&["--fixtures-per-test"][..], "thing -- test_f.py:3"),
        (&["--markers"][..], "@pytest.mark.slowish: takes a while"),
        (&["--cache-show"][..], "test_f.py::test_b"),
    ] {
        let xdist = p.pytest(args);
        let r = p.rtest(args);
        assert_eq!(r.code, xdist.code, "{args:?}\n{}\n{}", r.stdout, r.stderr);
        assert!(xdist.stdout.contains(want), "{args:?}\n{}", xdist.stdout);
        assert!(
            r.stdout.contains(want),
            "{args:?}\n{}\n{}",
            r.stdout,
            r.stderr
        );
        assert!(!r.stdout.contains("rtest 0.1.0"), "{}", r.stdout);
    }
}

#[test]
fn header_and_summary_options_are_pytests() {
    // --no-header, --no-summary, --no-fold-skipped, --force-short-summary
    // and -p no:terminal change what is drawn as they do under pytest -n 2.
    let p = Project::new().file(
        "test_m.py",
        "import pytest\n\n\
         def test_fail():\n    assert 1 == 2, 'x' * 200\n\n\
         @pytest.mark.skip(reason='nope')\ndef test_skip():\n    pass\n\n\
         def test_skip_inside():\n    pytest.skip('later')\n\n\
         def test_pass():\n    pass\n",
    );
    // Section headings, summary lines and header lines (sorted: tests
    // finish in any order); the final line without its time.
    let shape = |out: &str| -> Vec<String> {
        let mut lines: Vec<String> = out
            .lines()
            .filter(|l| {
                l.starts_with('=')
                    || l.starts_with("platform ")
                    || l.starts_with("rootdir: ")
                    || ["FAILED ", "SKIPPED ", "PASSED "]
                        .iter()
                        .any(|w| l.starts_with(w))
            })
            .map(|l| match l.find(" in ") {
                Some(at) if l.starts_with('=') => {
                    l[..at].trim_start_matches('=').trim().to_string()
                }
                _ => l.to_string(),
            })
            .collect();
        lines.sort();
        lines
    };
    for args in [
        &["--no-header"][..],
        &["--no-summary", "-rA"][..],
        &["-rs", "--no-fold-skipped"][..],
        &["-rs"][..],
        &["-vv", "--force-short-summary"][..],
        &["-p", "no:terminal"][..],
    ] {
        let args = [&["-n", "2", "-p", "no:randomly"][..], args].concat();
        let xdist = p.pytest(&args);
        let r = p.rtest(&args);
        assert_eq!(r.code, xdist.code, "{args:?}");
        assert_eq!(
            shape(&r.stdout),
            shape(&xdist.stdout),
            "{args:?}\n{}",
            r.stdout
        );
    }
    assert_eq!(p.rtest(&["-n", "2", "-p", "no:terminal"]).stdout, "");
}

#[test]
fn a_plugin_that_turns_the_distribution_off_runs_the_tests_in_one_process() {
    // As pytest-codspeed, mypy's --update-data or a serial tier's conftest:
    // a tryfirst pytest_cmdline_main that sees the -n given (xdist's
    // option parsing) and sets numprocesses to 0, or a tryfirst
    // pytest_configure that sets dist to "no" before xdist reads it.
    // xdist then runs every test in its own process; rtest on one worker.
    let p = Project::new()
        .file(
            "conftest.py",
            "import os, sys\nimport pytest\n\n\n\
             @pytest.hookimpl(tryfirst=True)\n\
             def pytest_cmdline_main(config):\n    \
                 if not hasattr(config, 'workerinput'):\n        \
                     sys.stderr.write('given -n %r\\n' % (config.option.numprocesses,))\n    \
                 if os.environ.get('SERIAL') == 'cmdline' and config.option.numprocesses:\n        \
                     config.option.numprocesses = 0\n\n\n\
             @pytest.hookimpl(tryfirst=True)\n\
             def pytest_configure(config):\n    \
                 if os.environ.get('SERIAL') == 'configure':\n        \
                     config.option.dist = 'no'\n",
        )
        .file(
            "test_p.py",
            "import os\nimport pytest\n\n\n@pytest.mark.parametrize('i', range(8))\n\
             def test_p(i):\n    open(os.path.join(os.environ['PIDS'], str(os.getpid())), 'w').close()\n",
        );
    // How many processes ran the tests.
    let pids = |dir: &std::path::Path| std::fs::read_dir(dir).unwrap().count();
    let args = ["-n", "2", "-p", "no:randomly"];
    // Without pytest-xdist (switched off here) no xdist reads -n: the run
    // stays distributed unless a plugin turns it off.
    let scratch = p.path().join("pids-without-xdist");
    std::fs::create_dir_all(&scratch).unwrap();
    for (serial, workers) in [
        ("", "2 workers"),
        ("cmdline", "1 worker"),
        ("configure", "1 worker"),
    ] {
        let mut cmd = p.command(&["-n", "2", "-p", "no:randomly", "-p", "no:xdist"]);
        cmd.env("SERIAL", serial).env("PIDS", &scratch);
        Run::from(cmd.output().unwrap())
            .code(0)
            .stdout_has(&format!("{workers} [8 items]"));
    }
    for serial in ["", "cmdline", "configure"] {
        let dirs = [
            p.path().join(format!("pids-{serial}-xdist")),
            p.path().join(format!("pids-{serial}-rtest")),
        ];
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        let base = Run::from(
            std::process::Command::new(crate::harness::venv_python())
                .args(["-m", "pytest"])
                .args(args)
                .current_dir(p.path())
                .env("SERIAL", serial)
                .env("PIDS", &dirs[0])
                .env("COLUMNS", "100")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap(),
        );
        base.code(0);
        let mut cmd = p.command(&args);
        cmd.env("SERIAL", serial).env("PIDS", &dirs[1]);
        let r = Run::from(cmd.output().unwrap());
        r.code(0);
        assert_eq!(r.summary(), "8 passed");
        for (run, dir) in [(&base, &dirs[0]), (&r, &dirs[1])] {
            let said = run.stdout.clone() + &run.stderr;
            assert!(said.contains("given -n 2"), "{serial}: {said}");
            let expected = if serial.is_empty() { 2 } else { 1 };
            assert_eq!(pids(dir), expected, "{serial}: {said}");
        }
        if !serial.is_empty() {
            r.stdout_has("1 worker [8 items]");
        }
    }
}

#[test]
fn a_conftest_decides_how_many_auto_workers_as_under_xdist() {
    // xdist's -n auto asks pytest_xdist_auto_num_workers (a conftest.py
    // that caps the workers, say); an explicit -n N does not.
    let p = Project::new()
        .file(
            "conftest.py",
            "import os\n\n\n\
             def pytest_xdist_auto_num_workers(config):\n    \
                 if config.option.numprocesses not in ('auto', 'logical'):\n        return None\n    \
                 return eval(os.environ.get('WANT', '3'))\n",
        )
        .file(
            "test_w.py",
            "import os\nimport pytest\n\n\n@pytest.mark.parametrize('i', range(9))\n\
             def test_w(i, worker_id):\n    print('W', worker_id, os.environ['PYTEST_XDIST_WORKER_COUNT'])\n",
        );
    p.pytest(&["-n", "auto", "-p", "no:randomly"])
        .code(0)
        .stdout_has("3 workers [9 items]");
    let counts = |run: &Run| -> Vec<String> {
        let mut seen: Vec<String> = run
            .stdout
            .lines()
            .filter_map(|l| l.split_once("W gw").map(|(_, rest)| format!("gw{rest}")))
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    // -n auto, -n logical, and no -n at all (rtest's default is auto);
    // twice, so the second run starts on what the first one remembered.
    for args in [&["-n", "auto"][..], &["-n", "logical"], &[], &[]] {
        let run = p.rtest(&[args, &["-s", "-p", "no:randomly"]].concat());
        run.code(0).stdout_has("3 workers [9 items]");
        for seen in counts(&run) {
            assert!(seen.ends_with(" 3"), "{args:?}: {seen}\n{}", run.stdout);
        }
    }
    p.rtest(&["-n", "2", "-p", "no:randomly"])
        .code(0)
        .stdout_has("2 workers [9 items]");
    p.rtest(&["-n", "auto", "--maxprocesses", "2", "-p", "no:randomly"])
        .code(0)
        .stdout_has("2 workers [9 items]");
    // 0: xdist runs in its own process, undistributed; rtest in one worker.
    let mut zero = p.command(&["-n", "auto", "-p", "no:randomly"]);
    zero.env("WANT", "0");
    Run::from(zero.output().unwrap())
        .code(0)
        .stdout_has("1 worker [9 items]");
    // Not a number: pytest's INTERNALERROR (exit 3), and the tests run on
    // as many workers as rtest counts.
    let mut bad = p.command(&["-n", "auto", "-p", "no:randomly"]);
    bad.env("WANT", "'many'");
    let run = Run::from(bad.output().unwrap());
    run.code(3).stdout_has("9 passed");
    let said = run.stdout.clone() + &run.stderr;
    assert!(
        said.contains("pytest_xdist_auto_num_workers (") && said.contains("returned 'many'"),
        "{said}"
    );
}

#[test]
fn max_warnings_fails_a_passing_run_as_pytest_does() {
    // pytest 9.2: more warnings than --max-warnings (or the ini's
    // max_warnings) allows turns a pass into exit status 6. A warning at
    // import counts once (every worker collects it; serial pytest sees it
    // once), in a run whose controller is remembered as needed too.
    let p = Project::new().file(
        "test_w.py",
        "import warnings\n\nwarnings.warn(UserWarning('at import'))\n\n\
         def test_a():\n    warnings.warn(UserWarning('a'))\n\n\
         def test_b():\n    warnings.warn(UserWarning('b'))\n\n\
         def test_c():\n    pass\n",
    );
    let serial = p.pytest(&["--max-warnings", "2"]);
    serial
        .code(6)
        .stdout_has("Tests pass, but maximum allowed warnings exceeded: 3 > 2");
    for _ in 0..2 {
        let run = p.rtest(&["-n", "2", "--max-warnings", "2"]);
        run.code(6)
            .stdout_has("Tests pass, but maximum allowed warnings exceeded: 3 > 2");
        assert_eq!(run.summary(), "3 passed, 3 warnings");
    }
    p.rtest(&["-n", "2", "--max-warnings", "3"])
        .code(0)
        .stdout_lacks("maximum allowed warnings");
    let p = p.file("pytest.ini", "[pytest]\nmax_warnings = 1\n");
    p.rtest(&["-n", "2"]).code(6);
    // A failing run stays a failing run.
    let p = p.file("test_f.py", "def test_f():\n    assert 0\n");
    p.rtest(&["-n", "2"]).code(1);
}

#[test]
fn a_status_a_plugin_sets_is_the_exit_status_as_under_xdist() {
    let p = Project::new()
        .file(
            "conftest.py",
            "def pytest_sessionfinish(session):\n    session.exitstatus = 42\n",
        )
        .file("test_a.py", "def test_a():\n    pass\n");
    p.pytest(&["-n", "2"]).code(42);
    p.rtest(&["-n", "2"]).code(42);
}

#[test]
fn a_report_of_a_phase_pytest_does_not_name_is_a_failure_as_pytest_counts_it() {
    // pytest-forked reports a crashed child as a failure "???" (neither
    // setup nor teardown): pytest counts it as failed, not as an error.
    let p = Project::new()
        .file(
            "conftest.py",
            r#"
import pytest
from _pytest.runner import CallInfo


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    if item.name != "test_odd":
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    call = CallInfo.from_call(lambda: 0 / 0, "???")
    report = item.ihook.pytest_runtest_makereport(item=item, call=call)
    item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
"#,
        )
        .file(
            "test_a.py",
            "def test_odd():\n    pass\n\ndef test_b():\n    pass\n",
        );
    // (pytest-rerunfailures expects every failed report's item to have
    // been set up.)
    let args = ["-n", "2", "-rA", "-p", "no:rerunfailures"];
    let xdist = p.pytest(&args);
    let run = p.rtest(&args);
    for r in [&xdist, &run] {
        r.code(1)
            .stdout_has("FAILED test_a.py::test_odd - ZeroDivisionError")
            .stdout_has("= FAILURES =")
            .stdout_lacks("= ERRORS =");
        assert_eq!(r.summary(), "1 failed, 1 passed");
    }
}

#[test]
fn stepwise_remembers_the_failing_test_and_starts_from_it_as_under_xdist() {
    // pytest's stepwise plugin writes its cache only outside workers: under
    // xdist the controller does, from the reports it sees.
    let p = Project::new().file(
        "test_sw.py",
        "import pytest\n\n@pytest.mark.parametrize('i', range(8))\ndef test_a(i):\n    assert i != 5\n",
    );
    let last_failed = |p: &Project| -> Value {
        let text = p.read(".pytest_cache/v/cache/stepwise");
        serde_json::from_str::<Value>(&text).unwrap()["last_failed"].clone()
    };
    // (xdist exits 2 there, as interrupted; serial pytest and rtest 1.)
    p.pytest(&["-n", "2", "--sw"]);
    let want = last_failed(&p);
    assert_eq!(want, "test_sw.py::test_a[5]");
    std::fs::remove_dir_all(p.path().join(".pytest_cache")).unwrap();

    let run = p.rtest(&["-n", "2", "--sw"]);
    run.code(1)
        .stdout_has("Interrupted: Test failed, continuing from this test next run.")
        .stdout_lacks("cannot be unset");
    assert!(!run.stderr.contains("cannot be unset"), "{}", run.stderr);
    assert_eq!(
        run.stdout
            .matches("continuing from this test next run")
            .count(),
        1,
        "{}",
        run.stdout
    );
    assert_eq!(last_failed(&p), want);
    // The next run starts from it: the tests before it are deselected.
    let run = p.rtest(&["-n", "2", "--sw", "-p", "no:randomly"]);
    run.code(1)
        .stdout_has("stepwise: skipping 5 already passed items");
    assert!(run.summary().contains("5 deselected"), "{}", run.stdout);
    // Fixed, it passes and is forgotten.
    let p = p.file(
        "test_sw.py",
        "import pytest\n\n@pytest.mark.parametrize('i', range(8))\ndef test_a(i):\n    pass\n",
    );
    p.rtest(&["-n", "2", "--sw"]).code(0);
    assert_eq!(last_failed(&p), Value::Null);
}

#[test]
fn what_plugins_report_after_collection_is_in_the_header_as_in_pytest() {
    // pytest's own --lf and --sw say what they did with the collection
    // (xdist's controller, which collects nothing, never says it).
    let p = Project::new()
        .file(
            "test_a.py",
            "import pytest\n\n@pytest.mark.parametrize('i', range(4))\ndef test_a(i):\n    assert i != 2\n",
        )
        .file("test_b.py", "def test_b():\n    pass\n");
    let said = |out: &str, prefix: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    p.pytest(&[]).code(1);
    let want = said(&p.pytest(&["--lf"]).stdout, "run-last-failure:");
    assert_eq!(
        want,
        ["run-last-failure: rerun previous 1 failure (skipped 1 file)"]
    );
    let run = p.rtest(&["-n", "2", "--lf"]);
    run.code(1);
    assert_eq!(
        said(&run.stdout, "run-last-failure:"),
        want,
        "{}",
        run.stdout
    );
    // Below rtest's workers, above the progress.
    let at = run.stdout.find("run-last-failure:").unwrap();
    assert!(run.stdout.find("rtest ").unwrap() < at, "{}", run.stdout);
    // Quiet: not said, as in pytest.
    p.rtest(&["-n", "2", "--lf", "-q"])
        .code(1)
        .stdout_lacks("run-last-failure:");
}

#[test]
fn a_suite_parametrized_over_a_set_collects_alike_on_every_worker() {
    // Strings hash differently in every process unless PYTHONHASHSEED is
    // set: a set's order, and so the parametrization, differs from worker
    // to worker (pytest-xdist stops: "Different tests were collected").
    // rtest gives every worker one seed per run, so it runs as plain pytest.
    let names: Vec<String> = (0..40).map(|i| format!("'name{i}'")).collect();
    let p = Project::new().file(
        "test_set.py",
        &format!(
            "import os, pytest\n\nNAMES = {{{}}}\n\n\
             @pytest.mark.parametrize('name', NAMES)\n\
             def test_name(name):\n    assert name.startswith('name')\n\n\
             def test_seed():\n    print('seed', os.environ.get('PYTHONHASHSEED'))\n",
            names.join(", ")
        ),
    );
    for _ in 0..2 {
        let out = p
            .command(&["-n", "2", "-p", "no:randomly", "-v", "-rA"])
            .env_remove("PYTHONHASHSEED")
            .output()
            .unwrap();
        let run = Run::from(out);
        run.code(0).stdout_has("41 passed");
        let seed = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("PYTHONHASHSEED="))
            .and_then(|l| l.split_whitespace().next())
            .expect("the seed is in the -v header")
            .to_string();
        // The test saw the seed the header names.
        run.stdout_has(&format!("seed {seed}"));
    }
    // One the user set is theirs, and not announced.
    let out = p
        .command(&["-n", "2", "-p", "no:randomly", "-v", "-rA"])
        .env("PYTHONHASHSEED", "123")
        .output()
        .unwrap();
    let run = Run::from(out);
    run.code(0)
        .stdout_has("seed 123")
        .stdout_lacks("PYTHONHASHSEED=");
}

#[test]
fn xdists_maxschedchunk_and_testrunuid_are_taken_and_looponfail_refused() {
    // rtest takes them (pytest never sees them: with xdist switched off it
    // would not know them), as `pytest -n` users have them in addopts.
    let p = Project::new().file(
        "test_uid.py",
        "import os, pytest\n\n\
         @pytest.mark.parametrize('i', range(30))\n\
         def test_uid(i, testrun_uid):\n\
         \x20   assert testrun_uid == 'shared-run-7'\n\
         \x20   assert os.environ['PYTEST_XDIST_TESTRUNUID'] == 'shared-run-7'\n",
    );
    p.rtest(&[
        "-n",
        "2",
        "-p",
        "no:xdist",
        "-p",
        "no:randomly",
        "--maxschedchunk",
        "1",
        "--testrunuid=shared-run-7",
    ])
    .code(0)
    .stdout_has("30 passed");
    // xdist's loop on failure would wait for changes in every process
    // forever: refused at once, with what to do instead.
    for flag in ["-f", "--looponfail"] {
        p.rtest(&["-n", "2", flag]).code(4).stderr_has(
            "-f/--looponfail (pytest-xdist's loop on failure) is not supported by rtest",
        );
    }
}

#[test]
fn pytest_exit_in_a_test_ends_the_run_with_pytests_line_and_status() {
    // pytest.exit() in a test: the run stops with pytest's line for it,
    // after the final line when the call gave a status (which is the exit
    // status), before it otherwise (exit status 2), as plain pytest writes
    // it (xdist: INTERNALERROR).
    for (call, code, after) in [
        ("pytest.exit('enough of this', returncode=5)", 5, true),
        ("pytest.exit('enough of this')", 2, false),
    ] {
        let p = Project::new().file(
            "test_e.py",
            &format!("import pytest\n\ndef test_a():\n    pass\n\ndef test_exit():\n    {call}\n"),
        );
        let want = p.pytest(&["-p", "no:randomly", "-p", "no:xdist"]);
        let got = p.rtest(&["-n", "2", "-p", "no:randomly"]);
        assert_eq!(want.code, code, "{}", want.stdout);
        got.code(code);
        for run in [&want, &got] {
            let lines: Vec<&str> = run.stdout.lines().collect();
            let exit = lines
                .iter()
                .position(|l| {
                    l.starts_with("!!") && l.contains(" _pytest.outcomes.Exit: enough of this ")
                })
                .unwrap_or_else(|| panic!("no exit line:\n{}", run.stdout));
            let last = lines
                .iter()
                .rposition(|l| l.starts_with("==") && l.contains(" in "))
                .unwrap_or_else(|| panic!("no final line:\n{}", run.stdout));
            assert_eq!(exit > last, after, "{}", run.stdout);
        }
        assert!(!got.stdout.contains("ended the session"), "{}", got.stdout);
    }
}

#[test]
fn pytest_exit_in_a_conftests_sessionstart_ends_the_run_at_once_as_in_pytest() {
    // The controller's session and every worker's meet it before anything
    // runs: rtest exits with its status and pytest's line (it waited for
    // the workers' input forever).
    let p = Project::new()
        .file(
            "conftest.py",
            "import pytest\n\ndef pytest_sessionstart(session):\n    pytest.exit('service is down', returncode=4)\n",
        )
        .file("test_a.py", "def test_a():\n    pass\n");
    for _ in 0..2 {
        let want = p.pytest(&["-p", "no:randomly", "-p", "no:xdist"]);
        assert_eq!(want.code, 4);
        let got = p.rtest(&["-n", "2", "-p", "no:randomly", "--startup-timeout", "60"]);
        got.code(4)
            .stdout_has("_pytest.outcomes.Exit: service is down")
            .stdout_lacks("passed");
    }
}

#[test]
fn pytest_exit_at_configure_time_says_what_pytest_says_where_pytest_says_it() {
    // At configure time pytest writes only `Exit: why` to stderr; in
    // sessionstart its terminal adds its "!!!" line on stdout.
    for (hook, on_stdout) in [("pytest_configure", false), ("pytest_sessionstart", true)] {
        let p = Project::new()
            .file(
                "conftest.py",
                &format!("import pytest\n\ndef {hook}(*args):\n    pytest.exit('service is down', returncode=7)\n"),
            )
            .file("test_a.py", "def test_a():\n    pass\n");
        let want = p.pytest(&["-p", "no:randomly", "-p", "no:xdist"]);
        assert_eq!(want.code, 7);
        assert_eq!(
            want.stdout.contains("Exit: service is down"),
            on_stdout,
            "{hook}: {}",
            want.stdout
        );
        assert!(
            want.stderr.contains("Exit: service is down"),
            "{hook}: {}",
            want.stderr
        );
        let got = p.rtest(&["-n", "2", "-p", "no:randomly"]);
        got.code(7).stderr_has("Exit: service is down");
        assert_eq!(
            got.stdout.contains("Exit: service is down"),
            on_stdout,
            "{hook}: {}",
            got.stdout
        );
        assert_eq!(
            got.stderr.matches("Exit: service is down").count(),
            1,
            "{hook}: {}",
            got.stderr
        );
    }
}

#[test]
fn pytest_exit_in_a_conftest_hook_that_hears_a_failure_stops_the_run_with_its_status() {
    // A conftest that stops the run at the first failure it hears of: in
    // the workers and in the controller's session (xdist's controller:
    // exit 7). The failing test is reported, not lost.
    let p = Project::new()
        .file(
            "conftest.py",
            "import pytest\n\ndef pytest_runtest_logreport(report):\n    if report.failed:\n        pytest.exit('stop at first failure', returncode=7)\n",
        )
        .file(
            "test_x.py",
            "def test_a():\n    pass\n\ndef test_b():\n    assert 0\n\ndef test_c():\n    pass\n",
        );
    let xml = p.path().join("r.xml");
    let got = p.rtest(&[
        "-n",
        "2",
        "-p",
        "no:randomly",
        "--junitxml",
        xml.to_str().unwrap(),
    ]);
    got.code(7)
        .stdout_has("FAILED test_x.py::test_b")
        .stdout_has("_pytest.outcomes.Exit: stop at first failure")
        .stdout_lacks("INTERNALERROR");
    let outcomes = crate::harness::junit_outcomes(&xml);
    assert!(
        outcomes
            .iter()
            .any(|(id, o)| id.ends_with("test_b") && o == "failure"),
        "{outcomes:?}"
    );
}

#[test]
fn a_session_that_fails_to_start_in_every_worker_is_not_retried() {
    // A conftest's pytest_sessionstart that raises is pytest's verdict in
    // every process: the run ends with it (3, or 2 for a KeyboardInterrupt,
    // as pytest's), without starting worker after worker.
    for (raise, code) in [
        ("RuntimeError('boom at start')", 3),
        ("KeyboardInterrupt()", 2),
    ] {
        let p = Project::new()
            .file(
                "conftest.py",
                &format!("def pytest_sessionstart(session):\n    raise {raise}\n"),
            )
            .file("test_a.py", "def test_a():\n    pass\n");
        let want = p.pytest(&["-p", "no:randomly", "-p", "no:xdist"]);
        assert_eq!(want.code, code, "{}", want.stdout);
        let got = p.rtest(&["-n", "2", "-p", "no:randomly"]);
        got.code(code).stdout_lacks("passed");
        assert!(!got.stderr.contains("replacing it"), "{}", got.stderr);
    }
}

#[test]
fn workers_import_as_python_m_pytest_does_and_leave_subprocesses_environment_alone() {
    // `python -c` put "" on a worker's sys.path: imports followed a test's
    // chdir, and a test running xdist inside (xdist's own suite) saw it.
    // PYTHONPATH got the working directory, which xdist gives only remote
    // workers. Both tools must pass the same tests.
    let p = Project::new().file(
        "tests/test_path.py",
        "import importlib, os, sys\nimport pytest\n\n\
         def test_no_empty_entry_and_the_directory_by_name():\n    \
         assert '' not in sys.path\n    assert os.getcwd() in sys.path\n\n\
         def test_a_chdir_does_not_change_what_imports(tmp_path, monkeypatch):\n    \
         (tmp_path / 'only_in_tmp.py').write_text('X = 1\\n')\n    \
         monkeypatch.chdir(tmp_path)\n    importlib.invalidate_caches()\n    \
         with pytest.raises(ImportError):\n        import only_in_tmp\n\n\
         def test_pythonpath_is_the_users():\n    \
         assert os.getcwd() not in os.environ.get('PYTHONPATH', '').split(os.pathsep)\n",
    );
    let want = p.pytest(&["-n", "2", "-p", "no:randomly"]);
    assert_eq!(want.code, 0, "{}", want.stdout);
    p.rtest(&["-n", "2", "-p", "no:randomly"])
        .code(0)
        .stdout_has("3 passed");
}

#[test]
fn the_warnings_summary_says_where_each_warning_came_from_as_pytest_does() {
    // Warnings outside any test (an unknown ini key at configure time, a
    // module's at import) under the file and line they came from; a test
    // that warns three times listed three times; twelve tests with one
    // message counted per file.
    let p = Project::new()
        .file("pytest.ini", "[pytest]\nno_such_key = 1\n")
        .file(
            "test_w.py",
            "import warnings\n\nimport pytest\n\nwarnings.warn(UserWarning('at import'))\n\n\
             def test_thrice():\n    for _ in range(3):\n        warnings.warn(DeprecationWarning('again'))\n\n\
             @pytest.mark.parametrize('i', range(12))\n\
             def test_many(i):\n    warnings.warn(UserWarning('many'))\n",
        );
    let section = |run: &Run| {
        let out = &run.stdout;
        let start = out.find("warnings summary").expect("a warnings summary");
        let end = out.find("-- Docs:").expect("the docs line");
        out[start..end].to_string()
    };
    let serial = p.pytest(&["-p", "no:randomly"]);
    serial.code(0);
    let want = section(&serial);
    assert!(want.contains("\ntest_w.py:5\n"), "{want}");
    assert!(want.contains("test_w.py: 12 warnings"), "{want}");
    let run = p.rtest(&["-n", "2", "--dist", "loadfile", "-p", "no:randomly"]);
    run.code(0);
    assert_eq!(section(&run), want);
    assert_eq!(run.summary(), serial.summary());
}

#[test]
fn skips_by_marker_are_folded_by_file_as_pytest_folds_them() {
    // pytest's short summary folds skips at setup by a skip marker that
    // is not the test function's own (one a conftest adds, a module's
    // pytestmark) by file and reason, without a line; a decorated test,
    // skipif and pytest.skip() in a test keep their line.
    let p = Project::new()
        .file(
            "conftest.py",
            "import pytest\n\n\
             def pytest_collection_modifyitems(items):\n    for item in items:\n        \
             if item.name.startswith('test_pg'):\n            \
             item.add_marker(pytest.mark.skip(reason='needs postgres'))\n",
        )
        .file(
            "test_a.py",
            "import pytest\n\n\
             def test_pg_one():\n    pass\n\n\
             def test_pg_two():\n    pass\n\n\
             @pytest.mark.skip(reason='later')\ndef test_three():\n    pass\n\n\
             @pytest.mark.skipif(True, reason='never')\ndef test_four():\n    pass\n\n\
             @pytest.mark.skipif(True, reason='never')\ndef test_five():\n    pass\n\n\
             def test_six():\n    pytest.skip('inside')\n",
        )
        .file(
            "test_b.py",
            "import pytest\n\npytestmark = pytest.mark.skip(reason='whole module')\n\n\
             def test_x():\n    pass\n\ndef test_y():\n    pass\n",
        );
    let section = |run: &Run| {
        let out = &run.stdout;
        let start = out
            .find("short test summary info")
            .expect("a short summary");
        let mut lines: Vec<&str> = out[start..]
            .lines()
            .filter(|l| l.starts_with("SKIPPED"))
            .collect();
        // Workers finish in their own order; pytest lists in the order of
        // the reports.
        lines.sort_unstable();
        lines.join("\n")
    };
    let serial = p.pytest(&["-rs", "-p", "no:randomly"]);
    serial.code(0);
    let want = section(&serial);
    assert!(
        want.contains("SKIPPED [2] test_a.py: needs postgres"),
        "{want}"
    );
    assert!(want.contains("SKIPPED [2] test_b.py:"), "{want}");
    let run = p.rtest(&["-n", "2", "-rs", "-p", "no:randomly"]);
    run.code(0);
    assert_eq!(section(&run), want);
    assert_eq!(run.summary(), serial.summary());
}
