//! The socket transport against the real single-file Python server that
//! `rtest socketserver` prints.

use crate::harness::{junit_outcomes, venv_python, Project, Run};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    port: u16,
    _home: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script() -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let out = Command::new(env!("CARGO_BIN_EXE_rtest"))
        .arg("socketserver")
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = dir.join("socketserver.py");
    std::fs::write(&path, out.stdout).unwrap();
    path
}

fn start(args: &[&str], token: Option<&str>) -> Result<Server, String> {
    start_kind(false, args, token)
}

/// The Python server (`rtest socketserver`), or `rtest serve` with `rust`.
fn start_kind(rust: bool, args: &[&str], token: Option<&str>) -> Result<Server, String> {
    let home = tempfile::tempdir().unwrap();
    let log = home.path().join("server.log");
    let mut cmd = if rust {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rtest"));
        c.arg("serve");
        c
    } else {
        let mut c = Command::new(venv_python());
        c.arg(script());
        c
    };
    cmd.args(args)
        .env("HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    match token {
        Some(t) => cmd.env("RTEST_TOKEN", t),
        None => cmd.env_remove("RTEST_TOKEN"),
    };
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(port) = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .filter(|_| line.starts_with("listening"))
    else {
        let _ = child.wait();
        return Err(std::fs::read_to_string(&log).unwrap_or_default());
    };
    Ok(Server {
        child,
        port,
        _home: home,
        log,
    })
}

fn project() -> Project {
    Project::new()
        .file("pytest.ini", "[pytest]\n")
        .file("pkg/test_a.py", "import pytest\n\n@pytest.mark.parametrize('i', range(8))\ndef test_p(i):\n    assert i != 5\n\ndef test_skip():\n    pytest.skip('later')\n")
        .file("pkg/sub/test_b.py", "import os\n\ndef test_cwd():\n    assert '.cache/rtest' in os.getcwd()\n")
}

fn rtest(p: &Project, token: &str, args: &[&str]) -> Run {
    Run::from(p.command(args).env("RTEST_TOKEN", token).output().unwrap())
}

#[test]
fn a_run_over_the_socket_server_matches_a_local_run() {
    over_a_server_matches_a_local_run(false);
}

#[test]
fn a_run_over_rtest_serve_matches_a_local_run() {
    over_a_server_matches_a_local_run(true);
}

fn over_a_server_matches_a_local_run(rust: bool) {
    let server = start_kind(rust, &["--listen", "127.0.0.1:0"], Some("s3cret")).unwrap();
    let p = project();
    let tx = format!(
        "2*socket=127.0.0.1:{}//python={}",
        server.port,
        venv_python().display()
    );
    let r = rtest(
        &p,
        "s3cret",
        &[
            "--tx",
            &tx,
            "--rsyncdir",
            "pkg",
            "-p",
            "no:cacheprovider",
            "--junitxml",
            "remote.xml",
            "pkg",
        ],
    );
    r.code(1)
        .stdout_has("synced to ")
        .stdout_has("FAILED pkg/test_a.py::test_p[5]");
    assert_eq!(r.summary(), "1 failed, 8 passed, 1 skipped");
    // The same outcomes as local workers, node by node (but for where the
    // copy lives).
    let local = rtest(
        &p,
        "",
        &[
            "-n",
            "2",
            "-p",
            "no:cacheprovider",
            "--junitxml",
            "local.xml",
            "pkg",
        ],
    );
    local.code(1);
    let remote = junit_outcomes(&p.path().join("remote.xml"));
    let mut local = junit_outcomes(&p.path().join("local.xml"));
    for (name, outcome) in local.iter_mut() {
        if name.ends_with("test_cwd") {
            *outcome = "passed".into();
        }
    }
    assert_eq!(remote, local);
    // A second run sends nothing.
    let again = rtest(
        &p,
        "s3cret",
        &[
            "--tx",
            &tx,
            "--rsyncdir",
            "pkg",
            "-p",
            "no:cacheprovider",
            "pkg",
        ],
    );
    again.stdout_has("0 of 3 files sent");
}

#[test]
fn a_wrong_token_is_refused_and_logged() {
    wrong_token_is_refused(false);
}

#[test]
fn rtest_serve_refuses_a_wrong_token_and_starts_only_with_one() {
    wrong_token_is_refused(true);
    let err = start_kind(true, &["--listen", "127.0.0.1:0"], None)
        .err()
        .unwrap_or_default();
    assert!(err.contains("no token"), "{err}");
    let err = start_kind(
        true,
        &["--listen", "0.0.0.0:0", "--insecure-no-token"],
        None,
    )
    .err()
    .unwrap_or_default();
    assert!(err.contains("only allowed on a loopback address"), "{err}");
    assert!(start_kind(
        true,
        &["--listen", "127.0.0.1:0", "--insecure-no-token"],
        None
    )
    .is_ok());
}

fn wrong_token_is_refused(rust: bool) {
    let server = start_kind(rust, &["--listen", "127.0.0.1:0"], Some("s3cret")).unwrap();
    let p = project();
    let tx = format!(
        "socket=127.0.0.1:{}//python={}",
        server.port,
        venv_python().display()
    );
    rtest(&p, "guess", &["--tx", &tx, "pkg"])
        .code(4)
        .stderr_has("refused the connection: wrong or missing token");
    rtest(&p, "", &["--tx", &tx, "pkg"])
        .code(4)
        .stderr_has("wrong or missing token");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("bad token"), "{log}");
    assert!(
        !log.contains(" runs "),
        "an unauthenticated peer got a process: {log}"
    );
}

#[test]
fn no_token_means_no_server_unless_insecure_on_loopback() {
    let err = start(&["--listen", "127.0.0.1:0"], None)
        .err()
        .unwrap_or_default();
    assert!(err.contains("no token"), "{err}");
    let err = start(&["--listen", "0.0.0.0:0", "--insecure-no-token"], None)
        .err()
        .unwrap_or_default();
    assert!(err.contains("only allowed on a loopback address"), "{err}");
    let server = start(&["--listen", "127.0.0.1:0", "--insecure-no-token"], None).unwrap();
    let p = project();
    let tx = format!(
        "socket=127.0.0.1:{}//python={}",
        server.port,
        venv_python().display()
    );
    let r = rtest(
        &p,
        "",
        &[
            "--tx",
            &tx,
            "--rsyncdir",
            "pkg",
            "-p",
            "no:cacheprovider",
            "pkg",
        ],
    );
    assert_eq!(r.summary(), "1 failed, 8 passed, 1 skipped");
}

/// A local port that refuses connections, bound (never listening) for as
/// long as the returned descriptor lives, so no one else can take it.
fn refusing_port() -> (u16, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // address structs are zeroed and sized as the calls expect.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let sa = &addr as *const libc::sockaddr_in as *const libc::sockaddr;
        assert_eq!(
            libc::bind(fd, sa, len),
            0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        let out = &mut got as *mut libc::sockaddr_in as *mut libc::sockaddr;
        assert_eq!(libc::getsockname(fd, out, &mut got_len), 0);
        (u16::from_be(got.sin_port), owned)
    }
}

#[test]
fn an_unreachable_host_is_skipped_unless_all_hosts_are_required() {
    let p = project();
    // a port nothing listens on, held for the test (a port merely found
    // free could be taken by another test's server meanwhile)
    let (port, _held) = refusing_port();
    let tx = format!("socket=127.0.0.1:{port}");
    let r = rtest(
        &p,
        "x",
        &[
            "-n",
            "1",
            "--tx",
            &tx,
            "-p",
            "no:cacheprovider",
            "pkg/test_a.py",
        ],
    );
    r.code(1)
        .stdout_has("cannot connect")
        .stdout_has("going on without it");
    assert_eq!(r.summary(), "1 failed, 7 passed, 1 skipped");
    rtest(
        &p,
        "x",
        &[
            "-n",
            "1",
            "--tx",
            &tx,
            "--require-all-hosts",
            "pkg/test_a.py",
        ],
    )
    .code(4)
    .stderr_has("cannot connect");
}

#[test]
fn a_connection_dropped_mid_run_costs_only_the_running_test() {
    let mut server = start(&["--listen", "127.0.0.1:0"], Some("s3cret")).unwrap();
    // loadfile with one file per worker (whichever collects first takes
    // the first): the file the socket worker takes hangs there.
    let hangs_remotely = "import os, time\n\ndef test_hang():\n    if '.cache/rtest' in os.getcwd():\n        open(os.environ['MARK'], 'w').close()\n        time.sleep(60)\n\ndef test_3():\n    pass\n";
    let p = Project::new()
        .file("pytest.ini", "[pytest]\n")
        .file("pkg/test_a.py", hangs_remotely)
        .file("pkg/test_b.py", hangs_remotely);
    let mark = p.path().join("remote-started");
    let tx = format!(
        "socket=127.0.0.1:{}//python={}//env:MARK={}",
        server.port,
        venv_python().display(),
        mark.display()
    );
    let mut child = p
        .command(&[
            "-n",
            "1",
            "--tx",
            &tx,
            "--rsyncdir",
            "pkg",
            "-p",
            "no:cacheprovider",
            "--dist",
            "loadfile",
            "pkg",
        ])
        .env("RTEST_TOKEN", "s3cret")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !mark.exists() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the socket worker never started test_hang");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.child.kill().unwrap();
    let _ = server.child.wait();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("crashed while running pkg/test_a.py::test_hang")
            || stdout.contains("crashed while running pkg/test_b.py::test_hang"),
        "{stdout}"
    );
    // Every test has an outcome: the local worker ran its file; test_3,
    // queued behind the dropped test, is reported (run elsewhere if a worker
    // could take it, else "not run").
    assert!(
        stdout.contains("1 failed, 2 passed, 1 error") || stdout.contains("1 failed, 3 passed"),
        "{stdout}"
    );
}

#[test]
fn a_remote_python_without_pytest_gets_the_local_one() {
    let server = start(&["--listen", "127.0.0.1:0"], Some("s3cret")).unwrap();
    let p = project();
    let bare = p.path().join("bare");
    let status = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg("--without-pip")
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
    let tx = format!(
        "2*socket=127.0.0.1:{}//python={}",
        server.port,
        bare.join("bin/python").display()
    );
    let r = rtest(
        &p,
        "s3cret",
        &[
            "--tx",
            &tx,
            "--rsyncdir",
            "pkg",
            "-p",
            "no:cacheprovider",
            "pkg",
        ],
    );
    r.stdout_has("has no pytest: pytest ");
    r.stdout_has(" files to ");
    assert_eq!(r.summary(), "1 failed, 8 passed, 1 skipped");
    // shipped once, reused
    let again = rtest(
        &p,
        "s3cret",
        &[
            "--tx",
            &tx,
            "--rsyncdir",
            "pkg",
            "-p",
            "no:cacheprovider",
            "pkg",
        ],
    );
    again.stdout_has("uses the copy already in");
    assert_eq!(again.summary(), "1 failed, 8 passed, 1 skipped");
}

#[test]
fn plan_probe_reports_each_interpreter_without_running_tests() {
    let server = start(&["--listen", "127.0.0.1:0"], Some("s3cret")).unwrap();
    let p = project();
    let bare = p.path().join("bare");
    assert!(Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg("--without-pip")
        .arg(&bare)
        .status()
        .unwrap()
        .success());
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tx1 = format!(
        "2*socket=127.0.0.1:{}//python={}",
        server.port,
        venv_python().display()
    );
    let tx2 = format!(
        "socket=127.0.0.1:{}//python={}",
        server.port,
        bare.join("bin/python").display()
    );
    let tx3 = format!("socket=127.0.0.1:{dead}");
    let r = rtest(
        &p,
        "s3cret",
        &[
            "plan", "--format", "json", "--probe", "-n", "1", "--tx", &tx1, "--tx", &tx2, "--tx",
            &tx3,
        ],
    );
    r.code(0);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let probes = j["probe"].as_array().unwrap();
    assert_eq!(probes.len(), 4, "{probes:#?}");
    assert_eq!(probes[1]["workers"], serde_json::json!(["gw1", "gw2"]));
    assert!(probes[1]["pytest"]
        .as_str()
        .unwrap()
        .starts_with(|c: char| c.is_ascii_digit()));
    assert!(probes[2]["pytest"].is_null() && probes[2]["python_version"].is_string());
    assert!(probes[3]["error"]
        .as_str()
        .unwrap()
        .contains("cannot connect"));
    // nothing was synced or run
    assert!(!p.path().join(".rtest").exists());
    let text = rtest(&p, "s3cret", &["plan", "--probe", "--tx", &tx2]);
    text.code(0)
        .stdout_has("pytest missing (rtest ships the local one)");
}

#[test]
fn nice_applies_to_socket_workers() {
    let server = start(&["--listen", "127.0.0.1:0"], Some("s3cret")).unwrap();
    // Relative to the niceness the harness (and so the server) runs at.
    let want = crate::harness::niceness_after(6);
    let p = Project::new().file(
        "test_nice.py",
        &format!("import os\n\ndef test_nice():\n    assert os.nice(0) == {want}\n"),
    );
    let tx = format!(
        "socket=127.0.0.1:{}//python={}//nice=6",
        server.port,
        venv_python().display()
    );
    let r = rtest(&p, "s3cret", &["--tx", &tx, "--rsyncdir", "."]);
    r.code(0);
    assert_eq!(r.summary(), "1 passed");
}

#[test]
fn coverage_over_socket_workers_equals_a_local_run() {
    let server = start_kind(true, &["--listen", "127.0.0.1:0"], Some("s3cret")).unwrap();
    let p = crate::plugins::covered(false);
    let args = ["--cov=pkg", "--cov-report=term-missing"];
    let local = rtest(&p, "s3cret", &[&["-n", "2"][..], &args[..]].concat());
    local.code(0);
    std::fs::remove_file(p.path().join(".coverage")).unwrap();
    let tx = format!(
        "2*socket=127.0.0.1:{}//python={}",
        server.port,
        venv_python().display()
    );
    let remote = rtest(&p, "s3cret", &[&["--tx", &tx][..], &args[..]].concat());
    remote.code(0).stdout_has("synced to ");
    let table = crate::plugins::coverage_table;
    assert_eq!(table(&remote), table(&local), "{}", remote.stdout);
    assert!(p.path().join(".coverage").is_file());
}

#[test]
fn the_seeds_command_line_works_from_above_a_rootdir_with_its_own_ini() {
    let server = start(&["--listen", "127.0.0.1:0"], Some("s3ed")).unwrap();
    let p = crate::harness::seed_project();
    let local = crate::harness::seed_local(&p);
    // `rtest -d --tx socket=host:8888 --rsyncdir mypkg mypkg`
    let tx = format!(
        "socket=127.0.0.1:{}//python={}",
        server.port,
        venv_python().display()
    );
    let r = rtest(
        &p,
        "s3ed",
        &[
            "-d",
            "--tx",
            &tx,
            "--rsyncdir",
            "mypkg",
            "mypkg",
            "--junitxml",
            "remote.xml",
        ],
    );
    r.code(1).stdout_has("FAILED mypkg/test_seed.py::test_p[2]");
    assert_eq!(junit_outcomes(&p.path().join("remote.xml")), local);
}
