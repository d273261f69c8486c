//! Crashes, hangs and interrupts: every test still gets its outcome.

use crate::harness::{junit_outcomes, Project, Run};
use std::time::Duration;

const CRASHES: &str = r#"
import os, signal, ctypes

def test_before():
    pass

def test_exit():
    os._exit(3)

def test_sigkill():
    os.kill(os.getpid(), signal.SIGKILL)

def test_segfault():
    ctypes.string_at(0)

def test_after_1():
    pass

def test_after_2():
    pass
"#;

#[test]
fn three_crash_kinds_are_failures_and_the_rest_still_run() {
    let p = Project::new().file("test_crash.py", CRASHES);
    let r = p.rtest(&["-n", "2", "-p", "no:cacheprovider", "--junitxml", "j.xml"]);
    r.code(1)
        .stdout_has("crashed while running test_crash.py::test_exit (exit code 3)")
        .stdout_has(
            "crashed while running test_crash.py::test_sigkill (killed by signal 9 (SIGKILL))",
        )
        .stdout_has("crashed while running test_crash.py::test_segfault (killed by signal 11")
        .stdout_has("Fatal Python error: Segmentation fault")
        .stdout_has("replacing crashed worker");
    assert_eq!(r.summary(), "3 failed, 3 passed");
    let outcomes = junit_outcomes(&p.path().join("j.xml"));
    assert_eq!(outcomes.len(), 6, "{outcomes:?}");
}

#[test]
fn a_crash_among_many_fast_tests_loses_none_of_their_results() {
    // Many short tests: the coordinator reads their results in batches
    // (each worker has plenty queued). A worker killed mid-run has
    // written every earlier result to its pipe already: each is still
    // reported as it ended, the killed test as crashed, the rest run on.
    let p = Project::new().file(
        "test_many.py",
        "import os, signal, time\nimport pytest\n\n\
         @pytest.mark.parametrize('i', range(400))\n\
         def test_fast(i):\n    time.sleep(0.001)\n    \
             if i == 250:\n        os.kill(os.getpid(), signal.SIGKILL)\n",
    );
    let r = p.rtest(&["-n", "2", "-p", "no:randomly", "--junitxml", "j.xml"]);
    r.code(1).stdout_has(
        "crashed while running test_many.py::test_fast[250] (killed by signal 9 (SIGKILL))",
    );
    assert_eq!(r.summary(), "1 failed, 399 passed");
    let outcomes = junit_outcomes(&p.path().join("j.xml"));
    assert_eq!(outcomes.len(), 400, "{outcomes:?}");
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| o.as_str() != "passed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
}

#[test]
fn timeout_kills_the_hung_test_only() {
    let p = Project::new().file(
        "test_hang.py",
        "import time\n\ndef test_a():\n    pass\n\ndef test_hang():\n    time.sleep(60)\n\ndef test_b():\n    pass\n\ndef test_c():\n    pass\n",
    );
    let r = p.rtest(&["-n", "2", "--timeout", "2", "-p", "no:cacheprovider"]);
    r.code(1)
        .stdout_has("Timeout: test_hang.py::test_hang ran longer than 2s")
        // Where it hung: the worker dumped the test's stack at the limit,
        // without pytest's and pluggy's frames.
        .stdout_has("Timeout: still running after 2s; its threads (most recent call last):")
        .stdout_has("Thread MainThread (the test's):\n  File ")
        .stdout_has("line 7, in test_hang\n    time.sleep(60)\n")
        .stdout_lacks("_pytest/")
        .stdout_lacks("pluggy/");
    assert_eq!(r.summary(), "1 failed, 3 passed");
}

/// pytest-timeout, where the tests want it (see `side_site`).
fn with_pytest_timeout(mut cmd: std::process::Command) -> crate::harness::Run {
    cmd.env(
        "PYTHONPATH",
        crate::harness::side_site("pytest-timeout", "pytest_timeout.py"),
    );
    crate::harness::Run::from(cmd.output().unwrap())
}

#[test]
fn with_pytest_timeout_installed_timeout_is_its_own_as_under_pytest() {
    // `--timeout` is pytest-timeout's option too: rtest gives it the value
    // (pytest would), so its markers and its in-process failure apply, and
    // rtest does not kill a test the plugin lets run longer.
    let p = Project::new().file(
        "test_t.py",
        "import time\nimport pytest\n\n\n@pytest.mark.timeout(20)\ndef test_marked_longer():\n    time.sleep(3)\n\n\n@pytest.mark.timeout(0)\ndef test_no_limit():\n    time.sleep(3)\n\n\ndef test_hangs():\n    time.sleep(60)\n\n\ndef test_quick():\n    pass\n",
    );
    let args = ["-n", "2", "-p", "no:cacheprovider", "--timeout", "2"];
    let r = with_pytest_timeout(p.command(&[&args[..], &["--junitxml", "r.xml"]].concat()));
    r.code(1)
        // pytest-timeout's header line, from the controller's session.
        .stdout_has("timeout: 2.0s")
        .stdout_has("E       Failed: Timeout (>2.0s) from pytest-timeout.")
        // Failed inside its worker, which goes on.
        .stdout_lacks("rtest killed")
        .stdout_lacks("replacing crashed worker");
    assert_eq!(r.summary(), "1 failed, 3 passed");
    // The same outcomes as pytest-xdist with pytest-timeout.
    let mut cmd = std::process::Command::new(crate::harness::venv_python());
    cmd.args(["-m", "pytest"])
        .args(args)
        .args(["--junitxml", "x.xml"])
        .current_dir(p.path());
    with_pytest_timeout(cmd).code(1);
    assert_eq!(
        junit_outcomes(&p.path().join("r.xml")),
        junit_outcomes(&p.path().join("x.xml"))
    );
}

#[test]
fn pytest_timeouts_thread_method_dump_is_in_the_report() {
    // The thread method writes every thread's stack to pytest's terminal,
    // then ends the process with os._exit: the worker's terminal is not
    // shown, but what it got during the test comes with the crash (plain
    // pytest dies there; xdist says only "node down").
    let p = Project::new().file(
        "test_t.py",
        "import time\n\n\ndef helper():\n    time.sleep(60)\n\n\ndef test_hangs():\n    helper()\n\n\ndef test_quick():\n    pass\n",
    );
    let r = with_pytest_timeout(p.command(&[
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--timeout",
        "2",
        "--timeout-method",
        "thread",
    ]));
    r.code(1)
        .stdout_has("worker gw")
        .stdout_has("crashed while running test_t.py::test_hangs (exit code 1)")
        .stdout_has("what pytest's terminal got during the test before the worker exited:")
        .stdout_has("+ Timeout +")
        .stdout_has("in helper\n    time.sleep(60)");
    assert_eq!(r.summary(), "1 failed, 1 passed");
}

#[test]
fn a_hang_pytest_timeout_cannot_interrupt_is_still_killed() {
    // SIGALRM blocked: pytest-timeout's signal never comes. rtest kills the
    // worker a grace period past the plugin's limit (here a marker's,
    // with the limit in the ini's addopts, which rtest takes and gives
    // back).
    let p = Project::new()
        .file("pytest.ini", "[pytest]\naddopts = --timeout=30\n")
        .file(
            "test_t.py",
            "import signal\nimport time\nimport pytest\n\n\n@pytest.mark.timeout(1)\ndef test_blocked():\n    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n    time.sleep(60)\n\n\ndef test_quick():\n    pass\n",
        );
    let r = with_pytest_timeout(p.command(&["-n", "2", "-p", "no:cacheprovider"]));
    r.code(1)
        .stdout_has("timeout: 30.0s")
        .stdout_has("Timeout: test_t.py::test_blocked ran 5s past its 1s limit, which the worker's timeout plugin did not enforce; rtest killed worker");
    assert_eq!(r.summary(), "1 failed, 1 passed");
}

#[test]
fn every_worker_dying_still_reports_every_test() {
    let mut body = String::from("import os\n");
    for i in 0..6 {
        body.push_str(&format!("\ndef test_{i}():\n    os._exit(1)\n"));
    }
    let p = Project::new().file("test_die.py", &body);
    let r = p.rtest(&[
        "-n",
        "2",
        "--max-worker-restart",
        "1",
        "-p",
        "no:cacheprovider",
        "--junitxml",
        "j.xml",
    ]);
    r.code(1)
        .stdout_has("not run: every worker that could run it crashed");
    let outcomes = junit_outcomes(&p.path().join("j.xml"));
    assert_eq!(outcomes.len(), 6, "{outcomes:?}");
    assert!(outcomes.iter().all(|(_, o)| o != "passed"));
}

#[test]
fn keyboard_interrupt_in_a_test_stops_the_run_with_exit_2() {
    // test_kbd raises once test_fail has run (on either worker).
    let mut body = String::from(
        "import os, time\n\ndef test_fail():\n    open('failed', 'w').close()\n    assert 0\n\n\
         def test_kbd():\n    for _ in range(600):\n        if os.path.exists('failed'):\n            break\n        \
         time.sleep(0.05)\n    raise KeyboardInterrupt\n",
    );
    for i in 0..20 {
        body.push_str(&format!("\ndef test_{i}():\n    time.sleep(0.1)\n"));
    }
    let p = Project::new().file("test_k.py", &body);
    // As pytest's reporter lays it out: after the summary, the banner,
    // where the test raised it and a hint; the final line below.
    let tail = |out: &str| -> Vec<String> {
        let lines: Vec<&str> = out.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("short test summary info"))
            .unwrap_or_else(|| panic!("no short summary in\n{out}"));
        lines[at + 1..lines.len() - 1]
            .iter()
            .map(|l| l.replace(&p.path().display().to_string(), "ROOT"))
            .collect()
    };
    let args = [
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "-k",
        "fail or kbd",
    ];
    let serial = p.pytest(&args);
    let want = tail(&serial.stdout);
    assert_eq!(want.len(), 4, "{}", serial.stdout);
    assert_eq!(want[0], "FAILED test_k.py::test_fail - assert 0");
    assert!(want[1].starts_with("!!!") && want[1].contains(" KeyboardInterrupt "));
    assert_eq!(want[2], "ROOT/test_k.py:12: KeyboardInterrupt");
    assert_eq!(
        want[3],
        "(to show a full traceback on KeyboardInterrupt use --full-trace)"
    );
    std::fs::remove_file(p.path().join("failed")).unwrap();
    let r = p.rtest(&[&["-n", "2"][..], &args].concat());
    r.code(2);
    assert_eq!(tail(&r.stdout), want, "{}", r.stdout);
    std::fs::remove_file(p.path().join("failed")).unwrap();
    // With --full-trace, the whole traceback instead, down to the raise.
    let r = p.rtest(&["-n", "2", "-p", "no:cacheprovider", "--full-trace"]);
    r.code(2)
        .stdout_has(">       raise KeyboardInterrupt\nE       KeyboardInterrupt")
        .stdout_lacks("use --full-trace");
}

fn pids_alive(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|p| {
            // A zombie has been killed, only not reaped by its (dead) parent.
            match std::fs::read_to_string(format!("/proc/{p}/stat")) {
                Ok(stat) => !stat.split(") ").nth(1).unwrap_or("").starts_with('Z'),
                Err(_) => false,
            }
        })
        .collect()
}

#[test]
fn sigterm_stops_everything_and_leaves_no_orphans() {
    let p = Project::new().file(
        "test_slow.py",
        "import os, subprocess, sys, time\n\ndef test_slow():\n    open('pid-slow', 'w').write(str(os.getpid()))\n    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n    open('pid-child', 'w').write(str(child.pid))\n    time.sleep(60)\n\ndef test_other():\n    open('pid-other', 'w').write(str(os.getpid()))\n",
    );
    let mut child = p
        .command(&["-n", "2", "-p", "no:cacheprovider"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(p.path().join("pid-child").exists() && p.path().join("pid-other").exists()) {
        assert!(std::time::Instant::now() < deadline, "tests never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let pids: Vec<i32> = ["pid-slow", "pid-child", "pid-other"]
        .iter()
        .map(|f| p.read(f).trim().parse().unwrap())
        .collect();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains("KeyboardInterrupt") || out.contains("SIGTERM"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pids_alive(&pids), Vec::<i32>::new(), "orphans left");
}

/// A conftest that kills the first worker process that imports it (and
/// only that one; not the controller) with `how`, before it can report its
/// collection.
fn dies_once_at_collection(how: &str) -> Project {
    Project::new()
        .file(
            "conftest.py",
            &format!(
                "import os, signal\n\ndef first():\n    try:\n        os.close(os.open('first.marker', os.O_CREAT | os.O_EXCL))\n        return True\n    except FileExistsError:\n        return False\n\nif os.environ.get('PYTEST_XDIST_WORKER') and first():\n    {how}\n"
            ),
        )
        .file(
            "test_a.py",
            "import pytest\n\n@pytest.mark.parametrize('i', range(20))\ndef test_i(i):\n    assert i != 7\n",
        )
}

#[test]
fn a_worker_lost_during_collection_is_replaced_and_the_run_goes_on() {
    for how in ["os.kill(os.getpid(), signal.SIGKILL)", "os._exit(3)"] {
        let p = dies_once_at_collection(how);
        let r = p.rtest(&["-n", "2", "-p", "no:randomly", "--junitxml", "j.xml"]);
        r.code(1)
            .stdout_has("exited during collection")
            .stdout_has("replacing it (1 of 8 restarts)");
        assert_eq!(r.summary(), "1 failed, 19 passed", "{how}");
        let outcomes = junit_outcomes(&p.path().join("j.xml"));
        assert_eq!(outcomes.len(), 20);
        let failed: Vec<_> = outcomes.iter().filter(|(_, o)| o != "passed").collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].0.ends_with("test_i[7]"));
    }
}

#[test]
fn a_collection_that_crashes_every_time_stops_the_run_plainly() {
    let p = Project::new()
        .file(
            "conftest.py",
            "import ctypes\n\ndef crash_here():\n    ctypes.string_at(0)\n\ncrash_here()\n",
        )
        .file("test_a.py", "def test_a():\n    pass\n");
    let r = p.rtest(&["-n", "2", "--junitxml", "j.xml"]);
    // Replaced once each, then the same again: the run stops, saying
    // where it crashed (once) and with no frames of rtest's own.
    r.code(3)
        .stderr_has("exited during collection (killed by signal 11 (SIGSEGV")
        .stdout_has("replacing it (1 of 8 restarts)")
        .stdout_has("Fatal Python error: Segmentation fault")
        .stdout_has("conftest.py\", line 4 in crash_here");
    assert_eq!(r.stdout.matches("Fatal Python error").count(), 1);
    assert!(!r.stdout.contains("rtest-agent"), "{}", r.stdout);
    assert!(!r.stderr.contains("rtest-agent"), "{}", r.stderr);
    assert!(!p.path().join("j.xml").exists());
}

#[test]
fn a_hang_before_collection_is_bounded_and_says_where_it_hung() {
    let p = Project::new()
        .file(
            "conftest.py",
            "import os, time\n\ndef wait_forever():\n    time.sleep(3600)\n\ndef first():\n    try:\n        os.close(os.open('first.marker', os.O_CREAT | os.O_EXCL))\n        return True\n    except FileExistsError:\n        return False\n\nif os.environ.get('PYTEST_XDIST_WORKER') and first():\n    wait_forever()\n",
        )
        .file("test_a.py", "def test_a():\n    pass\n\ndef test_b():\n    pass\n");
    let plan = p.rtest(&["plan", "--startup-timeout", "3"]);
    plan.code(0).stdout_has("startup-timeout: 3s");
    let r = p.rtest(&["-n", "2", "--startup-timeout", "3", "-p", "no:randomly"]);
    r.code(0)
        .stdout_has("did not report its collection within 3s (--startup-timeout)")
        .stdout_has("conftest.py\", line 4 in wait_forever")
        .stdout_has("replacing it (1 of 8 restarts)");
    assert!(!r.stdout.contains("rtest-agent"), "{}", r.stdout);
    assert_eq!(r.summary(), "2 passed");
    // The default is shown where it comes from.
    let j = p.rtest(&["plan", "--format", "json"]);
    let j: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(j["settings"]["startup-timeout"]["value"], 300.0);
    assert_eq!(j["settings"]["startup-timeout"]["source"], "default");
}

#[test]
fn a_worker_that_sends_garbage_is_reported_and_the_others_go_on() {
    // The probe (`python -c ...`) is a real Python; the worker prints a
    // login banner where frames belong, then waits.
    let (p, fake) = fake_python(
        Project::new().file(
            "test_a.py",
            "import pytest\n\n@pytest.mark.parametrize('i', range(10))\ndef test_i(i):\n    pass\n",
        ),
        "bannerpy",
        "echo 'Welcome to the build farm!'\nexec sleep 60",
    );
    let start = std::time::Instant::now();
    let r = p.rtest(&[
        "-n",
        "1",
        "--tx",
        &format!("popen//python={}", fake.display()),
        "--no-provision",
        "--junitxml",
        "j.xml",
    ]);
    assert!(
        start.elapsed() < Duration::from_secs(50),
        "{:?}",
        start.elapsed()
    );
    // A broken protocol is an internal error, but no result is lost.
    r.code(3)
        .stdout_has("worker gw1 sent a bad frame: a frame claims")
        .stdout_has("its first bytes were \"Welc\"")
        .stdout_has("going on without it");
    assert_eq!(r.summary(), "10 passed");
    assert_eq!(junit_outcomes(&p.path().join("j.xml")).len(), 10);
}

#[test]
fn a_worker_whose_sync_fails_is_left_out_and_the_run_goes_on() {
    // Nothing can be created under /proc: that copy's sync fails.
    let p = Project::new().file(
        "test_a.py",
        "import pytest\n\n@pytest.mark.parametrize('i', range(6))\ndef test_i(i):\n    pass\n",
    );
    let args = [
        "-n",
        "1",
        "--tx",
        "popen//chdir=/proc/rtest-nope",
        "--rsyncdir",
        ".",
    ];
    let r = p.rtest(&args);
    r.code(0)
        .stdout_has("worker gw1 (popen//chdir=/proc/rtest-nope): cannot sync to /proc/rtest-nope")
        .stdout_has("going on without gw1")
        .stdout_has("rtest 0.1.0: 1 worker [6 items]");
    assert_eq!(r.summary(), "6 passed");
    let strict = p.rtest(&[&args[..], &["--require-all-hosts"]].concat());
    strict
        .code(4)
        .stderr_has("cannot sync to /proc/rtest-nope")
        .stderr_has("(--require-all-hosts)");
}

#[test]
fn a_worker_that_reports_out_of_order_is_stopped_and_the_run_goes_on() {
    // A test that makes its worker send a result for a test it never ran.
    let p = Project::new().file(
        "test_a.py",
        "import pytest\n\n@pytest.mark.parametrize('i', range(8))\ndef test_i(i, pytestconfig):\n    if i == 3:\n        worker = pytestconfig.pluginmanager.get_plugin('rtest-worker')\n        worker.channel.send({'t': 'finished', 'i': 999, 'd': 0.0, 'ph': []})\n        import time; time.sleep(5)\n",
    );
    let r = p.rtest(&["-n", "2", "-p", "no:randomly", "--junitxml", "j.xml"]);
    r.code(3)
        .stdout_has("finished test 999 it was not running")
        .stdout_has("crashed while running test_a.py::test_i[3]");
    let outcomes = junit_outcomes(&p.path().join("j.xml"));
    assert_eq!(outcomes.len(), 8);
    let failed: Vec<_> = outcomes.iter().filter(|(_, o)| o != "passed").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
}

#[test]
fn a_connection_lost_during_sync_costs_that_host_only() {
    // The first process on that "host" (the sync's) reads a little of what
    // rtest sends and vanishes, as a dropped connection would.
    let (p, fake) = fake_python(
        Project::new().file(
            "test_a.py",
            "import pytest\n\n@pytest.mark.parametrize('i', range(6))\ndef test_i(i):\n    pass\n",
        ),
        "droppy",
        "if mkdir \"$HERE/.first\" 2>/dev/null; then head -c 300 >/dev/null; exit 0; fi\nexec \"$PY\" \"$@\"",
    );
    let copy = tempfile::tempdir().unwrap();
    let tx = format!(
        "2*popen//python={}//chdir={}",
        fake.display(),
        copy.path().join("c").display()
    );
    let r = p.rtest(&["-n", "1", "--tx", &tx, "--rsyncdir", ".", "--no-provision"]);
    r.code(0)
        .stdout_has("going on without gw1, gw2")
        .stdout_has("rtest 0.1.0: 1 worker [6 items]");
    assert_eq!(r.summary(), "6 passed");
}

#[test]
fn a_sync_that_stalls_is_bounded_and_costs_that_host_only() {
    // The first process on that "host" takes everything rtest sends and
    // never answers, as a stalled connection would.
    let (p, fake) = fake_python(
        Project::new().file("test_a.py", "def test_a():\n    pass\n"),
        "stallpy",
        "if mkdir \"$HERE/.first\" 2>/dev/null; then exec sleep 3600; fi\nexec \"$PY\" \"$@\"",
    );
    let copy = tempfile::tempdir().unwrap();
    let tx = format!(
        "popen//python={}//chdir={}",
        fake.display(),
        copy.path().join("c").display()
    );
    let r = p.rtest(&[
        "-n",
        "1",
        "--tx",
        &tx,
        "--rsyncdir",
        ".",
        "--no-provision",
        "--startup-timeout",
        "3",
    ]);
    r.code(0)
        .stdout_has("the sync made no progress within 3s (--startup-timeout)")
        .stdout_has("going on without gw1");
    assert_eq!(r.summary(), "1 passed");
}

/// A `python` for `--tx popen//python=`: rtest's probe (`python -c ...`)
/// gets the venv's Python; the worker runs `behaviour` (sh; `$PY` is the
/// real Python, `$HERE` the project).
fn fake_python(p: Project, name: &str, behaviour: &str) -> (Project, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let py = crate::harness::venv_python();
    let script = format!(
        "#!/bin/sh\nPY={py}\nHERE=\"$(dirname \"$0\")\"\nif [ \"$1\" = -c ]; then exec \"$PY\" \"$@\"; fi\n{behaviour}\n",
        py = py.display()
    );
    let p = p.file(name, &script);
    let path = p.path().join(name);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (p, path)
}

#[test]
fn timeout_zero_switches_off_a_configured_timeout() {
    // As `pytest --timeout 0` switches off pytest-timeout's ini timeout,
    // and rtest's `--timeout 0` a config file's.
    let p = Project::new()
        .file("pytest.ini", "[pytest]\ntimeout = 1\n")
        .file(
            "test_t.py",
            "import time\n\n\ndef test_slow():\n    time.sleep(2)\n",
        );
    let args = ["-n", "1", "-p", "no:cacheprovider"];
    let r = with_pytest_timeout(p.command(&args));
    r.code(1)
        .stdout_has("Failed: Timeout (>1.0s) from pytest-timeout.");
    let r = with_pytest_timeout(p.command(&[&args[..], &["--timeout", "0"]].concat()));
    r.code(0);
    assert_eq!(r.summary(), "1 passed");
    let p = Project::new().file("conftest.kdl", "timeout 1\n").file(
        "test_t.py",
        "import time\n\n\ndef test_slow():\n    time.sleep(4)\n",
    );
    p.rtest(&args)
        .code(1)
        .stdout_has("ran longer than 1s; rtest killed worker");
    let r = p.rtest(&[&args[..], &["--timeout", "0"]].concat());
    r.code(0);
    assert_eq!(r.summary(), "1 passed");
}

#[test]
fn exit_handlers_that_never_return_cost_seconds_not_the_run() {
    // Workers run their atexit handlers as a process that ends normally
    // does (and as xdist's do), for at most ten seconds (xdist's limit for
    // its workers to exit). gw0's handler sleeps in Python (the agent ends
    // the process at the limit); gw1's sleeps in C holding the GIL (the
    // agent cannot: rtest kills it a little later).
    let p = Project::new()
        .file(
            "conftest.py",
            "import atexit, ctypes, time\n\n\
             def pytest_configure(config):\n    worker = getattr(config, 'workerinput', {}).get('workerid')\n    \
             if worker == 'gw0':\n        atexit.register(time.sleep, 3600)\n    \
             elif worker == 'gw1':\n        atexit.register(lambda: ctypes.PyDLL(None).sleep(3600))\n    \
             if worker:\n        atexit.register(print, 'an exit handler prints')\n",
        )
        .file("test_a.py", "def test_a():\n    pass\n\ndef test_b():\n    assert 0\n");
    let started = std::time::Instant::now();
    let run = p.rtest(&["-n", "2", "--junitxml=out.xml"]);
    run.code(1);
    assert_eq!(run.summary(), "1 failed, 1 passed");
    // What they print is quiet, as the rest of a worker's stdout at the
    // end of its session.
    assert!(
        !format!("{}{}", run.stdout, run.stderr).contains("an exit handler prints"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "[gw0] atexit handlers still running after 10s; the process ends without them"
        ),
        "{}",
        run.stderr
    );
    run.stdout_has(
        "rtest: worker gw1 was done but had not ended 15s later (an atexit handler?); rtest killed it",
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let outcomes = junit_outcomes(&p.path().join("out.xml"));
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
}

#[test]
fn a_worker_stuck_unconfiguring_costs_thirty_seconds_not_the_run() {
    // Its session is over, so every result is in; xdist kills a worker
    // that has not ended ten seconds after every session is over.
    let p = Project::new()
        .file(
            "conftest.py",
            "import time\n\ndef pytest_unconfigure(config):\n    \
             if getattr(config, 'workerinput', {}).get('workerid') == 'gw1':\n        time.sleep(3600)\n",
        )
        .file("test_a.py", "def test_a():\n    pass\n\ndef test_b():\n    pass\n");
    let started = std::time::Instant::now();
    let run = p.rtest(&["-n", "2"]);
    run.code(0).stdout_has(
        "rtest: worker gw1 finished its session but was not done 30s later (a plugin's pytest_unconfigure?); rtest killed it",
    );
    assert_eq!(run.summary(), "2 passed");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_process_that_is_done_ends_as_an_interpreter_ends() {
    // What a conftest opened and never closed is finalized when its
    // process ends, as in plain pytest and xdist's workers: a buffered
    // file is flushed, a sqlite database in WAL mode is closed (its -wal
    // file folded back, pytest-testmon's case). Threads a test leaves
    // running, which an interpreter would wait for forever, do not hold
    // the run.
    let conftest = "import os, sqlite3, threading, time\n\n\
        WHO = os.environ.get('PYTEST_XDIST_WORKER', 'main')\n\
        LOG = open('log-%s.txt' % WHO, 'w')\n\
        DB = sqlite3.connect('db-%s.sqlite' % WHO)\n\
        DB.execute('PRAGMA journal_mode=WAL')\n\
        DB.execute('CREATE TABLE IF NOT EXISTS r (nodeid TEXT)')\n\n\
        def pytest_runtest_logreport(report):\n    \
            if report.when == 'call':\n        \
                LOG.write(report.nodeid + '\\n')\n        \
                DB.execute('INSERT INTO r VALUES (?)', (report.nodeid,))\n        \
                DB.commit()\n\n\
        def pytest_sessionstart(session):\n    \
            if os.environ.get('LEAVE_A_THREAD') and WHO != 'main':\n        \
                threading.Thread(target=time.sleep, args=(3600,)).start()\n";
    let tests =
        "import pytest\n\n@pytest.mark.parametrize('i', range(6))\ndef test_t(i):\n    pass\n";
    let logs = |dir: &std::path::Path| -> (Vec<String>, Vec<String>) {
        let mut lines = Vec::new();
        let mut left = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("log-gw") {
                lines.extend(
                    std::fs::read_to_string(entry.path())
                        .unwrap()
                        .lines()
                        .map(String::from),
                );
            }
            if name.ends_with("-wal") || name.ends_with("-shm") {
                left.push(name);
            }
        }
        lines.sort();
        (lines, left)
    };
    let xdist = Project::new()
        .file("conftest.py", conftest)
        .file("test_t.py", tests);
    xdist
        .pytest(&["-n", "2", "-p", "no:cacheprovider", "-p", "no:randomly"])
        .code(0);
    let (want, _) = logs(xdist.path());
    assert_eq!(want.len(), 6, "{want:?}");
    let p = Project::new()
        .file("conftest.py", conftest)
        .file("test_t.py", tests);
    p.rtest(&["-n", "2", "-p", "no:cacheprovider", "-p", "no:randomly"])
        .code(0);
    let (got, left) = logs(p.path());
    assert_eq!(got, want);
    assert!(left.is_empty(), "sqlite files left open: {left:?}");

    let started = std::time::Instant::now();
    let mut cmd = p.command(&["-n", "2", "-p", "no:cacheprovider", "-p", "no:randomly"]);
    cmd.env("LEAVE_A_THREAD", "1");
    let run = Run::from(cmd.output().unwrap());
    run.code(0);
    assert_eq!(run.summary(), "6 passed");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
