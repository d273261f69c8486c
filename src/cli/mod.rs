//! The command line: the only place that knows argv, the terminal and exit
//! codes.
//!
//! Stage one ([`args`]) splits a pytest-compatible command line into what
//! rtest owns and what goes to pytest; stage two (here) validates it into
//! [`plan::Settings`] and builds the [`Plan`], which [`run::execute`] runs.

pub mod addopts;
pub mod args;
pub mod options;
pub mod plan_cmd;

use crate::config::{self, Config, Sourced};
use crate::error::{Error, ExitCode};
use crate::gateway::{provision, Remotes};
use crate::plan::{self, DistMode, Machine, Plan, Setting, Settings};
use crate::report::terminal;
use crate::run;
use crate::session::{self, SessionOptions};
use crate::spec::{Transport, TxSpec};
use crate::sync as rtest_sync;
use args::{NumProcesses, RawArgs};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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
            eprintln!("{}", e.rendered());
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
        Some("completions") => return completions_command(&argv[1..]),
        Some("__complete") => return complete_command(&argv[1..]),
        _ => {}
    }
    let raw = args::parse(argv).map_err(|e| Error::usage(e.0))?;
    if raw.help {
        print!("{}", options::help());
        return Ok(ExitCode::Ok);
    }
    if raw.version {
        // `rtest 0.1.0 (bb66aeb01 2026-11-30)`: the commit when known.
        println!(
            "rtest {}{}",
            env!("CARGO_PKG_VERSION"),
            env!("RTEST_BUILD_COMMIT")
        );
        return Ok(ExitCode::Ok);
    }
    let plan = resolve(&raw)?;
    if raw.informational.is_some() {
        return run::show(plan, raw.no_provision);
    }
    let terminal = terminal_options(&raw, &plan)?;
    run::execute(
        plan,
        run::RunOptions {
            no_provision: raw.no_provision,
            terminal,
            echo_output: raw.capture_no,
            continue_on_collection_errors: raw.continue_on_collection_errors,
            require_all_hosts: raw.require_all_hosts,
        },
    )
}

/// How the terminal reporter draws, from the command line (the workers'
/// effective pytest options refine it once they are configured).
fn terminal_options(raw: &RawArgs, plan: &Plan) -> Result<terminal::TerminalOptions, Error> {
    let tty = std::io::stdout().is_terminal();
    let cwd = std::env::current_dir()
        .map_err(|e| Error::usage(format!("the current directory is unusable: {e}")))?;
    Ok(terminal::TerminalOptions {
        width: terminal_width(),
        color: use_color(raw, tty),
        live: tty && std::env::var_os("CI").is_none(),
        verbosity: raw.verbosity,
        tb: raw.tb.clone().unwrap_or_else(|| "auto".into()),
        report_chars: terminal::expand_report_chars(raw.report_chars.as_deref()),
        show_capture: raw.show_capture.clone().unwrap_or_else(|| "all".into()),
        durations: raw.durations,
        durations_min: raw.durations_min.unwrap_or(0.005),
        version: env!("CARGO_PKG_VERSION").to_string(),
        cwd,
        collect_only: plan.collect_only,
        header_notes: Vec::new(),
        hash_seed: None,
        show_warnings: true,
        progress: terminal::Progress::default(),
        no_header: false,
        no_summary: false,
        fold_skipped: true,
        force_short_summary: false,
    })
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

/// Command line + config files -> the plan a run would execute. Pure but
/// for reading config files: starts nothing, contacts no host.
fn resolve(raw: &RawArgs) -> Result<Plan, Error> {
    let (cfg, pytest) = load_config(raw)?;
    let settings = settings(raw, &cfg, &pytest)?;
    let (default_python, rule) = run::choose_default_python(Some(&settings.rootdir));
    let machine = Machine {
        default_python,
        default_python_rule: rule.to_string(),
        default_workers: auto_workers(false),
    };
    plan::build(&settings, &machine)
}

/// `rtest completions bash|zsh|fish`: a completion script.
fn completions_command(argv: &[String]) -> Result<ExitCode, Error> {
    let shell = argv.first().map(String::as_str).unwrap_or_default();
    let script = options::completions(shell).ok_or_else(|| {
        Error::usage(format!(
            "rtest completions: expected bash, zsh or fish, got {shell:?} (e.g. `source <(rtest completions bash)`)"
        ))
    })?;
    print!("{script}");
    Ok(ExitCode::Ok)
}

/// `rtest __complete profiles`: what the completion scripts ask while
/// completing (the profiles the config files here define); prints nothing
/// when the config cannot be read.
fn complete_command(argv: &[String]) -> Result<ExitCode, Error> {
    if argv.first().map(String::as_str) == Some("profiles") {
        if let Ok((cfg, _)) = load_config(&RawArgs::default()) {
            for name in cfg.profiles {
                println!("{name}");
            }
        }
    }
    Ok(ExitCode::Ok)
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
        token: run::socket_token()?,
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("could not start the async runtime: {e}")))?;
    // One probe per (transport, interpreter), or per exec= place; the
    // workers sharing it listed.
    let cwd = std::env::current_dir()
        .map_err(|e| Error::usage(format!("the current directory is unusable: {e}")))?;
    let bases = run::copy_bases(plan, &cwd);
    // exec= workers are asked all at once, without writing anything, which
    // place their copy would go to; each stays up until all have answered
    // (a place named by a process that is gone could be taken for
    // another's: the kernel reuses namespace ids).
    let execs: Vec<(&plan::WorkerPlan, &Vec<String>, Vec<String>)> = plan
        .workers
        .iter()
        .zip(&bases)
        .filter_map(|(w, base)| match &w.transport {
            Transport::Exec { argv } => Some((w, argv, base.iter().cloned().collect())),
            _ => None,
        })
        .collect();
    let everyone = tokio::sync::Barrier::new(execs.len());
    let answers = runtime.block_on(run::join_all(
        execs
            .into_iter()
            .map(|(w, argv, dirs)| {
                let everyone = &everyone;
                async move {
                    let answer = async {
                        let conn = crate::gateway::exec::spawn(argv, &w.python, &w.env, w.nice)
                            .map_err(|e| rtest_sync::SyncError(e.message))?;
                        rtest_sync::probe_places(conn, &w.python, dirs).await
                    }
                    .await;
                    everyone.wait().await;
                    (
                        w.id.clone(),
                        answer.map(|(ready, ids, _ended)| (ready, ids)),
                    )
                }
            })
            .collect(),
    ));
    let mut answers: HashMap<String, _> = answers.into_iter().collect();
    let mut out: Vec<(String, plan::view::ProbeView)> = Vec::new();
    for w in &plan.workers {
        let host = w.transport.host();
        let key = format!("{:?} {}", w.transport, w.python);
        let mut view = plan::view::ProbeView {
            workers: vec![w.id.clone()],
            host: host.clone(),
            python: w.python.clone(),
            python_version: None,
            pytest: None,
            error: None,
            place: None,
        };
        if let Some(answer) = answers.remove(&w.id) {
            let key = match answer {
                Ok((ready, places)) => {
                    view.python_version = Some(ready.python_version);
                    view.pytest = ready.pytest;
                    view.place = places.into_iter().next();
                    format!("{key} {:?}", view.place)
                }
                Err(e) => {
                    view.error = Some(e.0);
                    format!("{key} {}", w.id)
                }
            };
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, p)) => p.workers.push(w.id.clone()),
                None => out.push((key, view)),
            }
            continue;
        }
        if let Some((_, p)) = out.iter_mut().find(|(k, _)| *k == key) {
            p.workers.push(w.id.clone());
            continue;
        }
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
            python: plan.default_python.0.clone(),
            chdir: None,
            env: Default::default(),
            nice: None,
            spec: "popen".into(),
            extra_args: Vec::new(),
            sys_path: Vec::new(),
            ssh_config: None,
            copy_rootdir: None,
            copy_root: None,
        });
    p.workers = vec![local];
    p.collect_only = true;
    p.junitxml = None;
    p.report_log = None;
    p.shard = None;
    run::prepare_interpreters(&mut p, raw.no_provision)?;
    let opts = SessionOptions {
        testrun_uid: run::testrun_uid(),
        full_reports: false,
        echo_output: false,
        continue_on_collection_errors: true,
        env: run::pytest_env(&p, None),
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

/// Load the config that applies to this invocation: pytest's own (ini
/// `addopts`, `PYTEST_ADDOPTS`, xdist's ini keys) and rtest's files.
fn load_config(raw: &RawArgs) -> Result<(Config, addopts::PytestConfig), Error> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::usage(format!("the current directory is unusable: {e}")))?;
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RTEST_"))
        .collect();
    let root = config::rootdir::determine(
        &cwd,
        &raw.positionals,
        raw.inifile.as_deref(),
        raw.rootdir.as_deref(),
    );
    let pytest = addopts::read(
        &cwd,
        root.inifile.as_deref(),
        std::env::var("PYTEST_ADDOPTS").ok().as_deref(),
    )?;
    for w in &pytest.warnings {
        eprintln!("rtest: warning: {w}");
    }
    let cfg = config::load(&config::Input {
        cwd,
        args: raw.positionals.clone(),
        inifile: raw.inifile.clone(),
        rootdir: raw.rootdir.clone(),
        profile: raw.profile.clone(),
        no_config: raw.no_config,
        strict: raw.strict_config,
        env,
        pytest_layers: pytest.layers.clone(),
    })
    .map_err(|e| Error::usage(e.0))?;
    for w in &cfg.warnings {
        eprintln!("rtest: warning: {w}");
    }
    Ok((cfg, pytest))
}

/// Stage two: the command line over the config, validated, with the origin
/// of every value.
fn settings(
    raw: &RawArgs,
    cfg: &Config,
    pytest: &addopts::PytestConfig,
) -> Result<Settings, Error> {
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
        // So is an exec= command given as a path (`./ci/enter-pod`); a bare
        // name (`kubectl`) is looked up on PATH.
        if let (Transport::Exec { argv }, Some(dir)) =
            (&mut spec.transport, config_dir_of(&s.source))
        {
            if let Some(program) = argv.first_mut() {
                if program.contains('/') && Path::new(program.as_str()).is_relative() {
                    *program = config::rootdir::normalize(&dir.join(&*program))
                        .display()
                        .to_string();
                }
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
    let given = match (&raw.numprocesses, &cfg.numprocesses) {
        (Some(n), _) => Some((*n, "-n".to_string())),
        (None, Some(n)) => Some((n.value, n.source.clone())),
        (None, None) => None,
    };
    let auto_word = given
        .as_ref()
        .filter(|(n, _)| !matches!(n, NumProcesses::Count(_)))
        .map(|(n, _)| n.to_string());
    let numprocesses = given.map(|(n, src)| {
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
    let maxprocesses = pick(
        "maxprocesses",
        "--maxprocesses",
        raw.maxprocesses,
        cfg.maxprocesses.as_ref(),
        &mut note,
    );
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
    let config_args: Vec<String> = cfg.pytest_args.iter().map(|a| a.value.clone()).collect();
    if let Some(first) = cfg.pytest_args.first() {
        note("pytest-args", config_args.clone().into(), &first.source);
    }
    for (key, value, source) in &pytest.rewritten {
        note(key, value.clone().into(), source);
    }
    let mut pytest_args = pytest.override_args.clone();
    pytest_args.extend(config_args);
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
    );
    let startup_timeout = pick(
        "startup-timeout",
        "--startup-timeout",
        raw.startup_timeout,
        cfg.startup_timeout.as_ref(),
        &mut note,
    );
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
    let mut pytest_env = BTreeMap::new();
    if let Some(a) = &pytest.env_addopts {
        pytest_env.insert("PYTEST_ADDOPTS".to_string(), a.clone());
    }
    Ok(Settings {
        numprocesses,
        auto_word,
        maxprocesses,
        tx,
        dist,
        pytest_args,
        pytest_env,
        basetemp: raw.basetemp.clone().or_else(|| pytest.basetemp.clone()),
        timeout,
        startup_timeout,
        max_worker_restart,
        max_sched_chunk: raw.max_sched_chunk.or(pytest.max_sched_chunk),
        loadscope_reorder: raw
            .loadscope_reorder
            .or(pytest.loadscope_reorder)
            .unwrap_or(true),
        testrun_uid: raw
            .testrun_uid
            .clone()
            .or_else(|| pytest.testrun_uid.clone()),
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
