//! The command line: the only place that knows argv, the terminal and exit
//! codes.
//!
//! Stage one ([`args`]) splits a pytest-compatible command line into what
//! rtest owns and what goes to pytest; stage two (here) validates it into
//! [`plan::Settings`], probes local interpreters, builds the [`Plan`] and
//! runs it.

pub mod args;
pub mod plan_cmd;

use crate::config::{self, Config, Sourced};
use crate::error::{Error, ExitCode};
use crate::events::Reporter;
use crate::gateway::{provision, Remotes};
use crate::plan::{self, DistMode, Machine, Plan, Setting, Settings};
use crate::report::{self, junit::JUnit, reportlog::ReportLog, terminal};
use crate::session::{self, SessionOptions};
use crate::spec::{Transport, TxSpec};
use crate::sync as rtest_sync;
use args::{NumProcesses, RawArgs};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const HELP: &str = "\
rtest: run a pytest suite on many workers.

usage: rtest [RTEST OPTIONS] [PYTEST OPTIONS] [FILE_OR_DIR ...]

rtest takes pytest's command line: every option below is rtest's, every
other option goes to pytest unchanged and in order (also options that a
conftest.py adds). `--` is optional; everything after it goes to pytest.

distribution:
  -n, --numprocesses N|auto|logical
                        N local workers (auto: one per physical core,
                        logical: one per logical CPU; 0: no distribution).
                        Default without -n and --tx: auto.
  --tx SPEC             add workers: [N*]popen[//python=PY][//chdir=DIR]
                        [//env:NAME=VALUE][//id=ID][//nice=N]
                        [//dont_write_bytecode]; ssh=[USER@]HOST[:PORT]
                        [//ssh_config=FILE] (your ssh config and keys; the
                        host needs only Python 3.8+); or socket=HOST:PORT
                        (a host running `rtest socketserver`; the token
                        comes from RTEST_TOKEN or RTEST_TOKEN_FILE).
                        Repeatable.
  --rsyncdir DIR        mirror DIR to remote workers and popen//chdir=
                        workers before they start (only changes travel;
                        remote workers get the rootdir without one).
  --rsyncignore GLOB    leave matching files out of the sync.
  --require-all-hosts   fail when a remote worker cannot be reached
                        (default: go on with the others).
  --dist MODE           load (default), loadscope, loadfile, loadgroup,
                        worksteal, each, no.
  -d                    the same as --dist load.
  --max-worker-restart N
                        replace at most N crashed workers (default 4 per
                        worker).
  --timeout SECS        kill a test's worker after SECS and report the
                        test failed (0: no timeout).
  --no-provision        do not create a venv with pytest when the chosen
                        interpreter lacks it; fail instead.
  --shard K/N           run only shard K of N: a deterministic split of the
                        collected suite balanced by the duration history
                        (.rtest/durations.json), for CI job matrices.

config:
  --profile NAME        apply profile NAME from the config files.
  --no-config           ignore conftest.kdl/conftest.toml/[tool.rtest].
  --strict-config       unknown config keys are errors (also given to pytest).
  rtest plan [ARGS] [--format text|json|dot] [--collect] [--probe]
                        show what a run would do, and where each setting
                        came from, without running anything.
  rtest schema config|plan
                        print the JSON Schema of the config or plan format.
  rtest serve [--listen HOST:PORT] [--token-file F] [--insecure-no-token]
                        run workers on this host for remote rtest runs.
  rtest socketserver    print the single-file, stdlib-only Python socket
                        server: `python3 socketserver.py --listen HOST:PORT`
                        on a host with only Python.

outputs:
  --junitxml PATH       write JUnit XML (pytest's xunit2 layout).
  --report-log PATH     write pytest-reportlog JSON lines.

read by rtest and passed to pytest:
  -x, --maxfail N, -v, -q, --tb, -r, -s/--capture, --collect-only,
  --show-capture, --durations, --color, --basetemp (one subdir per worker),
  --continue-on-collection-errors.

  -h, --help            this help; `pytest --help` lists pytest's options.
  -V, --version         rtest's version.

exit codes: 0 all passed, 1 tests failed, 2 interrupted or collection
errors, 3 internal error, 4 usage error, 5 no tests collected.
";

/// Entry point of the `rtest` binary.
pub fn main() -> ! {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let code = run(&args);
    std::process::exit(code.code())
}

/// Run rtest with these arguments (without the program name).
pub fn run(argv: &[String]) -> ExitCode {
    match run_inner(argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ERROR: {e}");
            e.exit_code()
        }
    }
}

fn run_inner(argv: &[String]) -> Result<ExitCode, Error> {
    match argv.first().map(String::as_str) {
        Some("socketserver") => {
            print!("{}", include_str!("../../python/socketserver.py"));
            return Ok(ExitCode::Ok);
        }
        Some("serve") => return serve_command(&argv[1..]),
        Some("plan") => return plan_command(&argv[1..]),
        Some("schema") => return schema_command(&argv[1..]),
        _ => {}
    }
    let raw = args::parse(argv).map_err(|e| Error::usage(e.0))?;
    if raw.help {
        print!("{HELP}");
        return Ok(ExitCode::Ok);
    }
    if raw.version {
        println!("rtest {}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::Ok);
    }
    let mut plan = resolve(&raw)?;
    let mut notes = prepare_interpreters(&mut plan, raw.no_provision)?;
    // Dropped on every way out of here: closes the ssh masters.
    let remotes = Arc::new(Remotes {
        token: socket_token()?,
        ssh: Default::default(),
    });
    notes.extend(sync_workers(&mut plan, &remotes)?);
    run_plan(&plan, &raw, notes, remotes)
}

/// The directory of the config file a setting's source names
/// (`/p/conftest.kdl:3 (profile ci)` -> `/p`), if it names one.
fn config_dir_of(source: &str) -> Option<PathBuf> {
    let at = source.split(" (").next()?;
    let (file, line) = at.rsplit_once(':')?;
    if line.is_empty() || !line.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let file = Path::new(file);
    file.is_file()
        .then(|| file.parent().map(Path::to_path_buf))?
}

/// The socket servers' shared token: `RTEST_TOKEN_FILE`, else `RTEST_TOKEN`.
fn socket_token() -> Result<Option<Vec<u8>>, Error> {
    if let Some(file) = std::env::var_os("RTEST_TOKEN_FILE").filter(|f| !f.is_empty()) {
        let text = std::fs::read(&file).map_err(|e| {
            Error::usage(format!(
                "RTEST_TOKEN_FILE {}: {e}",
                PathBuf::from(&file).display()
            ))
        })?;
        return Ok(Some(
            String::from_utf8_lossy(&text).trim().as_bytes().to_vec(),
        ));
    }
    Ok(std::env::var("RTEST_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(String::into_bytes))
}

/// Prepare workers that do not run in this tree: mirror the rsyncdirs for
/// `popen//chdir=DIR` and remote workers (once per host and directory) and
/// point them at their copy (same layout, so the same node ids); give a
/// remote host without pytest the local one.
fn sync_workers(plan: &mut Plan, remotes: &Remotes) -> Result<Vec<String>, Error> {
    let remote = plan.workers.iter().any(|w| w.transport != Transport::Popen);
    if plan.sync.is_empty() && !remote {
        return Ok(Vec::new());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Error::usage(format!("the current directory is unusable: {e}")))?;
    let root = rtest_sync::sync_root(&plan.rootdir, &plan.sync);
    let rel_cwd = match cwd.strip_prefix(&root) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) if plan.sync.is_empty() => PathBuf::new(),
        Err(_) => {
            return Err(Error::usage(format!(
                "the current directory {} is outside the synced tree {}: run rtest from inside it",
                cwd.display(),
                root.display()
            )))
        }
    };
    let rel_rootdir = plan
        .rootdir
        .strip_prefix(&root)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("could not start the async runtime: {e}")))?;
    let short_hash = |text: &str| {
        use sha2::{Digest, Sha256};
        Sha256::digest(text.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let cache_key = short_hash(&plan.rootdir.display().to_string());
    // Only a remote without pytest needs the local one: found when one
    // does, once.
    let ship_cell: std::sync::OnceLock<Result<rtest_sync::Ship, String>> = Default::default();
    let get_ship = || {
        ship_cell
            .get_or_init(|| local_pytest(&default_python(), &short_hash).map_err(|e| e.message))
            .as_ref()
            .map_err(Clone::clone)
    };
    let sync = plan.sync.clone();
    let rootdir = plan.rootdir.clone();
    // Where each worker's copy goes: chdir= (relative to here for popen, to
    // the home directory remotely), else a per-rootdir cache remotely.
    let bases: Vec<Option<String>> = plan
        .workers
        .iter()
        .map(|w| match (&w.transport, &w.chdir) {
            (Transport::Popen, None) => None,
            (Transport::Popen, Some(_)) if sync.is_empty() => None,
            (Transport::Popen, Some(c)) => Some(
                config::rootdir::normalize(&cwd.join(c))
                    .display()
                    .to_string(),
            ),
            (_, Some(c)) => Some(c.display().to_string()),
            (_, None) => Some(format!("~/.cache/rtest/{cache_key}")),
        })
        .collect();
    // Each (host, python, copy) once, all hosts at the same time.
    let keys: Vec<Option<(String, String, String)>> = plan
        .workers
        .iter()
        .zip(&bases)
        .map(|(w, base)| {
            let b = base.as_ref()?;
            let host = format!("{:?} {:?}", w.transport, w.ssh_config);
            Some((host, w.python.clone(), b.clone()))
        })
        .collect();
    let mut firsts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        if let Some(key) = key {
            firsts.entry(key.clone()).or_insert(i);
        }
    }
    let jobs: Vec<((String, String, String), usize)> = firsts.into_iter().collect();
    let syncs = jobs.iter().map(|(key, i)| {
        let w = &plan.workers[*i];
        let job = (!sync.is_empty()).then(|| rtest_sync::Job {
            base: key.2.clone(),
            root: root.clone(),
            rootdir: rootdir.clone(),
            sets: sync.clone(),
            files: Vec::new(),
        });
        let get_ship = &get_ship;
        async move {
            let started = std::time::Instant::now();
            let conn = match &w.transport {
                Transport::Popen => {
                    crate::gateway::popen::spawn(&w.python, None, &Default::default(), None)
                }
                // The spec's env: it may matter to the interpreter itself.
                _ => remotes.connect(w, 0, w.env.clone()).await,
            }
            .map_err(|e| rtest_sync::SyncError(e.message))?;
            let outcome = rtest_sync::push_over(conn, &w.python, job, Some(get_ship)).await?;
            Ok::<_, rtest_sync::SyncError>((outcome, started.elapsed()))
        }
    });
    let all = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = join_all(syncs.collect()) => Some(r),
            // Ctrl-C or SIGTERM while syncing stops here (and the masters
            // close on the way out).
            _ = tokio::signal::ctrl_c() => None,
            _ = terminated => None,
        }
    };
    let Some(results) = runtime.block_on(all) else {
        return Err(Error {
            kind: crate::error::ErrorKind::Interrupted,
            message: "interrupted while syncing".into(),
        });
    };
    let mut done: BTreeMap<(String, String, String), rtest_sync::Outcome> = BTreeMap::new();
    let mut notes = Vec::new();
    for ((key, i), result) in jobs.into_iter().zip(results) {
        let w = &plan.workers[i];
        let (outcome, took) = match result {
            Ok(o) => o,
            // An unreachable remote is the session's to report (and to go
            // on without, unless --require-all-hosts); everything else
            // stops here.
            Err(e) if e.0.contains(": cannot connect") || e.0.contains(": no answer within") => {
                continue
            }
            Err(e) => return Err(Error::usage(format!("worker {} ({}): {e}", w.id, w.spec))),
        };
        if let Some(stats) = &outcome.tree {
            notes.push(format!(
                "synced to {} on {}: {} of {} files sent ({} bytes), {} deleted in {:.2}s",
                stats.base,
                w.transport.host(),
                stats.files,
                stats.total,
                stats.bytes,
                stats.deleted,
                took.as_secs_f64()
            ));
        }
        if let (Some(stats), Some(Ok(ship))) = (&outcome.shipped, ship_cell.get()) {
            let how = if stats.files == 0 {
                "uses the copy already in".to_string()
            } else {
                format!("shipped {} files to", stats.files)
            };
            notes.push(format!(
                "{} on {} has no pytest: pytest {}, {how} {}",
                w.python,
                w.transport.host(),
                ship.version,
                stats.base,
            ));
        }
        done.insert(key, outcome);
    }
    for (w, key) in plan.workers.iter_mut().zip(&keys) {
        let Some(outcome) = key.as_ref().and_then(|k| done.get(k)) else {
            continue;
        };
        let (shipped, tree) = (outcome.shipped.clone(), outcome.tree.clone());
        if let Some(stats) = shipped {
            w.sys_path.push(stats.base.clone());
        }
        if let Some(stats) = tree {
            let abs_base = PathBuf::from(&stats.base);
            let dir = abs_base.join(&rel_cwd);
            if w.transport == Transport::Popen {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::usage(format!("cannot create {}: {e}", dir.display())))?;
            }
            w.chdir = Some(dir);
            let copy_rootdir = abs_base.join(&rel_rootdir).display().to_string();
            w.extra_args.push(format!("--rootdir={copy_rootdir}"));
            w.copy_rootdir = Some(copy_rootdir);
        }
    }
    Ok(notes)
}

/// Await every future, all at once (on one thread), in their order.
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The local pure-Python pytest and what it requires (pluggy, iniconfig,
/// packaging, pygments, and tomli/exceptiongroup where installed), as a
/// tree to ship.
fn local_pytest(
    python: &str,
    short_hash: &dyn Fn(&str) -> String,
) -> Result<rtest_sync::Ship, Error> {
    const SCRIPT: &str = r#"
import json, re, importlib.metadata as m
out = {"site": None, "dirs": [], "files": [], "version": None, "requires": None}
# pytest and everything it requires (whatever the marker: the remote's
# Python may need what this one does not), found installed here.
todo, seen = ["pytest"], set()
while todo:
    name = todo.pop()
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        continue
    seen.add(key)
    try:
        d = m.distribution(name)
    except Exception:
        continue
    for req in d.requires or []:
        if "extra ==" in req or "extra==" in req:
            continue
        todo.append(re.split(r"[ ;<>=!~\[(]", req.strip(), 1)[0])
    site = str(d.locate_file(""))
    out["site"] = out["site"] or site
    if name == "pytest":
        out["version"] = d.version
        out["requires"] = d.metadata.get("Requires-Python")
    tops, singles = set(), set()
    for f in d.files or []:
        if not f.parts or f.parts[0] in ("..", "__pycache__"):
            continue
        if len(f.parts) > 1:
            tops.add(f.parts[0])
        elif f.parts[0].endswith(".py"):
            singles.add(f.parts[0])  # single-module packages, like py.py
    out["dirs"] += sorted(tops)
    out["files"] += sorted(singles)
print(json.dumps(out))
"#;
    let fail = |why: String| {
        Error::usage(format!(
            "cannot find the local pytest to ship to remote workers ({python}): {why}"
        ))
    };
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| fail(String::from_utf8_lossy(&out.stderr).trim().to_string()))?;
    let site = PathBuf::from(
        v["site"]
            .as_str()
            .ok_or_else(|| fail("pytest is not installed here".into()))?,
    );
    let version = v["version"].as_str().unwrap_or("?").to_string();
    let min_python = v["requires"].as_str().and_then(|r| {
        let r = r.trim().strip_prefix(">=")?;
        let mut it = r.split('.').map(|p| p.trim().parse::<u32>().ok());
        Some((it.next()??, it.next().flatten().unwrap_or(0)))
    });
    let ignore = plan::DEFAULT_IGNORES
        .iter()
        .map(|p| plan::SyncIgnore {
            pattern: p.to_string(),
            base: site.clone(),
            source: "default".into(),
        })
        .collect::<Vec<_>>();
    let sets = v["dirs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str())
        .map(|d| plan::SyncSet {
            dir: site.join(d),
            ignore: ignore.clone(),
        })
        .filter(|s| s.dir.is_dir())
        .collect();
    Ok(rtest_sync::Ship {
        job: rtest_sync::Job {
            base: format!(
                "~/.cache/rtest/site-{}",
                short_hash(&format!("{version}{}", site.display()))
            ),
            root: site.clone(),
            rootdir: site.join(".no-rootdir"),
            sets,
            files: v["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .map(|f| site.join(f))
                .collect(),
        },
        version,
        min_python,
    })
}

/// Command line + config files -> the plan a run would execute. Pure but
/// for reading config files: starts nothing, contacts no host.
fn resolve(raw: &RawArgs) -> Result<Plan, Error> {
    let cfg = load_config(raw)?;
    let settings = settings(raw, &cfg)?;
    let machine = Machine {
        default_python: default_python(),
        default_workers: auto_workers(false),
    };
    plan::build(&settings, &machine)
}

/// `rtest serve [--listen HOST:PORT] [--token-file F] [--insecure-no-token]`.
fn serve_command(argv: &[String]) -> Result<ExitCode, Error> {
    let mut listen = "127.0.0.1:8888".to_string();
    let mut token_file: Option<PathBuf> = None;
    let mut insecure = false;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| Error::usage(format!("rtest serve: {name} needs a value")))
        };
        match a.as_str() {
            "--listen" => listen = value("--listen")?,
            "--token-file" => token_file = Some(PathBuf::from(value("--token-file")?)),
            "--insecure-no-token" => insecure = true,
            "-h" | "--help" => {
                println!("usage: rtest serve [--listen HOST:PORT] [--token-file FILE] [--insecure-no-token]\n\nRuns rtest workers on this host for remote rtest runs (--tx socket=HOST:PORT).\nThe token comes from --token-file or RTEST_TOKEN; without one, only\n--insecure-no-token on a loopback address is allowed.");
                return Ok(ExitCode::Ok);
            }
            other => {
                return Err(Error::usage(format!(
                    "rtest serve: unknown argument {other:?}"
                )))
            }
        }
    }
    let token = match token_file {
        Some(f) => Some(
            std::fs::read(&f)
                .map_err(|e| Error::usage(format!("--token-file {}: {e}", f.display())))?
                .trim_ascii()
                .to_vec(),
        ),
        None => std::env::var("RTEST_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(String::into_bytes),
    }
    .filter(|t| !t.is_empty());
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        Error::usage(format!(
            "--listen: expected HOST:PORT with an IP address, got {listen:?}"
        ))
    })?;
    if token.is_none() {
        if !insecure {
            return Err(Error::usage(
                "rtest serve: no token: set RTEST_TOKEN or --token-file (or --insecure-no-token on a loopback address)",
            ));
        }
        if !addr.ip().is_loopback() {
            return Err(Error::usage(format!(
                "rtest serve: --insecure-no-token is only allowed on a loopback address, not {}",
                addr.ip()
            )));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("could not start the async runtime: {e}")))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::usage(format!("rtest serve: cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::internal(e.to_string()))?;
        println!("listening on {local}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        eprintln!("[rtest serve] listening on {local}");
        crate::gateway::serve::serve(listener, token.map(std::sync::Arc::new))
            .await
            .map_err(|e| Error::internal(format!("rtest serve: {e}")))
    })?;
    Ok(ExitCode::Ok)
}

/// `rtest schema config|plan`: the JSON Schemas in `schemas/`.
fn schema_command(argv: &[String]) -> Result<ExitCode, Error> {
    let schema = match argv.first().map(String::as_str) {
        Some("config") => config::schema::config_schema(),
        Some("plan") => plan::view::plan_schema(),
        other => {
            return Err(Error::usage(format!(
                "rtest schema: expected \"config\" or \"plan\", got {}",
                other.map_or("nothing".to_string(), |o| format!("{o:?}"))
            )))
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&schema).unwrap_or_default()
    );
    Ok(ExitCode::Ok)
}

/// `rtest plan [--format text|json|dot] [RUN ARGS]`.
fn plan_command(argv: &[String]) -> Result<ExitCode, Error> {
    let mut format = plan_cmd::Format::Text;
    let mut rest = Vec::new();
    let mut collect = false;
    let mut probe = false;
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        if a == "--collect" {
            collect = true;
            i += 1;
            continue;
        }
        if a == "--probe" {
            probe = true;
            i += 1;
            continue;
        }
        let value =
            if a == "--format" {
                i += 1;
                Some(argv.get(i).cloned().ok_or_else(|| {
                    Error::usage("option --format needs a value (text, json or dot)")
                })?)
            } else {
                a.strip_prefix("--format=").map(String::from)
            };
        match value.as_deref() {
            Some("text") => format = plan_cmd::Format::Text,
            Some("json") => format = plan_cmd::Format::Json,
            Some("dot") => format = plan_cmd::Format::Dot,
            Some(other) => {
                return Err(Error::usage(format!(
                    "--format: expected text, json or dot, got {other:?}"
                )))
            }
            None => rest.push(a.clone()),
        }
        i += 1;
    }
    let raw = args::parse(&rest).map_err(|e| Error::usage(e.0))?;
    let plan = resolve(&raw)?;
    let collected = if collect {
        Some(collect_locally(&plan, &raw)?)
    } else {
        None
    };
    let view = collected.as_ref().map(|c| plan_cmd::collect_view(&plan, c));
    let probes = if probe {
        Some(probe_workers(&plan)?)
    } else {
        None
    };
    match format {
        plan_cmd::Format::Text => {
            print!("{}", plan_cmd::to_text(&plan));
            if let Some(v) = &view {
                print!("{}", plan_cmd::collect_text(v));
            }
            if let Some(p) = &probes {
                print!("{}", plan_cmd::probe_text(p));
            }
        }
        plan_cmd::Format::Json => {
            let mut json = plan::view::PlanView::new(&plan, &plan_cmd::sync_size);
            json.collect = view;
            json.probe = probes;
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            )
        }
        plan_cmd::Format::Dot => print!("{}", plan_cmd::to_dot(&plan)),
    }
    Ok(ExitCode::Ok)
}

/// `rtest plan --probe`: ask each distinct interpreter (locally, or on its
/// host) what it is; runs no test and syncs nothing.
fn probe_workers(plan: &Plan) -> Result<Vec<plan::view::ProbeView>, Error> {
    let remotes = Remotes {
        token: socket_token()?,
        ssh: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("could not start the async runtime: {e}")))?;
    // One probe per (transport, interpreter); the workers sharing it listed.
    let mut out: Vec<(String, plan::view::ProbeView)> = Vec::new();
    for w in &plan.workers {
        let host = w.transport.host();
        let key = format!("{:?} {}", w.transport, w.python);
        if let Some((_, p)) = out.iter_mut().find(|(k, _)| *k == key) {
            p.workers.push(w.id.clone());
            continue;
        }
        let mut view = plan::view::ProbeView {
            workers: vec![w.id.clone()],
            host: host.clone(),
            python: w.python.clone(),
            python_version: None,
            pytest: None,
            error: None,
        };
        match &w.transport {
            Transport::Popen => match provision::probe(&w.python) {
                Ok(p) => {
                    view.python_version =
                        Some(format!("{}.{}.{}", p.version.0, p.version.1, p.version.2));
                    view.pytest = p.has_pytest.then(|| "installed".to_string());
                }
                Err(e) => view.error = Some(e.message),
            },
            _ => {
                let result = runtime.block_on(async {
                    let conn = remotes
                        .connect(w, 0, Default::default())
                        .await
                        .map_err(|e| rtest_sync::SyncError(e.message))?;
                    rtest_sync::push_over(conn, &w.python, None, None).await
                });
                match result {
                    Ok(o) => {
                        view.python_version = Some(o.ready.python_version);
                        view.pytest = o.ready.pytest;
                    }
                    Err(e) => view.error = Some(e.0),
                }
            }
        }
        out.push((key, view));
    }
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// Run pytest's collection once, locally, with the plan's pytest
/// arguments (for `rtest plan --collect`).
fn collect_locally(plan: &Plan, raw: &RawArgs) -> Result<plan_cmd::Collection, Error> {
    let mut p = plan.clone();
    let local = plan
        .workers
        .iter()
        .find(|w| w.transport == Transport::Popen)
        .cloned()
        .unwrap_or_else(|| plan::WorkerPlan {
            id: "gw0".into(),
            transport: Transport::Popen,
            python: default_python(),
            chdir: None,
            env: Default::default(),
            nice: None,
            spec: "popen".into(),
            extra_args: Vec::new(),
            sys_path: Vec::new(),
            ssh_config: None,
            copy_rootdir: None,
        });
    p.workers = vec![local];
    p.collect_only = true;
    p.junitxml = None;
    p.report_log = None;
    p.shard = None;
    prepare_interpreters(&mut p, raw.no_provision)?;
    let opts = SessionOptions {
        testrun_uid: testrun_uid(),
        full_reports: false,
        echo_output: false,
        continue_on_collection_errors: true,
        env: Vec::new(),
        remotes: Default::default(),
        require_all_hosts: false,
        controller: p.workers.first().map(|w| w.python.clone()),
        color: false,
        mainargv: std::env::args().collect(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("could not start the async runtime: {e}")))?;
    let mut capture = plan_cmd::Capture::default();
    runtime.block_on(session::run(&p, &opts, &mut capture));
    capture.finish()
}

/// Load the config files that apply to this invocation.
fn load_config(raw: &RawArgs) -> Result<Config, Error> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::usage(format!("the current directory is unusable: {e}")))?;
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RTEST_"))
        .collect();
    let cfg = config::load(&config::Input {
        cwd,
        args: raw.positionals.clone(),
        inifile: raw.inifile.clone(),
        rootdir: raw.rootdir.clone(),
        profile: raw.profile.clone(),
        no_config: raw.no_config,
        strict: raw.strict_config,
        env,
    })
    .map_err(|e| Error::usage(e.0))?;
    for w in &cfg.warnings {
        eprintln!("rtest: warning: {w}");
    }
    Ok(cfg)
}

/// Stage two: the command line over the config, validated, with the origin
/// of every value.
fn settings(raw: &RawArgs, cfg: &Config) -> Result<Settings, Error> {
    let mut sources: BTreeMap<String, Setting> = BTreeMap::new();
    let mut note = |key: &str, value: serde_json::Value, source: &str| {
        sources.insert(
            key.to_string(),
            Setting {
                value,
                source: source.to_string(),
            },
        );
    };
    let mut tx = Vec::new();
    let mut tx_view = Vec::new();
    for s in &cfg.tx {
        let mut spec = s
            .value
            .parse::<TxSpec>()
            .map_err(|e| Error::usage(format!("{}: tx: {e}", s.source)))?;
        // A local file named in a config file is relative to that file.
        if let (Some(c), Some(dir)) = (&spec.ssh_config, config_dir_of(&s.source)) {
            if Path::new(c).is_relative() && !c.starts_with('~') {
                spec.ssh_config = Some(dir.join(c).display().to_string());
            }
        }
        tx.push(spec);
        tx_view.push(serde_json::json!({"spec": s.value, "source": s.source}));
    }
    for s in &raw.tx {
        tx.push(
            s.parse::<TxSpec>()
                .map_err(|e| Error::usage(e.to_string()))?,
        );
        tx_view.push(serde_json::json!({"spec": s, "source": "--tx"}));
    }
    if !tx_view.is_empty() {
        note("tx", tx_view.into(), "(per entry)");
    }
    let dist = match (&raw.dist, &cfg.dist) {
        (Some(d), _) => {
            let m = d
                .parse::<DistMode>()
                .map_err(|e| Error::usage(format!("--dist: {e}")))?;
            note("dist", m.name().into(), "--dist");
            Some(m)
        }
        (None, Some(d)) => {
            note("dist", d.value.name().into(), &d.source);
            Some(d.value)
        }
        (None, None) => None,
    };
    let numprocesses = match (&raw.numprocesses, &cfg.numprocesses) {
        (Some(n), _) => Some((*n, "-n".to_string())),
        (None, Some(n)) => Some((n.value, n.source.clone())),
        (None, None) => None,
    }
    .map(|(n, src)| {
        let shown = match n {
            NumProcesses::Count(c) => serde_json::Value::from(c),
            other => other.to_string().into(),
        };
        note("numprocesses", shown, &src);
        match n {
            NumProcesses::Count(c) => c,
            NumProcesses::Auto => auto_workers(false),
            NumProcesses::Logical => auto_workers(true),
        }
    });
    let cwd = &cfg.rootdir;
    let _ = cwd;
    let here = std::env::current_dir().unwrap_or_default();
    let mut rsyncdirs = cfg.rsyncdirs.clone();
    for d in &raw.rsyncdirs {
        let abs = config::rootdir::normalize(&here.join(d));
        if !abs.is_dir() {
            return Err(Error::usage(format!(
                "--rsyncdir: {} is not a directory",
                abs.display()
            )));
        }
        rsyncdirs.push(Sourced::new(abs, "--rsyncdir"));
    }
    let mut rsyncignore = cfg.rsyncignore.clone();
    for g in &raw.rsyncignore {
        globset::Glob::new(g)
            .map_err(|e| Error::usage(format!("--rsyncignore: bad pattern \"{g}\": {e}")))?;
        rsyncignore.push(Sourced::new((g.clone(), here.clone()), "--rsyncignore"));
    }
    if !rsyncdirs.is_empty() {
        let view: Vec<_> = rsyncdirs
            .iter()
            .map(|d| serde_json::json!({"dir": d.value, "source": d.source}))
            .collect();
        note("rsyncdirs", view.into(), "(per entry)");
    }
    if !rsyncignore.is_empty() {
        let view: Vec<_> = rsyncignore
            .iter()
            .map(|d| serde_json::json!({"pattern": d.value.0, "source": d.source}))
            .collect();
        note("rsyncignore", view.into(), "(per entry)");
    }
    let mut pytest_args: Vec<String> = cfg.pytest_args.iter().map(|a| a.value.clone()).collect();
    if !pytest_args.is_empty() {
        let src = cfg
            .pytest_args
            .first()
            .map(|a| a.source.clone())
            .unwrap_or_default();
        note("pytest-args", pytest_args.clone().into(), &src);
    }
    pytest_args.extend(raw.pytest_args.iter().cloned());
    fn pick<T: Clone + Into<serde_json::Value>>(
        key: &str,
        flag: &str,
        cli: Option<T>,
        cfg: Option<&Sourced<T>>,
        note: &mut dyn FnMut(&str, serde_json::Value, &str),
    ) -> Option<T> {
        match (cli, cfg) {
            (Some(v), _) => {
                note(key, v.clone().into(), flag);
                Some(v)
            }
            (None, Some(s)) => {
                note(key, s.value.clone().into(), &s.source);
                Some(s.value.clone())
            }
            (None, None) => None,
        }
    }
    let timeout = pick(
        "timeout",
        "--timeout",
        raw.timeout,
        cfg.timeout.as_ref(),
        &mut note,
    )
    .filter(|t| *t > 0.0);
    let max_worker_restart = pick(
        "max-worker-restart",
        "--max-worker-restart",
        raw.max_worker_restart,
        cfg.max_worker_restart.as_ref(),
        &mut note,
    );
    let maxfail = pick(
        "maxfail",
        "-x/--maxfail",
        raw.maxfail,
        cfg.maxfail.as_ref(),
        &mut note,
    )
    .filter(|m| *m > 0);
    fn pick_path(
        key: &str,
        flag: &str,
        cli: &Option<PathBuf>,
        cfg: &Option<Sourced<PathBuf>>,
        note: &mut dyn FnMut(&str, serde_json::Value, &str),
    ) -> Option<PathBuf> {
        let (path, source) = match (cli, cfg) {
            (Some(p), _) => (p.clone(), flag.to_string()),
            (None, Some(s)) => (s.value.clone(), s.source.clone()),
            (None, None) => return None,
        };
        note(key, path.display().to_string().into(), &source);
        Some(path)
    }
    let junitxml = pick_path(
        "junitxml",
        "--junitxml",
        &raw.junitxml,
        &cfg.junitxml,
        &mut note,
    );
    let report_log = pick_path(
        "report-log",
        "--report-log",
        &raw.report_log,
        &cfg.report_log,
        &mut note,
    );
    Ok(Settings {
        numprocesses,
        tx,
        dist,
        pytest_args,
        basetemp: raw.basetemp.clone(),
        timeout,
        max_worker_restart,
        maxfail,
        junitxml,
        report_log,
        collect_only: raw.collect_only,
        shard: raw.shard,
        rootdir: cfg.rootdir.clone(),
        config_files: cfg.files.clone(),
        profile: cfg.profile.clone(),
        rsyncdirs,
        rsyncignore,
        sources,
    })
}

/// The interpreter workers use when a spec names none.
fn default_python() -> String {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(venv).join("bin").join("python");
        if p.exists() {
            return p.display().to_string();
        }
    }
    "python3".to_string()
}

/// Workers for `-n auto` (physical cores) or `-n logical`.
fn auto_workers(logical: bool) -> usize {
    if let Some(n) = std::env::var("PYTEST_XDIST_AUTO_NUM_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    let logical_count = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if logical {
        return logical_count;
    }
    physical_cores()
        .unwrap_or(logical_count)
        .min(logical_count)
        .max(1)
}

fn physical_cores() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = std::collections::HashSet::new();
    let (mut phys, mut core) = (None, None);
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "physical id" => phys = Some(v.trim().to_string()),
                "core id" => core = Some(v.trim().to_string()),
                _ => {}
            }
        } else if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                cores.insert((p, c));
            }
        }
    }
    if let (Some(p), Some(c)) = (phys, core) {
        cores.insert((p, c));
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// Check every local interpreter once; give those without pytest a
/// provisioned venv (unless `--no-provision`). Returns notes for the header.
fn prepare_interpreters(plan: &mut Plan, no_provision: bool) -> Result<Vec<String>, Error> {
    let mut notes = Vec::new();
    let mut resolved: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for i in 0..plan.workers.len() {
        if plan.workers[i].transport != Transport::Popen {
            continue;
        }
        let python = plan.workers[i].python.clone();
        if let Some(r) = resolved.get(&python) {
            plan.workers[i].python = r.clone();
            continue;
        }
        let probe = provision::probe(&python)?;
        let use_python = if probe.has_pytest {
            python.clone()
        } else if no_provision {
            return Err(Error::usage(format!(
                "python {python:?} (Python {}.{}.{}) has no pytest and --no-provision was given: install it with `{} -m pip install pytest`, or drop --no-provision to let rtest create a venv with pytest",
                probe.version.0, probe.version.1, probe.version.2, probe.executable
            )));
        } else {
            let mut say = |m: &str| eprintln!("rtest: {m}");
            let venv = provision::provision(&python, &probe, &mut say)?;
            notes.push(format!(
                "provisioned: {python} has no pytest; using {}",
                venv.display()
            ));
            venv.display().to_string()
        };
        resolved.insert(python, use_python.clone());
        plan.workers[i].python = use_python;
    }
    Ok(notes)
}

/// The interpreter of the controller (the local pytest session plugins
/// see): the one local workers use, else the default one if it has pytest.
fn controller_python(plan: &Plan) -> Option<String> {
    if let Some(w) = plan
        .workers
        .iter()
        .find(|w| w.transport == Transport::Popen)
    {
        return Some(w.python.clone());
    }
    let python = default_python();
    match provision::probe(&python) {
        Ok(p) if p.has_pytest => Some(python),
        _ => None,
    }
}

fn terminal_width() -> usize {
    if let Some(w) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|w| *w >= 20)
    {
        return w;
    }
    // SAFETY: TIOCGWINSZ fills a winsize struct that we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col >= 20 {
            return ws.ws_col as usize;
        }
    }
    80
}

fn use_color(raw: &RawArgs, tty: bool) -> bool {
    match raw.color.as_deref() {
        Some("yes") => return true,
        Some("no") => return false,
        _ => {}
    }
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        return false;
    }
    match std::env::var("PY_COLORS").as_deref() {
        Ok("1") => return true,
        Ok("0") => return false,
        _ => {}
    }
    if std::env::var_os("FORCE_COLOR").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    tty && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true)
}

fn testrun_uid() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run_plan(
    plan: &Plan,
    raw: &RawArgs,
    header_notes: Vec<String>,
    remotes: Arc<Remotes>,
) -> Result<ExitCode, Error> {
    let tty = std::io::stdout().is_terminal();
    let width = terminal_width();
    let errors: report::WriteErrors = Default::default();
    let mut reporters: Vec<Box<dyn Reporter>> = Vec::new();
    let cwd = std::env::current_dir()
        .map_err(|e| Error::usage(format!("the current directory is unusable: {e}")))?;
    reporters.push(Box::new(terminal::Terminal::new(
        terminal::TerminalOptions {
            width,
            color: use_color(raw, tty),
            live: tty && std::env::var_os("CI").is_none(),
            verbosity: raw.verbosity,
            tb: raw.tb.clone().unwrap_or_else(|| "auto".into()),
            report_chars: terminal::expand_report_chars(raw.report_chars.as_deref()),
            show_capture: raw.show_capture.clone().unwrap_or_else(|| "all".into()),
            durations: raw.durations,
            durations_min: raw.durations_min.unwrap_or(0.005),
            version: env!("CARGO_PKG_VERSION").to_string(),
            cwd: cwd.clone(),
            collect_only: plan.collect_only,
            header_notes,
            show_warnings: true,
        },
    )));
    if let Some(path) = &plan.junitxml {
        let path = cwd.join(path);
        check_writable(&path, "--junitxml")?;
        let suite = match plan.shard {
            Some((k, n)) => format!("pytest (shard {k}/{n})"),
            None => "pytest".to_string(),
        };
        reporters.push(Box::new(JUnit::new(path, suite, errors.clone())));
    }
    if let Some(path) = &plan.report_log {
        let path = cwd.join(path);
        let log = ReportLog::create(path.clone(), errors.clone()).map_err(|e| {
            Error::usage(format!(
                "could not write --report-log {}: {e}",
                path.display()
            ))
        })?;
        reporters.push(Box::new(log));
    }
    let opts = SessionOptions {
        testrun_uid: testrun_uid(),
        full_reports: plan.report_log.is_some(),
        echo_output: raw.capture_no,
        continue_on_collection_errors: raw.continue_on_collection_errors,
        env: vec![("COLUMNS".into(), width.to_string())],
        remotes,
        require_all_hosts: raw.require_all_hosts,
        controller: controller_python(plan),
        color: use_color(raw, tty),
        mainargv: std::env::args().collect(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("could not start the async runtime: {e}")))?;
    let mut fanout = report::Fanout { reporters };
    let outcome = runtime.block_on(session::run(plan, &opts, &mut fanout));
    drop(fanout);
    let errs = errors.lock().map(|e| e.clone()).unwrap_or_default();
    for e in &errs {
        eprintln!("ERROR: {e}");
    }
    if !errs.is_empty() && outcome.exit == ExitCode::Ok {
        return Ok(ExitCode::InternalError);
    }
    Ok(outcome.exit)
}

/// Fail early (exit 4) when an output file cannot be written.
fn check_writable(path: &std::path::Path, option: &str) -> Result<(), Error> {
    let fail = |e: std::io::Error| {
        Error::usage(format!("could not write {option} {}: {e}", path.display()))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    if path.is_dir() {
        return Err(Error::usage(format!(
            "could not write {option} {}: it is a directory",
            path.display()
        )));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(fail)?;
    Ok(())
}
