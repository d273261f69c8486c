//! Sync: rsyncdirs mirrored into a worker's copy of the tree.

use crate::harness::{Project, Run};

fn project() -> Project {
    Project::new()
        .file("pytest.ini", "[pytest]\nmarkers =\n    slow: slow tests\n")
        .file(
            "pkg/test_s.py",
            "import os\n\ndef test_where():\n    assert os.environ['REMOTE'] in os.getcwd()\n\ndef test_data():\n    here = os.path.dirname(__file__)\n    assert open(os.path.join(here, 'data.txt')).read() == 'hi'\n",
        )
        .file("pkg/data.txt", "hi")
        .file("pkg/sub/test_sub.py", "def test_sub():\n    pass\n")
        .file("pkg/__pycache__/junk.pyc", "junk")
        .file("pkg/scratch.tmp", "not synced")
}

#[test]
fn popen_chdir_workers_run_in_a_synced_copy_with_the_same_node_ids() {
    let p = project();
    std::os::unix::fs::symlink("data.txt", p.path().join("pkg/alias.txt")).unwrap();
    let remote = tempfile::tempdir().unwrap();
    let tx = format!(
        "2*popen//chdir={}//env:REMOTE={}",
        remote.path().display(),
        remote.path().display()
    );
    let run = |p: &Project| {
        crate::harness::Run::from(
            p.command(&[
                "--tx",
                &tx,
                "--rsyncdir",
                "pkg",
                "--rsyncignore",
                "*.tmp",
                "-v",
                "-p",
                "no:cacheprovider",
                "pkg",
            ])
            .output()
            .unwrap(),
        )
    };
    let r = run(&p);
    r.code(0)
        .stdout_has("synced to ")
        .stdout_has("5 of 5 files sent")
        .stdout_has("PASSED pkg/test_s.py::test_where")
        .stdout_has("PASSED pkg/sub/test_sub.py::test_sub");
    let copy = remote.path();
    assert!(copy.join("pytest.ini").is_file());
    assert!(copy.join("pkg/data.txt").is_file());
    assert!(
        !copy.join("pkg/scratch.tmp").exists(),
        "rsyncignore was not applied"
    );
    assert!(
        !copy.join("pkg/__pycache__/junk.pyc").exists(),
        "default ignores were not applied"
    );
    assert_eq!(
        std::fs::read_link(copy.join("pkg/alias.txt")).unwrap(),
        std::path::Path::new("data.txt")
    );
    // The history stays in the local rootdir.
    assert!(p.path().join(".rtest/durations.json").is_file());
    // Nothing changed: nothing travels.
    run(&p)
        .code(0)
        .stdout_has("0 of 5 files sent (0 bytes), 0 deleted");
    // A change and a deletion travel.
    std::fs::remove_file(p.path().join("pkg/sub/test_sub.py")).unwrap();
    std::fs::write(p.path().join("pkg/data.txt"), "hi").unwrap();
    let mtime = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(p.path().join("pkg/data.txt"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let r = run(&p);
    r.code(0)
        .stdout_has("1 of 4 files sent (2 bytes), 1 deleted");
    assert!(!copy.join("pkg/sub/test_sub.py").exists());
    // A directory that became a file, and a file that became a directory
    // (with something of the copy's own, ignored, inside the old one).
    std::fs::create_dir_all(copy.join("pkg/sub/__pycache__")).unwrap();
    std::fs::write(copy.join("pkg/sub/__pycache__/x.pyc"), "x").unwrap();
    std::fs::remove_dir_all(p.path().join("pkg/sub")).unwrap();
    std::fs::write(p.path().join("pkg/sub"), "now a file").unwrap();
    std::fs::write(p.path().join("pkg/flip"), "a file").unwrap();
    run(&p).code(0);
    assert_eq!(
        std::fs::read_to_string(copy.join("pkg/sub")).unwrap(),
        "now a file"
    );
    std::fs::remove_file(p.path().join("pkg/flip")).unwrap();
    std::fs::create_dir_all(p.path().join("pkg/flip")).unwrap();
    std::fs::write(p.path().join("pkg/flip/inner.txt"), "inside").unwrap();
    run(&p).code(0);
    assert_eq!(
        std::fs::read_to_string(copy.join("pkg/flip/inner.txt")).unwrap(),
        "inside"
    );
}

/// Drive an agent's sync directly with hostile paths: nothing may be
/// written outside the base, and the refusals are reported.
#[test]
fn the_agent_refuses_paths_that_leave_the_sync_base() {
    use rtest::protocol::{
        bootstrap_payload, encode, read_frame, FromAgent, ToAgent, PROTOCOL_VERSION,
    };
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    std::os::unix::fs::symlink(dir.path(), base.join("up")).unwrap();
    let python = crate::harness::venv_python();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let errors = rt.block_on(async {
        let conn =
            rtest::gateway::popen::spawn(python.to_str().unwrap(), None, &Default::default(), None)
                .unwrap();
        let (mut r, mut w) = (conn.reader, conn.writer);
        let put = |path: &str| ToAgent::SyncPut {
            path: path.into(),
            offset: 0,
            data: "eJzLSM3JyQcABiwCFQ==".into(), // zlib("hello")
            raw: false,
            last: true,
            mode: 0o644,
            mtime_ns: 0,
        };
        let mut bytes = bootstrap_payload();
        for msg in [
            ToAgent::Hello {
                protocol: PROTOCOL_VERSION,
                sys_path: vec![],
                chdir: None,
            },
            ToAgent::SyncList {
                base: base.display().to_string(),
                dirs: vec!["pkg".into()],
                files: vec![],
            },
            put("../evil.txt"),
            put("/tmp/abs-evil.txt"),
            put("up/evil.txt"),
            put("pkg/./x"),
            ToAgent::SyncLink {
                path: "pkg/link".into(),
                target: "../../evil".into(),
            },
            ToAgent::SyncDelete {
                paths: vec!["../victim".into()],
            },
            put("pkg/fine.txt"),
            ToAgent::SyncEnd,
        ] {
            bytes.extend(encode(&msg));
        }
        w.write_all(&bytes).await.unwrap();
        w.flush().await.unwrap();
        loop {
            match read_frame(&mut r).await.unwrap() {
                FromAgent::Synced { errors, files, .. } => {
                    assert_eq!(files, 1, "only pkg/fine.txt may be written");
                    break errors;
                }
                _ => continue,
            }
        }
    });
    assert_eq!(errors.len(), 6, "{errors:#?}");
    assert!(!dir.path().join("evil.txt").exists());
    assert!(!std::path::Path::new("/tmp/abs-evil.txt").exists());
    assert!(!base.join("pkg/link").exists());
    assert_eq!(
        std::fs::read_to_string(base.join("pkg/fine.txt")).unwrap(),
        "hello"
    );
}

/// A same-size edit within the second of the last sync must not run the
/// copy's stale bytecode (pyc files check the source's mtime in whole
/// seconds and its size).
#[test]
fn a_same_second_same_size_edit_is_not_hidden_by_stale_bytecode() {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let p = Project::new()
        .file("pkg/__init__.py", "")
        .file("pkg/val.py", "V = 1\n")
        .file("pkg/expected.txt", "1")
        .file(
            "pkg/test_v.py",
            "import os\nfrom pkg.val import V\n\ndef test_v():\n    here = os.path.dirname(__file__)\n    assert V == int(open(os.path.join(here, 'expected.txt')).read())\n",
        );
    let copy = tempfile::tempdir().unwrap();
    let whole_second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 10;
    let set_mtime = |rel: &str, nanos: u32| {
        let t = UNIX_EPOCH + Duration::new(whole_second, nanos);
        std::fs::File::options()
            .write(true)
            .open(p.path().join(rel))
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    set_mtime("pkg/val.py", 1_000);
    let tx = format!("popen//chdir={}", copy.path().display());
    let run = || {
        Run::from(
            p.command(&[
                "--tx",
                &tx,
                "--rsyncdir",
                "pkg",
                "-p",
                "no:cacheprovider",
                "pkg",
            ])
            .env_remove("PYTHONDONTWRITEBYTECODE")
            .output()
            .unwrap(),
        )
    };
    run().code(0);
    assert!(
        copy.path().join("pkg/__pycache__").is_dir(),
        "bytecode was written"
    );
    std::fs::write(p.path().join("pkg/val.py"), "V = 2\n").unwrap();
    std::fs::write(p.path().join("pkg/expected.txt"), "2").unwrap();
    set_mtime("pkg/val.py", 2_000);
    run().code(0);
}
