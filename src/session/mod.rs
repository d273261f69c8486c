//! The session: one dispatcher task that owns all run state.
//!
//! It starts a gateway per planned worker, writes the bootstrap, and then
//! `select!`s over agent frames, worker stderr, worker exits, a timer (for
//! `--timeout` and the live status line) and signals. It asks the scheduler
//! what to send, turns agent reports into [`TestResult`]s, replaces crashed
//! workers, and tells reporters everything through [`Event`]s.

use crate::error::{Error, ExitCode};
use crate::events::{Event, Reporter, StopReason, TestResult, WorkerDesc};
use crate::gateway::{self, Connection, Killer};
use crate::plan::{DistMode, Plan};
use crate::protocol::{
    self, bootstrap_payload, encode, CollectReport, Collected, Crash, FromAgent, PhaseReport,
    ReadyInfo, StartArgs, ToAgent, PROTOCOL_VERSION,
};
use crate::sched::{self, history, unit_key, Action, ItemInfo, Scheduler};
use crate::spec::Transport;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

mod controller;
use controller::CtlState;

/// How many bytes of a worker's stderr are kept for crash reports.
const TAIL_BYTES: usize = 16 * 1024;
/// How many lines of that tail a crash report shows.
const TAIL_LINES: usize = 30;

/// Options of a run that are not part of the plan.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// `PYTEST_XDIST_TESTRUNUID`.
    pub testrun_uid: String,
    /// Ask workers for pytest's serialized reports (report-log).
    pub full_reports: bool,
    /// Show workers' output as it comes (`-s`).
    pub echo_output: bool,
    /// `--continue-on-collection-errors`.
    pub continue_on_collection_errors: bool,
    /// Extra environment for every worker (`COLUMNS`).
    pub env: Vec<(String, String)>,
    /// How remote workers are reached (socket token, ssh masters).
    pub remotes: std::sync::Arc<gateway::Remotes>,
    /// Fail when any remote worker cannot be reached.
    pub require_all_hosts: bool,
    /// The local Python that hosts the controller (the pytest session
    /// plugins see); `None` runs without one.
    pub controller: Option<String>,
    /// Terminal markup for what plugins write.
    pub color: bool,
    /// rtest's command line (xdist's `workerinput["mainargv"]`).
    pub mainargv: Vec<String>,
}

/// What a finished run amounts to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code.
    pub exit: ExitCode,
}

enum Input {
    Connected(usize, u32, Box<Result<Connection, Error>>),
    /// From worker slot `.0`, generation `.1`.
    Worker(usize, u32, Pumped),
    /// From the controller.
    Controller(Pumped),
}

/// What the tasks reading an agent's pipes hear.
enum Pumped {
    Frame(Box<FromAgent>),
    BadFrame(String),
    Stderr(Vec<u8>),
    Gone(String),
}

/// Read an agent's frames and stderr, and its exit, into the dispatcher's
/// channel (each wrapped by `wrap`); returns the writer for its frames.
fn pump(
    conn: Connection,
    tx: &mpsc::UnboundedSender<Input>,
    wrap: impl Fn(Pumped) -> Input + Send + Sync + Clone + 'static,
) -> (mpsc::UnboundedSender<Vec<u8>>, Killer) {
    let Connection {
        mut reader,
        mut writer,
        stderr,
        exit,
        killer,
    } = conn;
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(buf) = wrx.recv().await {
            if writer.write_all(&buf).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    });
    let stderr_task = stderr.map(|mut err| {
        let (tx, wrap) = (tx.clone(), wrap.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match err.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = tx.send(wrap(Pumped::Stderr(buf[..n].to_vec())));
                    }
                }
            }
        })
    });
    let tx = tx.clone();
    tokio::spawn(async move {
        loop {
            match protocol::read_frame(&mut reader).await {
                Ok(msg) => {
                    if tx.send(wrap(Pumped::Frame(Box::new(msg)))).is_err() {
                        break;
                    }
                }
                Err(protocol::FrameError::Closed) => break,
                Err(e) => {
                    let _ = tx.send(wrap(Pumped::BadFrame(e.to_string())));
                    break;
                }
            }
        }
        let how = exit.await;
        if let Some(task) = stderr_task {
            // Grandchildren may keep stderr open; don't wait for them.
            let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
        }
        let _ = tx.send(wrap(Pumped::Gone(how)));
    });
    (wtx, killer)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Starting,
    Collecting,
    Running,
    Exited,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum KillReason {
    Timeout(f64),
    Abort,
}

struct Slot {
    plan_index: usize,
    id: String,
    gen: u32,
    restarts: usize,
    state: SlotState,
    writer: Option<mpsc::UnboundedSender<Vec<u8>>>,
    killer: Option<Killer>,
    info: Option<ReadyInfo>,
    collection: Option<usize>,
    collect_reports: Vec<CollectReport>,
    pending: VecDeque<usize>,
    started: Option<Instant>,
    tail: Vec<u8>,
    kill_reason: Option<KillReason>,
    reports: HashMap<usize, Vec<PhaseReport>>,
    done: Option<i32>,
    shut: bool,
    /// Started without its workerinput, which the controller provides.
    awaiting_input: bool,
    /// The controller's pytest_configure_node ran for it (it is a node
    /// there, to be brought down).
    in_controller: bool,
    /// Its `config.workeroutput`, once its session finished.
    workeroutput: Option<protocol::RawJson>,
}

struct Item {
    nodeid: String,
    location: Option<(String, Option<u64>, String)>,
    local: usize,
    done: bool,
}

struct CollectionSet {
    ids: Vec<String>,
    offset: usize,
    owner: String,
    deselected: usize,
    rootdir: String,
}

struct Session<'a> {
    plan: &'a Plan,
    opts: &'a SessionOptions,
    reporter: &'a mut dyn Reporter,
    tx: mpsc::UnboundedSender<Input>,
    slots: Vec<Slot>,
    items: Vec<Item>,
    collections: Vec<Option<CollectionSet>>,
    sched: Scheduler,
    started_event: bool,
    collected_event: bool,
    stop: Option<StopReason>,
    error: Option<Error>,
    failures: usize,
    any_failed: bool,
    internal_error: bool,
    pytest_exit_status: Option<i32>,
    start: Instant,
    cachedir: Option<String>,
    lastfailed: Vec<(String, bool)>,
    maxfail: Option<usize>,
    continue_on_collection_errors: bool,
    echo_output: bool,
    seen_warnings: std::collections::HashSet<(String, String)>,
    rootdir: Option<PathBuf>,
    history: Option<history::History>,
    durations: Vec<(String, f64)>,
    ctl: controller::Controller,
}

/// Run the plan to the end, telling `reporter` everything.
pub async fn run(plan: &Plan, opts: &SessionOptions, reporter: &mut dyn Reporter) -> Outcome {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut s = Session {
        plan,
        opts,
        reporter,
        tx,
        slots: Vec::new(),
        items: Vec::new(),
        collections: Vec::new(),
        sched: Scheduler::new(plan.dist),
        started_event: false,
        collected_event: false,
        stop: None,
        error: None,
        failures: 0,
        any_failed: false,
        internal_error: false,
        pytest_exit_status: None,
        start: Instant::now(),
        cachedir: None,
        lastfailed: Vec::new(),
        maxfail: plan.maxfail,
        continue_on_collection_errors: opts.continue_on_collection_errors,
        echo_output: opts.echo_output,
        seen_warnings: Default::default(),
        rootdir: None,
        history: None,
        durations: Vec::new(),
        ctl: controller::Controller::default(),
    };
    for (i, w) in plan.workers.iter().enumerate() {
        s.slots.push(Slot {
            plan_index: i,
            id: w.id.clone(),
            gen: 0,
            restarts: 0,
            state: SlotState::Starting,
            writer: None,
            killer: None,
            info: None,
            collection: None,
            collect_reports: Vec::new(),
            pending: VecDeque::new(),
            started: None,
            tail: Vec::new(),
            kill_reason: None,
            reports: HashMap::new(),
            done: None,
            shut: false,
            awaiting_input: false,
            in_controller: false,
            workeroutput: None,
        });
    }
    if let Some(base) = &plan.basetemp {
        // pytest creates --basetemp itself but not its parent.
        if let Err(e) = std::fs::create_dir_all(base) {
            s.error = Some(Error::usage(format!(
                "could not create --basetemp {base}: {e}"
            )));
            for slot in &mut s.slots {
                slot.state = SlotState::Exited;
            }
        }
    }
    if s.error.is_none() {
        s.start_controller();
        for i in 0..s.slots.len() {
            s.spawn(i);
        }
    }

    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sigint = signal(tokio::signal::unix::SignalKind::interrupt());
    let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate());
    while s.slots.iter().any(|slot| slot.state != SlotState::Exited) {
        tokio::select! {
            input = rx.recv() => match input {
                Some(input) => s.handle(input),
                None => break,
            },
            _ = ticker.tick() => {
                s.check_timeouts();
                s.reporter.tick();
            }
            _ = recv_signal(&mut sigint) => s.interrupt(StopReason::Signal("KeyboardInterrupt".into())),
            _ = recv_signal(&mut sigterm) => s.interrupt(StopReason::Signal("SIGTERM".into())),
        }
    }
    // Remote kill commands still on their way must arrive.
    s.opts.remotes.ssh.settle().await;
    let exit = s.conclude();
    // The controller's session finishes with the run's status; its plugins
    // may change it (pytest-cov's --cov-fail-under).
    let exit = s
        .finish_controller(exit, &mut rx, &mut sigint, &mut sigterm)
        .await;
    s.finish(exit)
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).ok()
}

async fn recv_signal(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

impl Session<'_> {
    fn spawn(&mut self, index: usize) {
        let plan = &self.plan.workers[self.slots[index].plan_index];
        let mut env = plan.env.clone();
        for (k, v) in &self.opts.env {
            env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        match &plan.transport {
            Transport::Popen => {
                let conn =
                    gateway::popen::spawn(&plan.python, plan.chdir.as_deref(), &env, plan.nice);
                self.connected(index, conn);
            }
            Transport::Socket { .. } | Transport::Ssh { .. } => {
                // Connecting takes a round trip or a timeout: do it off the
                // dispatcher, which hears back through `Input::Connected`.
                let plan_index = self.slots[index].plan_index;
                let ordinal = gateway::Remotes::ordinal(&self.plan.workers, plan_index);
                let w = plan.clone();
                let gen = self.slots[index].gen;
                let remotes = self.opts.remotes.clone();
                let tx = self.tx.clone();
                self.slots[index].state = SlotState::Starting;
                tokio::spawn(async move {
                    let conn = remotes.connect(&w, ordinal, env).await;
                    let _ = tx.send(Input::Connected(index, gen, Box::new(conn)));
                });
            }
        }
    }

    /// A gateway connected (or failed to): start the agent on it.
    fn connected(&mut self, index: usize, conn: Result<Connection, Error>) {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                self.slots[index].state = SlotState::Exited;
                let id = self.slots[index].id.clone();
                let others = self.slots.iter().any(|s| s.state != SlotState::Exited);
                // A replacement that cannot connect costs its tests (they
                // are reported "not run" if no worker is left), never the run.
                let replacement = self.slots[index].gen > 0;
                if replacement || (others && !self.collected_event && !self.opts.require_all_hosts)
                {
                    let msg = format!("worker {id}: {}; going on without it", e.message);
                    self.reporter.on_event(&Event::Notice(msg));
                    self.maybe_start_running();
                    self.dispatch_all();
                } else {
                    self.fail(Error::worker(format!("worker {id}: {}", e.message)));
                }
                return;
            }
        };
        if self.error.is_some() || matches!(self.stop, Some(StopReason::Signal(_))) {
            conn.killer.kill();
            self.slots[index].state = SlotState::Exited;
            return;
        }
        let gen = self.slots[index].gen;
        let (wtx, killer) = pump(conn, &self.tx, move |p| Input::Worker(index, gen, p));
        // Without a controller to ask, the worker gets its workerinput at
        // once; else it parses its arguments while the controller's
        // pytest_configure_node runs.
        let workerinput = match self.ctl.state {
            CtlState::Off => Some(self.base_workerinput(index)),
            CtlState::Starting | CtlState::Active => None,
        };
        let slot = &mut self.slots[index];
        slot.awaiting_input = workerinput.is_none();
        let w = &self.plan.workers[slot.plan_index];
        let mut args = self.plan.pytest_args.clone();
        args.extend(w.extra_args.iter().cloned());
        if let Some(base) = &self.plan.basetemp {
            let dir = PathBuf::from(base).join(&slot.id);
            args.push(format!("--basetemp={}", dir.display()));
        }
        let mut bytes = bootstrap_payload();
        // A local worker starts in its directory; a remote one is told.
        let chdir = match w.transport {
            Transport::Popen => None,
            _ => w.chdir.as_ref().map(|c| c.display().to_string()),
        };
        bytes.extend(encode(&ToAgent::Hello {
            protocol: PROTOCOL_VERSION,
            sys_path: w.sys_path.clone(),
            chdir,
        }));
        bytes.extend(encode(&ToAgent::Start(StartArgs {
            args,
            env: w.env.clone(),
            worker_id: slot.id.clone(),
            worker_count: self.plan.workers.len(),
            testrun_uid: self.opts.testrun_uid.clone(),
            full_reports: self.opts.full_reports,
            groups: self.plan.dist == DistMode::LoadGroup,
            workerinput,
            stream: false,
        })));
        let _ = wtx.send(bytes);
        slot.writer = Some(wtx);
        slot.killer = Some(killer);
        slot.state = SlotState::Starting;
        if self.ctl.state == CtlState::Active {
            self.configure_node(index);
        }
    }

    fn send(&mut self, index: usize, msg: &ToAgent) {
        if let Some(w) = &self.slots[index].writer {
            let _ = w.send(encode(msg));
        }
    }

    fn live(&self, index: usize) -> bool {
        self.slots[index].state != SlotState::Exited
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Connected(i, gen, conn) if self.slots[i].gen == gen => self.connected(i, *conn),
            Input::Worker(i, gen, p) if self.slots[i].gen == gen => self.on_worker_input(i, p),
            Input::Controller(p) => self.on_controller_input(p),
            _ => {} // from a previous generation of a replaced worker
        }
    }

    fn on_worker_input(&mut self, i: usize, input: Pumped) {
        match input {
            Pumped::Frame(msg) => self.on_frame(i, *msg),
            Pumped::BadFrame(err) => {
                let id = self.slots[i].id.clone();
                self.reporter.on_event(&Event::Notice(format!(
                    "worker {id} sent a bad frame: {err}"
                )));
                self.internal_error = true;
                if let Some(k) = &self.slots[i].killer {
                    k.kill();
                }
            }
            Pumped::Stderr(data) => {
                let slot = &mut self.slots[i];
                slot.tail.extend_from_slice(&data);
                if slot.tail.len() > TAIL_BYTES {
                    let cut = slot.tail.len() - TAIL_BYTES;
                    slot.tail.drain(..cut);
                }
                if self.echo_output {
                    let worker = slot.id.clone();
                    self.reporter
                        .on_event(&Event::WorkerOutput { worker, data });
                }
            }
            Pumped::Gone(how) => self.on_gone(i, how),
        }
    }

    fn on_frame(&mut self, i: usize, msg: FromAgent) {
        match msg {
            FromAgent::Ready(info) => self.on_ready(i, info),
            FromAgent::Configured { options } => {
                self.node_ready(i);
                self.on_configured(i, options)
            }
            FromAgent::UsageError { message } => {
                if self.error.is_none() {
                    self.fail(Error::usage(message));
                }
            }
            FromAgent::CollectReport(mut r) => {
                if let Some(copy) = self.copy_of(i) {
                    copy.skip(&mut r.skip);
                }
                self.slots[i].collect_reports.push(r)
            }
            FromAgent::Collected(c) => self.on_collected(i, c),
            FromAgent::Report(mut r) => {
                if let Some(copy) = self.copy_of(i) {
                    copy.skip(&mut r.skip);
                    let crash = r.crash.as_mut();
                    let (path, message) = match crash {
                        Some(c) => (c.path.as_mut(), c.message.as_mut()),
                        None => (None, None),
                    };
                    for text in [r.longrepr.as_mut(), path, message].into_iter().flatten() {
                        copy.text(text);
                    }
                }
                self.slots[i].reports.entry(r.i).or_default().push(*r)
            }
            FromAgent::Finished(f) => self.on_finished(i, f),
            FromAgent::Warning(w) => {
                let protocol::WarningMsg {
                    nodeid,
                    mut text,
                    when,
                    data,
                } = w;
                if let Some(copy) = self.copy_of(i) {
                    copy.text(&mut text);
                }
                // Every worker collects, so collection-time warnings arrive
                // once per worker: show them once.
                if when == "runtest" || self.seen_warnings.insert((nodeid.clone(), text.clone())) {
                    if let Some(data) = data {
                        self.tell_controller(&ToAgent::Warning { data });
                    }
                    self.reporter.on_event(&Event::Warning { nodeid, text });
                }
            }
            FromAgent::WorkerOutput { output } => self.slots[i].workeroutput = Some(output),
            // Only the controller says these.
            FromAgent::ControllerReady(_)
            | FromAgent::NodeConfigured { .. }
            | FromAgent::ControllerDone(_) => {}
            FromAgent::Interrupted { i: local, message } => {
                let nodeid = self.nodeid_of(i, local).unwrap_or_default();
                self.interrupt(StopReason::TestInterrupted(format!("{nodeid}\n{message}")));
            }
            FromAgent::ShouldStop { reason } => {
                self.set_stop(StopReason::PytestStop(reason.unwrap_or_default()));
            }
            FromAgent::Stolen { indices } => {
                let coll = self.slots[i].collection.unwrap_or(0);
                let offset = self.offset_of(coll);
                let global: Vec<usize> = indices.iter().map(|l| l + offset).collect();
                self.slots[i].pending.retain(|g| !global.contains(g));
                self.sched.stolen(i, global);
                self.dispatch_all();
            }
            FromAgent::InternalError { message } => {
                self.internal_error = true;
                let id = self.slots[i].id.clone();
                self.reporter
                    .on_event(&Event::Notice(format!("INTERNALERROR on {id}:\n{message}")));
            }
            // Sync happens before a session starts; a worker has no reason
            // to send these here.
            FromAgent::SyncManifest { .. } | FromAgent::Synced { .. } => {}
            FromAgent::Done { status } => {
                let slot = &mut self.slots[i];
                slot.done = Some(status);
                if !slot.pending.is_empty() && self.stop.is_none() && status != 0 && status != 1 {
                    // pytest.exit() or an interrupt inside the worker.
                    self.pytest_exit_status = Some(status);
                    let reason = format!("worker {} ended the session", slot.id);
                    self.set_stop(StopReason::PytestStop(reason));
                }
            }
        }
    }

    fn offset_of(&self, coll: usize) -> usize {
        self.collections
            .get(coll)
            .and_then(Option::as_ref)
            .map_or(0, |c| c.offset)
    }

    fn nodeid_of(&self, slot: usize, local: usize) -> Option<String> {
        let coll = self.slots[slot].collection?;
        let c = self.collections.get(coll)?.as_ref()?;
        c.ids.get(local).cloned()
    }

    fn worker_desc(&self, i: usize) -> Option<WorkerDesc> {
        let slot = &self.slots[i];
        let plan = &self.plan.workers[slot.plan_index];
        Some(WorkerDesc {
            id: slot.id.clone(),
            spec: plan.spec.clone(),
            host: plan.transport.host(),
            info: slot.info.clone()?,
        })
    }

    /// For a worker in a synced copy: how its paths map to local ones.
    fn copy_of(&self, i: usize) -> Option<Rebase> {
        let w = &self.plan.workers[self.slots[i].plan_index];
        let copy = w.copy_rootdir.as_ref()?;
        (!self.plan.rootdir.as_os_str().is_empty()).then(|| Rebase {
            from: format!("{}/", copy.trim_end_matches('/')),
            to: format!("{}/", self.plan.rootdir.display()),
        })
    }

    fn on_ready(&mut self, i: usize, info: ReadyInfo) {
        let slot = &mut self.slots[i];
        if info.protocol != PROTOCOL_VERSION {
            let msg = format!(
                "worker {} speaks protocol {} but this rtest speaks {}",
                slot.id, info.protocol, PROTOCOL_VERSION
            );
            self.fail(Error::worker(msg));
            return;
        }
        if info.too_old() {
            let w = &self.plan.workers[slot.plan_index];
            let msg = format!(
                "worker {} ({}): {}",
                slot.id,
                w.spec,
                info.too_old_message(&w.python, &w.transport.host())
            );
            self.fail(Error::worker(msg));
            return;
        }
        if info.pytest.is_none() {
            let python = self.plan.workers[slot.plan_index].python.clone();
            let msg = format!(
                "worker {} ({python}, Python {}): pytest is not importable; install it with `{python} -m pip install pytest`",
                slot.id, info.python_version
            );
            self.fail(Error::worker(msg));
            return;
        }
        slot.info = Some(info);
        slot.state = SlotState::Collecting;
    }

    /// The first worker's effective pytest options decide how the run is
    /// coordinated and rendered (addopts may add `-x`, `-s`, `-ra`, ...).
    fn on_configured(&mut self, i: usize, options: protocol::PytestOptions) {
        if self.started_event {
            return;
        }
        self.started_event = true;
        if options.maxfail > 0 {
            self.maxfail = Some(
                self.maxfail
                    .map_or(options.maxfail, |m| m.min(options.maxfail)),
            );
        }
        self.continue_on_collection_errors |= options.continue_on_collection_errors;
        self.echo_output |= options.capture == "no";
        if let Some(worker) = self.worker_desc(i) {
            self.reporter.on_event(&Event::SessionStarted {
                worker: Box::new(worker),
                options: Box::new(options),
            });
        }
    }

    fn collection_index(&self, slot: usize) -> usize {
        match self.plan.dist {
            DistMode::Each => slot,
            _ => 0,
        }
    }

    fn on_collected(&mut self, i: usize, c: Collected) {
        let coll = self.collection_index(i);
        let slot_id = self.slots[i].id.clone();
        if let Some(Some(existing)) = self.collections.get(coll) {
            if existing.ids != c.ids {
                let diff = collection_diff(&existing.owner, &existing.ids, &slot_id, &c.ids);
                self.fail(Error {
                    kind: crate::error::ErrorKind::Interrupted,
                    message: diff,
                });
                return;
            }
        } else {
            while self.collections.len() <= coll {
                self.collections.push(None);
            }
            let offset = self.items.len();
            if self.history.is_none() {
                // History and pytest's cache live in the local rootdir, also
                // when workers run in a synced copy elsewhere.
                let local = if self.plan.rootdir.as_os_str().is_empty() {
                    PathBuf::from(&c.rootdir)
                } else {
                    self.plan.rootdir.clone()
                };
                if let Some(dir) = &c.cachedir {
                    let rebased = std::path::Path::new(dir)
                        .strip_prefix(&c.rootdir)
                        .map(|rel| local.join(rel))
                        .unwrap_or_else(|_| PathBuf::from(dir));
                    self.cachedir = Some(rebased.display().to_string());
                }
                self.history = Some(load_history(&local));
                self.rootdir = Some(local);
            }
            // Durations only steer the modes that choose where tests go.
            let expected = match self.plan.dist {
                DistMode::Each | DistMode::No => None,
                _ => self.history.as_ref().and_then(|h| h.estimate(&c.ids)),
            };
            let mut infos = Vec::with_capacity(c.ids.len());
            for (local, id) in c.ids.iter().enumerate() {
                let groups = c.groups.get(local).and_then(|g| g.as_deref());
                infos.push(ItemInfo {
                    id: offset + local,
                    key: unit_key(self.plan.dist, id, groups),
                    module: history::module_of(id).to_string(),
                    expected: expected.as_ref().map(|e| e[local]),
                });
                self.items.push(Item {
                    nodeid: id.clone(),
                    location: c.locations.get(local).cloned().flatten(),
                    local,
                    done: false,
                });
            }
            let mut deselected = c.deselected;
            if let Some((k, n)) = self.plan.shard {
                // This job runs its shard only; the rest belongs to the
                // other jobs, and counts as deselected here.
                let mine: std::collections::HashSet<usize> =
                    sched::shard(&infos, k, n).into_iter().collect();
                infos.retain(|it| mine.contains(&it.id));
                for (pos, item) in self.items[offset..].iter_mut().enumerate() {
                    if !mine.contains(&(offset + pos)) {
                        item.done = true;
                        deselected += 1;
                    }
                }
            }
            self.sched
                .add_collection(coll, infos, self.plan.workers.len());

            self.collections[coll] = Some(CollectionSet {
                ids: c.ids,
                offset,
                owner: slot_id,
                deselected,
                // The local rootdir, also for workers in a synced copy.
                rootdir: self
                    .rootdir
                    .as_ref()
                    .map(|r| r.display().to_string())
                    .unwrap_or(c.rootdir),
            });
        }
        let count = self.collections[coll].as_ref().map_or(0, |c| c.ids.len());
        self.node_collected(i, count);
        let slot = &mut self.slots[i];
        slot.collection = Some(coll);
        slot.state = SlotState::Running;
        if self.collected_event {
            // A replacement worker joins the running session.
            self.sched.add_worker(i, coll);
            self.dispatch(i);
        } else {
            self.maybe_start_running();
        }
    }

    /// Once every first-generation worker has collected (or died), tell the
    /// reporters and start scheduling.
    fn maybe_start_running(&mut self) {
        if self.collected_event || self.error.is_some() {
            return;
        }
        let waiting = self
            .slots
            .iter()
            .any(|s| matches!(s.state, SlotState::Starting | SlotState::Collecting));
        // The header waits for the controller's lines too.
        if waiting || self.ctl.state == CtlState::Starting {
            return;
        }
        let Some(first) = self
            .slots
            .iter()
            .position(|s| s.state == SlotState::Running)
        else {
            return;
        };
        self.collected_event = true;
        let collect_reports = self.slots[first].collect_reports.clone();
        let errors = collect_reports
            .iter()
            .filter(|r| r.outcome == "failed")
            .count();
        let workers: Vec<WorkerDesc> = (0..self.slots.len())
            .filter_map(|i| self.worker_desc(i))
            .collect();
        let Some(Some(main)) = self.collections.get(self.collection_index(first)) else {
            return;
        };
        let ids = main.ids.clone();
        self.reporter.on_event(&Event::Collected {
            rootdir: main.rootdir.clone(),
            workers,
            total: self.items.len(),
            per_worker: ids.len(),
            deselected: main.deselected,
            collect_reports: collect_reports.clone(),
            ids,
            header: self.ctl.header.clone(),
        });
        let raws: Vec<protocol::RawJson> =
            collect_reports.into_iter().filter_map(|r| r.raw).collect();
        if !raws.is_empty() {
            self.tell_controller(&ToAgent::CollectReports { reports: raws });
        }
        if errors > 0 && !self.continue_on_collection_errors {
            self.any_failed = true;
            self.set_stop(StopReason::CollectionErrors(errors));
        } else if errors > 0 {
            self.any_failed = true;
        }
        if self.plan.collect_only {
            self.sched.stop();
        }
        // Register every worker before the first poll, so the first one
        // does not take what a fair share would give the others.
        let running: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].state == SlotState::Running)
            .collect();
        for &i in &running {
            let coll = self.slots[i].collection.unwrap_or(0);
            self.sched.add_worker(i, coll);
        }
        for i in running {
            self.dispatch(i);
        }
    }

    /// Give worker `i` what the scheduler has for it, until the scheduler
    /// says wait or shutdown (an agent only starts a test once it knows the
    /// next one, so a last batch must be followed by shutdown at once).
    fn dispatch(&mut self, i: usize) {
        if self.slots[i].state != SlotState::Running || self.slots[i].shut {
            return;
        }
        match self.sched.poll(i) {
            Action::Run(ids) if !ids.is_empty() => {
                let indices: Vec<usize> = ids.iter().map(|g| self.items[*g].local).collect();
                let slot = &mut self.slots[i];
                if slot.pending.is_empty() {
                    slot.started = Some(Instant::now());
                }
                slot.pending.extend(ids);
                self.send(i, &ToAgent::Run { indices });
            }
            Action::Shutdown => {
                self.slots[i].shut = true;
                self.send(i, &ToAgent::Shutdown);
            }
            Action::Steal { victim, items } => {
                let indices: Vec<usize> = items.iter().map(|g| self.items[*g].local).collect();
                self.send(victim, &ToAgent::Steal { indices });
            }
            Action::Run(_) | Action::Wait => {}
        }
        for w in self.sched.take_wakeups() {
            self.dispatch(w);
        }
    }

    fn dispatch_all(&mut self) {
        for i in 0..self.slots.len() {
            self.dispatch(i);
        }
    }

    fn on_finished(&mut self, i: usize, f: protocol::Finished) {
        let Some(coll) = self.slots[i].collection else {
            return;
        };
        let global = self.offset_of(coll) + f.i;
        let slot = &mut self.slots[i];
        if let Some(pos) = slot.pending.iter().position(|g| *g == global) {
            slot.pending.remove(pos);
        }
        let mut full = slot.reports.remove(&f.i).unwrap_or_default();
        slot.started = if slot.pending.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        let mut phases = Vec::with_capacity(f.ph.len());
        for (k, bare) in f.phases().into_iter().enumerate() {
            // The full report for this one (by its place; by phase name
            // from an agent that does not number them).
            let found = full.iter().position(|r| r.k == Some(k)).or_else(|| {
                full.iter()
                    .position(|r| r.k.is_none() && r.when == bare.when)
            });
            phases.push(match found {
                Some(p) => full.remove(p),
                None => bare,
            });
        }
        self.sched.finished(i, global);
        let item = &mut self.items[global];
        if item.done {
            return;
        }
        item.done = true;
        let result = TestResult {
            nodeid: item.nodeid.clone(),
            worker: slot.id.clone(),
            worker_index: i,
            location: item.location.clone(),
            phases,
            duration: f.d,
            crashed: false,
        };
        self.record(result);
        self.dispatch(i);
    }

    fn record(&mut self, result: TestResult) {
        let failed_reports = result
            .phases
            .iter()
            .filter(|p| p.outcome == "failed" && p.wasxfail.is_none())
            .count();
        if result.failed() {
            self.any_failed = true;
        }
        self.failures += failed_reports;
        self.lastfailed
            .push((result.nodeid.clone(), result.failed()));
        if result.worker_index != usize::MAX {
            self.durations
                .push((result.nodeid.clone(), result.duration));
        }
        self.replay(&result);
        self.reporter
            .on_event(&Event::TestFinished(Box::new(result)));
        if let Some(max) = self.maxfail {
            if self.failures >= max && self.stop.is_none() {
                self.set_stop(StopReason::MaxFail(self.failures));
            }
        }
    }

    fn set_stop(&mut self, reason: StopReason) {
        if self.stop.is_none() {
            self.stop = Some(reason);
        }
        self.sched.stop();
        for i in 0..self.slots.len() {
            if self.live(i) && !self.slots[i].shut {
                self.slots[i].shut = true;
                self.send(i, &ToAgent::Stop);
            }
        }
    }

    fn interrupt(&mut self, reason: StopReason) {
        if self.stop.is_none() || matches!(reason, StopReason::Signal(_)) {
            self.stop = Some(reason);
        }
        self.sched.stop();
        self.kill_all();
    }

    fn kill_all(&mut self) {
        for slot in &mut self.slots {
            if slot.state != SlotState::Exited {
                slot.kill_reason.get_or_insert(KillReason::Abort);
                if let Some(k) = &slot.killer {
                    k.kill();
                }
            }
        }
    }

    fn fail(&mut self, error: Error) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.sched.stop();
        self.kill_all();
    }

    fn check_timeouts(&mut self) {
        let Some(limit) = self.plan.timeout else {
            return;
        };
        for slot in &mut self.slots {
            if slot.state != SlotState::Running
                || slot.kill_reason.is_some()
                || slot.pending.is_empty()
            {
                continue;
            }
            if let Some(started) = slot.started {
                if started.elapsed().as_secs_f64() > limit {
                    slot.kill_reason = Some(KillReason::Timeout(limit));
                    if let Some(k) = &slot.killer {
                        k.kill();
                    }
                }
            }
        }
    }

    fn tail_text(&self, i: usize) -> String {
        let text = String::from_utf8_lossy(&self.slots[i].tail);
        let lines: Vec<&str> = text.lines().collect();
        // A fatal error's report (faulthandler) is worth showing from its
        // first line; anything else, the last lines.
        let start = match lines
            .iter()
            .rposition(|l| l.starts_with("Fatal Python error"))
        {
            Some(p) if lines.len() - p <= 3 * TAIL_LINES => p,
            _ => lines.len().saturating_sub(TAIL_LINES),
        };
        lines[start..].join("\n")
    }

    fn on_gone(&mut self, i: usize, how: String) {
        let was = self.slots[i].state;
        self.node_down(i, &how);
        self.slots[i].state = SlotState::Exited;
        self.slots[i].writer = None;
        self.sched.remove_worker(i);
        let id = self.slots[i].id.clone();
        let python = self.plan.workers[self.slots[i].plan_index].python.clone();
        let kill_reason = self.slots[i].kill_reason;
        let aborted = kill_reason == Some(KillReason::Abort);

        if matches!(was, SlotState::Starting | SlotState::Collecting) && !aborted {
            let tail = self.tail_text(i);
            let phase = if was == SlotState::Starting {
                "before it was ready"
            } else {
                "during collection"
            };
            let message = format!(
                "worker {id} ({python}) exited {phase} ({how}){}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; its stderr:\n{tail}")
                }
            );
            if self.slots[i].gen == 0 && !self.collected_event {
                self.fail(Error::worker(message));
                return;
            }
            self.reporter.on_event(&Event::Notice(message));
        }

        let pending: Vec<usize> = self.slots[i].pending.drain(..).collect();
        let ended_by_itself = self.slots[i].done.is_some();
        if !pending.is_empty() && !aborted && !ended_by_itself {
            let crashed = pending[0];
            let rest = pending[1..].to_vec();
            let elapsed = self.slots[i]
                .started
                .map_or(0.0, |s| s.elapsed().as_secs_f64());
            let tail = self.tail_text(i);
            let nodeid = self.items[crashed].nodeid.clone();
            let head = match kill_reason {
                Some(KillReason::Timeout(limit)) => format!(
                    "Timeout: {nodeid} ran longer than {limit}s; rtest killed worker {id} ({how})"
                ),
                _ => format!("worker {id} crashed while running {nodeid} ({how})"),
            };
            let longrepr = if tail.is_empty() {
                head.clone()
            } else {
                format!("{head}\n\nlast output of worker {id}:\n{tail}")
            };
            let item = &mut self.items[crashed];
            item.done = true;
            let head_line = item
                .location
                .as_ref()
                .map(|l| l.2.clone())
                .unwrap_or_else(|| domain_of(&nodeid));
            let report = PhaseReport {
                i: item.local,
                when: "call".into(),
                outcome: "failed".into(),
                duration: elapsed,
                head_line: Some(head_line),
                location: item.location.clone(),
                longrepr: Some(longrepr),
                crash: Some(Crash {
                    path: None,
                    lineno: None,
                    message: Some(head.clone()),
                }),
                ..PhaseReport::default()
            };
            let result = TestResult {
                nodeid,
                worker: id.clone(),
                worker_index: i,
                location: item.location.clone(),
                phases: vec![report],
                duration: elapsed,
                crashed: true,
            };
            self.record(result);
            if let Some(coll) = self.slots[i].collection {
                self.sched.requeue(coll, rest);
            }
        }
        self.slots[i].reports.clear();

        let needs_worker = !self.sched.collections_with_work().is_empty()
            || (!self.collected_event && self.stop.is_none() && self.error.is_none());
        let crashed = !ended_by_itself && !aborted && was != SlotState::Exited;
        if crashed && needs_worker && self.stop.is_none() && self.error.is_none() {
            let total_restarts: usize = self.slots.iter().map(|s| s.restarts).sum();
            if total_restarts < self.plan.max_worker_restart {
                let slot = &mut self.slots[i];
                slot.restarts += 1;
                slot.gen += 1;
                slot.info = None;
                slot.collect_reports.clear();
                slot.tail.clear();
                slot.kill_reason = None;
                slot.done = None;
                slot.shut = false;
                slot.started = None;
                slot.awaiting_input = false;
                slot.in_controller = false;
                slot.workeroutput = None;
                self.reporter.on_event(&Event::Notice(format!(
                    "replacing crashed worker {id} ({} of {} restarts)",
                    total_restarts + 1,
                    self.plan.max_worker_restart
                )));
                self.spawn(i);
                return;
            } else {
                self.reporter.on_event(&Event::Notice(format!(
                    "worker {id} crashed and --max-worker-restart ({}) is used up; not replacing it",
                    self.plan.max_worker_restart
                )));
            }
        }
        if !self.collected_event {
            self.maybe_start_running();
        }
        self.dispatch_all();
    }

    /// Give stranded tests their outcome and decide the exit code.
    fn conclude(&mut self) -> ExitCode {
        // Tests that no worker is left to run still get an outcome.
        if self.stop.is_none()
            && self.error.is_none()
            && self.collected_event
            && !self.plan.collect_only
        {
            let stranded: Vec<usize> = (0..self.items.len())
                .filter(|g| !self.items[*g].done)
                .collect();
            if !stranded.is_empty() {
                self.stop = Some(StopReason::WorkersLost);
                for g in stranded {
                    let item = &mut self.items[g];
                    item.done = true;
                    let message = "not run: every worker that could run it crashed and --max-worker-restart is used up".to_string();
                    let report = PhaseReport {
                        i: item.local,
                        when: "setup".into(),
                        outcome: "failed".into(),
                        head_line: Some(
                            item.location
                                .as_ref()
                                .map(|l| l.2.clone())
                                .unwrap_or_else(|| domain_of(&item.nodeid)),
                        ),
                        location: item.location.clone(),
                        longrepr: Some(message.clone()),
                        crash: Some(Crash {
                            path: None,
                            lineno: None,
                            message: Some(message),
                        }),
                        ..PhaseReport::default()
                    };
                    let result = TestResult {
                        nodeid: item.nodeid.clone(),
                        worker: "-".into(),
                        worker_index: usize::MAX,
                        location: item.location.clone(),
                        phases: vec![report],
                        duration: 0.0,
                        crashed: true,
                    };
                    self.record(result);
                }
            }
        }
        if let Some(e) = &self.error {
            e.exit_code()
        } else {
            match &self.stop {
                Some(StopReason::Signal(_)) | Some(StopReason::TestInterrupted(_)) => {
                    ExitCode::Interrupted
                }
                Some(StopReason::CollectionErrors(_)) => ExitCode::Interrupted,
                Some(StopReason::PytestStop(_)) if self.pytest_exit_status.is_some() => {
                    ExitCode::from_pytest(self.pytest_exit_status.unwrap_or(2))
                }
                _ if self.internal_error => ExitCode::InternalError,
                _ if self.any_failed => ExitCode::TestsFailed,
                _ if self.items.is_empty() => ExitCode::NoTestsCollected,
                _ => ExitCode::Ok,
            }
        }
    }

    /// Write the history and pytest's cache, and tell the reporters the
    /// run is over.
    fn finish(mut self, exit: ExitCode) -> Outcome {
        if let (Some(root), Some(mut h)) = (self.rootdir.clone(), self.history.take()) {
            // Shard jobs only read the history, so that every job of a CI
            // matrix splits the suite alike.
            if !self.plan.collect_only && self.plan.shard.is_none() && !self.durations.is_empty() {
                h.merge(std::mem::take(&mut self.durations));
                if let Err(e) = save_history(&root, &h) {
                    let msg = format!("could not write {}: {e}", history_path(&root).display());
                    self.reporter.on_event(&Event::Notice(msg));
                }
            }
        }
        if let Some(dir) = &self.cachedir {
            let failed_collectors: Vec<String> = self
                .slots
                .iter()
                .flat_map(|s| s.collect_reports.iter())
                .filter(|r| r.outcome == "failed")
                .map(|r| r.nodeid.clone())
                .collect();
            if !self.plan.collect_only {
                let updates = self
                    .lastfailed
                    .iter()
                    .cloned()
                    .chain(failed_collectors.into_iter().map(|n| (n, true)));
                if let Err(e) = update_lastfailed(std::path::Path::new(dir), updates) {
                    let msg = format!("could not update pytest's cache in {dir}: {e}");
                    self.reporter.on_event(&Event::Notice(msg));
                }
            }
        }
        self.reporter.on_event(&Event::Finished {
            stop: self.stop.clone(),
            elapsed: self.start.elapsed(),
            error: self.error.as_ref().map(|e| e.message.clone()),
            exit,
            plugins: self.ctl.output(),
        });
        Outcome { exit }
    }
}

/// Where the duration history lives.
pub fn history_path(rootdir: &std::path::Path) -> PathBuf {
    rootdir.join(".rtest").join("durations.json")
}

/// The duration history (empty when there is none, or it is unreadable).
pub fn load_history(rootdir: &std::path::Path) -> history::History {
    std::fs::read(history_path(rootdir))
        .map(|b| history::History::parse(&b))
        .unwrap_or_default()
}

fn save_history(rootdir: &std::path::Path, h: &history::History) -> std::io::Result<()> {
    let text = serde_json::to_vec(h).unwrap_or_default();
    crate::fsutil::write_atomic(&history_path(rootdir), &text)
}

/// Keep pytest's `cache/lastfailed` current, as pytest's LFPlugin would
/// (workers do not write it: they run with `config.workerinput` set, like
/// xdist workers), so `--lf`/`--ff` work after an rtest run.
fn update_lastfailed(
    cachedir: &std::path::Path,
    updates: impl Iterator<Item = (String, bool)>,
) -> std::io::Result<()> {
    let path = cachedir.join("v").join("cache").join("lastfailed");
    let mut map: std::collections::BTreeMap<String, serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let before = map.clone();
    for (nodeid, failed) in updates {
        if failed {
            map.insert(nodeid, serde_json::Value::Bool(true));
        } else {
            map.remove(&nodeid);
        }
    }
    if map == before && (path.exists() || map.is_empty()) {
        return Ok(());
    }
    if !cachedir.exists() {
        std::fs::create_dir_all(cachedir)?;
        std::fs::write(
            cachedir.join(".gitignore"),
            "# Created by pytest automatically.\n*\n",
        )?;
        std::fs::write(
            cachedir.join("CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by pytest.\n",
        )?;
    }
    std::fs::create_dir_all(path.parent().unwrap_or(cachedir))?;
    let text = serde_json::to_string_pretty(&map).unwrap_or_else(|_| "{}".into());
    crate::fsutil::write_atomic(&path, text.as_bytes())
}

/// pytest's "domain" of a node id (`TestC.test_x[1]` for
/// `t.py::TestC::test_x[1]`), the title of its failure section.
fn domain_of(nodeid: &str) -> String {
    let (path, params) = match nodeid.find('[') {
        Some(i) => (&nodeid[..i], &nodeid[i..]),
        None => (nodeid, ""),
    };
    let parts: Vec<&str> = path.split("::").skip(1).collect();
    if parts.is_empty() {
        nodeid.to_string()
    } else {
        format!("{}{params}", parts.join("."))
    }
}

/// A readable diff of two collections.
fn collection_diff(a_name: &str, a: &[String], b_name: &str, b: &[String]) -> String {
    let mut out = format!(
        "different tests were collected by {a_name} ({} items) and {b_name} ({} items); tests must collect the same on every worker (is collection order or parametrization random?)\n",
        a.len(),
        b.len()
    );
    let sa: std::collections::HashSet<&String> = a.iter().collect();
    let sb: std::collections::HashSet<&String> = b.iter().collect();
    let mut shown = 0;
    for id in a.iter().filter(|x| !sb.contains(x)) {
        if shown < 20 {
            out.push_str(&format!("  - {id}   (only on {a_name})\n"));
        }
        shown += 1;
    }
    for id in b.iter().filter(|x| !sa.contains(x)) {
        if shown < 20 {
            out.push_str(&format!("  + {id}   (only on {b_name})\n"));
        }
        shown += 1;
    }
    if shown == 0 {
        if let Some(pos) = a.iter().zip(b).position(|(x, y)| x != y) {
            out.push_str(&format!(
                "  same tests, different order: item {pos} is {} on {a_name} but {} on {b_name}\n",
                a[pos], b[pos]
            ));
        }
    } else if shown > 20 {
        out.push_str(&format!("  ... and {} more differences\n", shown - 20));
    }
    out.trim_end().to_string()
}

/// Paths into a worker's synced copy, turned into the local ones (so
/// `-rs`, warnings, tracebacks and JUnit name the files the user has).
struct Rebase {
    /// `<copy rootdir>/`.
    from: String,
    /// `<local rootdir>/`.
    to: String,
}

impl Rebase {
    fn text(&self, text: &mut String) {
        if text.contains(&self.from) {
            *text = text.replace(&self.from, &self.to);
        }
    }

    fn skip(&self, skip: &mut Option<Vec<Option<String>>>) {
        if let Some(Some(path)) = skip.as_mut().and_then(|s| s.first_mut()) {
            self.text(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::collection_diff;

    #[test]
    fn diff_names_workers_and_items() {
        let a = vec!["t.py::a".to_string(), "t.py::b".to_string()];
        let b = vec!["t.py::a".to_string(), "t.py::c".to_string()];
        let d = collection_diff("gw0", &a, "gw1", &b);
        assert!(d.starts_with("different tests were collected by gw0 (2 items) and gw1 (2 items)"));
        assert!(d.contains("  - t.py::b   (only on gw0)"));
        assert!(d.contains("  + t.py::c   (only on gw1)"));
        let c = vec!["t.py::b".to_string(), "t.py::a".to_string()];
        assert!(collection_diff("gw0", &a, "gw1", &c).contains("different order"));
    }

    #[test]
    fn domains_like_pytest() {
        assert_eq!(
            super::domain_of("t.py::TestC::test_x[a::b]"),
            "TestC.test_x[a::b]"
        );
        assert_eq!(super::domain_of("t.py::test_y"), "test_y");
    }
}
