//! Collection: the first worker's options decide the rendering, every
//! worker's collection is compared with the first, and the run starts once
//! one worker has collected (the others join as they collect).

use super::*;

/// A readable diff of two collections.
pub(super) fn collection_diff(a_name: &str, a: &[String], b_name: &str, b: &[String]) -> String {
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

impl Session<'_> {
    /// The first worker's effective pytest options decide how the run is
    /// coordinated and rendered (addopts may add `-x`, `-s`, `-ra`, ...).
    pub(super) fn on_configured(&mut self, i: usize, options: protocol::PytestOptions) {
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
            self.pending_start = Some((Box::new(worker), Box::new(options)));
        }
        self.maybe_session_started();
    }

    /// The header, once a worker is configured and the controller has
    /// said what plugins write above it (or is not there to say it).
    pub(super) fn maybe_session_started(&mut self) {
        if self.ctl.state == CtlState::Starting {
            return;
        }
        if let Some((worker, options)) = self.pending_start.take() {
            self.reporter.on_event(&Event::SessionStarted {
                worker,
                options,
                plugin_text: std::mem::take(&mut self.ctl.before_header),
            });
        }
    }

    pub(super) fn collection_index(&self, slot: usize) -> usize {
        match self.plan.dist {
            DistMode::Each => slot,
            _ => 0,
        }
    }

    pub(super) fn on_collected(&mut self, i: usize, mut c: Collected) {
        self.slots[i].early_loss = None;
        if let Some(limits) = &mut c.limits {
            limits.except.sort_by_key(|(index, _)| *index);
        }
        self.slots[i].limits = c.limits.take();
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
                report_lines: c.report_lines,
                listing: c.listing,
                log_cli: c.log_cli,
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
            // A worker that collected after the run started (one slower to
            // start, a replacement) joins it.
            self.update_joining();
            self.sched.add_worker(i, coll);
            self.dispatch(i);
        } else {
            self.maybe_start_running();
        }
    }

    /// Tell the scheduler how many workers are still to join the run
    /// (starting or collecting), so that a fair share counts them.
    pub(super) fn update_joining(&mut self) {
        let joining = self
            .slots
            .iter()
            .filter(|s| matches!(s.state, SlotState::Starting | SlotState::Collecting))
            .count();
        self.sched.set_joining(joining);
    }

    /// Start scheduling once the controller is ready and a worker has
    /// collected, when every other first-generation worker has at least
    /// said what it is (the header names them all): in the load modes the
    /// first to collect starts at once, and the others join as they
    /// collect (checked against the first collection then). With
    /// `--dist each` (every worker its own collection, counted in the
    /// progress) and `--collect-only`, once every worker has collected or
    /// died.
    pub(super) fn maybe_start_running(&mut self) {
        self.maybe_session_started();
        if self.collected_event || self.error.is_some() {
            return;
        }
        let all = self.plan.collect_only || self.plan.dist == DistMode::Each;
        let waiting = self.slots.iter().any(|s| match s.state {
            SlotState::Starting => true,
            SlotState::Collecting => all,
            SlotState::Running | SlotState::Exited => false,
        });
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
        let mut ids = main.ids.clone();
        let mut listing = main.listing.clone();
        if self.plan.shard.is_some() {
            // pytest's listing is of the whole suite: this job lists its
            // shard.
            let offset = main.offset;
            let mut pos = 0;
            ids.retain(|_| {
                pos += 1;
                !self.items[offset + pos - 1].done
            });
            listing = None;
        }
        self.reporter.on_event(&Event::Collected {
            rootdir: main.rootdir.clone(),
            workers,
            total: self.items.len(),
            per_worker: ids.len(),
            deselected: main.deselected,
            collect_reports: collect_reports.clone(),
            ids,
            listing,
            live_logging: main.log_cli,
            header: self.ctl.header.clone(),
            collection_lines: main.report_lines.clone(),
            plugin_text: std::mem::take(&mut self.ctl.after_header),
            left_to_plugins: self.ctl.sections.clone(),
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
        // Register every worker before the first poll, and count those
        // still collecting, so the first one does not take what a fair
        // share would give the others.
        self.update_joining();
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
}
