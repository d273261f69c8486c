//! The session: one dispatcher task that owns all run state.
//!
//! It starts a gateway per planned worker, writes the bootstrap, and then
//! `select!`s over agent frames, worker stderr, worker exits, a timer (for
//! `--timeout` and the live status line) and signals. It asks the scheduler
//! what to send, turns agent reports into [`TestResult`]s, replaces crashed
//! workers, and tells reporters everything through [`Event`]s.

use crate::error::{Error, ExitCode};
use crate::events::{Event, Interruption, Reporter, StopReason, TestResult, WorkerDesc};
use crate::gateway::{self, Connection, Killer};
use crate::plan::{DistMode, Plan};
use crate::protocol::{
    self, bootstrap_payload, encode, CollectReport, Collected, Crash, FromAgent, PhaseReport,
    ReadyInfo, StartArgs, ToAgent, PROTOCOL_VERSION,
};
use crate::sched::{self, history, unit_key, Action, ItemInfo, Scheduler};
use crate::spec::Transport;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

mod collection;
mod controller;
mod dispatch;
mod outputs;
mod workers;

use controller::CtlState;
pub use outputs::{history_path, load_history};

/// How much work (by its recent tests' durations) a worker must have
/// queued for its frames to be read in batches: several times the longest
/// a frame waits then, so that it never runs dry waiting to be read.
const PACED_WORK: Duration = Duration::from_millis(4 * gateway::paced::PACE.as_millis() as u64);
/// The shortest stretch a worker's pace of tests is measured over.
const PACE_WINDOW: Duration = Duration::from_millis(50);

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
        ..
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
    /// `--timeout`, enforced by rtest alone.
    Timeout(f64),
    /// The limit a plugin in the worker enforces (pytest-timeout), and the
    /// grace rtest gave the test past it.
    PluginTimeout(f64, f64),
    /// It did not report its collection within `--startup-timeout`.
    Startup(f64),
    Abort,
}

/// How much of what an idle worker writes to stderr is held until it
/// shows it is alive.
const HELD_BYTES: usize = 64 * 1024;

struct Slot {
    plan_index: usize,
    id: String,
    gen: u32,
    restarts: usize,
    /// How the last process in this slot was lost before it reported its
    /// collection (cleared when one does): the same loss twice in a row is
    /// not worth a third try.
    early_loss: Option<String>,
    state: SlotState,
    writer: Option<mpsc::UnboundedSender<Vec<u8>>>,
    killer: Option<Killer>,
    info: Option<ReadyInfo>,
    collection: Option<usize>,
    collect_reports: Vec<CollectReport>,
    pending: VecDeque<usize>,
    started: Option<Instant>,
    /// Its items' limits, where a plugin in it enforces `--timeout`.
    limits: Option<protocol::TimeLimits>,
    /// When its process was started.
    spawned: Option<Instant>,
    tail: Vec<u8>,
    kill_reason: Option<KillReason>,
    reports: HashMap<usize, Vec<PhaseReport>>,
    /// When it said it was done (its atexit handlers run after that).
    done: Option<Instant>,
    shut: bool,
    /// Started without its workerinput, which the controller provides.
    awaiting_input: bool,
    /// The controller's pytest_configure_node ran for it (it is a node
    /// there, to be brought down).
    in_controller: bool,
    /// Its `config.workeroutput`, once its session finished.
    workeroutput: Option<protocol::RawJson>,
    /// It started on the workerinput the last runs' controller gave it;
    /// it runs nothing until this run's controller gives the same.
    guessed_input: Option<protocol::RawJson>,
    /// When its session finished (it sent its workeroutput): no result can
    /// come from it any more, whatever it does while exiting.
    session_over: Option<Instant>,
    /// Its pytest is configured (with its `workerinfo`, when it sent one).
    configured: Option<Option<protocol::RawJson>>,
    /// What it wrote to stderr outside a test, until it shows it is alive.
    held_output: Vec<Vec<u8>>,
    /// pytest's line for the `pytest.exit()` that ended its session.
    exit_message: Option<String>,
    /// The status its session ended with, once it said it was done.
    exit_status: Option<i32>,
    /// How its frames are read (a local agent's pipe): batched while it
    /// has plenty of work queued, see [`Session::pace`].
    pacer: Option<std::sync::Arc<gateway::paced::Pacer>>,
    /// How long its tests take, start to end of each as this process
    /// sees them arrive (so with the agent's and pytest's own time between
    /// tests), measured over windows of [`PACE_WINDOW`] while it never
    /// waited for work.
    test_time: Option<f64>,
    /// Since when, and how many tests it finished since then, while it had
    /// work all along.
    pace_window: Option<(Instant, usize)>,
}

impl Slot {
    fn new(plan_index: usize, id: String) -> Self {
        Slot {
            plan_index,
            id,
            gen: 0,
            restarts: 0,
            early_loss: None,
            state: SlotState::Starting,
            writer: None,
            killer: None,
            info: None,
            collection: None,
            collect_reports: Vec::new(),
            pending: VecDeque::new(),
            started: None,
            limits: None,
            spawned: None,
            tail: Vec::new(),
            kill_reason: None,
            reports: HashMap::new(),
            done: None,
            shut: false,
            awaiting_input: false,
            in_controller: false,
            workeroutput: None,
            session_over: None,
            guessed_input: None,
            configured: None,
            held_output: Vec::new(),
            exit_message: None,
            exit_status: None,
            pacer: None,
            test_time: None,
            pace_window: None,
        }
    }

    /// A fresh process in this slot: what the last one said is forgotten,
    /// and what it still says is ignored (a new generation).
    fn renew(&mut self) {
        self.gen += 1;
        self.info = None;
        self.collect_reports.clear();
        self.tail.clear();
        self.kill_reason = None;
        self.done = None;
        self.shut = false;
        self.started = None;
        self.limits = None;
        self.awaiting_input = false;
        self.in_controller = false;
        self.workeroutput = None;
        self.session_over = None;
        self.exit_message = None;
        self.exit_status = None;
        self.guessed_input = None;
        self.configured = None;
        self.held_output.clear();
        self.pacer = None;
        self.test_time = None;
        self.pace_window = None;
    }
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
    /// What plugins reported once it was done.
    report_lines: Vec<String>,
    /// `--collect-only`'s listing, as pytest draws it.
    listing: Option<String>,
    /// Live logging is on in the workers that collected it.
    log_cli: bool,
}

struct Session<'a> {
    /// The plan (the session's own: plugins may decide how many `-n auto`
    /// workers there are).
    plan: Plan,
    /// `-n auto` workers wait to be started until the controller's plugins
    /// said how many (`pytest_xdist_auto_num_workers`).
    auto_pending: bool,
    opts: &'a SessionOptions,
    reporter: &'a mut dyn Reporter,
    tx: mpsc::UnboundedSender<Input>,
    slots: Vec<Slot>,
    items: Vec<Item>,
    collections: Vec<Option<CollectionSet>>,
    sched: Scheduler,
    started_event: bool,
    /// The header's event, waiting for the controller's word.
    pending_start: Option<(Box<WorkerDesc>, Box<protocol::PytestOptions>)>,
    collected_event: bool,
    stop: Option<StopReason>,
    error: Option<Error>,
    failures: usize,
    any_failed: bool,
    internal_error: bool,
    /// What the controller and idle workers wrote to stderr, chunk by
    /// chunk, and who said it first: the same message from every process
    /// (a plugin's warning at configure time) is shown once; one process
    /// saying the same again is shown again.
    shown_output: HashMap<u64, String>,
    /// The controller's pytest wrote the JUnit file.
    junit_written: bool,
    /// The stderr of workers lost before collection, as already shown.
    early_tails: std::collections::HashSet<String>,
    /// The controller's INTERNALERROR (addresses blanked), where a plugin
    /// raised in its session: a worker that ends with the same is said to.
    ctl_error_text: Option<String>,
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
    /// Crashed tests waiting for the controller's `pytest_handlecrashitem`
    /// (by item): their result, and their collection.
    crash_waiting: HashMap<usize, (TestResult, usize)>,
    /// What earlier attempts of a test that runs again after a crash
    /// reported (by item), to go before its next attempt's reports.
    carried: HashMap<usize, Vec<PhaseReport>>,
}

/// Run the plan to the end, telling `reporter` everything.
pub async fn run(plan: &Plan, opts: &SessionOptions, reporter: &mut dyn Reporter) -> Outcome {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut s = Session {
        plan: plan.clone(),
        auto_pending: false,
        opts,
        reporter,
        tx,
        slots: Vec::new(),
        items: Vec::new(),
        collections: Vec::new(),
        sched: Scheduler::new(plan.dist)
            .with_max_chunk(plan.max_sched_chunk)
            .with_scope_reorder(plan.loadscope_reorder),
        started_event: false,
        pending_start: None,
        collected_event: false,
        stop: None,
        error: None,
        failures: 0,
        any_failed: false,
        internal_error: false,
        shown_output: HashMap::new(),
        junit_written: false,
        early_tails: Default::default(),
        ctl_error_text: None,
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
        crash_waiting: HashMap::new(),
        carried: HashMap::new(),
    };
    s.slots = (0..plan.workers.len())
        .map(|i| Slot::new(i, plan.workers[i].id.clone()))
        .collect();
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
        if !s.auto_pending {
            for i in 0..s.slots.len() {
                s.spawn(i);
            }
        }
    }

    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sigint = signal(tokio::signal::unix::SignalKind::interrupt());
    let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate());
    while s.slots.iter().any(|slot| slot.state != SlotState::Exited) {
        tokio::select! {
            input = rx.recv() => match input {
                Some(input) => {
                    s.handle(input);
                    s.maybe_finish_controller();
                }
                None => break,
            },
            _ = ticker.tick() => {
                s.check_timeouts();
                s.check_controller_start();
                s.reporter.tick();
            }
            _ = recv_signal(&mut sigint) => s.interrupt(StopReason::Signal("KeyboardInterrupt".into())),
            _ = recv_signal(&mut sigterm) => s.interrupt(StopReason::Signal("SIGTERM".into())),
        }
    }
    // Remote kill commands still on their way must arrive.
    s.opts.remotes.ssh.settle().await;
    s.release_crashes();
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
            // Workers let go when a plugin turned the distribution off.
            Input::Connected(i, _, conn) if i >= self.slots.len() => {
                if let Ok(c) = *conn {
                    c.killer.kill();
                }
            }
            Input::Worker(i, ..) if i >= self.slots.len() => {}
            Input::Connected(i, gen, conn) if self.slots[i].gen == gen => self.connected(i, *conn),
            Input::Worker(i, gen, p) if self.slots[i].gen == gen => self.on_worker_input(i, p),
            Input::Controller(p) => self.on_controller_input(p),
            _ => {} // from a previous generation of a replaced worker
        }
    }

    /// Worker `i` broke the protocol: say what it did, and stop it (its
    /// running test is reported as for any lost worker).
    fn broken(&mut self, i: usize, what: &str) {
        let id = self.slots[i].id.clone();
        self.reporter
            .on_event(&Event::Notice(format!("worker {id} {what}")));
        // Part of what it said: the same garbage again is the same loss
        // again.
        let said = format!("\nrtest: {what}\n");
        self.slots[i].tail.extend_from_slice(said.as_bytes());
        self.internal_error = true;
        if let Some(k) = &self.slots[i].killer {
            k.kill();
        }
    }

    fn on_worker_input(&mut self, i: usize, input: Pumped) {
        self.on_worker_input_inner(i, input);
        self.pace(i);
    }

    /// Let worker `i`'s frames gather in its pipe while it has at least
    /// `PACED_WORK` of tests queued by the time its tests take, and not
    /// while anything waits on its answer (starting, collecting, giving
    /// tests back to an idle worker) or its work runs low: then every
    /// frame is read as it comes.
    pub(super) fn pace(&mut self, i: usize) {
        let stealing = self.sched.stealing_from() == Some(i);
        let slot = &self.slots[i];
        let Some(pacer) = &slot.pacer else {
            return;
        };
        let queued = slot.test_time.unwrap_or(0.0) * slot.pending.len() as f64;
        let on = slot.state == SlotState::Running
            && !slot.shut
            && !stealing
            && queued >= PACED_WORK.as_secs_f64();
        pacer.set_batching(on);
    }

    fn on_worker_input_inner(&mut self, i: usize, input: Pumped) {
        match input {
            Pumped::Frame(msg) => {
                self.release_output(i);
                self.on_frame(i, *msg)
            }
            Pumped::BadFrame(err) => self.broken(i, &format!("sent a bad frame: {err}")),
            Pumped::Stderr(data) => {
                let slot = &mut self.slots[i];
                slot.tail.extend_from_slice(&data);
                if slot.tail.len() > TAIL_BYTES {
                    let cut = slot.tail.len() - TAIL_BYTES;
                    slot.tail.drain(..cut);
                }
                // What reaches a worker's stderr is not pytest's to
                // capture: plugins at configure or unconfigure, warnings
                // outside a test, and during a test what gets past the
                // capture (`--capture=sys` lets C code and subprocesses
                // through). It is shown, as pytest and xdist show it, once
                // the worker shows it is alive by its next frame (else it
                // is a death rattle, a crash or hang dump, which goes with
                // the report of the loss). Output and frames come through
                // separate pipes, so what a worker wrote after it
                // finished a test may well come before that test's frame.
                // With -s, what comes during a test is shown as it comes.
                if self.echo_output && !slot.pending.is_empty() {
                    let worker = slot.id.clone();
                    self.reporter
                        .on_event(&Event::WorkerOutput { worker, data });
                } else {
                    slot.held_output.push(data);
                    // A worker that talks that much without dying is alive.
                    if slot.held_output.iter().map(Vec::len).sum::<usize>() > HELD_BYTES {
                        self.release_output(i);
                    }
                }
            }
            Pumped::Gone(how) => self.on_gone(i, how),
        }
    }

    /// Show what worker `i` wrote outside its tests, each message once
    /// for all processes.
    fn release_output(&mut self, i: usize) {
        for data in std::mem::take(&mut self.slots[i].held_output) {
            let worker = self.slots[i].id.clone();
            if self.not_said_by_another(&worker, &data) {
                self.reporter
                    .on_event(&Event::WorkerOutput { worker, data });
            }
        }
    }

    /// Whether this chunk of stderr, from `who`, was not shown before
    /// as another process's.
    fn not_said_by_another(&mut self, who: &str, data: &[u8]) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        data.hash(&mut h);
        self.shown_output
            .entry(h.finish())
            .or_insert_with(|| who.to_string())
            == who
    }

    fn on_frame(&mut self, i: usize, msg: FromAgent) {
        match msg {
            FromAgent::Ready(info) => self.on_ready(i, info),
            FromAgent::Configured {
                options,
                workerinfo,
            } => {
                self.slots[i].configured = Some(workerinfo.clone());
                self.node_ready(i, workerinfo);
                self.on_configured(i, options)
            }
            FromAgent::UsageError { message, verbatim } => {
                if self.error.is_none() {
                    let kind = if verbatim {
                        crate::error::ErrorKind::Pytest
                    } else {
                        crate::error::ErrorKind::Usage
                    };
                    self.fail(Error { kind, message });
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
                    mut place,
                    data,
                } = w;
                if let Some(copy) = self.copy_of(i) {
                    copy.text(&mut text);
                    if let Some(place) = place.as_mut() {
                        copy.text(place);
                    }
                }
                // Every worker collects, so collection-time warnings arrive
                // once per worker: show them once.
                if when == "runtest" || self.seen_warnings.insert((nodeid.clone(), text.clone())) {
                    if let Some(data) = &data {
                        self.warning_to_controller(data);
                    }
                    self.reporter.on_event(&Event::Warning {
                        nodeid,
                        text,
                        place,
                        data,
                    });
                }
            }
            FromAgent::WorkerOutput { output } => {
                // As under xdist (workerfinished): the node is down for
                // the controller's plugins now, not when its process has
                // unconfigured and exited.
                self.slots[i].workeroutput = Some(output);
                self.slots[i].session_over = Some(Instant::now());
                self.node_down(i, "");
            }
            // Only the controller says these.
            FromAgent::ControllerReady(_)
            | FromAgent::AutoWorkers { .. }
            | FromAgent::NodeConfigured { .. }
            | FromAgent::ControllerDone(_)
            | FromAgent::CrashVerdict(_)
            | FromAgent::PluginText { .. } => {}
            FromAgent::Interrupted {
                title,
                location,
                message,
                ..
            } => {
                self.interrupt(StopReason::TestInterrupted(Interruption {
                    title: title.unwrap_or_else(|| "KeyboardInterrupt".into()),
                    location,
                    text: message,
                }));
            }
            FromAgent::Exit { message, .. } => self.slots[i].exit_message = Some(message),
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
                let lines: String = message
                    .trim_end()
                    .lines()
                    .map(|l| format!("INTERNALERROR> {l}\n"))
                    .collect();
                let slot = &mut self.slots[i];
                if matches!(slot.state, SlotState::Starting | SlotState::Collecting) {
                    // Its session is over before it collected: said with
                    // the report of its loss, as its last words (once for
                    // every worker that says the same).
                    slot.tail.extend_from_slice(lines.as_bytes());
                } else {
                    let id = slot.id.clone();
                    let said = if self.not_said_by_another(&id, lines.as_bytes()) {
                        format!(":\n{}", lines.trim_end())
                    } else {
                        ", the same as above".to_string()
                    };
                    self.reporter
                        .on_event(&Event::Notice(format!("INTERNALERROR on {id}{said}")));
                }
            }
            // Sync happens before a session starts; a worker has no reason
            // to send these here.
            FromAgent::SyncManifest { .. }
            | FromAgent::Synced { .. }
            | FromAgent::Places { .. } => {}
            FromAgent::Done { status } => {
                let slot = &mut self.slots[i];
                slot.done = Some(Instant::now());
                slot.exit_status = Some(status);
                let exit_message = slot.exit_message.take();
                if slot.collection.is_none() {
                    if let Some(line) = exit_message {
                        // pytest.exit() before collection (a conftest's
                        // pytest_sessionstart): the session's decision, not
                        // a lost worker; the run ends as pytest's would.
                        self.fail(Error::pytest_exit(status, line));
                    }
                } else if !slot.pending.is_empty() && status != 0 && status != 1 {
                    // pytest.exit() or an interrupt inside the worker.
                    self.record_what_it_reported(i);
                    if self.stop.is_some() {
                        return;
                    }
                    self.pytest_exit_status = Some(status);
                    let slot = &self.slots[i];
                    let reason = match exit_message {
                        // pytest says it after the final line when the
                        // call gave a status, as the session's end else.
                        Some(message) => StopReason::PytestExit(message, status != 2),
                        None => {
                            StopReason::PytestStop(format!("worker {} ended the session", slot.id))
                        }
                    };
                    self.set_stop(reason);
                }
            }
        }
    }

    /// The test worker `i` was running when its session ended by itself
    /// (pytest.exit() in a hook that saw its report): what it reported is
    /// its outcome, as pytest counts it (the test that failed and made a
    /// conftest stop the run is a failure, not lost).
    fn record_what_it_reported(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(&global) = slot.pending.front() else {
            return;
        };
        let local = self.items[global].local;
        let Some(mut phases) = slot.reports.remove(&local).filter(|p| !p.is_empty()) else {
            return;
        };
        phases.sort_by_key(|p| p.k);
        slot.pending.pop_front();
        let worker = slot.id.clone();
        self.sched.finished(i, global);
        let item = &self.items[global];
        let result = TestResult {
            nodeid: item.nodeid.clone(),
            worker,
            worker_index: i,
            location: item.location.clone(),
            duration: phases.iter().map(|p| p.duration).sum(),
            phases,
            crashed: false,
            live_log: None,
        };
        self.record_final(global, result, true);
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
        let (copy, local) = w.copy_root.as_ref()?;
        Some(Rebase {
            from: format!("{}/", copy.trim_end_matches('/')),
            to: format!("{}/", local.display().to_string().trim_end_matches('/')),
        })
    }
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
    #[test]
    fn domains_like_pytest() {
        assert_eq!(
            super::domain_of("t.py::TestC::test_x[a::b]"),
            "TestC.test_x[a::b]"
        );
        assert_eq!(super::domain_of("t.py::test_y"), "test_y");
    }
}
