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

/// Run `python` once to see what it is. Errors name the interpreter and say
/// what to do.
pub fn probe(python: &str) -> Result<Probe, Error> {
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
