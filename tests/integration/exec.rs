//! The exec= transport: workers reached through a command that gives a pipe
//! to a Python. Sandboxes made with bubblewrap stand in for containers and
//! pods: each has its own empty /tmp and home and sees the machine's
//! /usr/bin/python3, which has no pytest, so the project must really be
//! synced and pytest shipped.
//!
//! Without `bwrap` (Debian's `bubblewrap`) the sandbox tests are skipped,
//! unless `RTEST_REQUIRE_BWRAP` is set (as `.ci/run` does): then they fail.

use crate::harness::{junit_outcomes, running, wait_until, Project, Run};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The interpreter inside the sandboxes: the system's, without pytest.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The bubblewrap command of a sandbox (with `extra` options before the
/// Python), or `None` (skip) when bubblewrap cannot make one here.
fn bwrap(extra: &str) -> Option<String> {
    let usable = Path::new(SYSTEM_PYTHON).exists()
        && Command::new("bwrap")
            .args([
                "--ro-bind",
                "/",
                "/",
                "--unshare-pid",
                "--proc",
                "/proc",
                "true",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !usable {
        if std::env::var_os("RTEST_REQUIRE_BWRAP").is_some() {
            panic!("bubblewrap cannot make a sandbox with {SYSTEM_PYTHON} here, and RTEST_REQUIRE_BWRAP is set: install bubblewrap and python3");
        }
        eprintln!(
            "skipped: bubblewrap or {SYSTEM_PYTHON} is missing (install bubblewrap, python3)"
        );
        return None;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    Some(
        format!(
        "bwrap --die-with-parent --unshare-pid --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --tmpfs {home} {extra}"
    )
        .trim_end()
        .to_string(),
    )
}

/// A suite with every outcome, that checks it runs in a copy.
fn suite() -> Project {
    Project::new()
        .file(
            "pytest.ini",
            "[pytest]\naddopts = -p no:cacheprovider -p no:randomly\n",
        )
        .file("pkg/__init__.py", "")
        .file("pkg/calc.py", "def add(a, b):\n    return a + b\n")
        .file(
            "tests/test_calc.py",
            r#"
import os, pytest
from pkg.calc import add

@pytest.mark.parametrize("i", range(12))
def test_add(i):
    assert add(i, 1) == i + 1

def test_fails():
    assert add(1, 1) == 3

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass

@pytest.mark.xfail
def test_xfail():
    assert False

def test_error(broken):
    pass

@pytest.fixture
def broken():
    raise RuntimeError("fixture")

def test_where():
    # pytest and the project come from copies, not from this machine's tree
    import pytest as p
    print("pytest from", p.__file__, "cwd", os.getcwd())
"#,
        )
}

fn system_python_lacks_pytest() -> bool {
    !Command::new(SYSTEM_PYTHON)
        .args(["-c", "import pytest"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn sandboxed_workers_get_the_tree_and_pytest_and_match_a_local_run() {
    let Some(cmd) = bwrap("") else { return };
    let p = suite();
    let local = p.rtest(&["-n", "2", "--junitxml", "local.xml"]);
    local.code(1);
    let tx = format!("2*exec={cmd}//python={SYSTEM_PYTHON}");
    let r = p.rtest(&["--tx", &tx, "--junitxml", "exec.xml", "-v"]);
    r.code(1);
    assert_eq!(r.summary(), local.summary());
    assert_eq!(
        junit_outcomes(&p.path().join("exec.xml")),
        junit_outcomes(&p.path().join("local.xml"))
    );
    // Each sandbox is a place of its own: two syncs, two shipped pytests.
    assert_eq!(r.stdout.matches("synced to ").count(), 2, "{}", r.stdout);
    if system_python_lacks_pytest() {
        assert_eq!(
            r.stdout.matches("has no pytest: pytest ").count(),
            2,
            "{}",
            r.stdout
        );
    }
    r.stdout_has("exec worker gw0")
        .stdout_has("exec worker gw1");
    // The header names the command once, not as a host too.
    r.stdout_has(&format!("gw0, gw1: exec={cmd}, CPython "));
}

#[test]
fn workers_that_see_the_same_files_share_one_sync() {
    // `env` runs the Python right here: every worker sees the same files,
    // as `docker exec` into one container does.
    let p = suite();
    let tx = format!(
        "3*exec=env//python={}",
        crate::harness::venv_python().display()
    );
    let r = p.rtest(&["--tx", &tx, "--junitxml", "j.xml"]);
    r.code(1);
    assert_eq!(
        r.summary(),
        "1 failed, 13 passed, 1 skipped, 1 xfailed, 1 error"
    );
    assert_eq!(r.stdout.matches("synced to ").count(), 1, "{}", r.stdout);
    assert_eq!(r.stdout.matches("'s copy in ").count(), 2, "{}", r.stdout);
    assert_eq!(junit_outcomes(&p.path().join("j.xml")).len(), 17);
    // The plan's probe says so before any run, writing nothing.
    let plan = p.rtest(&["plan", "--probe", "--tx", &tx]);
    plan.code(0)
        .stdout_has("(gw0, gw1, gw2): Python 3.")
        .stdout_has("one place: these 3 share their files (synced once)");
}

#[test]
fn probe_tells_sandboxes_apart() {
    let Some(cmd) = bwrap("") else { return };
    let p = suite();
    let tx = format!("2*exec={cmd}//python={SYSTEM_PYTHON}");
    let r = p.rtest(&["plan", "--probe", "--tx", &tx, "--format", "json"]);
    r.code(0);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let probes = j["probe"].as_array().expect("probe list");
    assert_eq!(probes.len(), 2, "{}", r.stdout);
    assert_ne!(probes[0]["place"], probes[1]["place"]);
    assert!(probes.iter().all(|p| p["python_version"].is_string()));
}

#[test]
fn chdir_env_and_nice_apply_inside_the_sandbox() {
    let Some(cmd) = bwrap("") else { return };
    let want = crate::harness::niceness_after(5);
    let p = Project::new().file(
        "test_env.py",
        &format!(
            "import os\n\ndef test_env():\n    assert os.getcwd() == '/tmp/w'\n    assert os.environ['GREETING'] == 'hello world'\n    assert os.nice(0) == {want}\n    assert os.environ['PYTEST_XDIST_WORKER'] == 'box'\n"
        ),
    );
    let tx = format!(
        "exec={cmd}//python={SYSTEM_PYTHON}//chdir=/tmp/w//env:GREETING=hello world//nice=5//id=box"
    );
    let r = p.rtest(&["--tx", &tx, "--rsyncdir", "."]);
    r.code(0);
    assert_eq!(r.summary(), "1 passed");
}

/// Start rtest, wait for `marker`'s test to run, then act.
fn spawn_and_wait(p: &Project, args: &[&str], marker: &str) -> std::process::Child {
    let child = p
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the test to start", Duration::from_secs(60), || {
        running(marker)
    });
    child
}

#[test]
fn a_sandbox_killed_mid_run_costs_its_test_and_is_replaced() {
    // The sandbox's pid goes to a file (the shell execs bwrap in place).
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let Some(cmd) = bwrap("") else { return };
    let cmd = format!(
        "sh -c 'echo $$ >> {}; exec \"$@\"' sh {cmd}",
        pids.display()
    );
    let marker = format!("rtest-box-{}", std::process::id());
    let p = Project::new()
        .file(
            "pytest.ini",
            "[pytest]\naddopts = -p no:cacheprovider -p no:randomly\n",
        )
        .file(
            "test_box.py",
            &format!(
                r#"
import subprocess, time

def test_before():
    pass

def test_killed():
    subprocess.run(["sh", "-c", "sleep 300; echo {marker}"])

def test_after_1():
    pass

def test_after_2():
    pass
"#
            ),
        );
    let tx = format!("exec={cmd}//python={SYSTEM_PYTHON}");
    let child = spawn_and_wait(&p, &["--tx", &tx, "--junitxml", "j.xml"], &marker);
    let first: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the sandbox this test started.
    unsafe {
        libc::kill(first, libc::SIGKILL);
    }
    let r = Run::from(child.wait_with_output().unwrap());
    r.code(1).stdout_has("FAILED test_box.py::test_killed");
    assert_eq!(r.summary(), "1 failed, 3 passed");
    let outcomes = junit_outcomes(&p.path().join("j.xml"));
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    // The replacement is a new sandbox, synced afresh.
    assert_eq!(std::fs::read_to_string(&pids).unwrap().lines().count(), 2);
    wait_until("the sandboxed test to end", Duration::from_secs(10), || {
        !running(&marker)
    });
}

#[test]
fn ctrl_c_leaves_no_sandbox_behind() {
    let Some(cmd) = bwrap("") else { return };
    let marker = format!("rtest-ctrlc-{}", std::process::id());
    let p = Project::new().file(
        "test_slow.py",
        &format!(
            "import subprocess, time\n\ndef test_slow():\n    subprocess.Popen(['sh', '-c', 'sleep 300; echo {marker}'])\n    time.sleep(300)\n"
        ),
    );
    let tx = format!("2*exec={cmd}//python={SYSTEM_PYTHON}");
    let child = spawn_and_wait(&p, &["--tx", &tx], &marker);
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let r = Run::from(child.wait_with_output().unwrap());
    r.code(2);
    wait_until("the sandboxes to end", Duration::from_secs(10), || {
        !running(&marker)
    });
}

#[test]
fn a_test_hung_in_a_sandbox_is_killed_by_the_timeout() {
    let Some(cmd) = bwrap("") else { return };
    let marker = format!("rtest-hung-{}", std::process::id());
    let p = Project::new().file(
        "test_hung.py",
        &format!(
            "import subprocess\n\ndef test_hung():\n    subprocess.run(['sh', '-c', 'sleep 300; echo {marker}'])\n\ndef test_fine():\n    pass\n"
        ),
    );
    let tx = format!("exec={cmd}//python={SYSTEM_PYTHON}");
    let r = p.rtest(&["--tx", &tx, "--timeout", "3", "-p", "no:randomly"]);
    r.code(1).stdout_has("ran longer than 3s");
    assert_eq!(r.summary(), "1 failed, 1 passed");
    wait_until("the hung test to end", Duration::from_secs(10), || {
        !running(&marker)
    });
}

#[test]
fn bad_commands_are_named_and_the_run_goes_on() {
    let p = suite();
    let cases = [
        (
            "exec=rtest-no-such-command -i",
            "cannot run \"rtest-no-such-command\": No such file or directory",
        ),
        (
            "exec=sh -c 'echo Welcome to the cluster; exec \"$@\"' sh",
            "something printed \"Welcome to the cluster\" before python3 started the agent",
        ),
        (
            "exec=sh -c 'echo no python here >&2; exit 3'",
            "it said: no python here (the command ended: exit code 3)",
        ),
    ];
    for (tx, said) in cases {
        let r = p.rtest(&["--tx", tx, "-n", "1"]);
        r.code(1);
        assert_eq!(
            r.summary(),
            "1 failed, 13 passed, 1 skipped, 1 xfailed, 1 error"
        );
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with("worker gw1 (exec="))
            .unwrap_or_else(|| panic!("no line about gw1 for {tx}:\n{}", r.stdout));
        assert!(line.contains(said), "{line}");
        assert!(line.ends_with("going on without gw1"), "{line}");
        // Fatal when every host is required.
        p.rtest(&["--tx", tx, "-n", "1", "--require-all-hosts"])
            .code(4)
            .stderr_has("worker gw1 (exec=")
            .stderr_has(said);
    }
}

#[test]
fn an_exec_command_in_a_config_file_is_relative_to_it() {
    // (a rootdir conftest.py makes `pkg` importable from any directory)
    let p = suite()
        .file("conftest.py", "")
        .file(
            "ci/enter",
            "#!/bin/sh\n# stands in for `kubectl exec -i POD --`\nexec \"$@\"\n",
        )
        .file(
            "conftest.kdl",
            &format!(
                "tx \"2*exec=ci/enter//python={}\"\n",
                crate::harness::venv_python().display()
            ),
        );
    let script = p.path().join("ci/enter");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = p.command(&["--junitxml", "../j.xml"]);
    cmd.current_dir(p.path().join("tests"));
    let r = Run::from(cmd.output().unwrap());
    r.code(1);
    assert_eq!(
        r.summary(),
        "1 failed, 13 passed, 1 skipped, 1 xfailed, 1 error"
    );
    let plan = p.rtest(&["plan"]);
    plan.stdout_has(&format!("exec on {}", script.display()));
}

#[test]
fn a_command_that_never_starts_python_is_bounded_and_killed() {
    let marker = format!("rtest-stall-{}", std::process::id());
    let p = suite();
    let tx = format!("exec=sh -c 'sleep 300; echo {marker}'");
    let r = p.rtest(&["--tx", &tx, "-n", "1", "--startup-timeout", "2"]);
    r.code(1);
    assert_eq!(
        r.summary(),
        "1 failed, 13 passed, 1 skipped, 1 xfailed, 1 error"
    );
    r.stdout_has("made no progress within 2s (--startup-timeout); going on without gw1");
    wait_until(
        "the stalled command to be killed",
        Duration::from_secs(10),
        || !running(&marker),
    );
}
