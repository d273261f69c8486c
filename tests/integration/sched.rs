//! Duration history and CI shards.

use crate::harness::{junit_outcomes, Project};

fn suite() -> Project {
    let mut body = String::from("import time\nimport pytest\n\n@pytest.mark.parametrize('i', range(12))\ndef test_p(i):\n    time.sleep(0.01 * (i % 3))\n");
    body.push_str("\ndef test_long():\n    time.sleep(0.3)\n");
    Project::new().file("test_a.py", &body).file(
        "test_b.py",
        "def test_1():\n    pass\n\ndef test_2():\n    pass\n",
    )
}

#[test]
fn durations_are_recorded_after_every_run() {
    let p = suite();
    p.rtest(&["-n", "2", "-p", "no:cacheprovider"]).code(0);
    let h: serde_json::Value = serde_json::from_str(&p.read(".rtest/durations.json")).unwrap();
    assert_eq!(h["runs"], 1);
    assert_eq!(h["tests"].as_object().unwrap().len(), 15);
    assert!(h["tests"]["test_a.py::test_long"]["d"].as_f64().unwrap() >= 0.3);
    // The next run uses it and merges into it.
    p.rtest(&["-n", "2", "-p", "no:cacheprovider"]).code(0);
    let h: serde_json::Value = serde_json::from_str(&p.read(".rtest/durations.json")).unwrap();
    assert_eq!(h["runs"], 2);
}

#[test]
fn shards_split_the_suite_without_overlap() {
    let p = suite();
    // without history, then with it (shard runs only read the history)
    for round in 0..2 {
        if round == 1 {
            p.rtest(&["-n", "2", "-p", "no:cacheprovider"]).code(0);
            assert!(p.path().join(".rtest/durations.json").exists());
        }
        let mut seen: Vec<String> = Vec::new();
        for k in 1..=3 {
            let junit = format!("s{k}.xml");
            let r = p.rtest(&[
                "-n",
                "2",
                "-p",
                "no:cacheprovider",
                "--shard",
                &format!("{k}/3"),
                "--junitxml",
                &junit,
            ]);
            r.code(0).stdout_has("deselected");
            let xml = p.read(&junit);
            assert!(
                xml.contains(&format!("name=\"pytest (shard {k}/3)\"")),
                "{xml}"
            );
            seen.extend(
                junit_outcomes(&p.path().join(&junit))
                    .into_iter()
                    .map(|(n, _)| n),
            );
        }
        let total = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!((round, total, seen.len()), (round, 15, 15));
    }
}

#[test]
fn bad_shard_values_are_usage_errors() {
    let p = suite();
    for bad in ["0/2", "3/2", "x", "1/0", "1-2"] {
        p.rtest(&["--shard", bad])
            .code(4)
            .stderr_has("--shard: expected K/N with 1 <= K <= N");
    }
}

#[test]
fn plan_collect_shows_the_shard_split() {
    let p = suite();
    let r = p.rtest(&[
        "plan",
        "--collect",
        "-n",
        "2",
        "--shard",
        "2/3",
        "-p",
        "no:cacheprovider",
    ]);
    r.code(0)
        .stdout_has("collection: 15 tests (no duration history)")
        .stdout_has("<- this job");
    p.rtest(&["-n", "2", "-p", "no:cacheprovider"]).code(0);
    let out = p.rtest(&[
        "plan",
        "--format",
        "json",
        "--collect",
        "-n",
        "2",
        "--shard",
        "1/3",
        "-p",
        "no:cacheprovider",
    ]);
    out.code(0);
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let c = &j["collect"];
    assert_eq!(c["total"], 15);
    assert_eq!(c["history"], true);
    let shards = c["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    let sum: u64 = shards.iter().map(|s| s["tests"].as_u64().unwrap()).sum();
    assert_eq!(sum, 15);
    assert_eq!(shards[0]["this_job"], true);
    assert_eq!(c["selected"], shards[0]["tests"]);
    // the split shown is the split a run uses
    let run = p.rtest(&["-n", "2", "-p", "no:cacheprovider", "--shard", "1/3"]);
    run.code(0);
    assert!(
        run.summary()
            .starts_with(&format!("{} passed", shards[0]["tests"])),
        "{}",
        run.summary()
    );
}

/// Tests that lean on the ones collected before them in their module (set
/// up state, or say so with pytest-order or pytest-dependency) pass under
/// xdist's `load` when they share a worker, since every worker runs its
/// tests in collection order. With a duration history they still do: only
/// the long tests are moved ahead.
#[test]
fn with_history_each_worker_still_runs_its_tests_in_collection_order() {
    let body = "import time\nimport pytest\n\nSEEN = []\n\n\
        def step(n):\n    SEEN.append(n)\n    assert SEEN == sorted(SEEN), SEEN\n\n\
        @pytest.mark.parametrize('i', range(20))\n\
        def test_first(i):\n    time.sleep(0.002 * (i % 5))\n    step(i)\n\n\
        def test_long():\n    time.sleep(0.4)\n\n\
        @pytest.mark.parametrize('i', range(20))\n\
        def test_second(i):\n    time.sleep(0.002 * (i % 3))\n    step(100 + i)\n";
    let p = Project::new().file("test_order.py", body);
    for run in 0..3 {
        p.rtest(&["-n", "2", "-p", "no:cacheprovider"])
            .code(0)
            .stdout_has("41 passed");
        assert!(p.path().join(".rtest/durations.json").exists(), "run {run}");
    }
}

#[test]
fn no_loadscope_reorder_keeps_files_in_collection_order() {
    // One worker: the order it runs the files in is the order they went out.
    let mut p = Project::new();
    for (name, n) in [("test_a.py", 1), ("test_b.py", 2), ("test_c.py", 3)] {
        let mut body = String::from("import os\n\n");
        for k in 0..n {
            body.push_str(&format!(
                "def test_{k}():\n    with open(os.path.join(os.path.dirname(__file__), 'order.txt'), 'a') as f:\n        f.write('{name}\\n')\n\n"
            ));
        }
        p = p.file(name, &body);
    }
    let files = |p: &Project| {
        let mut seen: Vec<String> = Vec::new();
        for line in p.read("order.txt").lines() {
            if seen.last().map(String::as_str) != Some(line) {
                seen.push(line.to_string());
            }
        }
        std::fs::remove_file(p.path().join("order.txt")).unwrap();
        seen
    };
    p.rtest(&["-n", "1", "--dist", "loadfile", "-p", "no:cacheprovider"])
        .code(0);
    assert_eq!(files(&p), ["test_c.py", "test_b.py", "test_a.py"]);
    p.rtest(&[
        "-n",
        "1",
        "--dist",
        "loadfile",
        "--no-loadscope-reorder",
        "-p",
        "no:cacheprovider",
    ])
    .code(0);
    assert_eq!(files(&p), ["test_a.py", "test_b.py", "test_c.py"]);
    // From the ini's addopts too, as xdist reads it there.
    let p = p.file("pytest.ini", "[pytest]\naddopts = --no-loadscope-reorder\n");
    p.rtest(&["-n", "1", "--dist", "loadscope", "-p", "no:cacheprovider"])
        .code(0);
    assert_eq!(files(&p), ["test_a.py", "test_b.py", "test_c.py"]);
}

#[test]
fn the_first_worker_to_collect_starts_and_a_slower_one_joins() {
    // gw1 takes two seconds longer to collect (a slow import, a remote
    // host's sync): gw0 does not wait for it, and gw1 still gets its share
    // once it has collected. Every test runs once.
    let p = Project::new()
        .file(
            "conftest.py",
            "import os, time\n\n\
             def pytest_collection_modifyitems(items):\n\
             \x20   if os.environ.get('PYTEST_XDIST_WORKER') == 'gw1':\n\
             \x20       time.sleep(2)\n\
             \x20       with open('gw1.collected', 'w') as f:\n\
             \x20           f.write(repr(time.time()))\n",
        )
        .file(
            "test_s.py",
            "import time, pytest\n\n\
             @pytest.mark.parametrize('i', range(12))\n\
             def test_s(i, worker_id):\n\
             \x20   with open('ran.%d' % i, 'w') as f:\n\
             \x20       f.write('%s %r' % (worker_id, time.time()))\n\
             \x20   time.sleep(0.3)\n",
        );
    let r = p.rtest(&["-n", "2", "-p", "no:cacheprovider", "-p", "no:randomly"]);
    r.code(0);
    assert_eq!(r.summary(), "12 passed");
    let collected: f64 = p.read("gw1.collected").parse().unwrap();
    let ran: Vec<(String, f64)> = (0..12)
        .map(|i| {
            let text = p.read(&format!("ran.{i}"));
            let (worker, at) = text.split_once(' ').unwrap();
            (worker.to_string(), at.parse().unwrap())
        })
        .collect();
    assert!(
        ran.iter().any(|(w, at)| w == "gw0" && *at < collected),
        "gw0 waited for gw1's collection: {ran:?} (gw1 collected at {collected})"
    );
    assert!(
        ran.iter().any(|(w, _)| w == "gw1"),
        "gw1 ran nothing: {ran:?}"
    );
}
