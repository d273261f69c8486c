//! JUnit XML: what pytest's own junitxml writes for the same run, element
//! for element (the controller's pytest writes it from the replayed
//! reports), compared with a serial `pytest --junitxml` side by side.

use crate::harness::{junit_structure, Project};

/// Every outcome, double reports (a failure then a teardown error),
/// subtests (pytest >= 9), record_* fixtures, output.
const MIXED: &str = r#"
import logging, sys, pytest

def test_pass(record_property):
    record_property("k", "v")

def test_attr(record_xml_attribute):
    record_xml_attribute("assertions", "3")

def test_suite_property(record_testsuite_property):
    record_testsuite_property("ARCH", "x86")

def test_fail():
    assert 1 == 2, "one is not two"

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown broke")

@pytest.fixture
def bad_setup():
    raise ValueError("setup broke")

def test_fail_then_teardown_error(bad_teardown):
    assert 0

def test_pass_then_teardown_error(bad_teardown):
    pass

def test_setup_error(bad_setup):
    pass

@pytest.mark.skip(reason="not today")
def test_skip():
    pass

def test_skip_inside():
    pytest.skip("inside")

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert 0

@pytest.mark.xfail(reason="fixed?")
def test_xpass():
    pass

@pytest.mark.xfail(strict=True)
def test_xpass_strict():
    pass

@pytest.mark.parametrize("x", [1, 2, 3])
def test_param(x):
    assert x != 2

def test_output():
    print("to stdout")
    sys.stderr.write("to stderr\n")
    logging.getLogger("t").warning("a log line")

def test_output_failing():
    print("before failing")
    logging.getLogger("t").error("logged")
    assert False

class TestClass:
    def test_method(self):
        pass

def test_subtests(subtests):
    for i in range(3):
        with subtests.test(msg="sub", i=i):
            assert i != 1
"#;

fn compare(ini: &str) {
    let p = Project::new()
        .file("pytest.ini", ini)
        .file("tests/test_mixed.py", MIXED)
        .file("tests/sub/test_more.py", "def test_more():\n    pass\n");
    compare_in(&p, ini, &[]);
}

/// Serial pytest and `rtest -n 2`, each with `--junitxml`, in `p`: the
/// two files must be the same structure.
fn compare_in(p: &Project, what: &str, extra: &[&str]) {
    let common = ["-p", "no:randomly", "-p", "no:cacheprovider"];
    let serial = p.pytest(&[&common[..], extra, &["--junitxml", "serial.xml"]].concat());
    let rtest = p.rtest(
        &[
            &["-n", "2"],
            &common[..],
            extra,
            &["--junitxml", "rtest.xml"],
        ]
        .concat(),
    );
    assert_eq!(
        rtest.code, serial.code,
        "{}\n{}",
        rtest.stdout, rtest.stderr
    );
    // pytest's own summary line names the file, not rtest's temp name.
    let line = format!(
        "generated xml file: {}",
        p.path().join("rtest.xml").display()
    );
    assert!(rtest.stdout.contains(&line), "{}", rtest.stdout);
    let want = junit_structure(&p.path().join("serial.xml"));
    let got = junit_structure(&p.path().join("rtest.xml"));
    if want != got {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("pytest: {a}\nrtest:  {b}"))
            .collect();
        panic!(
            "JUnit differs from pytest's ({what:?}):\n{}\n(lines: {} vs {})",
            diff.join("\n"),
            want.lines().count(),
            got.lines().count()
        );
    }
}

#[test]
fn junit_equals_pytests_own_for_the_bundled_example() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    let mut p = Project::new();
    for rel in [
        "pyproject.toml",
        "tests/conftest.py",
        "tests/test_basics.py",
        "tests/test_classes.py",
    ] {
        p = p.file(rel, &std::fs::read_to_string(src.join(rel)).unwrap());
    }
    // Its test of xdist's worker_id fixture is for distributed runs.
    let deselect = ["--deselect", "tests/test_classes.py::test_worker_id"];
    compare_in(&p, "examples/quickstart", &deselect);
}

#[test]
fn junit_equals_pytests_own_for_every_outcome() {
    compare("[pytest]\n");
}

#[test]
fn junit_ini_options_are_pytests() {
    compare(
        "[pytest]\njunit_family = xunit1\njunit_suite_name = mysuite\njunit_logging = all\njunit_log_passing_tests = false\njunit_duration_report = call\n",
    );
    compare("[pytest]\njunit_family = legacy\njunit_logging = system-out\n");
    compare("[pytest]\njunit_logging = out-err\n");
}

#[test]
fn a_session_fixtures_suite_property_is_written_once_whatever_the_workers() {
    let p = Project::new()
        .file(
            "conftest.py",
            "import pytest\n\n@pytest.fixture(scope='session', autouse=True)\ndef commit(record_testsuite_property):\n    record_testsuite_property('commit', 'abc123')\n",
        )
        .file(
            "test_a.py",
            "import pytest\n\n@pytest.mark.parametrize('i', range(6))\ndef test_i(i, record_testsuite_property):\n    record_testsuite_property('case', str(i))\n",
        );
    p.rtest(&["-n", "3", "-p", "no:randomly", "--junitxml", "j.xml"])
        .code(0);
    let xml = p.read("j.xml");
    assert_eq!(
        xml.matches("name=\"commit\" value=\"abc123\"").count(),
        1,
        "{xml}"
    );
    for i in 0..6 {
        assert!(
            xml.contains(&format!("name=\"case\" value=\"{i}\"")),
            "{xml}"
        );
    }
}
