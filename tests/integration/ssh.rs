//! The ssh transport against real OpenSSH servers that these tests start on
//! 127.0.0.1, each with its own host key, client key, known_hosts and
//! remote home in a temp dir (nothing of the machine's own ssh setup is
//! read or touched).
//!
//! Without `/usr/sbin/sshd` the tests are skipped, unless
//! `RTEST_REQUIRE_SSHD` is set (as `.ci/run` does): then they fail.

use crate::harness::{junit_outcomes, running, venv_python, wait_until, Project, Run};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd and the client config that reaches it.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Start an sshd, or `None` (skip) when there is none and it is not
/// required.
fn sshd() -> Option<Sshd> {
    if !Path::new(SSHD).exists() {
        if std::env::var_os("RTEST_REQUIRE_SSHD").is_some() {
            panic!("{SSHD} is missing and RTEST_REQUIRE_SSHD is set: install openssh-server");
        }
        eprintln!("skipped: {SSHD} is missing (install openssh-server)");
        return None;
    }
    // Privilege separation needs this directory when sshd runs as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(&d.join("host_key"));
    keygen(&d.join("client_key"));
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
    std::fs::create_dir_all(d.join("home")).unwrap();
    let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
    let host_pub = host_pub
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    for attempt in 0..5 {
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 SetEnv HOME={d}/home\nLogLevel ERROR\n",
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host *\n  Port {port}\n  User {}\n  IdentityFile {d}/client_key\n  IdentitiesOnly yes\n\
                 \x20 UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n\
                 \x20 StrictHostKeyChecking yes\n",
                user(),
                d = d.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Sshd { child, port, dir });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "sshd attempt {attempt} failed: {}",
            std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
        );
    }
    panic!("could not start sshd");
}

impl Sshd {
    fn config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A tx spec for this server with the test venv's Python.
    fn venv_tx(&self, count: usize, extra: &str) -> String {
        self.tx(
            count,
            &format!("//python={}{extra}", venv_python().display()),
        )
    }

    /// A tx spec for this server.
    fn tx(&self, count: usize, extra: &str) -> String {
        format!(
            "{count}*ssh=127.0.0.1//ssh_config={}{extra}",
            self.config().display()
        )
    }
}

/// Wait (a little) until no ssh master for this server is left; panic with
/// what is left otherwise.
fn assert_no_master_left(sshd: &Sshd) {
    let needle = sshd.config().display().to_string();
    let start = Instant::now();
    loop {
        let out = Command::new("pgrep")
            .args(["-af", &needle])
            .output()
            .unwrap();
        let left = String::from_utf8_lossy(&out.stdout).into_owned();
        if !left
            .lines()
            .any(|l| l.contains("ssh ") && l.contains(" -M "))
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "ssh masters left running:\n{left}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process whose command line has `marker` runs.
/// A Python without pytest (a venv made without pip from the test venv's
/// interpreter).
fn bare_python(under: &Path) -> PathBuf {
    let bare = under.join("bare");
    let status = Command::new(venv_python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
    bare.join("bin/python")
}

/// The synced copies of a project in a remote home's cache.
fn copies(home: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(home.join(".cache/rtest"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("pkg").is_dir())
                .collect()
        })
        .unwrap_or_default()
}

const SUITE: &str = r#"
import pytest

@pytest.mark.parametrize("i", range(12))
def test_param(i):
    assert i != 7

def test_skip():
    pytest.skip("not here")

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

def test_output(capsys):
    print("hello from a test")
    assert False, "fails with output"
"#;

fn suite() -> Project {
    Project::new()
        .file("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .file("pkg/__init__.py", "")
        .file("pkg/util.py", "def answer():\n    return 42\n")
        .file("tests/test_suite.py", SUITE)
        .file(
            "tests/test_pkg.py",
            "from pkg.util import answer\n\ndef test_answer():\n    assert answer() == 42\n",
        )
}

#[test]
fn a_run_over_ssh_matches_a_local_run() {
    let Some(sshd) = sshd() else { return };
    let p = suite();
    let local = p.rtest(&["-n", "2", "--junitxml", "local.xml"]);
    let tx = sshd.venv_tx(3, "");
    let remote = p.rtest(&[
        "--tx",
        &tx,
        "--rsyncdir",
        "pkg",
        "--rsyncdir",
        "tests",
        "--junitxml",
        "remote.xml",
    ]);
    remote.code(1);
    assert_eq!(remote.summary(), local.summary());
    assert_eq!(
        remote.summary(),
        "2 failed, 12 passed, 1 skipped, 1 xfailed"
    );
    assert_eq!(
        junit_outcomes(&p.path().join("remote.xml")),
        junit_outcomes(&p.path().join("local.xml"))
    );
    remote
        .stdout_has("gw0, gw1, gw2: ssh=127.0.0.1")
        .stdout_has(&format!("rootdir: {}", p.path().display()))
        .stdout_has(&format!(
            "synced to {}/.cache/rtest/",
            sshd.home().display()
        ))
        // failures name the local paths, and output comes back
        .stdout_has("tests/test_suite.py:")
        .stdout_has("hello from a test");
    // The tree is mirrored in the remote home, rootdir-relative.
    let copy = copies(&sshd.home()).pop().expect("a synced copy");
    assert!(copy.join("pkg/util.py").is_file());
    assert!(copy.join("tests/test_suite.py").is_file());
    assert!(copy.join("pytest.ini").is_file());
    assert_no_master_left(&sshd);
    // Nothing changed: the second sync sends nothing.
    let again = p.rtest(&[
        "--tx",
        &tx,
        "--rsyncdir",
        "pkg",
        "--rsyncdir",
        "tests",
        "-rs",
    ]);
    again
        .stdout_has("0 of 5 files sent")
        // skip locations name the local file, not the copy
        .stdout_has("SKIPPED [1] tests/test_suite.py:9: not here");
    assert_eq!(again.summary(), local.summary());
}

#[test]
fn a_remote_python_without_pytest_gets_the_local_one_once() {
    let Some(sshd) = sshd() else { return };
    let p = suite();
    let bare = bare_python(sshd.dir.path());
    let tx = sshd.tx(2, &format!("//python={}", bare.display()));
    let r = p.rtest(&["--tx", &tx, "--rsyncdir", "pkg", "--rsyncdir", "tests"]);
    r.stdout_has("has no pytest: pytest ").stdout_has(&format!(
        " files to {}/.cache/rtest/site-",
        sshd.home().display()
    ));
    assert_eq!(r.summary(), "2 failed, 12 passed, 1 skipped, 1 xfailed");
    let again = p.rtest(&["--tx", &tx, "--rsyncdir", "pkg", "--rsyncdir", "tests"]);
    again.stdout_has("uses the copy already in");
    assert_eq!(again.summary(), "2 failed, 12 passed, 1 skipped, 1 xfailed");
}

#[test]
fn two_hosts_each_get_their_own_copy_and_follow_changed_rsyncdirs() {
    let (Some(a), Some(b)) = (sshd(), sshd()) else {
        return;
    };
    // Host a comes from the checked-in config, its ssh config file named
    // relative to the conftest.kdl; host b from the command line.
    let config_a = std::fs::read_to_string(a.config()).unwrap();
    let p = suite()
        .file("ci/ssh_config", &config_a)
        .file(
            "conftest.kdl",
            &format!(
                "tx \"ssh\" host=\"127.0.0.1\" ssh_config=\"ci/ssh_config\" python=\"{}\"\n\
                 rsyncdirs \"pkg\"\nrsyncignore \"*.tmp\"\n",
                venv_python().display()
            ),
        )
        .file("pkg/scratch.tmp", "not synced\n");
    let python = format!("//python={}", venv_python().display());
    // Host b puts its copy where chdir= says.
    let copy_b = b.home().join("work/copy");
    let tx_b = b.tx(2, &format!("{python}//chdir={}", copy_b.display()));
    let r = p.rtest(&["--tx", &tx_b, "--rsyncdir", "tests"]);
    assert_eq!(r.summary(), "2 failed, 12 passed, 1 skipped, 1 xfailed");
    r.stdout_has(&format!(
        "gw0: ssh=127.0.0.1//ssh_config={}/ci/ssh_config on 127.0.0.1",
        p.path().display()
    ))
    .stdout_has("gw1, gw2: ssh=127.0.0.1")
    .stdout_has(&format!("synced to {} on 127.0.0.1", copy_b.display()));
    assert!(copy_b.join("pkg/util.py").is_file());
    assert!(copy_b.join("tests/test_pkg.py").is_file());
    assert!(!copy_b.join("pkg/scratch.tmp").exists(), "rsyncignore");
    assert!(copies(&b.home()).is_empty(), "chdir= replaces the cache");
    let copies_a = copies(&a.home());
    assert_eq!(copies_a.len(), 1);
    assert!(!copies_a[0].join("pkg/scratch.tmp").exists());
    assert!(!a.home().join("work").exists());

    // A change on one side: a file edited, one deleted, one added.
    std::fs::write(
        p.path().join("pkg/util.py"),
        "def answer():\n    return 43\n",
    )
    .unwrap();
    std::fs::write(p.path().join("pkg/extra.py"), "X = 1\n").unwrap();
    std::fs::remove_file(p.path().join("tests/test_pkg.py")).unwrap();
    std::fs::write(
        p.path().join("tests/test_extra.py"),
        "from pkg.util import answer\nfrom pkg.extra import X\n\ndef test_new():\n    assert (answer(), X) == (43, 1)\n",
    )
    .unwrap();
    let r = p.rtest(&["--tx", &tx_b, "--rsyncdir", "tests"]);
    assert_eq!(r.summary(), "2 failed, 12 passed, 1 skipped, 1 xfailed");
    r.stdout_has("3 of 6 files sent").stdout_has(", 1 deleted");
    assert!(!copy_b.join("tests/test_pkg.py").exists());
    assert!(copies_a[0].join("pkg/extra.py").is_file());
}

#[test]
fn a_connection_killed_mid_run_costs_only_its_test() {
    let Some(sshd) = sshd() else { return };
    let p = Project::new()
        .file("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .file(
            "test_drop.py",
            r#"
import os, signal, time, pytest

@pytest.mark.parametrize("i", range(30))
def test_many(i):
    time.sleep(0.05)

def test_drop():
    if os.environ.get("RTEST_REMOTE_MARK"):
        time.sleep(0.5)  # the reports before this one reach rtest
        # our parent is sshd's process for this connection: the connection dies
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)
"#,
        );
    let tx = sshd.venv_tx(2, "//env:RTEST_REMOTE_MARK=1");
    let start = Instant::now();
    let r = p.rtest(&["--tx", &tx, "--rsyncdir", ".", "--junitxml", "out.xml"]);
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "took {:?}",
        start.elapsed()
    );
    r.code(1);
    r.stdout_has("crashed while running test_drop.py::test_drop");
    let outcomes = junit_outcomes(&p.path().join("out.xml"));
    assert_eq!(outcomes.len(), 31, "{outcomes:?}");
    for (id, outcome) in &outcomes {
        if id.ends_with("test_drop") {
            assert_eq!(outcome, "failure");
        } else {
            assert_eq!(outcome, "passed", "{id}\n{}", r.stdout);
        }
    }
}

#[test]
fn a_hung_remote_test_is_killed_with_what_it_started() {
    let Some(sshd) = sshd() else { return };
    let marker = format!("rtest-hang-{}", std::process::id());
    let p = Project::new().file(
        "test_hang.py",
        &format!(
            r#"
import subprocess, time
def test_ok():
    pass
def test_hang():
    subprocess.Popen(["sh", "-c", "sleep 300; echo {marker}"])
    time.sleep(300)
"#
        ),
    );
    let tx = sshd.venv_tx(1, "");
    let r = p.rtest(&["--tx", &tx, "--rsyncdir", ".", "--timeout", "2"]);
    r.code(1)
        .stdout_has("Timeout: test_hang.py::test_hang ran longer than 2s");
    assert_eq!(r.summary(), "1 failed, 1 passed");
    wait_until(
        "what the test started to end",
        Duration::from_secs(10),
        || !running(&marker),
    );
}

#[test]
fn an_unreachable_host_is_a_clear_error_and_others_go_on() {
    let Some(sshd) = sshd() else { return };
    let p = suite();
    let closed = free_port();
    let dead = format!(
        "ssh=127.0.0.1:{closed}//ssh_config={}",
        sshd.config().display()
    );
    let alone = p.rtest(&["--tx", &dead, "--rsyncdir", "pkg", "--rsyncdir", "tests"]);
    alone
        .code(4)
        .stderr_has(&format!("ssh=127.0.0.1:{closed}: cannot connect"))
        .stderr_has("Connection refused");
    let with_local = p.rtest(&[
        "--tx",
        &dead,
        "--tx",
        "popen",
        "--rsyncdir",
        "pkg",
        "--rsyncdir",
        "tests",
    ]);
    with_local.code(1).stdout_has("going on without it");
    assert_eq!(
        with_local.summary(),
        "2 failed, 12 passed, 1 skipped, 1 xfailed"
    );
    p.rtest(&[
        "--tx",
        &dead,
        "--tx",
        "popen",
        "--require-all-hosts",
        "--rsyncdir",
        "pkg",
    ])
    .code(4)
    .stderr_has("cannot connect");
}

#[test]
fn host_keys_are_checked_as_the_ssh_config_says() {
    let Some(sshd) = sshd() else { return };
    // A known_hosts entry with another key for this host.
    let other = sshd.dir.path().join("other_key");
    keygen(&other);
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_pub = other_pub
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        sshd.dir.path().join("known_hosts"),
        format!("[127.0.0.1]:{} {other_pub}\n", sshd.port),
    )
    .unwrap();
    let p = suite();
    let r = p.rtest(&["--tx", &sshd.tx(1, ""), "--rsyncdir", "pkg"]);
    r.code(4).stderr_has("cannot connect").stderr_has("ost key");
    // An unknown host under StrictHostKeyChecking yes is refused too.
    std::fs::write(sshd.dir.path().join("known_hosts"), "").unwrap();
    let r = p.rtest(&["--tx", &sshd.tx(1, ""), "--rsyncdir", "pkg"]);
    r.code(4).stderr_has("cannot connect");
}

#[test]
fn plan_probe_asks_each_ssh_host() {
    let Some(sshd) = sshd() else { return };
    let p = suite();
    let bare = bare_python(sshd.dir.path());
    let r: Run = p.rtest(&[
        "plan",
        "--probe",
        "--tx",
        &sshd.venv_tx(2, ""),
        "--tx",
        &sshd.tx(1, &format!("//python={}", bare.display())),
    ]);
    r.code(0)
        .stdout_has(&format!(
            "{} on 127.0.0.1 (gw0, gw1): Python 3.",
            venv_python().display()
        ))
        .stdout_has(&format!("{} on 127.0.0.1 (gw2): Python 3.", bare.display()))
        .stdout_has("pytest missing (rtest ships the local one)");
    // nothing was synced
    assert!(!sshd.home().join(".cache/rtest").exists());
}

#[test]
fn dist_each_names_the_environment_of_every_failure() {
    let Some(sshd) = sshd() else { return };
    let p = Project::new().file(
        "test_env.py",
        "def test_fails():\n    assert False\n\ndef test_ok():\n    pass\n",
    );
    let tx = sshd.venv_tx(1, "");
    let r = p.rtest(&[
        "--dist",
        "each",
        "--tx",
        "popen",
        "--tx",
        &tx,
        "--rsyncdir",
        ".",
        "-rfE",
        "--junitxml",
        "each.xml",
    ]);
    r.code(1);
    assert_eq!(r.summary(), "2 failed, 2 passed");
    // JUnit says which environment ran each case.
    let xml = p.read("each.xml");
    for prop in [
        "<property name=\"host\" value=\"127.0.0.1\" />",
        "<property name=\"host\" value=\"localhost\" />",
        "<property name=\"python\" value=\"CPython 3.",
    ] {
        assert!(xml.contains(prop), "{prop} not in {xml}");
    }
    r.stdout_has("FAILED test_env.py::test_fails [gw0 on localhost, Python 3.")
        .stdout_has("FAILED test_env.py::test_fails [gw1 on 127.0.0.1, Python 3.")
        .stdout_has("[gw1 on 127.0.0.1] linux -- Python 3.");
}

#[test]
fn ctrl_c_kills_the_remote_workers_and_closes_the_masters() {
    let Some(sshd) = sshd() else { return };
    let marker = format!("rtest-int-{}", std::process::id());
    let p = Project::new().file(
        "test_slow.py",
        &format!(
            r#"
import subprocess, time
def test_slow():
    subprocess.Popen(["sh", "-c", "sleep 300; echo {marker}"])
    time.sleep(300)
"#
        ),
    );
    let tx = sshd.venv_tx(2, "");
    let child = p
        .command(&["--tx", &tx, "--rsyncdir", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the test to start", Duration::from_secs(30), || {
        running(&marker)
    });
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let r = Run::from(out);
    r.code(2);
    assert_no_master_left(&sshd);
    wait_until(
        "the remote test processes to end",
        Duration::from_secs(10),
        || !running(&marker),
    );
}

#[test]
fn a_missing_remote_python_is_named_with_its_host() {
    let Some(sshd) = sshd() else { return };
    let p = suite();
    let r = p.rtest(&[
        "--tx",
        &sshd.tx(1, "//python=python9.99"),
        "--rsyncdir",
        "pkg",
    ]);
    r.code(4)
        .stderr_has("worker gw0 (ssh=127.0.0.1")
        .stderr_has("python9.99 did not start the agent")
        .stderr_has("not found");
}

#[test]
fn plan_shows_which_ssh_connection_each_worker_shares() {
    // No sshd needed: `rtest plan` touches no host.
    let p = suite();
    let r = p.rtest(&[
        "plan",
        "--tx",
        "10*ssh=ci@build1:2222//python=python3.12",
        "--tx",
        "ssh=build2",
    ]);
    r.code(0)
        .stdout_has("gw0  ssh on ci@build1:2222  python=python3.12  connection=1")
        .stdout_has("gw8  ssh on ci@build1:2222  python=python3.12  connection=1")
        .stdout_has("gw9  ssh on ci@build1:2222  python=python3.12  connection=2")
        .stdout_has("gw10  ssh on build2  python=python3  connection=1");
    let json = p.rtest(&["plan", "--format", "json", "--tx", "10*ssh=build1"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let conns: Vec<u64> = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["ssh_connection"].as_u64().unwrap())
        .collect();
    assert_eq!(conns, [1, 1, 1, 1, 1, 1, 1, 1, 1, 2]);
}

#[test]
fn a_too_old_remote_python_is_a_clear_error() {
    let Some(sshd) = sshd() else { return };
    // A Python that says it is 3.7 (a sitecustomize on its PYTHONPATH).
    let old = sshd.dir.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(
        old.join("sitecustomize.py"),
        "import sys\nsys.version_info = (3, 7, 9, 'final', 0)\n",
    )
    .unwrap();
    let p = suite();
    let tx = sshd.venv_tx(1, &format!("//env:PYTHONPATH={}", old.display()));
    let r = p.rtest(&["--tx", &tx, "--rsyncdir", "pkg"]);
    r.code(4)
        .stderr_has("worker gw0 (ssh=127.0.0.1")
        .stderr_has("is Python 3.7.9; rtest's agent needs Python 3.8 or newer");
}

#[test]
fn without_rsyncdirs_the_rootdir_is_mirrored_without_environments() {
    let Some(sshd) = sshd() else { return };
    let p = suite()
        .file(".venv/lib/site.py", "raise SystemExit('never imported')\n")
        .file("node_modules/x/index.js", "\n");
    let tx = sshd.venv_tx(2, "");
    let plan = p.rtest(&["plan", "--tx", &tx]);
    plan.code(0)
        .stdout_has("ignore .venv  (default: no rsyncdirs, so the rootdir is mirrored)");
    let r = p.rtest(&["--tx", &tx]);
    assert_eq!(r.summary(), "2 failed, 12 passed, 1 skipped, 1 xfailed");
    let copy = copies(&sshd.home()).pop().expect("a synced copy");
    assert!(copy.join("tests/test_suite.py").is_file());
    assert!(!copy.join(".venv").exists());
    assert!(!copy.join("node_modules").exists());
}

#[test]
fn warnings_and_tracebacks_from_a_copy_name_local_paths() {
    let Some(sshd) = sshd() else { return };
    let p = Project::new().file(
        "test_w.py",
        "import warnings\n\ndef test_w():\n    warnings.warn('careful')\n\ndef test_f():\n    raise ValueError(__file__)\n",
    );
    let tx = sshd.venv_tx(1, "");
    let r = p.rtest(&["--tx", &tx, "--rsyncdir", ".", "--tb=long"]);
    r.code(1)
        .stdout_has(&format!(
            "{}/test_w.py:4: UserWarning: careful",
            p.path().display()
        ))
        .stdout_has(&format!("ValueError: {}/test_w.py", p.path().display()))
        .stdout_has(&format!(
            "FAILED test_w.py::test_f - ValueError: {}/test_w.py",
            p.path().display()
        ));
    // Only the sync note names the copy.
    assert_eq!(r.stdout.matches(".cache/rtest").count(), 1, "{}", r.stdout);
}

#[test]
fn a_remote_test_hung_in_c_code_is_killed_over_ssh() {
    let Some(sshd) = sshd() else { return };
    // Catastrophic backtracking holds the GIL inside the regex engine: the
    // agent itself cannot act, only a kill from outside ends it.
    let pidfile = sshd.dir.path().join("hung.pid");
    let p = Project::new().file(
        "test_gil.py",
        &format!(
            "import os, re\n\ndef test_gil():\n    open({:?}, 'w').write(str(os.getpid()))\n    re.match(r'(a+)+$', 'a' * 64 + 'b')\n",
            pidfile.display().to_string()
        ),
    );
    let tx = sshd.venv_tx(1, "");
    let r = p.rtest(&["--tx", &tx, "--rsyncdir", ".", "--timeout", "2"]);
    r.code(1).stdout_has("ran longer than 2s");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    wait_until(
        "the hung worker to be killed",
        Duration::from_secs(10),
        || unsafe { libc::kill(pid, 0) != 0 },
    );
}

#[test]
fn nice_and_env_apply_to_ssh_workers() {
    let Some(sshd) = sshd() else { return };
    // Relative to the niceness the harness (and so sshd) runs at.
    let want = crate::harness::niceness_after(7);
    let p = Project::new().file(
        "test_nice.py",
        &format!("import os\n\ndef test_nice():\n    assert os.nice(0) == {want}\n    assert os.environ['GREETING'] == 'hello world'\n"),
    );
    let tx = sshd.venv_tx(1, "//nice=7//env:GREETING=hello world");
    let r = p.rtest(&["--tx", &tx, "--rsyncdir", "."]);
    r.code(0);
    assert_eq!(r.summary(), "1 passed");
}

#[test]
fn coverage_over_ssh_equals_a_local_run() {
    let Some(sshd) = sshd() else { return };
    let p = crate::plugins::covered(false);
    let args = ["--cov=pkg", "--cov-report=term-missing"];
    let local = p.rtest(&[&["-n", "2"][..], &args[..]].concat());
    local.code(0);
    std::fs::remove_file(p.path().join(".coverage")).unwrap();
    let tx = sshd.venv_tx(2, "");
    let remote = p.rtest(&[&["--tx", &tx][..], &args[..]].concat());
    remote.code(0).stdout_has("gw0, gw1: ssh=127.0.0.1");
    let total = crate::plugins::coverage_table;
    assert_eq!(total(&remote), total(&local), "{}", remote.stdout);
    assert!(
        total(&remote).iter().any(|l| l.starts_with("TOTAL")),
        "{}",
        remote.stdout
    );
    // The remote workers' data came back and was combined here.
    assert!(p.path().join(".coverage").is_file());
}

#[test]
fn the_seeds_command_line_works_from_above_a_rootdir_with_its_own_ini() {
    let Some(sshd) = sshd() else { return };
    let p = crate::harness::seed_project();
    let local = crate::harness::seed_local(&p);
    // `rtest -d --tx ssh=host//python=python3 --rsyncdir mypkg mypkg`,
    // with the system python3 (pytest is shipped when it lacks it).
    let tx = sshd.tx(1, "//python=python3");
    let r = p.rtest(&[
        "-d",
        "--tx",
        &tx,
        "--rsyncdir",
        "mypkg",
        "mypkg",
        "--junitxml",
        "remote.xml",
    ]);
    r.code(1)
        .stdout_has("FAILED mypkg/test_seed.py::test_p[2]")
        .stdout_has("mypkg/test_seed.py:8: AssertionError")
        // The bare python3 got pytest alone: the plugins installed here
        // skip their per-worker hooks for it, and say so.
        .stderr_has("rtest: gw0 (ssh=127.0.0.1")
        .stderr_has("lacks plugins this run has: ")
        .stderr_has("pytest-metadata ");
    assert_eq!(junit_outcomes(&p.path().join("remote.xml")), local);
    // The copy mirrors the current directory's layout: mypkg and the
    // plugins beside it.
    let copy = std::fs::read_dir(sshd.home().join(".cache/rtest"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|c| c.join("mypkg").is_dir())
        .expect("a copy with mypkg");
    assert!(copy.join("mypkg/pytest.ini").is_file());
    assert!(copy.join("plugins/seedplugin.py").is_file());
}

#[test]
fn remote_workers_killed_or_dropped_anywhere_never_cost_a_result() {
    let Some(sshd) = sshd() else { return };
    let (seed, runs) = crate::chaos::chaos_settings(4);
    let spec = sshd.venv_tx(2, "");
    let args = ["--rsyncdir".to_string(), ".".to_string()];
    crate::chaos::chaos_runs(
        seed ^ 0x55,
        runs,
        &["kill", "segv", "exit", "drop"],
        &args,
        Some(&spec),
    );
}
