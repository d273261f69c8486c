//! A small fluent helper: write a pytest project, run rtest on it, look at
//! what came out.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The venv with pytest that tests run under.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        if let Some(v) = std::env::var_os("RTEST_TEST_VENV") {
            return PathBuf::from(v);
        }
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("test-venv");
        let python = dir.join("bin").join("python");
        let ok = python.exists()
            && Command::new(&python)
                .args([
                    "-c",
                    "import pytest, xdist, pytest_rerunfailures, pytest_cov, pytest_html, pytest_jsonreport, pytest_github_actions_annotate_failures",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !ok {
            let status = Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&dir)
                .status()
                .expect("python3 -m venv");
            assert!(status.success(), "could not create {}", dir.display());
            pip_install(
                &python,
                &[
                    "pytest",
                    "pytest-xdist",
                    "pytest-rerunfailures",
                    "pytest-cov",
                    "pytest-html",
                    "pytest-json-report",
                    "pytest-github-actions-annotate-failures",
                    "pytest-instafail",
                ],
            );
        }
        dir
    })
}

/// `pip install ARGS` with `python`, which must succeed.
fn pip_install(python: &Path, args: &[&str]) {
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("pip install {args:?}: {e}"));
    assert!(status.success(), "pip install {args:?} failed");
}

/// A pytest plugin installed on its own, for the tests that want it and
/// out of the shared test venv (installed there, it would change every
/// other test): a directory to put on `PYTHONPATH`. `installs` is what
/// the install puts there (a package directory or a module file).
pub fn side_site(dist: &str, installs: &str) -> PathBuf {
    let dir = venv().join(format!("{dist}-site"));
    if !dir.join(installs).exists() {
        let target = dir.display().to_string();
        pip_install(&venv_python(), &["--no-deps", "--target", &target, dist]);
    }
    dir
}

/// The venv's interpreter.
pub fn venv_python() -> PathBuf {
    venv().join("bin").join("python")
}

/// A temporary pytest project.
pub struct Project {
    pub dir: tempfile::TempDir,
}

/// What a run printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Project {
    pub fn new() -> Self {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(self, rel: &str, text: &str) -> Self {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtest"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("VIRTUAL_ENV", venv())
            .env("COLUMNS", "100")
            .env_remove("PYTEST_ADDOPTS")
            .env_remove("NO_COLOR")
            // pytest and rtest trim summary lines unless on CI.
            .env_remove("CI")
            .env_remove("BUILD_NUMBER")
            .env("PY_COLORS", "0")
            .stdin(Stdio::null());
        cmd
    }

    pub fn rtest(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("run rtest");
        Run::from(out)
    }

    /// Run plain pytest (the baseline) in the project.
    pub fn pytest(&self, args: &[&str]) -> Run {
        let out = Command::new(venv_python())
            .arg("-m")
            .arg("pytest")
            .args(args)
            .current_dir(self.dir.path())
            .env("COLUMNS", "100")
            .env_remove("CI")
            .env_remove("BUILD_NUMBER")
            .stdin(Stdio::null())
            .output()
            .expect("run pytest");
        Run::from(out)
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code, want,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_lacks(&self, text: &str) -> &Self {
        assert!(
            !self.stdout.contains(text),
            "stdout has {text:?}\n--- stdout\n{}",
            self.stdout
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The final `== ... in 1.23s ==` line without its timing.
    pub fn summary(&self) -> String {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| {
                l.contains(" in ") && l.trim_end().ends_with("s =")
                    || l.contains(" in ") && l.trim_end().ends_with("=")
            })
            .unwrap_or_else(|| {
                panic!(
                    "no summary line in\n{}\n--- stderr\n{}",
                    self.stdout, self.stderr
                )
            });
        let body = line.trim_matches(|c| c == '=' || c == ' ');
        body.rsplit_once(" in ")
            .map(|(a, _)| a.to_string())
            .unwrap_or_default()
    }
}

/// Per-node outcomes from a JUnit file, computed by Python's XML parser (so
/// the file is also checked to be well-formed).
pub fn junit_outcomes(path: &Path) -> Vec<(String, String)> {
    let script = r#"
import sys, xml.etree.ElementTree as E
root = E.parse(sys.argv[1]).getroot()
for case in root.iter("testcase"):
    kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
    print("%s::%s\t%s" % (case.get("classname"), case.get("name"), ",".join(sorted(kinds)) or "passed"))
"#;
    let mut v: Vec<(String, String)> = python(script, &[path])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

/// Run a Python script with the test venv's interpreter; its stdout.
pub fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The seed's layout: run from the directory that holds `mypkg` (which
/// has its own pytest.ini, so pytest's rootdir is `mypkg`, below the
/// current directory), with `mypkg/conftest.kdl` syncing `.` and
/// `../plugins`, and a plugin there that the tests need.
pub fn seed_project() -> Project {
    Project::new()
        .file("mypkg/pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .file("mypkg/conftest.kdl", "rsyncdirs \".\" \"../plugins\"\n")
        .file(
            "mypkg/conftest.py",
            "import os, sys\n\nsys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'plugins'))\npytest_plugins = ['seedplugin']\n",
        )
        .file(
            "plugins/seedplugin.py",
            "import pytest\n\n@pytest.fixture\ndef answer():\n    return 42\n",
        )
        .file("mypkg/__init__.py", "")
        .file(
            "mypkg/test_seed.py",
            "import pytest\n\ndef test_answer(answer):\n    assert answer == 42\n\n@pytest.mark.parametrize('i', range(4))\ndef test_p(i):\n    assert i != 2\n\ndef test_here():\n    assert __file__.endswith('mypkg/test_seed.py')\n",
        )
}

/// The seed project's outcomes, run locally.
pub fn seed_local(p: &Project) -> Vec<(String, String)> {
    let r = p.rtest(&["-n", "2", "--junitxml", "local.xml", "mypkg"]);
    assert_eq!(r.summary(), "1 failed, 5 passed", "{}", r.stderr);
    junit_outcomes(&p.path().join("local.xml"))
}

/// A JUnit file as a comparable structure: the suites' attributes and
/// properties, and every testcase (keyed by classname, name and its place
/// among cases of that name) with its attributes and child elements, text
/// included. What differs between runs by nature is left out: times,
/// timestamps, hostnames, object addresses, and the order of cases (workers finish in their
/// own order).
pub fn junit_structure(path: &Path) -> String {
    let script = r#"
import re, sys, xml.etree.ElementTree as E
root = E.parse(sys.argv[1]).getroot()
VARYING = {"time", "timestamp", "hostname"}
def attrs(el):
    return sorted((k, v) for k, v in el.attrib.items() if k not in VARYING)
def child(el):
    # Object addresses in tracebacks differ between any two runs.
    text = re.sub(r"0x[0-9a-f]+", "0x?", (el.text or "").strip())
    return (el.tag, attrs(el), text, [child(c) for c in el])
out = [("testsuites", attrs(root))]
suites = [root] if root.tag == "testsuite" else list(root)
for s in suites:
    props = sorted(attrs(p) for p in s.iter("property") if p in list(s.find("properties") or []))
    out.append(("testsuite", attrs(s), props))
    seen = {}
    cases = []
    for case in s.iter("testcase"):
        key = (case.get("classname"), case.get("name"))
        n = seen[key] = seen.get(key, -1) + 1
        cases.append((key, n, attrs(case), [child(c) for c in case]))
    out.extend(sorted(cases))
for entry in out:
    print(repr(entry))
"#;
    python(script, &[path])
}

/// This process's niceness (servers the tests start inherit it, and
/// `nice=N` adds to it, up to 19).
pub fn own_niceness() -> i32 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesized command name; niceness is field 19.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(16).unwrap().parse().unwrap()
}

/// What `nice=by` gives a process started from this one.
pub fn niceness_after(by: i32) -> i32 {
    (own_niceness() + by).min(19)
}

/// Whether a process whose command line contains `marker` runs.
pub fn running(marker: &str) -> bool {
    !Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap()
        .stdout
        .is_empty()
}

/// Poll `cond` until it holds; panic naming `what` after `within`.
pub fn wait_until(what: &str, within: std::time::Duration, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "waited {within:?} for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
