//! Scheduler microbenchmark: cost per scheduling decision with 1,000,000
//! items and 512 workers (`cargo bench --bench sched`).
//!
//! One iteration drives a whole run with fake workers: every worker is
//! polled, finishes its queued tests one by one, and is polled again; the
//! time divided by the number of decisions (polls plus completions) is the
//! cost per decision.

use rtest::plan::DistMode;
use rtest::sched::{Action, ItemInfo, Scheduler};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

const ITEMS: usize = 1_000_000;
const WORKERS: usize = 512;

/// Counts live and peak heap bytes, for the memory line.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    for history in [false, true] {
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let input = items(history);
        let mut s = Scheduler::new(DistMode::Load);
        s.add_collection(0, input, WORKERS);
        for w in 0..WORKERS {
            s.add_worker(w, 0);
        }
        let held = LIVE.load(Ordering::Relaxed) - before;
        let peak = PEAK.load(Ordering::Relaxed) - before;
        let start = std::time::Instant::now();
        let decisions = drive(s);
        let per = start.elapsed().as_nanos() as f64 / decisions as f64;
        println!(
            "history={history}: scheduler holds {:.1} MB for {ITEMS} items and {WORKERS} workers (peak {:.1} MB with the input); {decisions} decisions, {per:.0} ns each",
            held as f64 / 1e6,
            peak as f64 / 1e6
        );
    }
    divan::main();
}

fn items(history: bool) -> Vec<ItemInfo> {
    (0..ITEMS)
        .map(|i| ItemInfo {
            id: i,
            key: None,
            module: format!("tests/test_m{}.py", i / 100),
            expected: history.then(|| 0.001 + ((i * 7919) % 1000) as f64 / 1000.0),
        })
        .collect()
}

/// Runs every item through the scheduler; returns the number of decisions.
fn drive(mut s: Scheduler) -> usize {
    let mut decisions = 0;
    let mut queues: Vec<std::collections::VecDeque<usize>> = vec![Default::default(); WORKERS];
    let mut shut = vec![false; WORKERS];
    let mut live = WORKERS;
    let mut todo: Vec<usize> = (0..WORKERS).collect();
    while live > 0 {
        while let Some(w) = todo.pop() {
            if shut[w] {
                continue;
            }
            decisions += 1;
            match s.poll(w) {
                Action::Run(b) => queues[w].extend(b),
                Action::Shutdown => {
                    shut[w] = true;
                    live -= 1;
                }
                Action::Steal { victim, items } => {
                    let q = &mut queues[victim];
                    let stolen: Vec<usize> = q
                        .iter()
                        .skip(2)
                        .copied()
                        .filter(|i| items.contains(i))
                        .collect();
                    q.retain(|i| !stolen.contains(i));
                    s.stolen(victim, stolen);
                }
                Action::Wait => {}
            }
            todo.extend(s.take_wakeups());
        }
        for w in 0..WORKERS {
            if queues[w].len() >= 2 || (shut[w] && !queues[w].is_empty()) {
                let item = queues[w].pop_front().unwrap_or_default();
                s.finished(w, item);
                decisions += 1;
                todo.push(w);
            }
        }
        if todo.is_empty() && live > 0 {
            todo.extend((0..WORKERS).filter(|w| !shut[*w]));
        }
    }
    decisions
}

#[divan::bench(args = [false, true], sample_count = 3, sample_size = 1)]
fn full_run(bencher: divan::Bencher, history: bool) {
    bencher
        .with_inputs(|| {
            let mut s = Scheduler::new(DistMode::Load);
            s.add_collection(0, items(history), WORKERS);
            for w in 0..WORKERS {
                s.add_worker(w, 0);
            }
            s
        })
        .bench_values(|s| {
            let decisions = drive(s);
            divan::black_box(decisions)
        });
}

/// Building the pool (LPT order and module chunks) for 1M items.
#[divan::bench(args = [false, true], sample_count = 3, sample_size = 1)]
fn add_collection(bencher: divan::Bencher, history: bool) {
    bencher
        .with_inputs(|| items(history))
        .bench_values(|items| {
            let mut s = Scheduler::new(DistMode::Load);
            s.add_collection(0, items, WORKERS);
            divan::black_box(s)
        });
}
