//! Dispatch: what the scheduler gives each worker, finished tests turned
//! into results, and stopping (`-x`, pytest asking to stop).

use super::*;

impl Session<'_> {
    /// Give worker `i` what the scheduler has for it, until the scheduler
    /// says wait or shutdown (an agent only starts a test once it knows the
    /// next one, so a last batch must be followed by shutdown at once).
    pub(super) fn dispatch(&mut self, i: usize) {
        let slot = &self.slots[i];
        if slot.state != SlotState::Running || slot.shut || slot.guessed_input.is_some() {
            return;
        }
        match self.sched.poll(i) {
            Action::Run(ids) if !ids.is_empty() => {
                let indices: Vec<usize> = ids.iter().map(|g| self.items[*g].local).collect();
                let slot = &mut self.slots[i];
                if slot.pending.is_empty() {
                    slot.started = Some(Instant::now());
                }
                if slot.pending.len() <= 1 {
                    // It may have waited for this (it starts a test once it
                    // knows the next): a new measure of its pace.
                    slot.pace_window = None;
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
                // An idle worker waits for the victim's answer.
                self.pace(victim);
            }
            Action::Run(_) | Action::Wait => {}
        }
        for w in self.sched.take_wakeups() {
            self.dispatch(w);
        }
    }

    pub(super) fn dispatch_all(&mut self) {
        self.update_joining();
        for i in 0..self.slots.len() {
            self.dispatch(i);
        }
    }

    pub(super) fn on_finished(&mut self, i: usize, f: protocol::Finished) {
        let Some(coll) = self.slots[i].collection else {
            return;
        };
        let global = self.offset_of(coll) + f.i;
        let Some(pos) = self.slots[i].pending.iter().position(|g| *g == global) else {
            // Out of order or made up: not a test this worker was running.
            self.broken(i, &format!("finished test {} it was not running", f.i));
            return;
        };
        let slot = &mut self.slots[i];
        slot.pending.remove(pos);
        let now = Instant::now();
        slot.pace_window = match slot.pace_window {
            None => Some((now, 0)),
            Some((since, n)) if now - since >= PACE_WINDOW => {
                let took = (now - since).as_secs_f64() / (n + 1) as f64;
                slot.test_time = Some(slot.test_time.map_or(took, |t| t * 0.5 + took * 0.5));
                Some((now, 0))
            }
            Some((since, n)) => Some((since, n + 1)),
        };
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
        let result = TestResult {
            nodeid: item.nodeid.clone(),
            worker: slot.id.clone(),
            worker_index: i,
            location: item.location.clone(),
            phases,
            duration: f.d,
            crashed: false,
            live_log: f.log,
        };
        self.record_final(global, result, true);
        self.dispatch(i);
    }

    /// Item `global`'s outcome, after what earlier attempts that crashed
    /// their workers reported (`replay`: unless the controller logged it
    /// already).
    pub(super) fn record_final(&mut self, global: usize, mut result: TestResult, replay: bool) {
        self.items[global].done = true;
        if let Some(mut before) = self.carried.remove(&global) {
            before.append(&mut result.phases);
            result.phases = before;
        }
        self.record_with(result, replay);
    }

    pub(super) fn record(&mut self, result: TestResult) {
        self.record_with(result, true);
    }

    fn record_with(&mut self, result: TestResult, replay: bool) {
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
        if replay {
            self.replay(&result);
        }
        self.reporter
            .on_event(&Event::TestFinished(Box::new(result)));
        if let Some(max) = self.maxfail {
            if self.failures >= max && self.stop.is_none() {
                self.set_stop(StopReason::MaxFail(self.failures));
            }
        }
    }

    pub(super) fn set_stop(&mut self, reason: StopReason) {
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

    pub(super) fn offset_of(&self, coll: usize) -> usize {
        self.collections
            .get(coll)
            .and_then(Option::as_ref)
            .map_or(0, |c| c.offset)
    }
}
