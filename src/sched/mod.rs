//! The scheduler: which worker runs which test, next. Pure: no I/O, no clock.
//!
//! Tests are grouped into *units* that must run on one worker (a single test
//! for `load`, a module or class for `loadscope`, a file for `loadfile`, an
//! `xdist_group` for `loadgroup`). Each *collection* has a pool of units: one
//! shared collection in the load modes, one per worker for `each`. The
//! session asks [`Scheduler::poll`] what to send a worker whenever its queue
//! changes, and reports completions, requeues and lost workers back.

use crate::plan::DistMode;
use std::collections::{BTreeMap, VecDeque};

/// What to tell a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these global item ids, in order.
    Run(Vec<usize>),
    /// Nothing more will come: finish the queue and exit.
    Shutdown,
    /// Nothing to do right now.
    Wait,
}

#[derive(Debug, Clone)]
struct WorkerState {
    collection: usize,
    pending: usize,
    shut: bool,
}

/// The scheduler for one run.
#[derive(Debug, Clone)]
pub struct Scheduler {
    mode: DistMode,
    pools: BTreeMap<usize, VecDeque<Vec<usize>>>,
    workers: BTreeMap<usize, WorkerState>,
    stopped: bool,
    wakeups: Vec<usize>,
}

/// The grouping key of one item: its node id and `xdist_group` names.
pub fn unit_key(mode: DistMode, nodeid: &str, groups: Option<&[String]>) -> Option<String> {
    match mode {
        DistMode::LoadFile => Some(nodeid.split("::").next().unwrap_or(nodeid).to_string()),
        DistMode::LoadScope => {
            // Module, or class within a module (xdist: everything before the
            // last "::"), ignoring parametrization.
            let base = nodeid.split('[').next().unwrap_or(nodeid);
            Some(match base.rsplit_once("::") {
                Some((scope, _)) => scope.to_string(),
                None => base.to_string(),
            })
        }
        DistMode::LoadGroup => groups.filter(|g| !g.is_empty()).map(|g| g.join("_")),
        _ => None,
    }
}

impl Scheduler {
    /// A scheduler for `mode`.
    pub fn new(mode: DistMode) -> Self {
        Scheduler {
            mode,
            pools: BTreeMap::new(),
            workers: BTreeMap::new(),
            stopped: false,
            wakeups: Vec::new(),
        }
    }

    /// Add a collection: global item ids in collection order, each with its
    /// unit key (from [`unit_key`]). Items with equal keys form one unit,
    /// placed where the first of them stands.
    pub fn add_collection(&mut self, collection: usize, items: Vec<(usize, Option<String>)>) {
        let mut units: Vec<Vec<usize>> = Vec::new();
        let mut by_key: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (id, key) in items {
            match key {
                Some(k) => match by_key.get(&k) {
                    Some(&u) => units[u].push(id),
                    None => {
                        by_key.insert(k, units.len());
                        units.push(vec![id]);
                    }
                },
                None => units.push(vec![id]),
            }
        }
        self.pools.insert(collection, units.into());
    }

    /// A worker that has collected `collection` and can take tests.
    pub fn add_worker(&mut self, worker: usize, collection: usize) {
        self.workers.insert(
            worker,
            WorkerState {
                collection,
                pending: 0,
                shut: false,
            },
        );
    }

    /// A worker is gone; whatever it still held must be [`requeue`]d by the
    /// caller.
    ///
    /// [`requeue`]: Scheduler::requeue
    pub fn remove_worker(&mut self, worker: usize) {
        self.workers.remove(&worker);
    }

    /// One of the worker's tests finished.
    pub fn finished(&mut self, worker: usize) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.pending = w.pending.saturating_sub(1);
        }
    }

    /// Tests handed back (from a crashed worker, or stolen): they go to the
    /// front of their collection's pool, as one unit.
    pub fn requeue(&mut self, collection: usize, items: Vec<usize>) {
        if items.is_empty() || self.stopped {
            return;
        }
        let pool = self.pools.entry(collection).or_default();
        if matches!(
            self.mode,
            DistMode::Load | DistMode::WorkSteal | DistMode::No | DistMode::Each
        ) {
            for id in items.into_iter().rev() {
                pool.push_front(vec![id]);
            }
        } else {
            pool.push_front(items);
        }
    }

    /// Stop scheduling: every pool is emptied, every worker shut down.
    pub fn stop(&mut self) {
        self.stopped = true;
        self.pools.values_mut().for_each(VecDeque::clear);
        self.wakeups.extend(
            self.workers
                .iter()
                .filter(|(_, s)| !s.shut)
                .map(|(w, _)| *w),
        );
    }

    /// Units not yet handed to any worker, per collection.
    pub fn unassigned(&self, collection: usize) -> Vec<usize> {
        self.pools
            .get(&collection)
            .map(|p| p.iter().flatten().copied().collect())
            .unwrap_or_default()
    }

    /// Collections that still have unassigned tests.
    pub fn collections_with_work(&self) -> Vec<usize> {
        self.pools
            .iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(c, _)| *c)
            .collect()
    }

    /// Workers that must be polled again: a pool they were waiting on ran
    /// dry, so they now need a shutdown to run their last queued test.
    pub fn take_wakeups(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.wakeups)
    }

    /// What to send `worker` now.
    ///
    /// An agent starts a test only once it knows the next one (or that none
    /// follows), so a worker is kept at two or more queued tests while its
    /// pool has work; near the end, when there is less than a fair share of
    /// two per worker, each gets one at a time and is shut down (through
    /// [`take_wakeups`](Scheduler::take_wakeups)) when the pool empties.
    pub fn poll(&mut self, worker: usize) -> Action {
        let Some(state) = self.workers.get(&worker) else {
            return Action::Wait;
        };
        if state.shut {
            return Action::Wait;
        }
        let collection = state.collection;
        let live = self
            .workers
            .values()
            .filter(|w| !w.shut && w.collection == collection)
            .count()
            .max(1);
        let mode = self.mode;
        let pool = self.pools.entry(collection).or_default();
        let state = self.workers.get_mut(&worker).expect("checked above");
        if pool.is_empty() {
            state.shut = true;
            return Action::Shutdown;
        }
        let remaining = pool.len();
        let grouped = matches!(
            mode,
            DistMode::LoadScope | DistMode::LoadFile | DistMode::LoadGroup
        );
        let target = if matches!(mode, DistMode::Each | DistMode::No) {
            remaining.clamp(2, 64)
        } else if grouped {
            2
        } else {
            (remaining / (live * 2)).clamp(2, 64)
        };
        let low = target.div_ceil(2).max(2);
        if state.pending >= low {
            return Action::Wait;
        }
        // Fewer than two per worker left: an idle worker gets one, so the
        // rest can go to the other workers.
        let scarce = !matches!(mode, DistMode::Each | DistMode::No) && remaining.div_ceil(live) < 2;
        let goal = if state.pending == 0 && scarce {
            1
        } else {
            target
        };
        let mut batch = Vec::new();
        while state.pending + batch.len() < goal {
            match pool.pop_front() {
                Some(unit) => batch.extend(unit),
                None => break,
            }
        }
        state.pending += batch.len();
        if pool.is_empty() {
            // Everyone still holding work (this worker too) now needs its
            // shutdown to run its last test.
            let waiting = self
                .workers
                .iter()
                .filter(|(_, s)| !s.shut && s.collection == collection)
                .map(|(w, _)| *w);
            self.wakeups.extend(waiting);
        }
        Action::Run(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<(usize, Option<String>)> {
        (0..n).map(|i| (i, None)).collect()
    }

    /// Drive a scheduler with fake workers that finish one test per step,
    /// in round-robin, and return which worker ran each item.
    fn simulate(
        mode: DistMode,
        items: Vec<(usize, Option<String>)>,
        workers: usize,
    ) -> Vec<Option<usize>> {
        let n = items.len();
        let mut s = Scheduler::new(mode);
        s.add_collection(0, items);
        let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); workers];
        let mut shut = vec![false; workers];
        for w in 0..workers {
            s.add_worker(w, 0);
        }
        let mut ran = vec![None; n];
        loop {
            let mut progressed = false;
            let mut order: Vec<usize> = (0..workers).collect();
            order.extend(s.take_wakeups());
            for w in order {
                if !shut[w] {
                    match s.poll(w) {
                        Action::Run(b) => queues[w].extend(b),
                        Action::Shutdown => shut[w] = true,
                        Action::Wait => {}
                    }
                }
                // the agent needs a successor (or shutdown) before it runs
                if queues[w].len() >= 2 || (shut[w] && !queues[w].is_empty()) {
                    let item = queues[w].pop_front().unwrap();
                    assert!(ran[item].is_none(), "item {item} ran twice");
                    ran[item] = Some(w);
                    s.finished(w);
                    progressed = true;
                }
            }
            if !progressed && shut.iter().all(|s| *s) && queues.iter().all(|q| q.is_empty()) {
                break;
            }
            assert!(progressed || shut.iter().any(|s| !s), "deadlock");
        }
        ran
    }

    #[test]
    fn load_runs_every_item_once_and_uses_every_worker() {
        let ran = simulate(DistMode::Load, ids(1000), 4);
        assert!(ran.iter().all(Option::is_some));
        for w in 0..4 {
            assert!(ran.iter().filter(|r| **r == Some(w)).count() > 100);
        }
    }

    #[test]
    fn tiny_suites_still_finish() {
        for n in 0..5 {
            for workers in 1..4 {
                let ran = simulate(DistMode::Load, ids(n), workers);
                assert!(ran.iter().all(Option::is_some), "n={n} workers={workers}");
            }
        }
    }

    #[test]
    fn few_items_are_spread_one_per_worker() {
        let ran = simulate(DistMode::Load, ids(2), 2);
        assert_ne!(ran[0], ran[1]);
        let ran = simulate(DistMode::Load, ids(3), 3);
        assert_eq!(
            ran.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );
    }

    #[test]
    fn loadfile_keeps_a_file_on_one_worker() {
        let nodeids = [
            "a.py::t1", "b.py::t1", "a.py::t2", "c.py::t1", "b.py::t2", "a.py::t3",
        ];
        let items: Vec<_> = nodeids
            .iter()
            .enumerate()
            .map(|(i, n)| (i, unit_key(DistMode::LoadFile, n, None)))
            .collect();
        let ran = simulate(DistMode::LoadFile, items, 2);
        assert_eq!(ran[0], ran[2]);
        assert_eq!(ran[0], ran[5]);
        assert_eq!(ran[1], ran[4]);
    }

    #[test]
    fn unit_keys() {
        assert_eq!(
            unit_key(DistMode::LoadScope, "t/a.py::C::test[x::y]", None).as_deref(),
            Some("t/a.py::C")
        );
        assert_eq!(
            unit_key(DistMode::LoadScope, "t/a.py::test", None).as_deref(),
            Some("t/a.py")
        );
        assert_eq!(
            unit_key(DistMode::LoadFile, "t/a.py::C::test", None).as_deref(),
            Some("t/a.py")
        );
        let g = vec!["db".to_string()];
        assert_eq!(
            unit_key(DistMode::LoadGroup, "a.py::t", Some(&g)).as_deref(),
            Some("db")
        );
        assert_eq!(unit_key(DistMode::LoadGroup, "a.py::t", None), None);
        assert_eq!(unit_key(DistMode::Load, "a.py::t", None), None);
    }

    #[test]
    fn requeued_items_go_first_and_stop_empties_pools() {
        let mut s = Scheduler::new(DistMode::Load);
        s.add_collection(0, ids(10));
        s.add_worker(0, 0);
        let Action::Run(first) = s.poll(0) else {
            panic!()
        };
        s.requeue(0, vec![first[0]]);
        s.add_worker(1, 0);
        let Action::Run(second) = s.poll(1) else {
            panic!()
        };
        assert_eq!(second[0], first[0]);
        s.stop();
        assert_eq!(s.poll(1), Action::Shutdown);
        assert!(s.collections_with_work().is_empty());
    }
}
