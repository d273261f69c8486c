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
