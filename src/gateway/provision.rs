//! Local interpreters: check that a `python=` is usable, and give one that
//! lacks pytest a cached virtualenv that has it.
//!
//! The venv is created with `--system-site-packages`, so the project's own
//! installed packages stay importable; it lives under the user's cache dir
//! (`$RTEST_CACHE_DIR`, else `$XDG_CACHE_HOME/rtest`, else `~/.cache/rtest`),
//! keyed by the interpreter, and is reused by every later run.

use crate::error::Error;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a local interpreter is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `sys.executable`.
    pub executable: String,
    /// `(major, minor, micro)`.
    pub version: (u32, u32, u32),
    /// Whether `import pytest` would find pytest.
    pub has_pytest: bool,
}

const PROBE: &str = "import sys, importlib.util as u; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3]); print(u.find_spec('pytest') is not None)";

/// Run `python` once to see what it is (unless its virtualenv's files say
/// it: see [`venv_probe`]). Errors name the interpreter and say what to do.
pub fn probe(python: &str) -> Result<Probe, Error> {
    if let Some(known) = venv_probe(python) {
        return Ok(known);
    }
    let out = Command::new(python).arg("-c").arg(PROBE).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::usage(format!(
                "python {python:?} was not found: give an interpreter on PATH or an absolute path (python=...)"
            ))
        } else {
            Error::usage(format!("python {python:?} could not be started: {e}"))
        }
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let (Some(exe), Some(ver), Some(has)) = (lines.next(), lines.next(), lines.next()) else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::usage(format!(
            "{python:?} is not a working Python 3.8+ interpreter ({}):\n{}",
            super::describe_exit(&out.status),
            stderr.trim_end()
        )));
    };
    let parts: Vec<u32> = ver.split('.').filter_map(|p| p.parse().ok()).collect();
    let version = (
        parts.first().copied().unwrap_or(0),
        parts.get(1).copied().unwrap_or(0),
        parts.get(2).copied().unwrap_or(0),
    );
    if version < (3, 8, 0) {
        return Err(Error::usage(format!(
            "python {python:?} is Python {ver}; rtest workers need Python 3.8 or newer"
        )));
    }
    Ok(Probe {
        executable: exe.to_string(),
        version,
        has_pytest: has.trim() == "True",
    })
}

/// What a virtualenv's own files say of its interpreter, without starting
/// it (a Python start costs a run 50 ms before any worker can start): the
/// interpreter is `bin/python...` beside a `pyvenv.cfg` that gives its
/// version (`version` from venv, `version_info` from virtualenv and uv),
/// and pytest is in the venv's own site-packages. `None` wherever the files
/// do not say all of it (a bare interpreter, a venv without pytest or with
/// pytest only in the base's site-packages, an editable pytest, a venv
/// whose base interpreter is gone): the interpreter is asked then.
pub fn venv_probe(python: &str) -> Option<Probe> {
    let path = resolve_program(python)?;
    // Following links: the base interpreter a venv's python points to is
    // still there.
    if !std::fs::metadata(&path).ok()?.is_file() {
        return None;
    }
    let bin = path.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    let root = bin.parent()?;
    let cfg = std::fs::read_to_string(root.join("pyvenv.cfg")).ok()?;
    let version = cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        matches!(key.trim(), "version" | "version_info").then(|| {
            let parts: Vec<u32> = value
                .trim()
                .split('.')
                .take(3)
                .map_while(|p| p.parse().ok())
                .collect();
            (parts.len() == 3).then(|| (parts[0], parts[1], parts[2]))
        })?
    })?;
    if version < (3, 8, 0) {
        return None;
    }
    let site = root
        .join("lib")
        .join(format!("python{}.{}", version.0, version.1))
        .join("site-packages");
    if !site.join("pytest").join("__init__.py").is_file() {
        return None;
    }
    Some(Probe {
        executable: path.display().to_string(),
        version,
        has_pytest: true,
    })
}

/// Where a program named as on a command line is: a path as given (made
/// absolute), a bare name as found on `PATH`.
fn resolve_program(program: &str) -> Option<PathBuf> {
    let given = Path::new(program);
    if program.contains('/') {
        return std::path::absolute(given).ok();
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(given))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .and_then(|found| std::path::absolute(found).ok())
}

/// rtest's cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RTEST_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("rtest");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("rtest"),
        None => std::env::temp_dir().join("rtest-cache"),
    }
}

/// Where the provisioned venv for this interpreter lives.
pub fn venv_dir(probe: &Probe) -> PathBuf {
    let mut h = Sha256::new();
    h.update(probe.executable.as_bytes());
    h.update(format!("{:?}", probe.version).as_bytes());
    let digest = h.finalize();
    let key: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    cache_dir()
        .join("venvs")
        .join(format!("py{}.{}-{key}", probe.version.0, probe.version.1))
}

/// The interpreter inside a venv.
pub fn venv_python(dir: &Path) -> PathBuf {
    dir.join("bin").join("python")
}

/// A cached venv with pytest for `probe`'s interpreter, creating it if
/// needed. `say` reports progress to the user.
pub fn provision(python: &str, probe: &Probe, say: &mut dyn FnMut(&str)) -> Result<PathBuf, Error> {
    let dir = venv_dir(probe);
    let ready = dir.join(".rtest-ready");
    if ready.exists() {
        return Ok(venv_python(&dir));
    }
    say(&format!(
        "{python} (Python {}.{}.{}) has no pytest: installing pytest into {} (once; --no-provision turns this off)",
        probe.version.0,
        probe.version.1,
        probe.version.2,
        dir.display()
    ));
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| Error::usage(format!("cannot create cache dir {}: {e}", parent.display())))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("venv"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let fail = |what: &str, out: &std::process::Output| {
        Error::usage(format!(
            "could not provision pytest for {python}: {what} failed ({}):\n{}{}\nInstall pytest yourself (`{python} -m pip install pytest`) or choose another interpreter with --tx popen//python=...",
            super::describe_exit(&out.status),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    };
    let run = |cmd: &mut Command| {
        cmd.output()
            .map_err(|e| Error::usage(format!("could not provision pytest for {python}: {e}")))
    };
    let out = run(Command::new(&probe.executable)
        .args(["-m", "venv", "--system-site-packages"])
        .arg(&tmp))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(fail("python -m venv", &out));
    }
    let out = run(Command::new(venv_python(&tmp)).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "pytest",
    ]))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(fail("pip install pytest", &out));
    }
    // Another rtest may have won the race; theirs is as good as ours.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    std::fs::write(&ready, b"")
        .map_err(|e| Error::usage(format!("cannot write {}: {e}", ready.display())))?;
    Ok(venv_python(&dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A venv's files: `bin/python`, `pyvenv.cfg` with `cfg`, and pytest
    /// in its site-packages if `pytest`.
    fn venv(root: &Path, cfg: &str, pytest: bool) -> String {
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let python = root.join("bin").join("python");
        std::fs::write(&python, "").unwrap();
        std::fs::write(root.join("pyvenv.cfg"), cfg).unwrap();
        let site = root.join("lib/python3.12/site-packages");
        std::fs::create_dir_all(&site).unwrap();
        if pytest {
            std::fs::create_dir_all(site.join("pytest")).unwrap();
            std::fs::write(site.join("pytest/__init__.py"), "").unwrap();
        }
        python.display().to_string()
    }

    #[test]
    fn a_venv_with_pytest_is_known_from_its_files() {
        let d = tempfile::tempdir().unwrap();
        for (name, cfg) in [
            ("venv", "home = /usr/bin\nversion = 3.12.4\n"),
            (
                "uv",
                "home = /usr/bin\nimplementation = CPython\nversion_info = 3.12.4\n",
            ),
            (
                "virtualenv",
                "home = /usr/bin\nversion_info = 3.12.4.final.0\n",
            ),
        ] {
            let python = venv(&d.path().join(name), cfg, true);
            let known = venv_probe(&python).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(known.version, (3, 12, 4), "{name}");
            assert!(known.has_pytest);
            assert_eq!(known.executable, python);
        }
    }

    #[test]
    fn the_interpreter_is_asked_where_the_files_do_not_say() {
        let d = tempfile::tempdir().unwrap();
        // No pytest in the venv (perhaps only in the base's site-packages).
        let bare = venv(&d.path().join("bare"), "version = 3.12.4\n", false);
        assert_eq!(venv_probe(&bare), None);
        // No version in pyvenv.cfg.
        let unknown = venv(&d.path().join("unknown"), "home = /usr/bin\n", true);
        assert_eq!(venv_probe(&unknown), None);
        // pytest for another minor version than the cfg says.
        let other = venv(&d.path().join("other"), "version = 3.11.2\n", true);
        assert_eq!(venv_probe(&other), None);
        // Too old for workers: the interpreter's probe says so.
        let old = venv(&d.path().join("old"), "version = 3.7.9\n", true);
        assert_eq!(venv_probe(&old), None);
        // Not in a venv at all.
        let loose = d.path().join("python");
        std::fs::write(&loose, "").unwrap();
        assert_eq!(venv_probe(&loose.display().to_string()), None);
        // A venv whose base interpreter is gone.
        let gone = d.path().join("gone");
        venv(&gone, "version = 3.12.4\n", true);
        std::fs::remove_file(gone.join("bin/python")).unwrap();
        std::os::unix::fs::symlink(d.path().join("no-such-python"), gone.join("bin/python"))
            .unwrap();
        assert_eq!(
            venv_probe(&gone.join("bin/python").display().to_string()),
            None
        );
        // A name not on PATH.
        assert_eq!(venv_probe("no-such-python-for-rtest"), None);
    }
}
