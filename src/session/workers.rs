//! Worker lifecycle: starting a worker over its gateway, its handshake,
//! timeouts, and what happens when it goes away (the running test reported
//! failed with the worker's last words, a replacement started).

use super::*;

/// How long past `--startup-timeout` the coordinator waits for the agent's
/// own stack dump before it kills the worker itself.
const STARTUP_GRACE: f64 = 10.0;
/// How long a worker that said it is done may take to end: the agent's
/// ten seconds for its atexit handlers, and some.
const EXIT_LIMIT: f64 = 15.0;
/// How long a worker whose session is over may take to say it is done
/// (plugins' `pytest_unconfigure`); xdist gives its workers ten seconds in
/// all once every session is over.
const UNCONFIGURE_LIMIT: f64 = 30.0;

impl Session<'_> {
    /// The environment worker `index` gets: its spec's, the run's, and a
    /// coverage data file of its own where workers share a directory.
    fn worker_env(&self, index: usize) -> BTreeMap<String, String> {
        let plan = &self.plan.workers[self.slots[index].plan_index];
        let mut env = plan.env.clone();
        for (k, v) in &self.opts.env {
            env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if plan.copy_rootdir.is_some() || plan.transport != Transport::Popen {
            // Workers in one synced copy share its directory, and
            // pytest-cov's worker side (not collocated with the controller)
            // combines every `.coverage.*` it finds there, a sibling's
            // half-written file too. A data file per worker keeps them
            // apart; the controller still combines them all (same prefix).
            let base = std::env::var("COVERAGE_FILE")
                .ok()
                .and_then(|f| {
                    std::path::Path::new(&f)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| ".coverage".into());
            let id = &self.slots[index].id;
            env.entry("COVERAGE_FILE".into())
                .or_insert_with(|| format!("{base}.{id}"));
        }
        env
    }

    pub(super) fn spawn(&mut self, index: usize) {
        let plan = &self.plan.workers[self.slots[index].plan_index];
        let env = self.worker_env(index);
        match &plan.transport {
            Transport::Popen => {
                let conn =
                    gateway::popen::spawn(&plan.python, plan.chdir.as_deref(), &env, plan.nice);
                self.connected(index, conn);
            }
            Transport::Socket { .. } | Transport::Ssh { .. } | Transport::Exec { .. } => {
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
    pub(super) fn connected(&mut self, index: usize, conn: Result<Connection, Error>) {
        let mut conn = match conn {
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
        let agent_started = conn.agent_started;
        let conn_pacer = conn.pacer.take();
        let env = self.worker_env(index);
        let (wtx, killer) = pump(conn, &self.tx, move |p| Input::Worker(index, gen, p));
        // Without a controller to ask, the worker gets its workerinput at
        // once; else it parses its arguments while the controller's
        // pytest_configure_node runs.
        let guessed = match self.ctl.state {
            CtlState::Starting => self.guessed_workerinput(index),
            _ => None,
        };
        let workerinput = match self.ctl.state {
            CtlState::Off => Some(self.base_workerinput(index)),
            _ => guessed.clone(),
        };
        let stream = self.ctl.state == CtlState::Starting
            && self.ctl.speculative.as_ref().is_some_and(|g| g.needed);
        let junit = self.junit_paths().map(|(path, _)| path);
        let basetemp = self.worker_basetemp(index);
        let slot = &mut self.slots[index];
        slot.awaiting_input = workerinput.is_none();
        // Checked against the controller's answer before it runs a test,
        // when plugins made it (a guess without them stands).
        slot.guessed_input = guessed.filter(|_| {
            self.ctl
                .speculative
                .as_ref()
                .is_some_and(|g| g.inputs.is_some())
        });
        let w = &self.plan.workers[slot.plan_index];
        let mut args = self.plan.pytest_args.clone();
        args.extend(w.extra_args.iter().cloned());
        if let Some(path) = &junit {
            // As under xdist: the worker's pytest knows of the file (the
            // junit fixtures record for it) but leaves writing it to the
            // controller.
            args.push(format!("--junitxml={}", path.display()));
        }
        if let Some(dir) = basetemp {
            args.push(format!("--basetemp={}", dir.display()));
        }
        // An agent that runs already (synced over this connection) only
        // hears where to run now.
        let mut bytes = if agent_started {
            Vec::new()
        } else {
            bootstrap_payload()
        };
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
            // Also set by the gateway where it can; an exec= worker synced
            // before the session started was started without the run's.
            env,
            worker_id: slot.id.clone(),
            worker_count: self.plan.workers.len(),
            testrun_uid: self.opts.testrun_uid.clone(),
            full_reports: self.opts.full_reports,
            groups: self.plan.dist == DistMode::LoadGroup,
            workerinput,
            stream,
            startup_timeout: self.plan.startup_timeout,
            timeout: self.plan.timeout,
            remote: w.transport != Transport::Popen,
        })));
        let _ = wtx.send(bytes);
        slot.writer = Some(wtx);
        slot.killer = Some(killer);
        slot.pacer = conn_pacer;
        slot.state = SlotState::Starting;
        slot.spawned = Some(Instant::now());
        if self.ctl.state == CtlState::Active {
            self.configure_node(index);
        }
    }

    /// Where worker `i`'s pytest keeps its temporary directories, as
    /// under xdist: its own directory in `--basetemp` or, for a local
    /// worker, in the run's numbered directory the controller made
    /// (`popen-gw0`). A worker started again (a replacement, or a start
    /// on a guess that did not hold) gets a new one: a lost worker's
    /// files stay for a look.
    pub(super) fn worker_basetemp(&self, i: usize) -> Option<PathBuf> {
        let slot = &self.slots[i];
        let local = self.plan.workers[slot.plan_index].transport == Transport::Popen;
        let base = match (&self.plan.basetemp, &self.ctl.basetemp) {
            (Some(base), _) => PathBuf::from(base),
            (None, Some(base)) if local => base.clone(),
            _ => return None,
        };
        let mut name = if local {
            format!("popen-{}", slot.id)
        } else {
            slot.id.clone()
        };
        if slot.gen > 0 {
            name = format!("{name}-{}", slot.gen);
        }
        Some(base.join(name))
    }

    pub(super) fn on_ready(&mut self, i: usize, info: ReadyInfo) {
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

    pub(super) fn on_gone(&mut self, i: usize, how: String) {
        let was = self.slots[i].state;
        // Its last words are worth showing only if it ended well (a
        // plugin's warning at unconfigure); else they are in its tail,
        // which the report of the loss shows.
        if self.slots[i].session_over.is_some() || self.slots[i].done.is_some() {
            self.release_output(i);
        } else {
            self.slots[i].held_output.clear();
        }
        self.node_down(i, &how);
        self.slots[i].state = SlotState::Exited;
        self.slots[i].writer = None;
        self.sched.remove_worker(i);
        let id = self.slots[i].id.clone();
        let kill_reason = self.slots[i].kill_reason;
        let aborted = kill_reason == Some(KillReason::Abort);

        let ending = self.error.is_some() || self.stop.is_some();
        if matches!(was, SlotState::Starting | SlotState::Collecting) && !aborted && !ending {
            self.lost_before_collection(i, was, &how);
            return;
        }

        let pending: Vec<usize> = self.slots[i].pending.drain(..).collect();
        let ended_by_itself = self.slots[i].done.is_some();
        if was == SlotState::Running
            && pending.is_empty()
            && !aborted
            && !ending
            && !ended_by_itself
            && kill_reason.is_none()
        {
            // Between tests or after its last one: no result is lost, but
            // its session did not finish (what plugins gather there).
            let tail = self.tail_text(i);
            self.reporter.on_event(&Event::Notice(format!(
                "worker {id} exited between tests ({how}); its session did not finish, so what plugins gather in it (coverage, for one) may be missing{}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; its stderr:\n{tail}")
                }
            )));
        }
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
                Some(KillReason::PluginTimeout(limit, grace)) => format!(
                    "Timeout: {nodeid} ran {grace}s past its {limit}s limit, which the worker's timeout plugin did not enforce; rtest killed worker {id} ({how})"
                ),
                _ => format!("worker {id} crashed while running {nodeid} ({how})"),
            };
            let longrepr = if tail.is_empty() {
                head.clone()
            } else {
                format!("{head}\n\nlast output of worker {id}:\n{tail}")
            };
            let item = &self.items[crashed];
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
                live_log: None,
            };
            let coll = self.slots[i].collection;
            match coll {
                // Plugins may run it again (pytest-rerunfailures).
                Some(coll) if self.ctl.asks_about_crashes() && !ending => {
                    self.ask_about_crash(crashed, coll, result)
                }
                _ => self.record_final(crashed, result, true),
            }
            if let Some(coll) = coll {
                self.sched.requeue(coll, rest);
            }
        }
        self.slots[i].reports.clear();

        let needs_worker = !self.sched.collections_with_work().is_empty()
            || !self.crash_waiting.is_empty()
            || (!self.collected_event && self.stop.is_none() && self.error.is_none());
        let crashed = !ended_by_itself && !aborted && was != SlotState::Exited;
        if crashed && needs_worker && self.stop.is_none() && self.error.is_none() {
            if self.replace(i, &format!("replacing crashed worker {id}")) {
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

    /// Worker `i` was lost before it reported its collection (a signal, an
    /// OOM kill, `os._exit`, a dropped connection, `--startup-timeout`):
    /// another process in its place, unless this is the same loss again;
    /// the run stops only when no worker is left to collect.
    fn lost_before_collection(&mut self, i: usize, was: SlotState, how: &str) {
        let id = self.slots[i].id.clone();
        let python = self.plan.workers[self.slots[i].plan_index].python.clone();
        let kill_reason = self.slots[i].kill_reason;
        let tail = self.tail_text(i);
        let hung = self.plan.startup_timeout.filter(|limit| {
            kill_reason == Some(KillReason::Startup(*limit))
                || self.slots[i]
                    .spawned
                    .is_some_and(|t| t.elapsed().as_secs_f64() >= *limit)
        });
        // The same stderr from every worker (a crash at import) is shown
        // once.
        let seen = without_addresses(&tail);
        let said = if tail.is_empty() {
            String::new()
        } else if self
            .ctl_error_text
            .as_ref()
            .is_some_and(|ctl| seen.lines().nth(1).is_some() && ctl.contains(&seen))
        {
            // A plugin that raised in the controller's configure raises in
            // every worker's too.
            "; its stderr is the controller's error above".to_string()
        } else if !self.early_tails.insert(seen) {
            match hung {
                Some(_) => "; it was where the one above was".to_string(),
                None => "; its stderr is the same as above".to_string(),
            }
        } else {
            match hung {
                Some(_) => format!("; where it was (its stderr):\n{tail}"),
                None => format!("; its stderr:\n{tail}"),
            }
        };
        let head = match hung {
            Some(limit) => format!(
                "worker {id} ({python}) did not report its collection within {limit}s (--startup-timeout) and was stopped ({how})"
            ),
            None => {
                let phase = if was == SlotState::Starting {
                    "before it was ready"
                } else {
                    "during collection"
                };
                format!("worker {id} ({python}) exited {phase} ({how})")
            }
        };
        let message = format!("{head}{said}");
        // The same loss again is how it ended and what it said (a crash at
        // import dumps the same stack). A loss that says nothing (a kill, a
        // dropped connection) may well be passing: it is retried while
        // restarts last.
        let loss = (!tail.is_empty()).then(|| format!("{how}\n{}", without_addresses(&tail)));
        // A worker whose pytest ended its session by itself (an
        // INTERNALERROR or a KeyboardInterrupt in a conftest's
        // pytest_configure or pytest_sessionstart) had pytest's verdict,
        // which another process would have too: it is not retried.
        let decided = self.slots[i].done.is_some();
        let same_again = decided || (loss.is_some() && self.slots[i].early_loss == loss);
        if !same_again && self.replace(i, &format!("{message}\nreplacing it")) {
            self.slots[i].early_loss = loss;
            return;
        }
        let others = self
            .slots
            .iter()
            .enumerate()
            .any(|(j, s)| j != i && s.state != SlotState::Exited);
        if !others && !self.collected_event {
            // No worker is left to collect: the run cannot go on.
            let error = if decided && self.slots[i].exit_status == Some(2) {
                Error::interrupted(message)
            } else if was == SlotState::Starting && !decided {
                Error::worker(message)
            } else {
                Error::internal(message)
            };
            self.fail(error);
            return;
        }
        // Said before its stderr, which can be long.
        self.reporter
            .on_event(&Event::Notice(format!("{head}, going on without it{said}")));
        if !self.collected_event {
            self.maybe_start_running();
        }
        self.dispatch_all();
    }

    /// Start another process in slot `i` if `--max-worker-restart` allows
    /// (counted over all slots), saying `what` with the count.
    fn replace(&mut self, i: usize, what: &str) -> bool {
        let restarts: usize = self.slots.iter().map(|s| s.restarts).sum();
        if restarts >= self.plan.max_worker_restart {
            return false;
        }
        self.slots[i].restarts += 1;
        self.slots[i].renew();
        self.reporter.on_event(&Event::Notice(format!(
            "{what} ({} of {} restarts)",
            restarts + 1,
            self.plan.max_worker_restart
        )));
        self.spawn(i);
        self.update_joining();
        true
    }

    pub(super) fn tail_text(&self, i: usize) -> String {
        let text = String::from_utf8_lossy(&self.slots[i].tail);
        // rtest's own frames (a faulthandler dump's bottom) say nothing
        // about the user's code.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("\"<rtest-agent>\""))
            .collect();
        // A fatal error's report (faulthandler) or the agent's dump of a
        // test past `--timeout` is worth showing from its first line;
        // anything else, the last lines.
        let start = match lines.iter().rposition(|l| {
            l.starts_with("Fatal Python error")
                || l.starts_with("Timeout: still running after ")
                || l.starts_with("what pytest's terminal got during the test")
        }) {
            Some(p) if lines.len() - p <= 3 * TAIL_LINES => p,
            _ => lines.len().saturating_sub(TAIL_LINES),
        };
        lines[start..].join("\n")
    }

    pub(super) fn check_timeouts(&mut self) {
        if let Some(limit) = self.plan.startup_timeout {
            // The agent dumps its stack and exits at the limit itself; this
            // is for a process too stuck to (or an interpreter that never
            // ran the agent).
            for slot in &mut self.slots {
                let early = matches!(slot.state, SlotState::Starting | SlotState::Collecting);
                if early
                    && slot.kill_reason.is_none()
                    && slot
                        .spawned
                        .is_some_and(|t| t.elapsed().as_secs_f64() > limit + STARTUP_GRACE)
                {
                    slot.kill_reason = Some(KillReason::Startup(limit));
                    if let Some(k) = &slot.killer {
                        k.kill();
                    }
                }
            }
        }
        for i in 0..self.slots.len() {
            // Done, but its process has not ended (the agent gives its
            // atexit handlers EXIT_HANDLERS_LIMIT, then ends; one stuck
            // in C code holding the GIL cannot); or its session is over and
            // it is still unconfiguring.
            let slot = &mut self.slots[i];
            if slot.state == SlotState::Exited || slot.kill_reason.is_some() {
                continue;
            }
            let past = |t: Option<Instant>, limit: f64| {
                t.is_some_and(|t| t.elapsed().as_secs_f64() > limit)
            };
            let why = if past(slot.done, EXIT_LIMIT) {
                format!("was done but had not ended {EXIT_LIMIT}s later (an atexit handler?)")
            } else if slot.done.is_none() && past(slot.session_over, UNCONFIGURE_LIMIT) {
                format!(
                    "finished its session but was not done {UNCONFIGURE_LIMIT}s later (a plugin's pytest_unconfigure?)"
                )
            } else {
                continue;
            };
            slot.kill_reason = Some(KillReason::Abort);
            if let Some(k) = &slot.killer {
                k.kill();
            }
            let msg = format!("worker {} {why}; rtest killed it", slot.id);
            self.reporter.on_event(&Event::Notice(msg));
        }
        for slot in &mut self.slots {
            if slot.state != SlotState::Running || slot.kill_reason.is_some() {
                continue;
            }
            let (Some(started), Some(&running)) = (slot.started, slot.pending.front()) else {
                continue;
            };
            let kill = match &slot.limits {
                // A plugin in the worker enforces the test's own limit;
                // rtest steps in only when the test outlives it anyway.
                Some(limits) => limits.of(self.items[running].local).map(|limit| {
                    let grace = plugin_grace(limit);
                    (KillReason::PluginTimeout(limit, grace), limit + grace)
                }),
                None => self
                    .plan
                    .timeout
                    .filter(|t| *t > 0.0)
                    .map(|limit| (KillReason::Timeout(limit), limit + DUMP_GRACE)),
            };
            let Some((reason, deadline)) = kill else {
                continue;
            };
            if started.elapsed().as_secs_f64() > deadline {
                slot.kill_reason = Some(reason);
                if let Some(k) = &slot.killer {
                    k.kill();
                }
            }
        }
    }

    pub(super) fn kill_all(&mut self) {
        if std::mem::take(&mut self.auto_pending) {
            // `-n auto` workers still waiting for the controller's count
            // never started: none will.
            for slot in &mut self.slots {
                slot.state = SlotState::Exited;
            }
            return;
        }
        for slot in &mut self.slots {
            if slot.state != SlotState::Exited {
                slot.kill_reason.get_or_insert(KillReason::Abort);
                if let Some(k) = &slot.killer {
                    k.kill();
                }
            }
        }
    }

    pub(super) fn interrupt(&mut self, reason: StopReason) {
        if self.stop.is_none() || matches!(reason, StopReason::Signal(_)) {
            self.stop = Some(reason);
        }
        self.sched.stop();
        self.kill_all();
    }

    pub(super) fn fail(&mut self, error: Error) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.sched.stop();
        self.kill_all();
    }
}

/// How long past `--timeout` rtest kills a worker: the worker dumps its
/// stacks at the limit itself (the agent's `HangDump`), for the report.
const DUMP_GRACE: f64 = 1.0;

/// How long rtest lets a test outlive the limit a plugin in its worker
/// enforces (pytest-timeout) before killing the worker: long enough for
/// the plugin to fail the test and tear it down, or to dump its stacks.
fn plugin_grace(limit: f64) -> f64 {
    (limit * 0.1).max(5.0)
}

/// `text` with hexadecimal addresses (`0x7fa9b6dbe6c0`) blanked: two
/// processes' stack dumps of the same place differ only there.
pub(super) fn without_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("0x") {
        out.push_str(&rest[..at + 2]);
        rest = rest[at + 2..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_blanked() {
        assert_eq!(
            super::without_addresses("Thread 0x00007fa9b6dbe6c0 (most)\nat 0x1f, 0x"),
            "Thread 0x (most)\nat 0x, 0x"
        );
    }
}
