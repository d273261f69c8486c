//! Test duration history: what the scheduler expects each test to take.
//!
//! After every run the per-test durations (setup + call + teardown) are
//! merged into `.rtest/durations.json` at the rootdir as an exponential
//! moving average. The file is bounded (the tests seen longest ago are
//! dropped first) and written atomically, so a killed run leaves the old
//! history intact. This module is pure; the session reads and writes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Weight of the newest observation in the moving average.
const ALPHA: f64 = 0.5;
/// Most tests the file keeps.
pub const MAX_ENTRIES: usize = 200_000;

/// The durations file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Format version.
    #[serde(default = "version")]
    pub version: u32,
    /// How many runs have been merged.
    #[serde(default)]
    pub runs: u64,
    /// Per node id.
    #[serde(default)]
    pub tests: BTreeMap<String, Entry>,
}

fn version() -> u32 {
    1
}

/// One test's history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Moving average of the duration, seconds.
    pub d: f64,
    /// The run in which it was last seen.
    pub seen: u64,
}

impl History {
    /// Parse a durations file; a corrupt file is treated as empty.
    pub fn parse(bytes: &[u8]) -> History {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// Whether there is anything to go by.
    pub fn is_empty(&self) -> bool {
        self.tests.is_empty()
    }

    /// Merge one run's observed durations.
    pub fn merge(&mut self, observed: impl IntoIterator<Item = (String, f64)>) {
        self.version = 1;
        self.runs += 1;
        let run = self.runs;
        for (id, d) in observed {
            if !d.is_finite() || d < 0.0 {
                continue;
            }
            self.tests
                .entry(id)
                .and_modify(|e| {
                    e.d = ALPHA * d + (1.0 - ALPHA) * e.d;
                    e.seen = run;
                })
                .or_insert(Entry { d, seen: run });
        }
        if self.tests.len() > MAX_ENTRIES {
            let mut by_age: Vec<(u64, String)> = self
                .tests
                .iter()
                .map(|(k, e)| (e.seen, k.clone()))
                .collect();
            by_age.sort();
            let excess = self.tests.len() - MAX_ENTRIES;
            for (_, k) in by_age.into_iter().take(excess) {
                self.tests.remove(&k);
            }
        }
    }

    /// Expected durations for `ids`: the history where known, else the
    /// median of the test's module, else the median of the whole history.
    /// `None` when there is no history at all.
    pub fn estimate(&self, ids: &[String]) -> Option<Vec<f64>> {
        if self.tests.is_empty() {
            return None;
        }
        let mut by_module: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (id, e) in &self.tests {
            by_module.entry(module_of(id)).or_default().push(e.d);
        }
        let all: Vec<f64> = self.tests.values().map(|e| e.d).collect();
        let suite = median(all);
        let module_median: BTreeMap<&str, f64> =
            by_module.into_iter().map(|(m, v)| (m, median(v))).collect();
        Some(
            ids.iter()
                .map(|id| match self.tests.get(id) {
                    Some(e) => e.d,
                    None => module_median.get(module_of(id)).copied().unwrap_or(suite),
                })
                .collect(),
        )
    }
}

/// The module (file) part of a node id.
pub fn module_of(nodeid: &str) -> &str {
    nodeid.split("::").next().unwrap_or(nodeid)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_a_moving_average_and_bounded() {
        let mut h = History::default();
        h.merge([("a.py::t".to_string(), 2.0)]);
        h.merge([("a.py::t".to_string(), 4.0)]);
        assert_eq!(h.tests["a.py::t"].d, 3.0);
        assert_eq!(h.runs, 2);
        h.merge([("b.py::t".to_string(), f64::NAN)]);
        assert!(!h.tests.contains_key("b.py::t"));
    }

    #[test]
    fn unknown_tests_get_their_module_median_then_the_suite_median() {
        let mut h = History::default();
        h.merge([
            ("a.py::x".to_string(), 1.0),
            ("a.py::y".to_string(), 3.0),
            ("b.py::z".to_string(), 10.0),
        ]);
        let e = h
            .estimate(&["a.py::x".into(), "a.py::new".into(), "c.py::new".into()])
            .unwrap();
        assert_eq!(e, vec![1.0, 2.0, 3.0]);
        assert!(History::default().estimate(&["a".into()]).is_none());
    }

    #[test]
    fn corrupt_files_are_empty_and_round_trip_is_stable() {
        assert!(History::parse(b"{not json").is_empty());
        let mut h = History::default();
        h.merge([("a.py::t".to_string(), 0.5)]);
        let text = serde_json::to_vec(&h).unwrap();
        assert_eq!(History::parse(&text), h);
    }
}
