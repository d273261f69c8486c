//! Sync: mirror the rsyncdirs to a worker's host, sending only what changed.
//!
//! The local manifest is built by walking each sync dir in parallel (rayon),
//! leaving out what `rsyncignore` and the defaults match (globset). The
//! agent answers with the manifest of its copy; files whose size or mtime
//! differ travel zlib-compressed in chunks, symlinks inside the tree are
//! recreated, and files the local tree no longer has are deleted. The agent
//! writes each file to a temporary name and renames it, sets its mtime and
//! mode, and refuses absolute paths and `..`.
//!
//! Paths are relative to the *sync root*: the common ancestor of the
//! rootdir and every sync dir, so the remote tree mirrors the local layout
//! and node ids stay the same.

use crate::plan::SyncSet;
use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::protocol::{Entry, Kind};

/// Why a sync could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyncError(pub String);

/// The common ancestor of the rootdir, the current directory and every
/// sync dir: the copy mirrors the tree from there, so relative arguments,
/// node ids and report paths are the same in the copy as here.
pub fn sync_root(rootdir: &Path, cwd: &Path, sets: &[SyncSet]) -> PathBuf {
    let mut root = rootdir.to_path_buf();
    for dir in std::iter::once(cwd).chain(sets.iter().map(|s| s.dir.as_path())) {
        while !dir.starts_with(&root) {
            if !root.pop() {
                break;
            }
        }
    }
    root
}

struct Ignore {
    names: GlobSet,
    paths: GlobSet,
}

impl Ignore {
    fn new(set: &SyncSet) -> Result<Self, SyncError> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for ig in &set.ignore {
            let bad = |e: globset::Error| {
                SyncError(format!(
                    "{}: rsyncignore \"{}\": {e}",
                    ig.source, ig.pattern
                ))
            };
            if ig.pattern.contains('/') {
                let full = ig.base.join(ig.pattern.trim_end_matches('/'));
                paths.add(Glob::new(&full.display().to_string()).map_err(bad)?);
            } else {
                names.add(Glob::new(&ig.pattern).map_err(bad)?);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| SyncError(e.to_string()));
        Ok(Ignore {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    fn skip(&self, path: &Path) -> bool {
        path.file_name()
            .is_some_and(|n| self.names.is_match(Path::new(n)))
            || self.paths.is_match(path)
    }
}

fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

fn file_entry(path: String, md: &std::fs::Metadata) -> Entry {
    use std::os::unix::fs::PermissionsExt;
    Entry {
        path,
        kind: Kind::File,
        size: md.len(),
        mtime_ns: mtime_ns(md),
        mode: md.permissions().mode() & 0o7777,
        target: None,
    }
}

fn walk(dir: &Path, root: &Path, ignore: &Ignore) -> Vec<Entry> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let children: Vec<PathBuf> = read
        .flatten()
        .map(|e| e.path())
        .filter(|p| !ignore.skip(p))
        .collect();
    children
        .par_iter()
        .flat_map_iter(|path| {
            let mut out = Vec::new();
            let Ok(md) = std::fs::symlink_metadata(path) else {
                return out;
            };
            let rel = path
                .strip_prefix(root)
                .unwrap_or(path)
                .to_string_lossy()
                .replace('\\', "/");
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(path).ok();
                // Only links that stay inside the synced tree are mirrored.
                let inside = target.as_ref().is_some_and(|t| {
                    let resolved =
                        crate::config::rootdir::normalize(&path.parent().unwrap_or(root).join(t));
                    resolved.starts_with(root) && !t.is_absolute()
                });
                if inside {
                    out.push(Entry {
                        path: rel,
                        kind: Kind::Link,
                        size: 0,
                        mtime_ns: 0,
                        mode: 0,
                        target: target.map(|t| t.to_string_lossy().into_owned()),
                    });
                }
            } else if md.is_dir() {
                out.extend(walk(path, root, ignore));
            } else if md.is_file() {
                out.push(file_entry(rel, &md));
            }
            out
        })
        .collect()
}

/// Files of the rootdir that always travel with a sync, so that pytest on
/// the other side finds the same ini settings and root conftest.py.
pub const ROOT_FILES: &[&str] = &[
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
    "conftest.py",
];

/// The local manifest of every sync set (plus the rootdir's [`ROOT_FILES`]),
/// sorted by path.
pub fn manifest(root: &Path, rootdir: &Path, sets: &[SyncSet]) -> Result<Vec<Entry>, SyncError> {
    manifest_with(root, rootdir, sets, &[])
}

/// [`manifest`] plus single `files` (absolute, under `root`).
pub fn manifest_with(
    root: &Path,
    rootdir: &Path,
    sets: &[SyncSet],
    files: &[PathBuf],
) -> Result<Vec<Entry>, SyncError> {
    let mut all: BTreeMap<String, Entry> = BTreeMap::new();
    let singles = ROOT_FILES
        .iter()
        .map(|n| rootdir.join(n))
        .chain(files.iter().cloned());
    for path in singles {
        if let Ok(md) = std::fs::metadata(&path) {
            if md.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                all.insert(rel.clone(), file_entry(rel, &md));
            }
        }
    }
    for set in sets {
        for e in walk_set(root, set)? {
            all.insert(e.path.clone(), e);
        }
    }
    Ok(all.into_values().collect())
}

/// The files of one sync set (paths relative to `root`), its ignore rules
/// applied.
pub fn walk_set(root: &Path, set: &SyncSet) -> Result<Vec<Entry>, SyncError> {
    if !set.dir.is_dir() {
        return Err(SyncError(format!(
            "{} is not a directory",
            set.dir.display()
        )));
    }
    let ignore = Ignore::new(set)?;
    Ok(walk(&set.dir, root, &ignore))
}

/// The synced top directories, relative to the sync root (what the remote
/// side lists and may delete in).
pub fn top_dirs(root: &Path, sets: &[SyncSet]) -> Vec<String> {
    let mut dirs: Vec<String> = sets
        .iter()
        .map(|s| {
            s.dir
                .strip_prefix(root)
                .unwrap_or(&s.dir)
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Whether `rel` (a remote path, relative to the sync root) falls under
/// an ignore rule of the set it belongs to, at any level.
fn remote_ignored(root: &Path, ignores: &[(PathBuf, Ignore)], rel: &str) -> bool {
    let full = root.join(rel);
    ignores.iter().any(|(dir, ig)| {
        let Ok(sub) = full.strip_prefix(dir) else {
            return false;
        };
        let mut at = dir.clone();
        sub.components().any(|c| {
            at.push(c);
            ig.skip(&at)
        })
    })
}

/// What to do to bring a remote copy up to date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Files and links to send.
    pub send: Vec<Entry>,
    /// Remote paths to delete.
    pub delete: Vec<String>,
}

/// Compare the local manifest with the remote one: files whose size or
/// mtime differ (or that are missing) are sent, links whose target differs
/// are recreated, and remote files the local tree lacks are deleted.
pub fn diff(local: &[Entry], remote: &[Entry]) -> Changes {
    let theirs: BTreeMap<&str, &Entry> = remote.iter().map(|e| (e.path.as_str(), e)).collect();
    let ours: std::collections::HashSet<&str> = local.iter().map(|e| e.path.as_str()).collect();
    let send = local
        .iter()
        .filter(|e| match theirs.get(e.path.as_str()) {
            None => true,
            Some(r) => match e.kind {
                Kind::File => r.kind != Kind::File || r.size != e.size || r.mtime_ns != e.mtime_ns,
                Kind::Link => r.kind != Kind::Link || r.target != e.target,
            },
        })
        .cloned()
        .collect();
    let delete = remote
        .iter()
        .filter(|r| !ours.contains(r.path.as_str()))
        .map(|r| r.path.clone())
        .collect();
    Changes { send, delete }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::SyncIgnore;

    fn set(dir: &Path, patterns: &[&str]) -> SyncSet {
        SyncSet {
            dir: dir.to_path_buf(),
            ignore: patterns
                .iter()
                .map(|p| SyncIgnore {
                    pattern: p.to_string(),
                    base: dir.to_path_buf(),
                    source: "test".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn manifest_honours_ignores_and_keeps_inner_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for (p, text) in [
            ("pkg/a.py", "a"),
            ("pkg/sub/b.py", "bb"),
            ("pkg/__pycache__/x.pyc", "x"),
            ("pkg/data/big.bin", "zz"),
            ("pkg/c.pyc", "c"),
        ] {
            std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
            std::fs::write(root.join(p), text).unwrap();
        }
        std::os::unix::fs::symlink("a.py", root.join("pkg/link.py")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("pkg/outside")).unwrap();
        let s = set(&root.join("pkg"), &["__pycache__", "*.pyc", "data/"]);
        let m = manifest(root, &root.join("nowhere"), &[s]).unwrap();
        let paths: Vec<&str> = m.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["pkg/a.py", "pkg/link.py", "pkg/sub/b.py"]);
        assert_eq!(m[1].kind, Kind::Link);
        assert_eq!(m[2].size, 2);
    }

    #[test]
    fn the_remotes_own_ignored_files_are_not_deleted() {
        let root = Path::new("/r");
        let s = set(&root.join("pkg"), &["__pycache__", "*.pyc", "data/"]);
        let ig = vec![(s.dir.clone(), Ignore::new(&s).unwrap())];
        for kept in [
            "pkg/__pycache__/a.cpython-311.pyc",
            "pkg/x.pyc",
            "pkg/data/big.bin",
        ] {
            assert!(remote_ignored(root, &ig, kept), "{kept}");
        }
        for stale in ["pkg/a.py", "pkg/sub/data.py", "other/x.py"] {
            assert!(!remote_ignored(root, &ig, stale), "{stale}");
        }
    }

    #[test]
    fn diff_sends_changed_and_deletes_gone() {
        let f = |p: &str, size: u64, mtime: i64| Entry {
            path: p.into(),
            kind: Kind::File,
            size,
            mtime_ns: mtime,
            mode: 0o644,
            target: None,
        };
        let local = vec![f("a", 1, 10), f("b", 2, 20), f("c", 3, 30)];
        let remote = vec![f("a", 1, 10), f("b", 2, 21), f("gone", 1, 1)];
        let c = diff(&local, &remote);
        let sent: Vec<&str> = c.send.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(sent, ["b", "c"]);
        assert_eq!(c.delete, ["gone"]);
        assert_eq!(diff(&local, &local), Changes::default());
    }

    #[test]
    fn sync_root_covers_dirs_outside_the_rootdir() {
        let sets = [
            set(Path::new("/w/proj/pkg"), &[]),
            set(Path::new("/w/plugins"), &[]),
        ];
        let proj = Path::new("/w/proj");
        assert_eq!(sync_root(proj, proj, &sets), PathBuf::from("/w"));
        assert_eq!(top_dirs(Path::new("/w"), &sets), ["plugins", "proj/pkg"]);
        // Run from above the rootdir (the rootdir has its own ini file).
        let sets = [set(Path::new("/w/proj/pkg"), &[])];
        assert_eq!(sync_root(proj, Path::new("/w"), &sets), PathBuf::from("/w"));
        assert_eq!(sync_root(proj, Path::new("/w/proj/pkg/t"), &sets), proj);
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Files and links written.
    pub files: u64,
    /// Bytes written (uncompressed).
    pub bytes: u64,
    /// Remote files deleted.
    pub deleted: u64,
    /// Files the manifest holds (sent or already there).
    pub total: u64,
    /// The absolute base directory on the worker's host.
    pub base: String,
}

/// Chunk size for file contents (before compression).
const CHUNK: usize = 1 << 20;

/// A chunk as it travels: base64 of its zlib stream, or of the bytes
/// themselves when compressing would not save a tenth (`true`).
fn compress(data: &[u8]) -> (String, bool) {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(data);
    let bytes = enc.finish().unwrap_or_default();
    let b64 = &base64::engine::general_purpose::STANDARD;
    if bytes.len() * 10 > data.len() * 9 {
        (b64.encode(data), true)
    } else {
        (b64.encode(bytes), false)
    }
}

/// Files prepared together (read, compressed, framed in parallel) while
/// the previous batch is on the wire.
const BATCH: usize = 128;

/// The frames that send one file, or why it cannot be read.
fn file_frames(root: &Path, e: &Entry) -> Result<(Vec<u8>, u64), SyncError> {
    use crate::protocol::{encode, ToAgent};
    let full = root.join(&e.path);
    let data = std::fs::read(&full)
        .map_err(|err| SyncError(format!("cannot read {}: {err}", full.display())))?;
    let mut out = Vec::with_capacity(data.len() / 2 + 256);
    let mut offset = 0usize;
    loop {
        let end = (offset + CHUNK).min(data.len());
        let (chunk, raw) = compress(&data[offset..end]);
        out.extend(encode(&ToAgent::SyncPut {
            path: e.path.clone(),
            offset: offset as u64,
            data: chunk,
            raw,
            last: end == data.len(),
            mode: e.mode,
            mtime_ns: e.mtime_ns,
        }));
        offset = end;
        if offset >= data.len() {
            break;
        }
    }
    Ok((out, data.len() as u64))
}

/// Build a job's local manifest on a blocking thread (rayon inside), so it
/// overlaps with the remote side starting up.
pub fn spawn_manifest(job: &Job) -> tokio::task::JoinHandle<Result<Vec<Entry>, SyncError>> {
    let job = job.clone();
    tokio::task::spawn_blocking(move || {
        manifest_with(&job.root, &job.rootdir, &job.sets, &job.files)
    })
}

async fn joined(
    handle: tokio::task::JoinHandle<Result<Vec<Entry>, SyncError>>,
) -> Result<Vec<Entry>, SyncError> {
    handle
        .await
        .map_err(|e| SyncError(format!("manifest failed: {e}")))?
}

/// Mirror a job's sets into its base on the other end of a connection
/// whose agent has answered `hello`, given the job's local manifest. Only
/// changed files travel.
pub async fn push<R, W>(
    reader: &mut R,
    writer: &mut W,
    job: &Job,
    local: Vec<Entry>,
) -> Result<Stats, SyncError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use crate::protocol::{encode, read_frame, FromAgent, ToAgent};
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| SyncError(format!("sync connection failed: {e}"));
    let (base, root, sets) = (job.base.as_str(), job.root.as_path(), job.sets.as_slice());
    let dirs = top_dirs(root, sets);
    let files: Vec<String> = local
        .iter()
        .filter(|e| {
            !dirs
                .iter()
                .any(|d| d.is_empty() || e.path.starts_with(&format!("{d}/")))
        })
        .map(|e| e.path.clone())
        .collect();
    writer
        .write_all(&encode(&ToAgent::SyncList {
            base: base.to_string(),
            dirs,
            files,
        }))
        .await
        .map_err(io)?;
    writer.flush().await.map_err(io)?;
    let (remote, remote_base) = loop {
        match read_frame(reader)
            .await
            .map_err(|e| SyncError(format!("sync: {e}")))?
        {
            FromAgent::SyncManifest { files, links, base } => {
                let files = files.into_iter().map(|(path, size, mtime_ns, mode)| Entry {
                    path,
                    kind: Kind::File,
                    size,
                    mtime_ns,
                    mode,
                    target: None,
                });
                let links = links.into_iter().map(|(path, target)| Entry {
                    path,
                    kind: Kind::Link,
                    size: 0,
                    mtime_ns: 0,
                    mode: 0,
                    target: Some(target),
                });
                break (files.chain(links).collect::<Vec<_>>(), base);
            }
            FromAgent::InternalError { message } => return Err(SyncError(message)),
            _ => continue,
        }
    };
    // What the ignore rules keep out is the remote's own (its __pycache__,
    // say), never a stale copy to delete.
    let ignores = sets
        .iter()
        .map(|set| Ignore::new(set).map(|ig| (set.dir.clone(), ig)))
        .collect::<Result<Vec<_>, _>>()?;
    let remote: Vec<Entry> = remote
        .into_iter()
        .filter(|e| !remote_ignored(root, &ignores, &e.path))
        .collect();
    let changes = diff(&local, &remote);
    let mut stats = Stats {
        total: local.len() as u64,
        deleted: changes.delete.len() as u64,
        base: remote_base,
        ..Stats::default()
    };
    // Batches are prepared on blocking threads (rayon inside), one ahead
    // of the one being written.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(Vec<u8>, u64), SyncError>>(2);
    // Deletions first: a file that became a directory (or the other way
    // round) must be out of the way before the new one is written.
    if !changes.delete.is_empty() {
        writer
            .write_all(&encode(&ToAgent::SyncDelete {
                paths: changes.delete,
            }))
            .await
            .map_err(io)?;
    }
    let (root_owned, send) = (root.to_path_buf(), changes.send);
    let producer = tokio::task::spawn_blocking(move || {
        for batch in send.chunks(BATCH) {
            let framed: Result<Vec<(Vec<u8>, u64)>, SyncError> = batch
                .par_iter()
                .map(|e| match e.kind {
                    Kind::Link => Ok((
                        encode(&ToAgent::SyncLink {
                            path: e.path.clone(),
                            target: e.target.clone().unwrap_or_default(),
                        }),
                        0,
                    )),
                    Kind::File => file_frames(&root_owned, e),
                })
                .collect();
            let joined = framed.map(|parts| {
                let bytes = parts.iter().map(|(_, n)| n).sum();
                (parts.into_iter().flat_map(|(f, _)| f).collect(), bytes)
            });
            let failed = joined.is_err();
            if tx.blocking_send(joined).is_err() || failed {
                break;
            }
        }
    });
    while let Some(batch) = rx.recv().await {
        let (frames, bytes) = batch?;
        writer.write_all(&frames).await.map_err(io)?;
        stats.bytes += bytes;
    }
    let _ = producer.await;
    writer
        .write_all(&encode(&ToAgent::SyncEnd))
        .await
        .map_err(io)?;
    writer.flush().await.map_err(io)?;
    loop {
        match read_frame(reader)
            .await
            .map_err(|e| SyncError(format!("sync: {e}")))?
        {
            FromAgent::Synced { files, errors, .. } => {
                if !errors.is_empty() {
                    // Unsafe paths refused, or the host could not write
                    // (a full disk, permissions): at most 20 lines of it.
                    let mut shown: Vec<&str> = errors.iter().map(String::as_str).take(20).collect();
                    let more = errors.len().saturating_sub(shown.len());
                    let tail = format!("... and {more} more");
                    if more > 0 {
                        shown.push(&tail);
                    }
                    return Err(SyncError(format!(
                        "syncing to {} failed ({} problems; fix the cause, or leave the files out with rsyncignore):\n  {}",
                        stats.base,
                        errors.len(),
                        shown.join("\n  ")
                    )));
                }
                stats.files = files;
                return Ok(stats);
            }
            FromAgent::InternalError { message } => return Err(SyncError(message)),
            _ => continue,
        }
    }
}

/// Sync into `base` on this machine through a fresh `python` agent (for
/// `popen//chdir=` workers); the agent exits afterwards.
pub async fn push_local(
    python: &str,
    base: &str,
    root: &Path,
    rootdir: &Path,
    sets: &[SyncSet],
) -> Result<Stats, SyncError> {
    let conn = crate::gateway::popen::spawn(python, None, &Default::default(), None)
        .map_err(|e| SyncError(e.message))?;
    let job = Job {
        base: base.to_string(),
        root: root.to_path_buf(),
        rootdir: rootdir.to_path_buf(),
        sets: sets.to_vec(),
        files: Vec::new(),
    };
    let out = push_over(conn, python, Some(job), None).await?;
    Ok(out.tree.unwrap_or_default())
}

/// The last lines a failed interpreter wrote (`python9: not found`), as
/// `; it said: ...`, or nothing.
async fn stderr_tail(mut err: Box<dyn tokio::io::AsyncRead + Send + Unpin>) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = err.read(&mut chunk).await {
            if n == 0 || buf.len() > 64 * 1024 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), read).await;
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    format!("; it said: {}", tail.trim())
}

/// Where the local pytest to ship comes from: looked up only when a host
/// turns out to need it.
pub type ShipSource<'a> = &'a (dyn Fn() -> Result<&'a Ship, String> + Sync);

/// One tree to mirror.
#[derive(Debug, Clone)]
pub struct Job {
    /// Where it goes on the worker's host.
    pub base: String,
    /// Local paths are relative to this.
    pub root: PathBuf,
    /// The local rootdir (its ini files travel too).
    pub rootdir: PathBuf,
    /// The directories.
    pub sets: Vec<SyncSet>,
    /// Single files (absolute, under `root`).
    pub files: Vec<PathBuf>,
}

impl Job {
    /// The same job, mirrored into `base`.
    pub fn at(&self, base: &str) -> Job {
        Job {
            base: base.to_string(),
            ..self.clone()
        }
    }
}

/// The local pure-Python pytest, to ship to a host that lacks it.
#[derive(Debug, Clone)]
pub struct Ship {
    /// The packages (and their dist-info) as a tree job.
    pub job: Job,
    /// pytest's version.
    pub version: String,
    /// The oldest Python it supports, from `Requires-Python: >=X.Y`.
    pub min_python: Option<(u32, u32)>,
}

/// What an agent session found and did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// What the worker's Python is.
    pub ready: crate::protocol::ReadyInfo,
    /// The tree sync, if one was asked for.
    pub tree: Option<Stats>,
    /// The shipped pytest, if the host lacked one.
    pub shipped: Option<Stats>,
    /// The tree was already synced into this place by another worker of
    /// this run (named here): nothing was sent.
    pub shared_from: Option<String>,
}

/// Start the agent on a fresh connection (a hello without a directory) and
/// read what its Python is. Something other than a frame on its stdout (a
/// login banner, a wrapper's output) is named, with what it printed.
async fn handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    stderr: &mut Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    python: &str,
) -> Result<crate::protocol::ReadyInfo, SyncError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use crate::protocol::{
        bootstrap_payload, encode, read_frame, FrameError, FromAgent, ToAgent, PROTOCOL_VERSION,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut hello = bootstrap_payload();
    hello.extend(encode(&ToAgent::Hello {
        protocol: PROTOCOL_VERSION,
        sys_path: Vec::new(),
        chdir: None,
    }));
    // A command that exits at once closes its stdin: its output says why.
    let wrote = async {
        writer.write_all(&hello).await?;
        writer.flush().await
    }
    .await;
    let frame = match wrote {
        Ok(()) => read_frame(reader).await,
        // It closed its input: it ended, or never read it.
        Err(_) => Err(FrameError::Closed),
    };
    match frame {
        Ok(FromAgent::Ready(info)) => Ok(info),
        Ok(other) => Err(SyncError(format!("agent ({python}) answered {other:?}"))),
        Err(FrameError::TooLarge(_, first)) => {
            let mut more = vec![0u8; 256];
            let n = tokio::time::timeout(std::time::Duration::from_secs(1), reader.read(&mut more))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            let printed = format!("{first}{}", String::from_utf8_lossy(&more[..n]));
            let printed: String = printed.trim().chars().take(200).collect();
            Err(SyncError(format!(
                "something printed {printed:?} before {python} started the agent (a login banner, a wrapper's output): the command must pass Python's stdin and stdout through untouched"
            )))
        }
        Err(e) => {
            let said = match stderr.take() {
                Some(err) => stderr_tail(err).await,
                None => String::new(),
            };
            Err(SyncError(format!(
                "{python} did not start the agent ({e}): is it a Python 3.8+ there?{said}"
            )))
        }
    }
}

/// Syncs into places that several workers may share (exec= workers in one
/// container, or on one volume): one sync per place, never two at once.
#[derive(Default)]
pub struct Places {
    slots: std::sync::Mutex<BTreeMap<String, std::sync::Arc<tokio::sync::Mutex<Option<Done>>>>>,
}

/// A place synced in this run, and by whom.
#[derive(Clone)]
struct Done {
    stats: Stats,
    by: String,
}

impl std::fmt::Debug for Places {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Places").finish_non_exhaustive()
    }
}

impl Places {
    fn slot(&self, id: &str) -> std::sync::Arc<tokio::sync::Mutex<Option<Done>>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}

/// The ids of the places `dirs` are in, as the agent sees them (made if
/// `create`).
async fn place_ids<R, W>(
    reader: &mut R,
    writer: &mut W,
    dirs: Vec<String>,
    create: bool,
) -> Result<Vec<String>, SyncError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use crate::protocol::{encode, read_frame, FromAgent, ToAgent};
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| SyncError(format!("sync connection failed: {e}"));
    let asked = dirs.len();
    writer
        .write_all(&encode(&ToAgent::SyncPlace { dirs, create }))
        .await
        .map_err(io)?;
    writer.flush().await.map_err(io)?;
    loop {
        match read_frame(reader).await {
            Ok(FromAgent::Places { ids }) if ids.len() == asked => return Ok(ids),
            Ok(FromAgent::Places { ids }) => {
                return Err(SyncError(format!(
                    "the agent named {} places for {asked} directories",
                    ids.len()
                )))
            }
            Ok(FromAgent::InternalError { message }) => return Err(SyncError(message)),
            Ok(_) => continue,
            Err(e) => return Err(SyncError(format!("sync connection failed: {e}"))),
        }
    }
}

/// What to mirror over one connection, and where the places are tracked.
struct Pushes<'a, 's> {
    python: &'a str,
    job: Option<&'a Job>,
    ship: Option<ShipSource<'s>>,
    /// Shared places (exec= workers), with this worker's name; without
    /// it every push goes ahead.
    places: Option<(&'a Places, &'a str)>,
}

impl Pushes<'_, '_> {
    /// Mirror the tree, then ship pytest if the Python has none.
    async fn run<R, W>(
        &self,
        reader: &mut R,
        writer: &mut W,
        ready: &crate::protocol::ReadyInfo,
        pending: Option<tokio::task::JoinHandle<Result<Vec<Entry>, SyncError>>>,
    ) -> Result<Outcome, SyncError>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let python = self.python;
        let mut out = Outcome {
            ready: ready.clone(),
            ..Outcome::default()
        };
        let ship = match (&ready.pytest, self.ship) {
            (None, Some(get)) => {
                let ship = get().map_err(|why| {
                    SyncError(format!(
                        "{python} there has no pytest, and rtest has none to ship: {why}"
                    ))
                })?;
                let parts: Vec<u32> = ready
                    .python_version
                    .split('.')
                    .filter_map(|p| p.parse().ok())
                    .collect();
                let have = (
                    parts.first().copied().unwrap_or(0),
                    parts.get(1).copied().unwrap_or(0),
                );
                if let Some(min) = ship.min_python.filter(|m| have < *m) {
                    return Err(SyncError(format!(
                        "{python} there is Python {} and has no pytest; the local pytest {} needs Python >={}.{}: install pytest on that host ({python} -m pip install pytest) or choose another python=",
                        ready.python_version, ship.version, min.0, min.1
                    )));
                }
                Some(ship)
            }
            _ => None,
        };
        let mut jobs: Vec<(&Job, bool)> = Vec::new();
        if let Some(j) = self.job {
            jobs.push((j, true));
        }
        if let Some(s) = ship {
            jobs.push((&s.job, false));
        }
        let ids = match self.places {
            Some(_) if !jobs.is_empty() => {
                let dirs = jobs.iter().map(|(j, _)| j.base.clone()).collect();
                Some(place_ids(reader, writer, dirs, true).await?)
            }
            _ => None,
        };
        let mut pending = pending;
        for (k, (job, is_tree)) in jobs.into_iter().enumerate() {
            let local = async {
                match (is_tree, pending.take()) {
                    (true, Some(p)) => joined(p).await,
                    _ => joined(spawn_manifest(job)).await,
                }
            };
            let stats = match (self.places, ids.as_ref().and_then(|ids| ids.get(k))) {
                (Some((places, who)), Some(id)) => {
                    let slot = places.slot(id);
                    let mut done = slot.lock().await;
                    match done.as_ref() {
                        Some(d) => {
                            if is_tree {
                                out.shared_from = Some(d.by.clone());
                            }
                            Stats {
                                files: 0,
                                bytes: 0,
                                deleted: 0,
                                ..d.stats.clone()
                            }
                        }
                        None => {
                            let stats = push(reader, writer, job, local.await?).await?;
                            *done = Some(Done {
                                stats: stats.clone(),
                                by: who.to_string(),
                            });
                            stats
                        }
                    }
                }
                _ => push(reader, writer, job, local.await?).await?,
            };
            if is_tree {
                out.tree = Some(stats);
            } else {
                out.shipped = Some(stats);
            }
        }
        Ok(out)
    }
}

/// On an established connection: start an agent, mirror `job`, and when
/// the host has no pytest and `ship` is given, ship the local one (a clear
/// error when the host's Python is older than that pytest supports). The
/// agent exits afterwards.
pub async fn push_over(
    conn: crate::gateway::Connection,
    python: &str,
    job: Option<Job>,
    ship: Option<ShipSource<'_>>,
) -> Result<Outcome, SyncError> {
    use crate::protocol::{encode, ToAgent};
    use tokio::io::AsyncWriteExt;
    let crate::gateway::Connection {
        mut reader,
        mut writer,
        killer,
        mut stderr,
        ..
    } = conn;
    let pending = job.as_ref().map(spawn_manifest);
    let ready = handshake(&mut reader, &mut writer, &mut stderr, python).await?;
    if ready.too_old() {
        killer.kill();
        return Err(SyncError(ready.too_old_message(python, "that host")));
    }
    let pushes = Pushes {
        python,
        job: job.as_ref(),
        ship,
        places: None,
    };
    let result = pushes.run(&mut reader, &mut writer, &ready, pending).await;
    let _ = writer.write_all(&encode(&ToAgent::Shutdown)).await;
    let _ = writer.flush().await;
    drop(writer);
    if result.is_err() {
        killer.kill();
    }
    result
}

/// On a worker's own connection (an exec= worker, whose files may vanish
/// with its process): start the agent, mirror `job` and ship pytest if
/// needed, once per place (`places`: workers that see the same files there
/// share one sync, and wait for it), and hand the connection back with its
/// agent running, for the worker to start on.
pub async fn prepare_in_place(
    mut conn: crate::gateway::Connection,
    who: &str,
    python: &str,
    job: Option<&Job>,
    ship: Option<ShipSource<'_>>,
    places: &Places,
) -> Result<(crate::gateway::Connection, Outcome), SyncError> {
    let c = &mut conn;
    let result = async {
        let ready = handshake(&mut c.reader, &mut c.writer, &mut c.stderr, python).await?;
        if ready.too_old() {
            return Err(SyncError(ready.too_old_message(python, "there")));
        }
        let pushes = Pushes {
            python,
            job,
            ship,
            places: Some((places, who)),
        };
        pushes.run(&mut c.reader, &mut c.writer, &ready, None).await
    }
    .await;
    match result {
        Ok(outcome) => {
            conn.agent_started = true;
            Ok((conn, outcome))
        }
        Err(e) => Err(given_up(conn, e).await),
    }
}

/// Kill a connection whose agent failed us; a command that ended by itself
/// first says how (`exit code 127`).
async fn given_up(conn: crate::gateway::Connection, mut e: SyncError) -> SyncError {
    if let Ok(how) = tokio::time::timeout(std::time::Duration::from_secs(1), conn.exit).await {
        e.0.push_str(&format!(" (the command ended: {how})"));
    }
    conn.killer.kill();
    e
}

/// Ask a fresh agent which place each of `dirs` is in, writing nothing
/// (`rtest plan --probe`). The connection comes back still open: dropping it
/// ends the agent. (Keep probes of several workers open until all have
/// answered: a place named by a process that is gone could be taken for
/// another's, as the kernel reuses namespace ids.)
pub async fn probe_places(
    mut conn: crate::gateway::Connection,
    python: &str,
    dirs: Vec<String>,
) -> Result<
    (
        crate::protocol::ReadyInfo,
        Vec<String>,
        crate::gateway::Connection,
    ),
    SyncError,
> {
    let c = &mut conn;
    let result = async {
        let ready = handshake(&mut c.reader, &mut c.writer, &mut c.stderr, python).await?;
        let ids = place_ids(&mut c.reader, &mut c.writer, dirs, false).await?;
        Ok((ready, ids))
    }
    .await;
    match result {
        Ok((ready, ids)) => Ok((ready, ids, conn)),
        Err(e) => Err(given_up(conn, e).await),
    }
}
