//! Config files, the environment, profiles and `rtest plan`.

use crate::harness::Project;
use serde_json::Value;

fn plan_json(p: &Project, args: &[&str]) -> Value {
    let mut all = vec!["plan", "--format", "json"];
    all.extend_from_slice(args);
    let r = p.rtest(&all);
    r.code(0);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn three_levels() -> Project {
    Project::new()
        .file(
            "pyproject.toml",
            "[tool.pytest.ini_options]\ntestpaths = [\"pkg\"]\n\n[tool.rtest]\ntimeout = 30\nmaxfail = 9\nrsyncignore = [\"*.log\"]\n",
        )
        .file("conftest.kdl", "numprocesses 2\ntx \"popen//env:LEVEL=root\"\nrsyncdirs \"src\"\nprofile \"ci\" {\n    numprocesses 4\n    junitxml \"reports/j.xml\"\n}\n")
        .file("src/mod.py", "x = 1\n")
        .file("pkg/conftest.toml", "dist = \"loadfile\"\ntx = [\"ssh=ci@build1:2222//python=python3.12\"]\nrsyncignore = [\"data/\"]\n")
        .file("pkg/sub/conftest.kdl", "maxfail 3\ntx \"socket\" host=\"build3\" port=8888\n")
        .file("pkg/sub/test_x.py", "def test_x():\n    pass\n")
}

#[test]
fn three_levels_merge_with_sources() {
    let p = three_levels();
    let root = p.path().canonicalize().unwrap();
    let j = plan_json(&p, &["pkg/sub"]);
    let files: Vec<String> = j["config_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        files,
        [
            "pyproject.toml",
            "conftest.kdl",
            "pkg/conftest.toml",
            "pkg/sub/conftest.kdl"
        ]
        .iter()
        .map(|f| root.join(f).display().to_string())
        .collect::<Vec<_>>()
    );
    // Nearer files win for scalars...
    assert_eq!(j["settings"]["maxfail"]["value"], 3);
    assert_eq!(
        j["settings"]["maxfail"]["source"],
        format!("{}:1", root.join("pkg/sub/conftest.kdl").display())
    );
    assert_eq!(
        j["settings"]["timeout"]["source"],
        format!("{}:5", root.join("pyproject.toml").display())
    );
    assert_eq!(j["dist"], "loadfile");
    // ...lists accumulate outermost first.
    let workers = j["workers"].as_array().unwrap();
    let transports: Vec<&str> = workers
        .iter()
        .map(|w| w["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["popen", "popen", "popen", "ssh", "socket"]);
    assert_eq!(workers[2]["env"]["LEVEL"], "root");
    assert_eq!(workers[3]["host"], "build1");
    assert_eq!(workers[3]["python"], "python3.12");
    let ids: Vec<&str> = workers.iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gw0", "gw1", "gw2", "gw3", "gw4"]);
    // Relative paths resolve against the file that wrote them.
    let sync = j["sync"].as_array().unwrap();
    assert_eq!(sync[0]["dir"], root.join("src").display().to_string());
    assert_eq!(sync[0]["files"], 1);
    let ignores: Vec<&str> = sync[0]["ignore"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pattern"].as_str().unwrap())
        .collect();
    assert_eq!(
        ignores,
        [".git", "__pycache__", "*.pyc", ".rtest", "*.log", "data/"]
    );
    assert_eq!(
        sync[0]["ignore"][5]["base"],
        root.join("pkg").display().to_string()
    );
}

#[test]
fn env_and_cli_override_and_profiles_apply() {
    let p = three_levels();
    let root = p.path().canonicalize().unwrap();
    let out = p
        .command(&[
            "plan",
            "--format",
            "json",
            "--profile",
            "ci",
            "--maxfail",
            "7",
            "pkg/sub",
        ])
        .env("RTEST_TIMEOUT", "12")
        .output()
        .unwrap();
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["settings"]["timeout"]["value"], 12.0);
    assert_eq!(j["settings"]["timeout"]["source"], "RTEST_TIMEOUT");
    assert_eq!(j["settings"]["maxfail"]["value"], 7);
    assert_eq!(j["settings"]["maxfail"]["source"], "-x/--maxfail");
    assert_eq!(j["settings"]["numprocesses"]["value"], 4);
    assert_eq!(
        j["settings"]["junitxml"]["value"],
        root.join("reports/j.xml").display().to_string()
    );
    assert!(j["settings"]["numprocesses"]["source"]
        .as_str()
        .unwrap()
        .ends_with("conftest.kdl:5 (profile ci)"));
    let j = plan_json(&p, &["--no-config", "-n", "1"]);
    assert_eq!(j["config_files"], serde_json::json!([]));
    assert_eq!(j["workers"].as_array().unwrap().len(), 1);
    let text = p.rtest(&["plan", "pkg/sub"]);
    text.code(0)
        .stdout_has("config files (merge order):")
        .stdout_has("gw3  ssh on ci@build1:2222  python=python3.12  connection=1");
    let dot = p.rtest(&["plan", "--format", "dot", "pkg/sub"]);
    dot.code(0)
        .stdout_has("digraph rtest")
        .stdout_has("\"gw3_gateway\" -> \"gw3_sync\"");
}

#[test]
fn a_run_uses_the_config() {
    let p = Project::new()
        .file("conftest.kdl", "numprocesses 3\npytest-args \"-p\" \"no:cacheprovider\"\nmaxfail 1\n")
        .file("test_c.py", "import os\n\ndef test_a():\n    assert os.environ['PYTEST_XDIST_WORKER_COUNT'] == '3'\n");
    p.rtest(&[]).code(0).stdout_has("3 workers");
    assert!(
        !p.path().join(".pytest_cache").exists(),
        "pytest-args from the config were not used"
    );
}

#[test]
fn config_errors_name_file_line_and_key() {
    let p = Project::new()
        .file("conftest.kdl", "numprocesses 2\ndist \"load\n")
        .file("test_a.py", "def test_a():\n    pass\n");
    let r = p.rtest(&["plan"]);
    r.code(4)
        .stderr_has("conftest.kdl:2:")
        .stderr_has("2 | dist \"load")
        .stderr_has("^");

    let p = Project::new()
        .file("conftest.toml", "timeout = \"soon\"\n")
        .file("test_a.py", "");
    p.rtest(&["plan"])
        .code(4)
        .stderr_has("conftest.toml:1: timeout: invalid type: found string \"soon\"");

    let p = Project::new().file("conftest.kdl", "dist \"fast\"\n");
    p.rtest(&["plan"])
        .code(4)
        .stderr_has("conftest.kdl:1: dist: unknown dist mode \"fast\"");

    let p = Project::new().file("conftest.kdl", "tx \"popen//pyhton=3\"\n");
    p.rtest(&["plan"]).code(4).stderr_has(
        "conftest.kdl:1: tx: failed to parse tx spec \"popen//pyhton=3\": unknown part",
    );

    let p = Project::new().file("conftest.kdl", "rsyncdirs \"nope\"\n");
    p.rtest(&["plan"])
        .code(4)
        .stderr_has("conftest.kdl:1: rsyncdirs:")
        .stderr_has("nope is not a directory");

    let p = Project::new()
        .file("conftest.kdl", "numprocesses 1\n")
        .file("conftest.toml", "numprocesses = 1\n");
    p.rtest(&["plan"])
        .code(4)
        .stderr_has("both ")
        .stderr_has("keep one of them");

    let p = Project::new().file("conftest.kdl", "numprocesses 1\n");
    p.rtest(&["plan", "--profile", "nightly"])
        .code(4)
        .stderr_has("profile \"nightly\" is not defined in any config file");
}

#[test]
fn unknown_keys_warn_and_strict_config_makes_them_errors() {
    let p = Project::new()
        .file("conftest.kdl", "numprocesses 1\nnumproceses 3\n")
        .file("test_a.py", "def test_a():\n    pass\n");
    p.rtest(&["plan"])
        .code(0)
        .stderr_has("conftest.kdl:2: unknown key \"numproceses\" (ignored)");
    p.rtest(&["plan", "--strict-config"])
        .code(4)
        .stderr_has("unknown key \"numproceses\"");
}

#[test]
fn bundled_examples_carry_a_config_that_plan_accepts() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let dir = entry.unwrap().path();
        assert!(
            dir.join("conftest.kdl").is_file(),
            "{} has no conftest.kdl",
            dir.display()
        );
        let p = Project::new();
        let r = p.rtest(&["plan", dir.to_str().unwrap()]);
        r.code(0)
            .stdout_has(&dir.join("conftest.kdl").display().to_string());
    }
}

#[test]
fn committed_schemas_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for name in ["config", "plan"] {
        let r = Project::new().rtest(&["schema", name]);
        r.code(0);
        let path = dir.join(format!("{name}.json"));
        if std::env::var_os("RTEST_UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &r.stdout).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == r.stdout,
            "{} is out of date: run `RTEST_UPDATE_SCHEMAS=1 cargo test committed_schemas` and commit it",
            path.display()
        );
    }
    Project::new()
        .rtest(&["schema", "nope"])
        .code(4)
        .stderr_has("expected \"config\" or \"plan\"");
}

#[test]
fn plan_json_validates_against_its_schema_shape() {
    let p = three_levels();
    let j = plan_json(&p, &["pkg/sub"]);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/plan.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for key in schema["required"].as_array().unwrap() {
        assert!(
            j.get(key.as_str().unwrap()).is_some(),
            "plan json lacks required {key}"
        );
    }
    for key in ["config_files", "workers", "sync", "dist", "settings"] {
        assert!(j.get(key).is_some(), "{key}");
    }
    for w in j["workers"].as_array().unwrap() {
        for key in ["id", "transport", "host", "python", "chdir", "env"] {
            assert!(w.get(key).is_some(), "worker lacks {key}");
        }
    }
}

#[test]
fn plan_text_snapshot() {
    let p = three_levels();
    let root = p.path().canonicalize().unwrap().display().to_string();
    let r = p
        .command(&["plan", "--profile", "ci", "pkg/sub", "-k", "fast"])
        .env("RTEST_TIMEOUT", "12")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&r.stdout).replace(&root, "[ROOT]");
    // The default interpreter depends on the machine.
    let python = crate::harness::venv()
        .join("bin/python")
        .display()
        .to_string();
    let text = text.replace(&python, "[PYTHON]");
    insta::assert_snapshot!(text);
}
