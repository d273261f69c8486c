//! The controller stream: the session's side of the one local pytest
//! session where plugins see the whole run (DESIGN §1).
//!
//! The controller is the agent in its controller role. It starts with the
//! workers; a worker parses its arguments while the controller configures,
//! then gets the `workerinput` the controller's `pytest_configure_node`
//! made. Once running, every report a worker sends in pytest's serialized
//! form is passed on (not parsed), and at the end the controller finishes
//! its session with the run's status and hands back what plugins wrote.
//! When no plugin hooks the run, the controller ends at once and workers
//! send it nothing.

use super::{Input, Pumped, Session, SlotState};
use crate::error::ExitCode;
use crate::events::{Event, PluginOutput, TestResult};
use crate::gateway::{self, Killer};
use crate::plan::DistMode;
use crate::protocol::{
    controller_payload, encode, ControlArgs, ControllerDone, CrashItem, CrashReplay, CrashVerdict,
    FromAgent, RawJson, TestReplay, ToAgent, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;

/// How long the controller may take to configure before the workers go
/// on without it (it imports plugins and the initial conftests, never the
/// tests).
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Where the controller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum CtlState {
    /// Started, not yet configured: workers wait for their workerinput.
    Starting,
    /// Configured, and some plugin hooks the run: it gets the stream.
    Active,
    /// None, not needed, gone, or finished.
    #[default]
    Off,
}

/// The session's view of the controller.
#[derive(Default)]
pub(super) struct Controller {
    pub(super) state: CtlState,
    writer: Option<mpsc::UnboundedSender<Vec<u8>>>,
    killer: Option<Killer>,
    /// Lines for the header.
    pub(super) header: Vec<String>,
    /// Summary sections a plugin's terminal reporter draws its way.
    pub(super) sections: Vec<String>,
    /// What plugins wrote before pytest's header and after it.
    pub(super) before_header: String,
    pub(super) after_header: String,
    /// Keys every worker's workerinput gets.
    common: serde_json::Map<String, serde_json::Value>,
    wants_ids: bool,
    /// How its session ended.
    done: Option<ControllerDone>,
    /// pytest's line for the `pytest.exit()` that ended its session.
    exit_line: Option<String>,
    /// It failed (did not start, died, or a plugin raised in it): exit 3.
    failed: bool,
    /// Warnings that came before it said whether it wants the run.
    early_warnings: Vec<RawJson>,
    /// Its process is gone.
    exited: bool,
    /// When it was started (it must be ready within [`START_LIMIT`]).
    started: Option<std::time::Instant>,
    /// Workers start without waiting for it, on what the last runs with
    /// the same plugins did.
    pub(super) speculative: Option<Guess>,
    /// What `pytest_configure_node` added to each worker's input in this
    /// run (by worker id), and in the last run it was remembered for.
    parts: std::collections::BTreeMap<String, serde_json::Value>,
    last_parts: Option<serde_json::Value>,
    /// The memo of this run, once every worker's input is known.
    pending_memo: Option<serde_json::Value>,
    /// Where what decided its plugins is remembered, and under which key.
    memo: Option<(std::path::PathBuf, String)>,
    /// It was told to finish its session.
    told_finish: bool,
    /// A plugin implements `pytest_handlecrashitem`.
    crash_items: bool,
    /// The run's numbered base temporary directory, which it made.
    pub(super) basetemp: Option<std::path::PathBuf>,
    /// Not needed, but holding that directory: it waits for the end of
    /// the run to finish its session.
    idle: bool,
    /// Whether a plugin implements `pytest_xdist_auto_num_workers` (once
    /// asked).
    auto_hook: Option<bool>,
}

impl Controller {
    /// Whether a crashed test waits for the controller's plugins to say
    /// if it runs again.
    pub(super) fn asks_about_crashes(&self) -> bool {
        self.state == CtlState::Active && self.crash_items && self.writer.is_some()
    }
}

/// What the last runs with the same interpreter, arguments and plugin
/// files said of the controller: whether it wanted reports, and, if its
/// plugins implement `pytest_configure_node`, what they added to each
/// worker's `workerinput` (the same in the last two runs).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Guess {
    pub(super) needed: bool,
    pub(super) inputs: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Controller {
    /// What plugins wrote, for the terminal.
    pub(super) fn output(&self) -> PluginOutput {
        self.done
            .as_ref()
            .map(|d| PluginOutput {
                after_loop: d.after_loop.clone(),
                summary: d.summary.clone(),
                after_final: d.after_final.clone(),
            })
            .unwrap_or_default()
    }
}

impl Session<'_> {
    /// Start the controller, before the workers, with the run's pytest
    /// arguments.
    pub(super) fn start_controller(&mut self) {
        let Some(python) = self.opts.controller.clone() else {
            return;
        };
        let env = self
            .opts
            .env
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>();
        let conn = match gateway::popen::spawn(&python, None, &env, None) {
            Ok(c) => c,
            Err(e) => {
                self.ctl_failed(format!("the controller could not start: {}", e.message));
                return;
            }
        };
        let (writer, killer) = pump(conn, &self.tx);
        let mut bytes = controller_payload();
        bytes.extend(encode(&ToAgent::Hello {
            protocol: PROTOCOL_VERSION,
            sys_path: Vec::new(),
            chdir: None,
        }));
        let mut args = self.plan.pytest_args.clone();
        let junit = self.junit_paths();
        if let Some((_, tmp)) = &junit {
            args.push(format!("--junitxml={}", tmp.display()));
        }
        bytes.extend(encode(&ToAgent::Control(ControlArgs {
            args,
            env,
            numprocesses: self.plan.workers.len(),
            shard: self.plan.shard,
            junitxml: junit.map(|(path, _)| path.display().to_string()),
            timeout: self.plan.timeout,
            auto_workers: self.plan.auto_workers.as_ref().map(|a| a.word.clone()),
            auto_cap: self.plan.auto_workers.as_ref().and_then(|a| a.cap),
            given_numprocesses: self
                .plan
                .settings
                .get("numprocesses")
                .filter(|s| s.source != "default")
                .map(|s| s.value.clone()),
            given_dist: self
                .plan
                .settings
                .get("dist")
                .filter(|s| s.source != "default")
                .map(|_| self.plan.dist.name().to_string()),
            dist: self.plan.dist.name().to_string(),
            basetemp: self.plan.basetemp.is_none()
                && !self.plan.collect_only
                && self
                    .plan
                    .workers
                    .iter()
                    .any(|w| w.transport == crate::spec::Transport::Popen),
            color: self.opts.color,
            width: self
                .opts
                .env
                .iter()
                .find(|(k, _)| k == "COLUMNS")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(80),
        })));
        let _ = writer.send(bytes);
        if !self.plan.rootdir.as_os_str().is_empty() {
            let path = self.plan.rootdir.join(".rtest").join("controller.json");
            let mut args = self.plan.pytest_args.clone();
            if self.junit_paths().is_some() {
                args.push("--junitxml".into());
            }
            let key = memo_key(&python, &args);
            let memo = memo_read(&path, &key);
            let (guess, last_parts) = memo.as_ref().map_or((None, None), memo_says);
            // `-n auto` workers start at once where the last run with the
            // same plugin files found no pytest_xdist_auto_num_workers.
            self.auto_pending = self.plan.auto_workers.is_some()
                && memo.as_ref().and_then(|m| m["auto_hook"].as_bool()) != Some(false);
            self.ctl.speculative = guess.filter(|g| {
                g.inputs
                    .as_ref()
                    .is_none_or(|inputs| self.slots.iter().all(|s| inputs.contains_key(&s.id)))
            });
            self.ctl.last_parts = last_parts;
            self.ctl.memo = Some((path, key));
        }
        self.ctl.writer = Some(writer);
        self.ctl.killer = Some(killer);
        self.ctl.state = CtlState::Starting;
        self.ctl.started = Some(std::time::Instant::now());
    }

    /// A controller that hangs while configuring must not hold the workers.
    pub(super) fn check_controller_start(&mut self) {
        let late = self.ctl.state == CtlState::Starting
            && self.ctl.started.is_some_and(|t| t.elapsed() > START_LIMIT);
        if late {
            self.kill_controller();
            self.ctl_failed(format!(
                "INTERNALERROR: the controller (the pytest session plugins run in) was not ready within {}s; the tests go on without it",
                START_LIMIT.as_secs()
            ));
        }
    }

    /// Send the controller a message, if it is there to hear it.
    pub(super) fn tell_controller(&mut self, msg: &ToAgent) {
        if self.ctl.state != CtlState::Active {
            return;
        }
        if let Some(w) = &self.ctl.writer {
            let _ = w.send(encode(msg));
        }
    }

    /// A warning for the controller's `pytest_warning_recorded`; one that
    /// comes before it said whether it wants the run (a collection-time
    /// warning) waits for its answer.
    pub(super) fn warning_to_controller(&mut self, data: &RawJson) {
        match self.ctl.state {
            CtlState::Starting => self.ctl.early_warnings.push(data.clone()),
            CtlState::Active => self.tell_controller(&ToAgent::Warning { data: data.clone() }),
            CtlState::Off => {}
        }
    }

    /// The controller wants the run: what came before its answer.
    fn send_early_warnings(&mut self) {
        for data in std::mem::take(&mut self.ctl.early_warnings) {
            self.tell_controller(&ToAgent::Warning { data });
        }
    }

    /// The controller failed: say it once (as pytest's INTERNALERROR would
    /// be said), go on without it, and exit 3 in the end.
    fn ctl_failed(&mut self, message: String) {
        self.ctl.failed = true;
        self.ctl.state = CtlState::Off;
        self.reporter.on_event(&Event::Notice(message));
        // `-n auto` workers waiting for its plugins' count start as many
        // as rtest counted.
        self.start_auto_workers(None, false, &[]);
        // Workers waiting for its answer (or for its word on a guess) go
        // on without it, and so do crashed tests waiting for its verdict.
        self.release_workers();
        self.release_crashes();
    }

    /// Start the `-n auto` workers that waited for the controller: as many
    /// as its plugins' `pytest_xdist_auto_num_workers` said (`count`, with
    /// the distribution off where they said 0), or as many as rtest
    /// counted.
    fn start_auto_workers(&mut self, count: Option<usize>, undistributed: bool, by: &[String]) {
        if !std::mem::take(&mut self.auto_pending) {
            if let Some(count) = count.filter(|c| *c != self.slots.len()) {
                // Started on the last run's word that no plugin decides.
                self.reporter.on_event(&Event::Notice(format!(
                    "rtest: pytest_xdist_auto_num_workers ({}) says {count} workers; it applies from the next run",
                    by.join(", ")
                )));
            }
            return;
        }
        if let Some(count) = count.filter(|c| *c > 0) {
            if undistributed {
                self.plan.dist = DistMode::No;
                self.sched = crate::sched::Scheduler::new(DistMode::No);
            }
            let first = self.plan.workers[0].clone();
            self.plan.workers.truncate(count);
            while self.plan.workers.len() < count {
                let mut w = first.clone();
                w.id = format!("gw{}", self.plan.workers.len());
                self.plan.workers.push(w);
            }
            self.slots = (0..count)
                .map(|i| super::Slot::new(i, self.plan.workers[i].id.clone()))
                .collect();
        }
        for i in 0..self.slots.len() {
            self.spawn(i);
        }
    }

    /// A plugin turned the distribution off (xdist's controller lets
    /// plugins set `numprocesses` to 0 or `dist` to "no" before it reads
    /// them, and then runs the tests in its own process): the run goes on
    /// as with `-n 0`, on the first worker alone. The others are stopped
    /// before they ran anything: tests start only once the controller is
    /// ready, which is when it says this.
    fn undistributed(&mut self) {
        if self.collected_event {
            return;
        }
        for slot in self.slots.iter().skip(1) {
            if let Some(killer) = &slot.killer {
                killer.kill();
            }
        }
        self.slots.truncate(1);
        self.plan.workers.truncate(1);
        self.plan.dist = DistMode::No;
        let mut sched = crate::sched::Scheduler::new(DistMode::No)
            .with_max_chunk(self.plan.max_sched_chunk)
            .with_scope_reorder(self.plan.loadscope_reorder);
        // What the workers collected so far, as one worker runs it.
        for (coll, set) in self.collections.iter().enumerate() {
            let Some(set) = set else { continue };
            let infos = (set.offset..set.offset + set.ids.len())
                .filter(|g| !self.items[*g].done)
                .map(|g| crate::sched::ItemInfo {
                    id: g,
                    key: None,
                    module: crate::sched::history::module_of(&self.items[g].nodeid).to_string(),
                    expected: None,
                })
                .collect();
            sched.add_collection(coll, infos, 1);
        }
        self.sched = sched;
    }

    /// Workers waiting for the controller get rtest's own workerinput.
    fn release_workers(&mut self) {
        for i in 0..self.slots.len() {
            // A guessed input stands: nothing is left to check it.
            if self.slots[i].guessed_input.take().is_some() {
                self.dispatch(i);
            }
            if self.slots[i].awaiting_input && self.slots[i].state != SlotState::Exited {
                let input = self.base_workerinput(i);
                self.slots[i].awaiting_input = false;
                self.send(
                    i,
                    &ToAgent::WorkerInput {
                        input,
                        stream: false,
                    },
                );
            }
        }
        self.maybe_start_running();
    }

    /// rtest's part of a worker's `config.workerinput` (xdist's keys), with
    /// what the controller gives every worker.
    pub(super) fn base_workerinput(&self, i: usize) -> RawJson {
        let mut input = self.ctl.common.clone();
        input.insert("workerid".into(), self.slots[i].id.clone().into());
        input.insert("workercount".into(), self.plan.workers.len().into());
        input.insert("testrunuid".into(), self.opts.testrun_uid.clone().into());
        input.insert("mainargv".into(), self.opts.mainargv.clone().into());
        RawJson::from_value(&serde_json::Value::Object(input))
    }

    /// The workerinput worker `i` starts with before the controller is
    /// ready, if the last runs say what it will be.
    pub(super) fn guessed_workerinput(&self, i: usize) -> Option<RawJson> {
        let guess = self.ctl.speculative.as_ref()?;
        let mut input = self.base_workerinput(i).parse();
        if let (Some(inputs), Some(map)) = (&guess.inputs, input.as_object_mut()) {
            if let Some(serde_json::Value::Object(part)) = inputs.get(&self.slots[i].id) {
                for (k, v) in part {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        Some(RawJson::from_value(&input))
    }

    /// What the controller's `pytest_configure_node` added to worker `i`'s
    /// input: every key but rtest's own with their values unchanged.
    fn plugins_part(&self, i: usize, input: &RawJson) -> serde_json::Value {
        let base = self.base_workerinput(i).parse();
        let mut part = serde_json::Map::new();
        if let serde_json::Value::Object(map) = input.parse() {
            for (k, v) in map {
                let rtest_own = matches!(
                    k.as_str(),
                    "workerid" | "workercount" | "testrunuid" | "mainargv"
                ) && base.get(&k) == Some(&v);
                if !rtest_own {
                    part.insert(k, v);
                }
            }
        }
        serde_json::Value::Object(part)
    }

    /// Worker `i` is a node the controller knows: what it did meanwhile
    /// (configured, collected) is told now.
    pub(super) fn become_node(&mut self, i: usize) {
        if let Some(info) = self.slots[i].configured.clone() {
            self.node_ready(i, info);
        }
        if let Some(coll) = self.slots[i].collection {
            let count = self.collections[coll].as_ref().map_or(0, |c| c.ids.len());
            self.node_collected(i, count);
        }
    }

    /// Ask the controller's `pytest_configure_node` for worker `i`'s input
    /// (a worker that started on a guess only becomes a node there).
    pub(super) fn configure_node(&mut self, i: usize) {
        // A worker still connecting is configured once it is connected
        // (its workerinput goes to that process, not to one before it).
        if self.slots[i].in_controller || self.slots[i].writer.is_none() {
            return;
        }
        let w = &self.plan.workers[self.slots[i].plan_index];
        let msg = ToAgent::ConfigureNode {
            id: self.slots[i].id.clone(),
            spec: w.spec.clone(),
            roots: self
                .plan
                .sync
                .iter()
                .map(|s| s.dir.display().to_string())
                .collect(),
            workerinput: self.base_workerinput(i).parse(),
        };
        self.slots[i].in_controller = true;
        self.tell_controller(&msg);
    }

    /// Worker `i`'s pytest is configured: `pytest_testnodeready`.
    pub(super) fn node_ready(&mut self, i: usize, info: Option<RawJson>) {
        if !self.slots[i].in_controller || self.slots[i].guessed_input.is_some() {
            return;
        }
        let id = self.slots[i].id.clone();
        self.tell_controller(&ToAgent::NodeReady { id, info });
    }

    /// Worker `i` collected `count` items.
    pub(super) fn node_collected(&mut self, i: usize, count: usize) {
        if !self.slots[i].in_controller || self.slots[i].guessed_input.is_some() {
            return;
        }
        let ids = if self.ctl.wants_ids {
            let coll = self.collection_index(i);
            self.collections
                .get(coll)
                .and_then(Option::as_ref)
                .map(|c| c.ids.clone())
        } else {
            None
        };
        let id = self.slots[i].id.clone();
        self.tell_controller(&ToAgent::NodeCollected { id, count, ids });
    }

    /// Worker `i` is gone: `pytest_testnodedown`, with its workeroutput
    /// when it ended its session, with the reason when it did not.
    pub(super) fn node_down(&mut self, i: usize, how: &str) {
        if !std::mem::take(&mut self.slots[i].in_controller) {
            return;
        }
        let slot = &mut self.slots[i];
        let output = slot.workeroutput.take();
        let error = (slot.done.is_none() && slot.session_over.is_none())
            .then(|| format!("{} went down: {how}", slot.id));
        let id = slot.id.clone();
        self.tell_controller(&ToAgent::NodeDown { id, output, error });
    }

    /// A finished test's reports, to be replayed.
    pub(super) fn replay(&mut self, result: &TestResult) {
        if self.ctl.state != CtlState::Active {
            return;
        }
        let reports: Vec<RawJson> = if result.crashed {
            Vec::new()
        } else {
            result.phases.iter().filter_map(|p| p.raw.clone()).collect()
        };
        // A test without pytest's reports to replay: its worker crashed
        // (or none was left to run it), or it ran before the controller
        // wanted reports; only a failure is worth making up.
        let crash = if !reports.is_empty() {
            None
        } else if result.failed() {
            let p = result.phases.iter().find(|p| p.outcome == "failed");
            Some(CrashReplay {
                when: p.map_or("call".into(), |p| p.when.clone()),
                longrepr: p.and_then(|p| p.longrepr.clone()).unwrap_or_default(),
                duration: result.duration,
            })
        } else {
            return;
        };
        let node = if result.worker_index == usize::MAX {
            self.slots.first().map(|s| s.id.clone()).unwrap_or_default()
        } else {
            result.worker.clone()
        };
        self.tell_controller(&ToAgent::Test(TestReplay {
            node,
            nodeid: result.nodeid.clone(),
            location: result.location.clone(),
            reports,
            crash,
            environment: self.environment(result.worker_index),
        }));
    }

    /// When the run's workers are in several places (hosts, Pythons) and
    /// JUnit is written: where worker `i` is, as testcase properties.
    fn environment(&self, i: usize) -> Vec<(String, String)> {
        if self.plan.junitxml.is_none() || i >= self.slots.len() {
            return Vec::new();
        }
        let place = |i: usize| {
            let slot = &self.slots[i];
            let info = slot.info.as_ref()?;
            let host = self.plan.workers[slot.plan_index].transport.host();
            let python = format!(
                "{} {} {}",
                info.implementation, info.python_version, info.executable
            );
            Some((host, python.trim().to_string()))
        };
        let places: std::collections::HashSet<_> =
            (0..self.slots.len()).filter_map(place).collect();
        match place(i) {
            Some((host, python)) if places.len() > 1 => {
                vec![("host".into(), host), ("python".into(), python)]
            }
            _ => Vec::new(),
        }
    }

    pub(super) fn on_controller_input(&mut self, input: Pumped) {
        match input {
            Pumped::Frame(msg) => self.on_controller_frame(*msg),
            Pumped::BadFrame(err) => {
                self.kill_controller();
                self.ctl_failed(format!("the controller sent a bad frame: {err}"));
            }
            Pumped::Stderr(data) => {
                // What plugins print in the session's hooks, shown as it
                // comes, unless a worker said the same already (a
                // plugin's warning at configure time).
                if self.not_said_by_another("controller", &data) {
                    self.reporter.on_event(&Event::ControllerOutput(data));
                }
            }
            Pumped::Gone(how) => {
                self.ctl.exited = true;
                self.ctl.writer = None;
                if self.ctl.state != CtlState::Off && self.ctl.done.is_none() {
                    let when = if self.ctl.state == CtlState::Starting {
                        "before its session started"
                    } else {
                        "during the run"
                    };
                    self.ctl_failed(format!(
                        "INTERNALERROR: the controller (the pytest session plugins run in) exited {when} ({how}; its output is above); plugin reports, coverage and hooks are incomplete, the tests go on"
                    ));
                }
            }
        }
        self.maybe_session_started();
    }

    fn on_controller_frame(&mut self, msg: FromAgent) {
        match msg {
            FromAgent::Ready(info) => {
                if info.protocol != PROTOCOL_VERSION {
                    self.kill_controller();
                    self.ctl_failed(format!(
                        "the controller speaks protocol {} but this rtest speaks {PROTOCOL_VERSION}",
                        info.protocol
                    ));
                } else if info.pytest.is_none() {
                    self.kill_controller();
                    self.ctl_failed(format!(
                        "the controller's Python ({}) has no pytest",
                        info.executable
                    ));
                }
            }
            FromAgent::AutoWorkers {
                count,
                undistributed,
                by,
                error,
            } => {
                self.ctl.auto_hook = Some(!by.is_empty());
                if let Some(message) = error {
                    // pytest would stop with INTERNALERROR; the run goes
                    // on with as many workers as rtest counts, and exits 3.
                    self.internal_error = true;
                    self.ctl.failed = true;
                    self.reporter.on_event(&Event::Notice(format!(
                        "a plugin raised in the controller's session:\n{message}"
                    )));
                }
                self.start_auto_workers(count, undistributed, &by);
            }
            FromAgent::ControllerReady(ready) => {
                if self.ctl.state != CtlState::Starting {
                    return;
                }
                self.remember(&ready);
                if ready.undistributed {
                    self.undistributed();
                }
                let guessed = self.ctl.speculative.take();
                self.ctl.header = ready.header;
                self.ctl.sections = ready.sections;
                self.ctl.before_header = ready.before_header;
                self.ctl.after_header = ready.after_header;
                self.ctl.common = ready.workerinput;
                self.ctl.wants_ids = ready.wants_ids;
                self.ctl.crash_items = ready.crash_items;
                self.ctl.basetemp = ready.basetemp.map(std::path::PathBuf::from);
                self.ctl.idle = !ready.needed && self.ctl.basetemp.is_some();
                for i in 0..self.slots.len() {
                    // Those started meanwhile; the others get it as
                    // --basetemp.
                    if self.slots[i].writer.is_some() && self.slots[i].state != SlotState::Exited {
                        if let Some(dir) = self.worker_basetemp(i) {
                            let path = dir.display().to_string();
                            self.send(i, &ToAgent::Basetemp { path });
                        }
                    }
                }
                let configure_node = ready.configure_node || !self.ctl.common.is_empty();
                let wrong = match &guessed {
                    None => false,
                    // Checked node by node when the controller answers.
                    Some(g) if g.inputs.is_some() => !configure_node,
                    Some(_) => configure_node,
                };
                if wrong {
                    // The workers started on a guess that no longer holds:
                    // start them again, now waiting for their workerinput.
                    self.ctl.state = CtlState::Active;
                    for i in 0..self.slots.len() {
                        if self.slots[i].state != SlotState::Exited {
                            if let Some(k) = &self.slots[i].killer {
                                k.kill();
                            }
                            self.slots[i].renew();
                            self.spawn(i);
                        }
                    }
                    if ready.needed {
                        self.send_early_warnings();
                    } else {
                        self.ctl.state = CtlState::Off;
                        self.release_workers();
                    }
                    return;
                }
                if let Some(streaming) = guessed.map(|g| g.needed).filter(|s| *s != ready.needed) {
                    for i in 0..self.slots.len() {
                        self.send(i, &ToAgent::Stream { on: !streaming });
                    }
                }
                if ready.needed {
                    self.ctl.state = CtlState::Active;
                    for i in 0..self.slots.len() {
                        if self.slots[i].state != SlotState::Exited {
                            // Workers that started on a guess become nodes
                            // now, with what they did meanwhile.
                            // (Those that started on a guessed input once
                            // the controller's answer matches it.)
                            let started = !self.slots[i].awaiting_input;
                            self.configure_node(i);
                            if started {
                                self.become_node(i);
                            }
                        }
                    }
                    self.send_early_warnings();
                    self.maybe_start_running();
                } else {
                    // It ends by itself; nothing more goes to it.
                    self.ctl.state = CtlState::Off;
                    self.ctl.early_warnings.clear();
                    self.release_workers();
                }
            }
            FromAgent::NodeConfigured { id, workerinput } => {
                let Some(i) = self.slots.iter().position(|s| s.id == id) else {
                    return;
                };
                if !self.ctl.parts.contains_key(&id) {
                    let part = self.plugins_part(i, &workerinput);
                    self.ctl.parts.insert(id, part);
                    if self.ctl.parts.len() == self.slots.len() {
                        self.remember_parts();
                    }
                }
                if self.slots[i].state == SlotState::Exited {
                    return;
                }
                if self.slots[i].awaiting_input {
                    self.slots[i].awaiting_input = false;
                    self.send(
                        i,
                        &ToAgent::WorkerInput {
                            input: workerinput,
                            stream: true,
                        },
                    );
                } else if let Some(guess) = self.slots[i].guessed_input.take() {
                    if guess.parse() == workerinput.parse() {
                        self.become_node(i);
                        self.dispatch(i);
                    } else {
                        // Not what the last runs gave: this worker starts
                        // again with its real input (it ran nothing yet).
                        if let Some(k) = &self.slots[i].killer {
                            k.kill();
                        }
                        self.slots[i].renew();
                        self.spawn(i);
                    }
                }
            }
            FromAgent::InternalError { message } => {
                self.internal_error = true;
                let plain = super::workers::without_addresses(&message);
                // Workers that already ended with it (their configure ran
                // the same plugin) showed it.
                let shown = self
                    .early_tails
                    .iter()
                    .any(|t| t.lines().nth(1).is_some() && plain.contains(t.as_str()));
                self.ctl_error_text = Some(plain);
                let message = if shown {
                    "a plugin raised in the controller's session too (the error above)".to_string()
                } else {
                    format!("a plugin raised in the controller's session:\n{message}")
                };
                if self.ctl.state == CtlState::Starting {
                    // Its session never started: go on without it.
                    self.kill_controller();
                    self.ctl_failed(message);
                } else {
                    self.ctl.failed = true;
                    self.reporter.on_event(&Event::Notice(message));
                }
            }
            FromAgent::PluginText { text } => {
                self.reporter.on_event(&Event::PluginText(text));
            }
            FromAgent::CrashVerdict(verdict) => self.on_crash_verdict(verdict),
            FromAgent::UsageError { message, verbatim } => {
                // pytest refused the run (its arguments, a conftest that
                // does not import, an ini value found at configure time):
                // as under pytest, nothing runs and the exit status is 4.
                // The workers meet the same refusal, or would fail for
                // want of what the controller's plugins give them.
                self.ctl.state = CtlState::Off;
                let kind = if verbatim {
                    crate::error::ErrorKind::Pytest
                } else {
                    crate::error::ErrorKind::Usage
                };
                self.fail(crate::error::Error { kind, message });
            }
            FromAgent::Exit {
                message,
                status,
                quiet,
            } => {
                if self.ctl.state == CtlState::Active && self.stop.is_none() {
                    // In a replayed hook (a conftest that stops the run at
                    // the first failure it hears of): the run stops now,
                    // with that status, as under xdist.
                    let status = status.unwrap_or(2);
                    self.pytest_exit_status = Some(status);
                    self.set_stop(crate::events::StopReason::PytestExit(message, status != 2));
                } else {
                    // (Its session's stderr said `Exit: why` already.)
                    self.ctl.exit_line = Some(if quiet { String::new() } else { message });
                }
            }
            FromAgent::ControllerDone(done) => {
                if done.errors > 0 {
                    self.ctl.failed = true;
                }
                let status = done.exitstatus;
                self.ctl.done = Some(done);
                if let Some(line) = self.ctl.exit_line.take() {
                    // pytest.exit() in the session's hooks: before its
                    // session started (a conftest's pytest_sessionstart),
                    // nothing runs, as under pytest; later, the run stops.
                    if self.ctl.state == CtlState::Starting {
                        self.ctl.state = CtlState::Off;
                        return self.fail(crate::error::Error::pytest_exit(status, line));
                    }
                    self.ctl.state = CtlState::Off;
                    self.pytest_exit_status = Some(status);
                    self.set_stop(crate::events::StopReason::PytestExit(line, status != 2));
                }
                if self.ctl.state == CtlState::Starting {
                    self.ctl.failed = true;
                    self.ctl.state = CtlState::Off;
                    if status == 2 {
                        // Interrupted before its session started (a
                        // KeyboardInterrupt in a conftest's
                        // pytest_sessionstart): so would every worker be.
                        return self.fail(crate::error::Error::interrupted(
                            "the pytest session was interrupted before it started: a KeyboardInterrupt raised by a hook at configure or session start (pytest exits 2)",
                        ));
                    }
                }
                // No worker waits for what a finished session can no
                // longer give.
                let waiting = self
                    .slots
                    .iter()
                    .any(|s| s.awaiting_input || s.guessed_input.is_some());
                if waiting {
                    self.release_workers();
                }
            }
            _ => {}
        }
    }

    /// Test `global` crashed its worker: as xdist's DSession, ask the
    /// controller's plugins (`pytest_handlecrashitem`) whether it runs
    /// again; until they answer, no worker is shut down for want of work.
    pub(super) fn ask_about_crash(&mut self, global: usize, coll: usize, result: TestResult) {
        let Some(phase) = result.phases.first() else {
            return self.record_final(global, result, true);
        };
        let crash = CrashItem {
            item: global,
            node: result.worker.clone(),
            nodeid: result.nodeid.clone(),
            location: result.location.clone(),
            when: phase.when.clone(),
            longrepr: phase.longrepr.clone().unwrap_or_default(),
            duration: result.duration,
            // xdist's load and worksteal schedulers take one test back.
            requeue: matches!(self.plan.dist, DistMode::Load | DistMode::WorkSteal),
            environment: self.environment(result.worker_index),
        };
        self.tell_controller(&ToAgent::CrashItem(crash));
        self.sched.hold();
        self.crash_waiting.insert(global, (result, coll));
    }

    /// The controller's plugins decided: the crash is an attempt that
    /// goes before the test's next run (pytest-rerunfailures' `rerun`),
    /// or the test's outcome as they left it. The controller logged the
    /// report itself.
    fn on_crash_verdict(&mut self, verdict: CrashVerdict) {
        let Some((mut result, coll)) = self.crash_waiting.remove(&verdict.item) else {
            return;
        };
        if let Some(phase) = result.phases.first_mut() {
            let usual = matches!(verdict.outcome.as_str(), "passed" | "failed" | "skipped");
            if let Some(category) = verdict.category.filter(|c| !usual || *c != verdict.outcome) {
                phase.category = Some(category);
                phase.letter = verdict.letter;
            }
            phase.word = verdict
                .word
                .filter(|w| *w != verdict.outcome.to_uppercase() && !w.is_empty());
            phase.outcome = verdict.outcome;
            if verdict.longrepr.is_some() {
                phase.longrepr = verdict.longrepr;
            }
        }
        let again = verdict.rerun && self.stop.is_none() && self.error.is_none();
        if again {
            self.carried
                .entry(verdict.item)
                .or_default()
                .append(&mut result.phases);
            self.sched.release(Some((coll, verdict.item)));
        } else {
            self.sched.release(None);
            self.record_final(verdict.item, result, false);
        }
        self.dispatch_all();
    }

    /// Crashed tests still waiting for a verdict that will not come (the
    /// controller failed, or the run is over): failures as they are.
    pub(super) fn release_crashes(&mut self) {
        let waiting: Vec<usize> = self.crash_waiting.keys().copied().collect();
        for global in waiting {
            if let Some((result, _)) = self.crash_waiting.remove(&global) {
                self.sched.release(None);
                self.record_final(global, result, true);
            }
        }
        self.dispatch_all();
    }

    fn kill_controller(&mut self) {
        if let Some(k) = &self.ctl.killer {
            k.kill();
        }
    }

    /// With `--junitxml` and a controller: the file (absolute) and the
    /// temp name beside it that the controller's pytest writes. pytest's
    /// own junitxml writes the run's JUnit there, from the replayed
    /// reports, so every junit ini option and `record_*` fixture is
    /// pytest's; rtest's writer is the fallback when the controller does
    /// not finish.
    pub(super) fn junit_paths(&self) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let path = self.plan.junitxml.as_ref()?;
        self.opts.controller.as_ref()?;
        let path = std::env::current_dir().ok()?.join(path);
        let tmp = crate::fsutil::temp_beside(&path);
        Some((path, tmp))
    }

    /// Move the controller's JUnit file into place, if its session
    /// finished and wrote one; else leave the file to rtest's writer.
    fn take_controller_junit(&mut self) {
        let Some((path, tmp)) = self.junit_paths() else {
            return;
        };
        if self.ctl.done.is_some() && tmp.is_file() {
            match std::fs::rename(&tmp, &path) {
                Ok(()) => self.junit_written = true,
                Err(e) => {
                    let msg = format!("could not write --junitxml {}: {e}", path.display());
                    self.reporter.on_event(&Event::Notice(msg));
                }
            }
        }
        let _ = std::fs::remove_file(&tmp);
    }

    /// Every worker's session is over (or its process gone) and every test
    /// has its outcome: the controller can finish its session (pytest-cov
    /// combines, reports are written) while the workers unconfigure and
    /// exit, as xdist's controller does once every worker finished.
    pub(super) fn maybe_finish_controller(&mut self) {
        if self.ctl.state != CtlState::Active || self.ctl.told_finish {
            return;
        }
        let over = self
            .slots
            .iter()
            .all(|s| s.state == SlotState::Exited || s.session_over.is_some());
        if !over
            || self.stop.is_some()
            || self.error.is_some()
            || !self.collected_event
            || self.items.iter().any(|item| !item.done)
        {
            return;
        }
        // Nothing is stranded, so this decides nothing but the status.
        let exit = self.conclude();
        self.tell_finish(exit);
    }

    fn tell_finish(&mut self, exit: ExitCode) {
        let msg = self.finish_message(exit);
        self.tell_controller(&msg);
        self.ctl.told_finish = true;
    }

    /// What ends the controller's session: the run's status and numbers.
    fn finish_message(&self, exit: ExitCode) -> ToAgent {
        let failed = self.failures
            + self
                .slots
                .iter()
                .flat_map(|s| s.collect_reports.iter())
                .filter(|r| r.outcome == "failed")
                .count();
        ToAgent::Finish {
            exitstatus: exit.code(),
            collected: self.items.len(),
            failed,
        }
    }

    /// Finish the controller's session with the run's exit status (unless
    /// it was told already, with the same tests' outcomes: only an error
    /// while the workers exited can differ, and that error stands) and wait
    /// for what its plugins make of it (Ctrl-C or SIGTERM stop waiting).
    pub(super) async fn finish_controller(
        &mut self,
        exit: ExitCode,
        rx: &mut mpsc::UnboundedReceiver<Input>,
        sigint: &mut Option<tokio::signal::unix::Signal>,
        sigterm: &mut Option<tokio::signal::unix::Signal>,
    ) -> ExitCode {
        let mut exit = exit;
        if self.ctl.state == CtlState::Active {
            if !self.ctl.told_finish {
                self.tell_finish(exit);
            }
            // Every worker has exited by now: plugins that hear from them
            // outside the reports (a socket closed at exit, a file written
            // at unconfigure) have all they will get, as under xdist.
            self.tell_controller(&ToAgent::WorkersGone);
            let signal = async {
                tokio::select! {
                    _ = super::recv_signal(sigint) => {}
                    _ = super::recv_signal(sigterm) => {}
                }
            };
            if !self.hear_controller(rx, |c| c.done.is_some(), signal).await {
                self.kill_controller();
                exit = ExitCode::Interrupted;
            }
            self.take_controller_junit();
            if let Some(done) = &self.ctl.done {
                // Plugins decide as they would under xdist, but never turn
                // an error of the run itself into a pass, nor override the
                // status a pytest.exit() gave.
                if !matches!(exit, ExitCode::InternalError | ExitCode::UsageError)
                    && self.pytest_exit_status.is_none()
                {
                    exit = ExitCode::from_pytest(done.exitstatus);
                }
            }
        }
        if self.ctl.state == CtlState::Off && std::mem::take(&mut self.ctl.idle) {
            // Its session ends now that no worker uses the directory it
            // holds, with the run's outcome (its plugins saw nothing of
            // the run, so it decides nothing).
            if let Some(w) = &self.ctl.writer {
                let _ = w.send(encode(&self.finish_message(exit)));
                let _ = w.send(encode(&ToAgent::WorkersGone));
            }
        }
        self.ctl.state = CtlState::Off;
        // A plugin that raised makes the run an internal error, whatever
        // the tests' outcome (or a plugin's status) said.
        let decided_by_tests = matches!(
            exit,
            ExitCode::Ok | ExitCode::TestsFailed | ExitCode::MaxWarnings | ExitCode::Plugin(_)
        );
        if self.ctl.failed && decided_by_tests {
            exit = ExitCode::InternalError;
        }
        // Not needed, or finished: it is on its way out (writing pytest's
        // cache as a session does); give it a moment, never let it outlive
        // the run.
        let grace = tokio::time::sleep(std::time::Duration::from_secs(5));
        self.hear_controller(rx, |c| c.writer.is_none(), grace)
            .await;
        self.kill_controller();
        exit
    }

    /// Handle what the controller says until `settled` holds or it is gone;
    /// false when `stop` came first.
    async fn hear_controller(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Input>,
        settled: fn(&Controller) -> bool,
        stop: impl std::future::Future<Output = ()>,
    ) -> bool {
        tokio::pin!(stop);
        while !self.ctl.exited && !settled(&self.ctl) {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Controller(p)) => self.on_controller_input(p),
                    Some(_) => {}
                    None => break,
                },
                _ = &mut stop => return false,
            }
        }
        true
    }
}

impl Session<'_> {
    /// Remember what decided the controller's plugins, for the next run.
    fn remember(&mut self, ready: &crate::protocol::ControllerReady) {
        let configure_node = ready.configure_node || !ready.workerinput.is_empty();
        let memo = serde_json::json!({
            "key": self.ctl.memo.as_ref().map(|(_, key)| key.clone()),
            "configure_node": configure_node,
            "needed": ready.needed,
            "auto_hook": self.ctl.auto_hook,
            "watch": ready.watch,
            "absent": ready.absent,
        });
        if configure_node {
            // Written with what it gives each worker, once it has.
            self.ctl.pending_memo = Some(memo);
        } else {
            self.write_memo(&memo);
        }
    }

    /// Every worker's input is known: remember it, and whether it is what
    /// the last run gave (only then do workers start on it next time).
    fn remember_parts(&mut self) {
        let Some(mut memo) = self.ctl.pending_memo.take() else {
            return;
        };
        let parts = serde_json::to_value(&self.ctl.parts).unwrap_or_default();
        memo["stable"] = (self.ctl.last_parts.as_ref() == Some(&parts)).into();
        memo["inputs"] = parts;
        self.write_memo(&memo);
    }

    fn write_memo(&self, memo: &serde_json::Value) {
        let Some((path, _)) = &self.ctl.memo else {
            return;
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let text = serde_json::to_vec(memo).unwrap_or_default();
        let _ = crate::fsutil::write_atomic(path, &text);
    }
}

/// What the controller's plugin set depends on besides files: the
/// interpreter, the arguments and pytest's plugin variables.
fn memo_key(python: &str, args: &[String]) -> String {
    let mut key = format!("{}\0{python}", env!("CARGO_PKG_VERSION"));
    for a in args {
        key.push('\0');
        key.push_str(a);
    }
    for var in [
        "PYTEST_ADDOPTS",
        "PYTEST_PLUGINS",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    ] {
        key.push('\0');
        key.push_str(&std::env::var(var).unwrap_or_default());
    }
    key
}

/// What the last run's controller left, if it had the same key and none of
/// the files it depended on changed.
fn memo_read(path: &std::path::Path, key: &str) -> Option<serde_json::Value> {
    use std::os::unix::fs::MetadataExt;
    let memo: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    if memo["key"].as_str()? != key {
        return None;
    }
    for entry in memo["watch"].as_array()? {
        let (file, mtime, size) = (entry[0].as_str()?, entry[1].as_i64()?, entry[2].as_u64()?);
        let meta = std::fs::metadata(file).ok()?;
        let now = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        if now != mtime || meta.size() != size {
            return None;
        }
    }
    for file in memo["absent"].as_array()? {
        if std::path::Path::new(file.as_str()?).exists() {
            return None;
        }
    }
    Some(memo)
}

/// What that memo says: a guess workers can start on (no
/// `pytest_configure_node`, or one that gave every worker the same input in
/// the last two runs), and what it gave each worker last time.
fn memo_says(memo: &serde_json::Value) -> (Option<Guess>, Option<serde_json::Value>) {
    let Some(needed) = memo["needed"].as_bool() else {
        return (None, None);
    };
    match memo["configure_node"].as_bool() {
        Some(false) => (
            Some(Guess {
                needed,
                inputs: None,
            }),
            None,
        ),
        Some(true) => {
            let inputs = memo["inputs"].as_object().cloned();
            let guess = inputs
                .clone()
                .filter(|_| memo["stable"].as_bool() == Some(true))
                .map(|inputs| Guess {
                    needed,
                    inputs: Some(inputs),
                });
            (guess, inputs.map(serde_json::Value::Object))
        }
        None => (None, None),
    }
}

/// Start reading the controller's pipes.
fn pump(
    conn: gateway::Connection,
    tx: &mpsc::UnboundedSender<Input>,
) -> (mpsc::UnboundedSender<Vec<u8>>, Killer) {
    super::pump(conn, tx, Input::Controller)
}
