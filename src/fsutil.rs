//! Small filesystem helpers shared by the session and the reporters.

/// Write a file whole: to a temp name beside it, then rename.
pub fn write_atomic(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = temp_beside(path);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A temp name beside `path` (same directory, so a rename is atomic):
/// `.NAME.rtest-PID.tmp`.
pub fn temp_beside(path: &std::path::Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.rtest-{}.tmp", std::process::id()))
}

/// Check before a run that `path` can be written later, without creating
/// or touching it: its directory is made, and a temp file made and removed
/// there.
pub fn check_writable(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    if path.is_dir() {
        return Err(std::io::Error::other("it is a directory"));
    }
    let tmp = temp_beside(path);
    std::fs::write(&tmp, b"")?;
    std::fs::remove_file(&tmp)
}

/// `dest` relative to the directory `base`, with `..` where it lies
/// outside, as pytest's `bestrelpath` gives it (`.` for `base` itself;
/// `dest` whole when the two share no root).
pub fn bestrelpath(base: &std::path::Path, dest: &std::path::Path) -> String {
    use std::path::Component;
    if base == dest {
        return ".".into();
    }
    let b: Vec<Component> = base.components().collect();
    let d: Vec<Component> = dest.components().collect();
    let common = b.iter().zip(&d).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return dest.display().to_string();
    }
    let mut parts: Vec<String> = vec!["..".into(); b.len() - common];
    parts.extend(
        d[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join(std::path::MAIN_SEPARATOR_STR)
}

#[cfg(test)]
mod tests {
    use super::bestrelpath;
    use std::path::Path;

    #[test]
    fn bestrelpath_as_pytest_gives_it() {
        let rel = |a: &str, b: &str| bestrelpath(Path::new(a), Path::new(b));
        assert_eq!(rel("/p", "/p"), ".");
        assert_eq!(rel("/p", "/p/tests/test_a.py"), "tests/test_a.py");
        assert_eq!(rel("/p/tests", "/p/tests/test_a.py"), "test_a.py");
        assert_eq!(rel("/p/tests/unit", "/p/tests/test_a.py"), "../test_a.py");
        assert_eq!(rel("/p/a/b", "/p/c/d.py"), "../../c/d.py");
        assert_eq!(rel("/p/tests", "/p"), "..");
    }
}
