//! The scheduler: which worker runs which test, next. Pure: no I/O, no clock.
//!
//! Tests are grouped into *units* that must run on one worker (a single test
//! for `load`, a module or class for `loadscope`, a file for `loadfile`, an
//! `xdist_group` for `loadgroup`). Each *collection* has a pool of units: one
//! shared collection in the load modes, one per worker for `each`. The
//! session asks [`Scheduler::poll`] what to send a worker whenever its queue
//! changes, and reports completions, requeues and lost workers back.
//!
//! With a duration history ([`history`]), the load modes start the long
//! tests first, longest first (LPT), and hand out the rest in collection
//! order, so that every worker runs its tests in that order as under xdist:
//! short tests of one module are bundled into chunks (so module-scoped
//! fixtures are set up once where that costs nothing), handed out by
//! expected time. [`shard`] splits a suite across CI jobs by the same
//! chunks, dealt longest first.

pub mod history;

use crate::plan::DistMode;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// One collected item as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemInfo {
    /// Global item id.
    pub id: usize,
    /// Unit key from [`unit_key`] (items with equal keys stay together).
    pub key: Option<String>,
    /// The item's module (file), for locality.
    pub module: String,
    /// Expected duration from history, seconds.
    pub expected: Option<f64>,
}

/// Tests that must run on one worker, and their expected time.
#[derive(Debug, Clone, PartialEq)]
struct Unit {
    items: Vec<usize>,
    weight: f64,
}

/// What to tell a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these global item ids, in order.
    Run(Vec<usize>),
    /// Nothing more will come: finish the queue and exit.
    Shutdown,
    /// Nothing to do right now.
    Wait,
    /// Take these queued tests back from `victim` (they go to the pool when
    /// the victim confirms with [`Scheduler::stolen`]).
    Steal {
        /// The worker to take them from.
        victim: usize,
        /// Global item ids, from the end of its queue.
        items: Vec<usize>,
    },
}

#[derive(Debug, Clone)]
struct WorkerState {
    collection: usize,
    /// Sent and not finished, in order (the first is running or about to).
    queue: VecDeque<usize>,
    /// Tests it finished.
    done: usize,
    pending_time: f64,
    shut: bool,
}

/// The scheduler for one run.
#[derive(Debug, Clone)]
pub struct Scheduler {
    mode: DistMode,
    pools: BTreeMap<usize, VecDeque<Unit>>,
    pool_time: BTreeMap<usize, f64>,
    /// How many tests each collection has.
    sizes: BTreeMap<usize, usize>,
    weights: HashMap<usize, f64>,
    timed: bool,
    workers: BTreeMap<usize, WorkerState>,
    stopped: bool,
    wakeups: Vec<usize>,
    steal_inflight: Option<usize>,
    /// Crashed tests waiting to learn whether they run again: until then
    /// no worker is shut down for want of work.
    held: usize,
    /// `--maxschedchunk`: at most this many tests go to a worker in one
    /// step (`load`, `worksteal`), and a worker is topped up once it holds
    /// fewer.
    max_chunk: Option<usize>,
    /// Scopes, files and groups go out largest first (xdist's
    /// `--loadscope-reorder`, the default), else in collection order.
    reorder_scopes: bool,
    /// Workers still collecting that will share the load modes' pool:
    /// counted in a fair share, and until they join no worker takes more
    /// than its share of the collection, so that the first to collect
    /// does not run what the others would (a short suite still spreads
    /// over every worker, as under xdist).
    joining: usize,
}

/// Group items into units, in collection order: by key; in the load modes
/// with history, short tests of one module are bundled into chunks of at
/// most `quantum` seconds.
fn build_units(mode: DistMode, items: Vec<ItemInfo>, quantum: Option<f64>) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let chunked = quantum.is_some() && matches!(mode, DistMode::Load | DistMode::WorkSteal);
    let mut open_chunk: Option<(String, usize)> = None;
    for it in items {
        let w = it.expected.unwrap_or(0.0);
        if let Some(k) = it.key {
            match by_key.get(&k) {
                Some(&u) => {
                    units[u].items.push(it.id);
                    units[u].weight += w;
                }
                None => {
                    by_key.insert(k, units.len());
                    units.push(Unit {
                        items: vec![it.id],
                        weight: w,
                    });
                }
            }
            continue;
        }
        if chunked {
            let q = quantum.unwrap_or(0.0);
            if let Some((m, u)) = &open_chunk {
                if *m == it.module && units[*u].weight + w <= q {
                    units[*u].items.push(it.id);
                    units[*u].weight += w;
                    continue;
                }
            }
            if w <= q {
                open_chunk = Some((it.module.clone(), units.len()));
            } else {
                open_chunk = None;
            }
        }
        units.push(Unit {
            items: vec![it.id],
            weight: w,
        });
    }
    units
}

/// Longest first; stable, so ties keep collection order.
fn longest_first(units: &mut [Unit]) {
    units.sort_by(|a, b| {
        b.weight
            .partial_cmp(&a.weight)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// A test expected to take less than this is never moved ahead of the
/// tests collected before it: starting it first could not shorten the run
/// by more than its own time.
const LONG_TEST_FLOOR: f64 = 0.1;

/// The order `load` hands units out in, with history: the long tests
/// (longer than a module chunk may be, and than [`LONG_TEST_FLOOR`]) first,
/// longest first, so that none of them starts at the end (LPT); then
/// everything else in collection order, as xdist hands it out. Every worker
/// so runs the tests it gets in collection order (as under xdist) but for
/// the few long ones it started with, and a module's tests, split into
/// chunks, keep their order on whichever worker runs them.
fn long_tests_first(units: Vec<Unit>, quantum: f64) -> Vec<Unit> {
    let (mut long, rest): (Vec<Unit>, Vec<Unit>) = units
        .into_iter()
        .partition(|u| u.items.len() == 1 && u.weight > quantum && u.weight > LONG_TEST_FLOOR);
    longest_first(&mut long);
    long.extend(rest);
    long
}

/// The items of shard `k` (1-based) of `n`: units (as for `load`, with
/// module chunks) dealt longest first to the shard with the least expected
/// time, ties to the lowest shard. Deterministic for the same collection and
/// history; without history every test counts the same, and contiguous runs
/// of the collection stay together.
pub fn shard(items: &[ItemInfo], k: usize, n: usize) -> Vec<usize> {
    if n <= 1 {
        return items.iter().map(|i| i.id).collect();
    }
    let timed = items.iter().any(|i| i.expected.is_some());
    if !timed {
        let len = items.len();
        return items
            .iter()
            .enumerate()
            .filter(|(pos, _)| pos * n / len.max(1) == k - 1)
            .map(|(_, i)| i.id)
            .collect();
    }
    let total: f64 = items.iter().map(|i| i.expected.unwrap_or(0.0)).sum();
    let quantum = total / (n as f64 * 16.0);
    let keyless: Vec<ItemInfo> = items
        .iter()
        .cloned()
        .map(|mut i| {
            i.key = None;
            i
        })
        .collect();
    let mut units = build_units(DistMode::Load, keyless, Some(quantum));
    longest_first(&mut units);
    let mut loads = vec![0.0f64; n];
    let mut mine = Vec::new();
    for u in units {
        let (best, _) = loads
            .iter()
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |acc, (i, l)| if *l < acc.1 { (i, *l) } else { acc },
            );
        loads[best] += u.weight;
        if best == k - 1 {
            mine.extend(u.items);
        }
    }
    mine.sort_unstable();
    mine
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
            pool_time: BTreeMap::new(),
            sizes: BTreeMap::new(),
            weights: HashMap::new(),
            timed: false,
            workers: BTreeMap::new(),
            stopped: false,
            wakeups: Vec::new(),
            steal_inflight: None,
            held: 0,
            max_chunk: None,
            reorder_scopes: true,
            joining: 0,
        }
    }

    /// Send at most `chunk` tests to a worker in one step, as xdist's
    /// `--maxschedchunk` does (a worker still gets two to start: the test
    /// it runs and the one after it).
    pub fn with_max_chunk(mut self, chunk: Option<usize>) -> Self {
        self.max_chunk =
            chunk.filter(|_| matches!(self.mode, DistMode::Load | DistMode::WorkSteal));
        self
    }

    /// Hand out scopes, files and groups largest first (`true`, xdist's
    /// default) or in collection order (`--no-loadscope-reorder`).
    pub fn with_scope_reorder(mut self, reorder: bool) -> Self {
        self.reorder_scopes = reorder;
        self
    }

    /// A crashed test may come back ([`release`](Scheduler::release)):
    /// idle workers wait instead of being shut down.
    pub fn hold(&mut self) {
        self.held += 1;
    }

    /// The held test's fate is known: `item` of `collection` runs again,
    /// or (`None`) not; idle workers are polled again either way.
    pub fn release(&mut self, again: Option<(usize, usize)>) {
        self.held = self.held.saturating_sub(1);
        if let Some((collection, item)) = again {
            self.requeue(collection, vec![item]);
        }
        self.wake_idle();
    }

    /// Add a collection: its items in collection order, with unit keys and,
    /// when there is history, expected durations. `workers` is how many
    /// workers will share it (for the size of module chunks).
    pub fn add_collection(&mut self, collection: usize, items: Vec<ItemInfo>, workers: usize) {
        let timed = items.iter().any(|i| i.expected.is_some());
        self.sizes.insert(collection, items.len());
        let total: f64 = items.iter().map(|i| i.expected.unwrap_or(0.0)).sum();
        for i in &items {
            if let Some(e) = i.expected {
                self.weights.insert(i.id, e);
            }
        }
        let quantum = timed.then(|| total / (workers.max(1) as f64 * 16.0));
        let mut units = build_units(self.mode, items, quantum);
        match self.mode {
            DistMode::Load | DistMode::WorkSteal => {
                if let Some(q) = quantum {
                    units = long_tests_first(units, q);
                }
            }
            DistMode::Each | DistMode::No => {}
            // Scopes, files and groups: the largest first, as xdist orders
            // them (by how many tests they have; by expected time here when
            // there is history), unless told to keep collection order.
            _ if self.reorder_scopes => {
                if quantum.is_some() {
                    longest_first(&mut units);
                } else {
                    units.sort_by_key(|u| std::cmp::Reverse(u.items.len()));
                }
            }
            _ => {}
        }
        self.timed |= timed;
        self.pool_time
            .insert(collection, units.iter().map(|u| u.weight).sum());
        self.pools.insert(collection, units.into());
    }

    /// How many workers are still collecting (they join with
    /// [`add_worker`](Scheduler::add_worker) or never): the load modes
    /// hand out batches as if they were there already.
    pub fn set_joining(&mut self, workers: usize) {
        let fewer = workers < self.joining;
        self.joining = workers;
        if fewer {
            // One joined or never will: a worker that had its share may
            // get more.
            self.wake_idle();
        }
    }

    /// A worker that has collected `collection` and can take tests.
    pub fn add_worker(&mut self, worker: usize, collection: usize) {
        self.workers.insert(
            worker,
            WorkerState {
                collection,
                queue: VecDeque::new(),
                done: 0,
                pending_time: 0.0,
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
        if self.steal_inflight == Some(worker) {
            self.steal_inflight = None;
            self.wake_idle();
        }
    }

    /// The victim of a [`Action::Steal`] gave back `items` (those it had
    /// not started); they go to the front of the pool.
    pub fn stolen(&mut self, victim: usize, items: Vec<usize>) {
        if self.steal_inflight == Some(victim) {
            self.steal_inflight = None;
        }
        let collection = self.workers.get(&victim).map(|w| w.collection).unwrap_or(0);
        self.requeue(collection, items);
        self.wake_idle();
    }

    fn wake_idle(&mut self) {
        let idle = self
            .workers
            .iter()
            .filter(|(_, s)| !s.shut && s.queue.len() <= 1)
            .map(|(w, _)| *w);
        self.wakeups.extend(idle);
    }

    /// One of the worker's tests finished.
    pub fn finished(&mut self, worker: usize, item: usize) {
        let w_time = self.weights.get(&item).copied().unwrap_or(0.0);
        if let Some(w) = self.workers.get_mut(&worker) {
            if let Some(pos) = w.queue.iter().position(|i| *i == item) {
                w.queue.remove(pos);
                w.done += 1;
                w.pending_time = (w.pending_time - w_time).max(0.0);
            }
        }
    }

    /// Tests handed back (from a crashed worker, or stolen): they go to the
    /// front of their collection's pool, as one unit.
    pub fn requeue(&mut self, collection: usize, items: Vec<usize>) {
        if items.is_empty() || self.stopped {
            return;
        }
        let weight = |id: &usize| self.weights.get(id).copied().unwrap_or(0.0);
        let units: Vec<Unit> = if matches!(
            self.mode,
            DistMode::Load | DistMode::WorkSteal | DistMode::No | DistMode::Each
        ) {
            items
                .iter()
                .map(|id| Unit {
                    items: vec![*id],
                    weight: weight(id),
                })
                .collect()
        } else {
            vec![Unit {
                weight: items.iter().map(weight).sum(),
                items,
            }]
        };
        *self.pool_time.entry(collection).or_default() +=
            units.iter().map(|u| u.weight).sum::<f64>();
        let pool = self.pools.entry(collection).or_default();
        for u in units.into_iter().rev() {
            pool.push_front(u);
        }
    }

    /// Stop scheduling: every pool is emptied, every worker shut down.
    pub fn stop(&mut self) {
        self.stopped = true;
        self.pools.values_mut().for_each(VecDeque::clear);
        self.pool_time.values_mut().for_each(|t| *t = 0.0);
        self.wakeups.extend(
            self.workers
                .iter()
                .filter(|(_, s)| !s.shut)
                .map(|(w, _)| *w),
        );
    }

    /// Collections that still have unassigned tests.
    pub fn collections_with_work(&self) -> Vec<usize> {
        self.pools
            .iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(c, _)| *c)
            .collect()
    }

    /// The worker tests are being taken from (until it answers).
    pub fn stealing_from(&self) -> Option<usize> {
        self.steal_inflight
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
            .saturating_add(self.joining)
            .max(1);
        let mode = self.mode;
        if self.pools.get(&collection).is_none_or(VecDeque::is_empty) {
            return self.steal_or_shutdown(worker, collection);
        }
        let pool = self.pools.entry(collection).or_default();
        let state = self.workers.get_mut(&worker).expect("checked above");
        let pending = state.queue.len();
        let remaining = pool.len();
        // While workers are still to join, a worker takes no more than its
        // share of the collection.
        let share =
            (self.joining > 0 && !matches!(mode, DistMode::Each | DistMode::No)).then(|| {
                self.sizes
                    .get(&collection)
                    .copied()
                    .unwrap_or(0)
                    .div_ceil(live)
            });
        let taken = state.done + pending;
        if share.is_some_and(|s| taken >= s) {
            return Action::Wait;
        }
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
        // With history, batches are sized by expected time: a quarter of a
        // fair share of what is left, so long tests go out one by one and
        // short ones in bulk.
        let time_goal = (self.timed && !matches!(mode, DistMode::Each | DistMode::No))
            .then(|| self.pool_time.get(&collection).copied().unwrap_or(0.0) / (live as f64 * 4.0));
        let cap = self.max_chunk.unwrap_or(usize::MAX);
        let low = target.div_ceil(2).max(2).min(cap.max(2));
        let busy = match time_goal {
            // `--maxschedchunk` bounds what a worker holds, history or not.
            Some(t) => {
                (pending >= 2 && state.pending_time >= t / 2.0)
                    || (self.max_chunk.is_some() && pending >= low)
            }
            None => pending >= low,
        };
        if busy {
            return Action::Wait;
        }
        // Fewer than two per worker left: an idle worker gets one, so the
        // rest can go to the other workers.
        let scarce = !matches!(mode, DistMode::Each | DistMode::No) && remaining.div_ceil(live) < 2;
        let goal = if pending == 0 && scarce { 1 } else { target };
        let mut batch = Vec::new();
        let mut batch_time = 0.0;
        loop {
            let capped = pending + batch.len() >= 2 && batch.len() >= cap;
            let enough = capped
                || share.is_some_and(|s| taken + batch.len() >= s)
                || match time_goal {
                    Some(t) if !(pending == 0 && scarce) => {
                        pending + batch.len() >= 2
                            && (batch_time >= t || pending + batch.len() >= 64)
                    }
                    _ => pending + batch.len() >= goal,
                };
            if enough {
                break;
            }
            match pool.pop_front() {
                Some(mut unit) => {
                    // A module chunk larger than what `--maxschedchunk`
                    // leaves room for is split: the rest stays first in
                    // the pool.
                    let room = cap.max(2usize.saturating_sub(pending)) - batch.len();
                    if unit.items.len() > room {
                        let rest = unit.items.split_off(room);
                        let rest_time: f64 = rest
                            .iter()
                            .map(|i| self.weights.get(i).copied().unwrap_or(0.0))
                            .sum();
                        unit.weight = (unit.weight - rest_time).max(0.0);
                        pool.push_front(Unit {
                            items: rest,
                            weight: rest_time,
                        });
                    }
                    batch_time += unit.weight;
                    batch.extend(unit.items);
                }
                None => break,
            }
        }
        state.pending_time += batch_time;
        if let Some(t) = self.pool_time.get_mut(&collection) {
            *t = (*t - batch_time).max(0.0);
        }
        state.queue.extend(batch.iter().copied());
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

    /// The pool is empty. A worker with at most one queued test (so idle,
    /// or waiting to learn its last test's successor) takes half of what
    /// the most loaded worker has queued but not started (`load` and
    /// `worksteal`); with nothing to take it is shut down.
    fn steal_or_shutdown(&mut self, worker: usize, collection: usize) -> Action {
        let stealing = matches!(self.mode, DistMode::Load | DistMode::WorkSteal) && !self.stopped;
        let pending = self.workers.get(&worker).map_or(0, |w| w.queue.len());
        if stealing && pending <= 1 {
            if self.steal_inflight.is_some() {
                // What is being stolen may come to this worker.
                return Action::Wait;
            }
            // Running test and the one after it stay; the rest can move.
            let victim = self
                .workers
                .iter()
                .filter(|(w, s)| **w != worker && s.collection == collection)
                .map(|(w, s)| (*w, s.queue.len().saturating_sub(2)))
                .filter(|(_, stealable)| *stealable >= 1)
                .max_by_key(|(w, stealable)| (*stealable, std::cmp::Reverse(*w)));
            if let Some((victim, stealable)) = victim {
                let take = stealable.div_ceil(2);
                let weights = &self.weights;
                let v = self.workers.get_mut(&victim).expect("chosen above");
                let split = v.queue.len() - take;
                let items: Vec<usize> = v.queue.drain(split..).collect();
                let t: f64 = items
                    .iter()
                    .map(|i| weights.get(i).copied().unwrap_or(0.0))
                    .sum();
                v.pending_time = (v.pending_time - t).max(0.0);
                self.steal_inflight = Some(victim);
                return Action::Steal { victim, items };
            }
        }
        if self.held > 0 && !self.stopped {
            // Its last test waits for its successor (or shutdown) a moment.
            return Action::Wait;
        }
        if let Some(state) = self.workers.get_mut(&worker) {
            state.shut = true;
        }
        Action::Shutdown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake agent answering a steal: it gives back the requested tests it
    /// holds, except the first `keep` (running, and chosen as successor).
    fn fake_steal(
        s: &mut Scheduler,
        queue: &mut VecDeque<usize>,
        victim: usize,
        items: &[usize],
        keep: usize,
    ) {
        let stolen: Vec<usize> = queue
            .iter()
            .skip(keep)
            .copied()
            .filter(|i| items.contains(i))
            .collect();
        queue.retain(|i| !stolen.contains(i));
        s.stolen(victim, stolen);
    }

    #[test]
    fn a_held_crash_keeps_idle_workers_until_its_fate_is_known() {
        let mut s = Scheduler::new(DistMode::Load);
        s.add_collection(0, infos(vec![(0, None), (1, None)], None), 2);
        s.add_worker(0, 0);
        s.add_worker(1, 0);
        assert_eq!(s.poll(0), Action::Run(vec![0]));
        assert_eq!(s.poll(1), Action::Run(vec![1]));
        // Worker 0's test crashed it; worker 1 finished its own.
        s.remove_worker(0);
        s.hold();
        s.finished(1, 1);
        s.take_wakeups();
        assert_eq!(s.poll(1), Action::Wait);
        // It runs again: the idle worker is woken and gets it.
        s.release(Some((0, 0)));
        assert_eq!(s.take_wakeups(), vec![1]);
        assert_eq!(s.poll(1), Action::Run(vec![0]));
        s.take_wakeups();
        s.finished(1, 0);
        s.hold();
        assert_eq!(s.poll(1), Action::Wait);
        // Not again: now it is shut down.
        s.release(None);
        assert_eq!(s.take_wakeups(), vec![1]);
        assert_eq!(s.poll(1), Action::Shutdown);
    }

    fn infos(items: Vec<(usize, Option<String>)>, expected: Option<&[f64]>) -> Vec<ItemInfo> {
        items
            .into_iter()
            .map(|(id, key)| ItemInfo {
                id,
                key,
                module: format!("m{}.py", id / 10),
                expected: expected.map(|e| e[id]),
            })
            .collect()
    }

    /// Run a suite with known durations on fake workers and a fake clock;
    /// return the makespan. Workers behave like agents: a test starts only
    /// once its successor (or shutdown) is known.
    fn makespan(mode: DistMode, durations: &[f64], workers: usize, history: bool) -> f64 {
        timed_run(mode, durations, workers, history).0
    }

    /// [`makespan`], and the tests each worker ran, in the order it ran them.
    fn timed_run(
        mode: DistMode,
        durations: &[f64],
        workers: usize,
        history: bool,
    ) -> (f64, Vec<Vec<usize>>) {
        let mut order: Vec<Vec<usize>> = vec![Vec::new(); workers];
        let mut s = Scheduler::new(mode);
        let items: Vec<(usize, Option<String>)> = (0..durations.len()).map(|i| (i, None)).collect();
        s.add_collection(0, infos(items, history.then_some(durations)), workers);
        for w in 0..workers {
            s.add_worker(w, 0);
        }
        let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); workers];
        let mut shut = vec![false; workers];
        let mut busy_until = vec![0.0f64; workers];
        let mut running: Vec<Option<usize>> = vec![None; workers];
        let mut done = 0;
        let mut now = 0.0f64;
        let poll = |s: &mut Scheduler,
                    w: usize,
                    queues: &mut Vec<VecDeque<usize>>,
                    shut: &mut Vec<bool>,
                    running: &Vec<Option<usize>>| {
            let mut todo = vec![w];
            while let Some(w) = todo.pop() {
                if shut[w] {
                    continue;
                }
                match s.poll(w) {
                    Action::Run(b) => queues[w].extend(b),
                    Action::Shutdown => shut[w] = true,
                    Action::Wait => {}
                    Action::Steal { victim, items } => {
                        // a fake agent: the successor of a running test stays
                        let keep = usize::from(running[victim].is_some());
                        fake_steal(s, &mut queues[victim], victim, &items, keep);
                    }
                }
                todo.extend(s.take_wakeups());
            }
        };
        for w in 0..workers {
            poll(&mut s, w, &mut queues, &mut shut, &running);
        }
        while done < durations.len() {
            for w in 0..workers {
                if running[w].is_none()
                    && (queues[w].len() >= 2 || (shut[w] && !queues[w].is_empty()))
                {
                    let item = queues[w].pop_front().unwrap();
                    running[w] = Some(item);
                    order[w].push(item);
                    busy_until[w] = now + durations[item];
                }
            }
            let (w, t) = busy_until
                .iter()
                .enumerate()
                .filter(|(w, _)| running[*w].is_some())
                .map(|(w, t)| (w, *t))
                .fold(
                    (usize::MAX, f64::INFINITY),
                    |a, b| if b.1 < a.1 { b } else { a },
                );
            assert!(w != usize::MAX, "deadlock: {queues:?} {shut:?}");
            now = t;
            let item = running[w].take().unwrap();
            s.finished(w, item);
            done += 1;
            poll(&mut s, w, &mut queues, &mut shut, &running);
        }
        (now, order)
    }

    fn heavy_tailed(n: usize) -> Vec<f64> {
        // deterministic: mostly 20-80 ms, ten of 1 s scattered, one of 12 s late
        let mut d: Vec<f64> = (0..n)
            .map(|i| 0.02 + 0.06 * (((i * 7919) % 100) as f64 / 100.0))
            .collect();
        for k in 0..10 {
            d[(k * 37 + 5) % n] = 1.0;
        }
        d[n - 20] = 12.0;
        d
    }

    #[test]
    fn lpt_with_history_is_near_the_lower_bound() {
        let d = heavy_tailed(400);
        for workers in [2, 4] {
            let total: f64 = d.iter().sum();
            let bound = (total / workers as f64).max(12.0);
            let with = makespan(DistMode::Load, &d, workers, true);
            let without = makespan(DistMode::Load, &d, workers, false);
            assert!(
                with <= bound * 1.10,
                "workers={workers}: {with} vs bound {bound} (without history {without})"
            );
            assert!(with <= without, "history made it worse: {with} > {without}");
        }
    }

    #[test]
    fn with_history_workers_run_their_tests_in_collection_order_after_the_long_ones() {
        // Short tests of slightly different expected times (which ordering
        // by time alone would shuffle), a few long ones among them.
        let mut d: Vec<f64> = (0..300)
            .map(|i| 0.01 + 0.001 * ((i * 37) % 11) as f64)
            .collect();
        for k in [40, 150, 260] {
            d[k] = 2.0;
        }
        for workers in [2, 3] {
            let (_, order) = timed_run(DistMode::Load, &d, workers, true);
            for seq in &order {
                let long: Vec<usize> = seq.iter().copied().filter(|i| d[*i] > 1.0).collect();
                // Long tests come first, before any short one.
                assert!(seq.iter().take(long.len()).all(|i| d[*i] > 1.0), "{seq:?}");
                // The rest in collection order, but where the end of the run
                // moved tests from one worker to another (at most once per
                // steal).
                let short: Vec<usize> = seq.iter().copied().filter(|i| d[*i] <= 1.0).collect();
                let descents = short.windows(2).filter(|w| w[1] < w[0]).count();
                assert!(
                    descents <= 2,
                    "workers={workers}: {descents} out of order: {short:?}"
                );
            }
        }
    }

    #[test]
    fn scopes_go_largest_first_unless_told_to_keep_collection_order() {
        let nodeids = [
            "a.py::t1", "b.py::t1", "b.py::t2", "c.py::t1", "c.py::t2", "c.py::t3",
        ];
        let infos_for = |mode| {
            let items = nodeids
                .iter()
                .enumerate()
                .map(|(i, n)| (i, unit_key(mode, n, None)))
                .collect();
            infos(items, None)
        };
        for (reorder, want) in [
            (true, vec![3, 4, 5, 1, 2, 0]),
            (false, vec![0, 1, 2, 3, 4, 5]),
        ] {
            for mode in [DistMode::LoadFile, DistMode::LoadScope] {
                let mut s = Scheduler::new(mode).with_scope_reorder(reorder);
                s.add_collection(0, infos_for(mode), 1);
                s.add_worker(0, 0);
                let mut ran = Vec::new();
                loop {
                    match s.poll(0) {
                        Action::Run(b) => ran.extend(b),
                        Action::Shutdown => break,
                        other => panic!("{other:?}"),
                    }
                    for i in ran.clone() {
                        s.finished(0, i);
                    }
                }
                assert_eq!(ran, want, "reorder={reorder} {mode:?}");
            }
        }
    }

    #[test]
    fn shards_are_deterministic_disjoint_and_balanced() {
        let d = heavy_tailed(400);
        let items = infos((0..400).map(|i| (i, None)).collect(), Some(&d));
        let n = 4;
        let shards: Vec<Vec<usize>> = (1..=n).map(|k| shard(&items, k, n)).collect();
        let mut all: Vec<usize> = shards.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..400).collect::<Vec<_>>());
        assert_eq!(
            shards,
            (1..=n).map(|k| shard(&items, k, n)).collect::<Vec<_>>()
        );
        let times: Vec<f64> = shards
            .iter()
            .map(|s| s.iter().map(|i| d[*i]).sum())
            .collect();
        let mean = times.iter().sum::<f64>() / n as f64;
        let max = times.iter().cloned().fold(0.0, f64::max);
        // one 12 s test bounds what any split can do
        assert!(max <= (mean * 1.10).max(12.0 + 0.5), "{times:?}");
        let plain = infos((0..10).map(|i| (i, None)).collect(), None);
        assert_eq!(shard(&plain, 1, 3), vec![0, 1, 2, 3]);
        assert_eq!(shard(&plain, 3, 3), vec![7, 8, 9]);
    }

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
        s.add_collection(0, infos(items, None), workers);
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
                        Action::Steal { victim, items } => {
                            fake_steal(&mut s, &mut queues[victim], victim, &items, 2);
                        }
                    }
                }
                // the agent needs a successor (or shutdown) before it runs
                if queues[w].len() >= 2 || (shut[w] && !queues[w].is_empty()) {
                    let item = queues[w].pop_front().unwrap();
                    assert!(ran[item].is_none(), "item {item} ran twice");
                    ran[item] = Some(w);
                    s.finished(w, item);
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
    fn workers_still_collecting_count_in_a_fair_share() {
        // The first of two workers to collect takes what it would beside
        // the other, not twice that; the other joins for its share.
        let batch = |joining: usize, registered: usize| {
            let mut s = Scheduler::new(DistMode::Load);
            s.add_collection(0, infos(ids(100), None), 2);
            for w in 0..registered {
                s.add_worker(w, 0);
            }
            s.set_joining(joining);
            match s.poll(0) {
                Action::Run(b) => b.len(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(batch(1, 1), batch(0, 2));
        assert_eq!(batch(0, 1), 2 * batch(0, 2));
        let mut s = Scheduler::new(DistMode::Load);
        s.add_collection(0, infos(ids(200), None), 2);
        s.add_worker(0, 0);
        s.set_joining(1);
        let Action::Run(first) = s.poll(0) else {
            panic!("no work for the first worker")
        };
        s.set_joining(0);
        s.add_worker(1, 0);
        let Action::Run(second) = s.poll(1) else {
            panic!("no work for the one that joined")
        };
        assert!(first.iter().all(|i| !second.contains(i)));
    }

    #[test]
    fn until_the_others_join_a_worker_takes_no_more_than_its_share() {
        // Eight short tests, two workers, the second still collecting: the
        // first runs what it can of its four and waits (it needs a
        // successor to start its last one); the second joins for the rest.
        let mut s = Scheduler::new(DistMode::Load);
        s.add_collection(0, infos(ids(8), None), 2);
        s.add_worker(0, 0);
        s.set_joining(1);
        let mut queue: VecDeque<usize> = VecDeque::new();
        let mut ran = Vec::new();
        for _ in 0..20 {
            if let Action::Run(b) = s.poll(0) {
                queue.extend(b);
            }
            if queue.len() >= 2 {
                let item = queue.pop_front().unwrap();
                s.finished(0, item);
                ran.push(item);
            }
        }
        assert_eq!(ran.len() + queue.len(), 4, "{ran:?} {queue:?}");
        // The second joins; both go on to the end.
        s.set_joining(0);
        assert!(s.take_wakeups().contains(&0), "the first is woken");
        s.add_worker(1, 0);
        let mut queues = [queue, VecDeque::new()];
        let mut shut = [false, false];
        let mut by = [ran.len(), 0];
        while !(shut[0] && shut[1] && queues.iter().all(VecDeque::is_empty)) {
            for w in [1, 0] {
                if !shut[w] {
                    match s.poll(w) {
                        Action::Run(b) => queues[w].extend(b),
                        Action::Shutdown => shut[w] = true,
                        Action::Wait => {}
                        other => panic!("{other:?}"),
                    }
                }
                if queues[w].len() >= 2 || (shut[w] && !queues[w].is_empty()) {
                    let item = queues[w].pop_front().unwrap();
                    s.finished(w, item);
                    by[w] += 1;
                }
            }
        }
        assert_eq!(by[0] + by[1], 8);
        assert!(by[1] >= 2, "{by:?}");
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
    fn max_chunk_caps_each_step_and_every_item_still_runs_once() {
        // With history too, where short tests of a module go out as one
        // chunk (ten tests per module here).
        let tiny = vec![0.001; 200];
        for (cap, history) in [1, 3, 10].into_iter().flat_map(|c| [(c, false), (c, true)]) {
            let n = 200;
            let mut s = Scheduler::new(DistMode::Load).with_max_chunk(Some(cap));
            s.add_collection(0, infos(ids(n), history.then_some(&tiny[..])), 2);
            let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); 2];
            let mut shut = [false; 2];
            s.add_worker(0, 0);
            s.add_worker(1, 0);
            let mut ran = vec![false; n];
            let mut steps = 0;
            while !(shut.iter().all(|s| *s) && queues.iter().all(VecDeque::is_empty)) {
                steps += 1;
                assert!(steps < 10 * n, "no progress with cap {cap}");
                for w in 0..2 {
                    if !shut[w] {
                        match s.poll(w) {
                            Action::Run(b) => {
                                // Two to start with (the test and its
                                // successor), else at most the cap.
                                assert!(
                                    b.len() <= cap.max(2 - queues[w].len().min(2)),
                                    "cap {cap}: {} at once",
                                    b.len()
                                );
                                queues[w].extend(b);
                            }
                            Action::Shutdown => shut[w] = true,
                            Action::Wait => {}
                            Action::Steal { victim, items } => {
                                fake_steal(&mut s, &mut queues[victim], victim, &items, 2);
                            }
                        }
                    }
                    assert!(
                        queues[w].len() <= 2 * cap.max(2),
                        "cap {cap}: queue too deep"
                    );
                    if queues[w].len() >= 2 || (shut[w] && !queues[w].is_empty()) {
                        let item = queues[w].pop_front().unwrap();
                        assert!(!ran[item], "item {item} ran twice");
                        ran[item] = true;
                        s.finished(w, item);
                    }
                }
            }
            assert!(ran.iter().all(|r| *r), "cap {cap}: not every item ran");
        }
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
        s.add_collection(0, infos(ids(10), None), 2);
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

    /// Property: for random suites, worker counts, modes, crashes (the
    /// running test is reported, the rest requeued, a replacement joins)
    /// and steals, every test gets exactly one outcome.
    #[test]
    fn property_every_test_gets_exactly_one_outcome() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n.max(1)
        };
        let modes = [
            DistMode::Load,
            DistMode::WorkSteal,
            DistMode::LoadFile,
            DistMode::LoadScope,
            DistMode::No,
        ];
        for case in 0..300 {
            let mode = modes[rnd(modes.len() as u64) as usize];
            let n = rnd(120) as usize;
            let workers = if mode == DistMode::No {
                1
            } else {
                1 + rnd(6) as usize
            };
            let history = rnd(2) == 0;
            let durations: Vec<f64> = (0..n).map(|_| 0.01 + rnd(1000) as f64 / 100.0).collect();
            let items: Vec<ItemInfo> = (0..n)
                .map(|i| {
                    let nodeid = format!("m{}.py::C{}::t{i}", i / 7, i / 3);
                    ItemInfo {
                        id: i,
                        key: unit_key(mode, &nodeid, None),
                        module: history::module_of(&nodeid).to_string(),
                        expected: history.then(|| durations[i]),
                    }
                })
                .collect();
            let mut s = Scheduler::new(mode);
            s.add_collection(0, items, workers);
            let mut queues: BTreeMap<usize, VecDeque<usize>> = BTreeMap::new();
            let mut shut: BTreeMap<usize, bool> = BTreeMap::new();
            for w in 0..workers {
                s.add_worker(w, 0);
                queues.insert(w, VecDeque::new());
                shut.insert(w, false);
            }
            let mut next_id = workers;
            let mut outcomes = vec![0u32; n];
            let mut crashes_left = rnd(4);
            let mut steps = 0;
            loop {
                steps += 1;
                assert!(steps < 100_000, "case {case}: no progress");
                let mut order: Vec<usize> = queues.keys().copied().collect();
                order.extend(s.take_wakeups());
                let mut progressed = false;
                for w in order {
                    if !queues.contains_key(&w) {
                        continue;
                    }
                    if !shut[&w] {
                        match s.poll(w) {
                            Action::Run(b) => queues.get_mut(&w).unwrap().extend(b),
                            Action::Shutdown => {
                                shut.insert(w, true);
                            }
                            Action::Wait => {}
                            Action::Steal { victim, items } => {
                                fake_steal(
                                    &mut s,
                                    queues.get_mut(&victim).unwrap(),
                                    victim,
                                    &items,
                                    2,
                                );
                                progressed = true;
                            }
                        }
                    }
                    let q = queues.get_mut(&w).unwrap();
                    if q.len() >= 2 || (shut[&w] && !q.is_empty()) {
                        let item = q.pop_front().unwrap();
                        outcomes[item] += 1;
                        progressed = true;
                        if crashes_left > 0 && rnd(5) == 0 {
                            // the worker dies after reporting this one
                            crashes_left -= 1;
                            let rest: Vec<usize> = queues.remove(&w).unwrap().into_iter().collect();
                            shut.remove(&w);
                            s.remove_worker(w);
                            s.requeue(0, rest);
                            s.add_worker(next_id, 0);
                            queues.insert(next_id, VecDeque::new());
                            shut.insert(next_id, false);
                            next_id += 1;
                        } else {
                            s.finished(w, item);
                        }
                    }
                }
                let idle = queues.values().all(VecDeque::is_empty) && shut.values().all(|s| *s);
                if idle && !progressed {
                    break;
                }
            }
            assert!(
                outcomes.iter().all(|o| *o == 1),
                "case {case} ({mode}, n={n}, workers={workers}): {outcomes:?}"
            );
        }
    }
}
