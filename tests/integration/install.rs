//! How rtest is installed and found: the default interpreter's rules,
//! `--version`, and the shell completion scripts.

use crate::harness::{venv, Project, Run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A virtualenv without pip (fast to make), from the test venv's Python.
fn bare_venv(at: &Path) {
    let status = Command::new(crate::harness::venv_python())
        .args(["-m", "venv", "--without-pip"])
        .arg(at)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Put the rtest binary at `dest` (a hard link where it can: a copy just
/// written can be "busy" for a moment while other tests fork).
fn place_rtest(dest: &Path) {
    if std::fs::hard_link(env!("CARGO_BIN_EXE_rtest"), dest).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_rtest"), dest).unwrap();
    }
}

/// Run `cmd`, again while the binary is still busy (ETXTBSY).
fn output(cmd: &mut Command) -> std::process::Output {
    for _ in 0..50 {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            other => return other.unwrap(),
        }
    }
    panic!("the binary stayed busy");
}

/// `rtest plan`'s default-python line, run as `exe` with no
/// `VIRTUAL_ENV`.
fn default_python_line(p: &Project, exe: &Path) -> String {
    let out = output(
        Command::new(exe)
            .arg("plan")
            .current_dir(p.path())
            .env_remove("VIRTUAL_ENV"),
    );
    let r = Run::from(out);
    r.code(0);
    r.stdout
        .lines()
        .find(|l| l.starts_with("default python: "))
        .unwrap_or_else(|| panic!("no default python line:\n{}", r.stdout))
        .to_string()
}

#[test]
fn the_virtualenv_rtest_is_installed_in_gives_the_default_python() {
    let p = Project::new().file("test_a.py", "def test_a():\n    pass\n");
    let tools = tempfile::tempdir().unwrap();
    let own = tools.path().join("venv");
    bare_venv(&own);
    let exe = own.join("bin/rtest");
    place_rtest(&exe);
    assert_eq!(
        default_python_line(&p, &exe),
        format!(
            "default python: {}  (the virtualenv rtest is installed in)",
            own.join("bin/python").display()
        )
    );
    // A uv or pipx tool environment is the tool's, not the project's: the
    // project's .venv is used instead.
    std::fs::write(own.join("uv-receipt.toml"), "").unwrap();
    bare_venv(&p.path().join(".venv"));
    assert_eq!(
        default_python_line(&p, &exe),
        format!(
            "default python: {}  (the rootdir's .venv)",
            p.path().join(".venv/bin/python").display()
        )
    );
}

#[test]
fn a_run_uses_the_virtualenv_rtest_is_installed_in() {
    // rtest copied into the test venv (which has pytest), called by path
    // with no VIRTUAL_ENV, as `.venv/bin/rtest` is after `pip install`.
    let exe: PathBuf = venv()
        .join("bin")
        .join(format!("rtest-copy-{}", std::process::id()));
    place_rtest(&exe);
    let p = Project::new().file("test_a.py", "def test_a():\n    pass\n");
    let out = output(
        Command::new(&exe)
            .args(["-n", "1", "-p", "no:randomly"])
            .current_dir(p.path())
            .env_remove("VIRTUAL_ENV")
            .env("PATH", "/usr/bin:/bin"),
    );
    let _ = std::fs::remove_file(&exe);
    let r = Run::from(out);
    r.code(0)
        .stdout_has(&format!("({})", venv().join("bin/python").display()));
    assert_eq!(r.summary(), "1 passed");
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let r = Project::new().rtest(&["--version"]);
    r.code(0);
    let line = r.stdout.trim();
    let want = format!("rtest {}", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&want), "{line}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=9", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    if let Some(head) = head {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(line.starts_with(&format!("{want} ({head} ")), "{line}");
    }
    assert_eq!(Project::new().rtest(&["-V"]).stdout, r.stdout);
}

/// Every `--long-option` `--help` shows.
fn long_options_of_help() -> Vec<String> {
    let help = Project::new().rtest(&["--help"]).stdout;
    let mut out: Vec<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(String::from)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn the_bash_completion_loads_and_offers_every_option_of_help() {
    let bin = Path::new(env!("CARGO_BIN_EXE_rtest"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let p = Project::new().file(
        "conftest.kdl",
        "profile \"ci\" {\n  numprocesses 4\n}\nprofile \"nightly\" {\n  timeout 600\n}\n",
    );
    let run = |script: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(p.path())
            .env("PATH", &path)
            .output()
            .unwrap();
        let r = Run::from(out);
        r.code(0);
        r.stdout
    };
    assert_eq!(
        run("source <(rtest completions bash); complete -p rtest").trim(),
        "complete -o filenames -F _rtest rtest"
    );
    // What `rtest --<TAB>` offers, and `rtest plan --<TAB>` and the other
    // commands that --help lists.
    let help = Project::new().rtest(&["--help"]).stdout;
    let commands: Vec<&str> = help
        .lines()
        .filter_map(|l| l.strip_prefix("  rtest "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(commands.contains(&"plan") && commands.contains(&"completions"));
    let mut words = run("source <(rtest completions bash); COMP_WORDS=(rtest --); COMP_CWORD=1; _rtest; printf '%s\\n' \"${COMPREPLY[@]}\"");
    for c in &commands {
        words.push_str(&run(&format!("source <(rtest completions bash); COMP_WORDS=(rtest {c} --); COMP_CWORD=2; _rtest; printf '%s\\n' \"${{COMPREPLY[@]}}\"")));
    }
    let offered: Vec<&str> = words.lines().collect();
    let wanted = long_options_of_help();
    assert!(wanted.len() > 20, "{wanted:?}");
    for o in &wanted {
        assert!(
            offered.contains(&o.as_str()),
            "{o} not offered: {offered:?}"
        );
    }
    let dist = run("source <(rtest completions bash); COMP_WORDS=(rtest --dist ''); COMP_CWORD=2; _rtest; echo \"${COMPREPLY[@]}\"");
    assert_eq!(
        dist.trim(),
        "load loadscope loadfile loadgroup worksteal each no"
    );
    let profiles = run("source <(rtest completions bash); COMP_WORDS=(rtest --profile ''); COMP_CWORD=2; _rtest; echo \"${COMPREPLY[@]}\"");
    assert_eq!(profiles.trim(), "ci nightly");
    for shell in ["zsh", "fish"] {
        let script = Project::new().rtest(&["completions", shell]);
        script.code(0);
        for o in &wanted {
            let name = match shell {
                "fish" => format!("-l {}", o.trim_start_matches("--")),
                _ => o.clone(),
            };
            assert!(script.stdout.contains(&name), "{shell}: {o}");
        }
    }
    Project::new()
        .rtest(&["completions", "tcsh"])
        .code(4)
        .stderr_has("expected bash, zsh or fish, got \"tcsh\"");
}
