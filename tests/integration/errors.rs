//! Bad input: a clear error and exit 4, never a panic or a hang.

use crate::harness::Project;

fn simple() -> Project {
    Project::new().file("test_a.py", "def test_a():\n    pass\n")
}

#[test]
fn unknown_option_shows_pytests_usage_error() {
    let r = simple().rtest(&["-n", "2", "--no-such-option"]);
    // As pytest says it, with the program the user ran (not python's "-c").
    r.code(4)
        .stderr_has("usage: rtest [options] [file_or_dir]")
        .stderr_has("rtest: error: unrecognized arguments: --no-such-option");
}

#[test]
fn a_bad_ini_value_is_pytests_usage_error_only() {
    // pytest finds it at configure time, in the controller and in every
    // worker: said once, as pytest says it, exit 4, and no word of a
    // failing controller.
    let r = simple()
        .file("pytest.ini", "[pytest]\nconsole_output_style = bogus\n")
        .rtest(&["-n", "2"]);
    r.code(4)
        .stderr_has("config option 'console_output_style' expects one of");
    let all = format!("{}{}", r.stdout, r.stderr);
    assert_eq!(all.matches("expects one of").count(), 1, "{all}");
    assert!(!all.contains("controller"), "{all}");
}

#[test]
fn bad_numprocesses() {
    simple()
        .rtest(&["-n", "-3"])
        .code(4)
        .stderr_has("-n/--numprocesses: expected a whole number");
    simple()
        .rtest(&["-n", "lots"])
        .code(4)
        .stderr_has("got \"lots\"");
}

#[test]
fn malformed_tx_names_the_part() {
    simple()
        .rtest(&["--tx", "3*popen//pyhton=python3"])
        .code(4)
        .stderr_has(
            "failed to parse tx spec \"3*popen//pyhton=python3\": unknown part \"pyhton=python3\"",
        );
    simple()
        .rtest(&["--tx", "0*popen"])
        .code(4)
        .stderr_has("bad count \"0\"");
}

#[test]
fn missing_or_old_python() {
    simple()
        .rtest(&["--tx", "popen//python=/nonexistent/python9"])
        .code(4)
        .stderr_has("python \"/nonexistent/python9\" was not found");
    let p = simple().file("fakepy", "#!/bin/sh\necho 'Python 2.7.18' >&2\nexit 1\n");
    let fake = p.path().join("fakepy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.rtest(&["--tx", &format!("popen//python={}", fake.display())])
        .code(4)
        .stderr_has("is not a working Python 3.8+ interpreter")
        .stderr_has("Python 2.7.18");
}

#[test]
fn nonexistent_test_path() {
    simple()
        .rtest(&["-n", "2", "no/such/dir"])
        .code(4)
        .stderr_has("file or directory not found: no/such/dir");
}

#[test]
fn unwritable_outputs() {
    let p = simple().file("blocker", "a file, not a directory\n");
    p.rtest(&["-n", "1", "--junitxml", "blocker/out.xml"])
        .code(4)
        .stderr_has("could not write --junitxml");
    p.rtest(&["-n", "1", "--report-log", "blocker/log.jsonl"])
        .code(4)
        .stderr_has("could not write --report-log");
}

#[test]
fn bad_dist_mode_and_pdb() {
    simple()
        .rtest(&["--dist", "fast"])
        .code(4)
        .stderr_has("--dist: unknown dist mode \"fast\"");
    simple()
        .rtest(&["--pdb"])
        .code(4)
        .stderr_has("--pdb cannot be used with rtest");
}

#[test]
fn worker_that_dies_before_ready_shows_its_stderr() {
    let p = simple().file("diepy", "#!/bin/sh\nif [ \"$1\" = -c ]; then exec python3 \"$@\"; fi\necho 'no agent for you' >&2\nexit 7\n");
    let fake = p.path().join("diepy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The probe (python -c ...) works, the worker (python -u -c ...) dies.
    let r = p.rtest(&[
        "--tx",
        &format!("popen//python={}", fake.display()),
        "--no-provision",
    ]);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn no_provision_without_pytest_is_a_clear_error() {
    // The harness venv has pytest; a bare venv does not.
    let p = simple();
    let bare = p.path().join("bare");
    let status = std::process::Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg("--without-pip")
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
    let py = bare.join("bin/python");
    p.rtest(&[
        "--tx",
        &format!("popen//python={}", py.display()),
        "--no-provision",
    ])
    .code(4)
    .stderr_has("has no pytest and --no-provision was given")
    .stderr_has("-m pip install pytest");
}

#[test]
fn a_python_without_pytest_is_provisioned_and_xdist_fixtures_work_without_xdist() {
    let p = Project::new().file(
        "test_w.py",
        "def test_w(worker_id, testrun_uid):\n    assert worker_id == 'gw0'\n",
    );
    let bare = p.path().join("bare");
    let status = std::process::Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg("--without-pip")
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
    let cache = p.path().join("cache");
    let py = bare.join("bin/python");
    let r = crate::harness::Run::from(
        p.command(&[
            "--tx",
            &format!("popen//python={}", py.display()),
            "-p",
            "no:cacheprovider",
        ])
        .env("RTEST_CACHE_DIR", &cache)
        .output()
        .unwrap(),
    );
    r.code(0)
        .stderr_has("has no pytest: installing pytest into");
    assert_eq!(r.summary(), "1 passed");
    // The venv is reused: the second run says nothing about installing.
    let again = crate::harness::Run::from(
        p.command(&[
            "--tx",
            &format!("popen//python={}", py.display()),
            "-p",
            "no:cacheprovider",
        ])
        .env("RTEST_CACHE_DIR", &cache)
        .output()
        .unwrap(),
    );
    again.code(0);
    assert!(
        !again.stderr.contains("installing pytest"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_workers_internal_error_is_said_once_for_every_worker_that_says_it() {
    // At configure time (before the worker is ready) it goes with the
    // report of the worker's loss; during the run, as it comes. Either
    // way once, as pytest would write it, not again from each worker.
    let p = Project::new()
        .file(
            "conftest.py",
            "def pytest_configure(config):\n    if hasattr(config, 'workerinput'):\n        \
             raise RuntimeError('boom in worker configure')\n",
        )
        .file(
            "test_a.py",
            "def test_a():\n    pass\n\ndef test_b():\n    pass\n",
        );
    let run = p.rtest(&["-n", "2"]);
    run.code(3);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(
        all.matches("INTERNALERROR> RuntimeError: boom in worker configure")
            .count(),
        1,
        "{all}"
    );
    let p = p.file(
        "conftest.py",
        "def pytest_runtest_logreport(report):\n    if report.when == 'call':\n        \
         raise RuntimeError('boom in logreport')\n",
    );
    let run = p.rtest(&["-n", "2"]);
    run.code(3);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(
        all.matches("INTERNALERROR> RuntimeError: boom in logreport")
            .count(),
        1,
        "{all}"
    );
    assert!(
        all.contains("INTERNALERROR on gw0") || all.contains("INTERNALERROR on gw1"),
        "{all}"
    );
}
