//! pytest's rootdir rules, so that rtest finds the same rootdir (and so the
//! same config files) that the workers' pytest will use.

use std::path::{Path, PathBuf};

/// The rootdir and the ini file pytest would pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootdir {
    /// The rootdir.
    pub dir: PathBuf,
    /// The ini file that decided it, if any.
    pub inifile: Option<PathBuf>,
}

/// The directories named by test arguments (`path::node` ids allowed);
/// arguments that are not existing paths (option values, `-k` words) are
/// ignored, as pytest does.
pub fn dirs_from_args(cwd: &Path, args: &[String]) -> Vec<PathBuf> {
    args.iter()
        .filter(|a| !a.starts_with('-'))
        .map(|a| cwd.join(a.split("::").next().unwrap_or(a)))
        .filter(|p| p.exists())
        .map(|p| {
            let p = normalize(&p);
            if p.is_dir() {
                p
            } else {
                p.parent().map(Path::to_path_buf).unwrap_or(p)
            }
        })
        .collect()
}

/// Lexically normalize `a/./b/../c` to `a/c`.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn common_ancestor(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut it = paths.iter();
    let mut common = it.next()?.clone();
    for p in it {
        while !p.starts_with(&common) {
            if !common.pop() {
                return None;
            }
        }
    }
    Some(common)
}

/// Whether `path` is a config file pytest would take, per its rules.
fn is_pytest_config(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !path.is_file() {
        return false;
    }
    let text = || std::fs::read_to_string(path).unwrap_or_default();
    match name {
        "pytest.ini" | ".pytest.ini" => true,
        "pyproject.toml" => {
            let t = text();
            t.contains("[tool.pytest.ini_options]")
                || t.lines().any(|l| l.trim() == "[tool.pytest]")
        }
        "tox.ini" => text().lines().any(|l| l.trim() == "[pytest]"),
        "setup.cfg" => text().lines().any(|l| l.trim() == "[tool:pytest]"),
        _ => false,
    }
}

fn locate_config(dirs: &[PathBuf]) -> Option<(PathBuf, PathBuf)> {
    for dir in dirs {
        for d in dir.ancestors() {
            for name in [
                "pytest.ini",
                ".pytest.ini",
                "pyproject.toml",
                "tox.ini",
                "setup.cfg",
            ] {
                let p = d.join(name);
                if is_pytest_config(&p) {
                    return Some((d.to_path_buf(), p));
                }
            }
        }
    }
    None
}

/// pytest's `determine_setup`: `-c FILE` and `--rootdir DIR` first, then the
/// first ini file up from the common ancestor of the args, then `setup.py`,
/// then the common ancestor itself.
pub fn determine(
    cwd: &Path,
    args: &[String],
    inifile: Option<&Path>,
    rootdir_arg: Option<&Path>,
) -> Rootdir {
    let dirs = dirs_from_args(cwd, args);
    let mut result = if let Some(ini) = inifile {
        let ini = normalize(&cwd.join(ini));
        Rootdir {
            dir: ini
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| cwd.to_path_buf()),
            inifile: Some(ini),
        }
    } else {
        let ancestor = if dirs.is_empty() {
            cwd.to_path_buf()
        } else {
            common_ancestor(&dirs).unwrap_or_else(|| cwd.to_path_buf())
        };
        if let Some((dir, ini)) = locate_config(std::slice::from_ref(&ancestor)) {
            Rootdir {
                dir,
                inifile: Some(ini),
            }
        } else if let Some(dir) = ancestor.ancestors().find(|d| d.join("setup.py").is_file()) {
            Rootdir {
                dir: dir.to_path_buf(),
                inifile: None,
            }
        } else if let Some((dir, ini)) = (dirs.len() > 1).then(|| locate_config(&dirs)).flatten() {
            Rootdir {
                dir,
                inifile: Some(ini),
            }
        } else {
            let dir =
                common_ancestor(&[cwd.to_path_buf(), ancestor.clone()]).unwrap_or(ancestor.clone());
            let dir = if dir.parent().is_none() {
                ancestor
            } else {
                dir
            };
            Rootdir { dir, inifile: None }
        }
    };
    if let Some(r) = rootdir_arg {
        result.dir = normalize(&cwd.join(r));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = t.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        t
    }

    #[test]
    fn ini_file_up_from_the_args_decides() {
        let t = tree(&[
            ("proj/pytest.ini", "[pytest]\n"),
            ("proj/tests/a/test_x.py", ""),
        ]);
        let cwd = t.path().join("proj/tests");
        let r = determine(&cwd, &["a/test_x.py::test".into()], None, None);
        assert_eq!(r.dir, t.path().join("proj"));
        assert_eq!(r.inifile, Some(t.path().join("proj/pytest.ini")));
    }

    #[test]
    fn pyproject_counts_only_with_a_pytest_section() {
        let t = tree(&[
            ("p/pyproject.toml", "[project]\nname='x'\n"),
            ("p/t/test_x.py", ""),
        ]);
        let r = determine(&t.path().join("p"), &["t".into()], None, None);
        assert_eq!(r.dir, t.path().join("p"));
        assert_eq!(r.inifile, None);
        let t = tree(&[
            ("p/pyproject.toml", "[tool.pytest.ini_options]\n"),
            ("p/t/test_x.py", ""),
        ]);
        let r = determine(&t.path().join("p/t"), &[], None, None);
        assert_eq!(r.dir, t.path().join("p"));
    }

    #[test]
    fn setup_py_then_ancestor() {
        let t = tree(&[("p/setup.py", ""), ("p/t/u/test_x.py", "")]);
        let r = determine(&t.path().join("p/t"), &["u".into()], None, None);
        assert_eq!(r.dir, t.path().join("p"));
        let t = tree(&[("q/t/test_x.py", "")]);
        let r = determine(
            &t.path().join("q"),
            &["t".into(), "-k".into(), "nothere".into()],
            None,
            None,
        );
        assert_eq!(r.dir, t.path().join("q"));
    }

    #[test]
    fn rootdir_option_wins() {
        let t = tree(&[("p/pytest.ini", ""), ("p/t/test_x.py", "")]);
        let r = determine(&t.path().join("p"), &[], None, Some(Path::new("t")));
        assert_eq!(r.dir, t.path().join("p/t"));
    }
}
