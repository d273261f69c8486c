//! Config elements with their own validation: each setting that is more
//! than a number or a path has one owner type here.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// How tests are distributed across workers (pytest-xdist's `--dist`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DistMode {
    /// Any test to any free worker.
    Load,
    /// Tests of one module or class stay on one worker.
    LoadScope,
    /// Tests of one file stay on one worker.
    LoadFile,
    /// Tests with the same `xdist_group` mark stay on one worker.
    LoadGroup,
    /// Like load, stealing queued tests from busy workers at the end.
    WorkSteal,
    /// Every worker runs every test.
    Each,
    /// One worker runs everything in collection order.
    No,
}

impl DistMode {
    /// All modes, in documentation order.
    pub const ALL: [DistMode; 7] = [
        DistMode::Load,
        DistMode::LoadScope,
        DistMode::LoadFile,
        DistMode::LoadGroup,
        DistMode::WorkSteal,
        DistMode::Each,
        DistMode::No,
    ];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DistMode::Load => "load",
            DistMode::LoadScope => "loadscope",
            DistMode::LoadFile => "loadfile",
            DistMode::LoadGroup => "loadgroup",
            DistMode::WorkSteal => "worksteal",
            DistMode::Each => "each",
            DistMode::No => "no",
        }
    }
}

impl fmt::Display for DistMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DistMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DistMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = DistMode::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown dist mode {s:?} (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// What `-n`/`numprocesses` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NumProcesses {
    /// A fixed number of workers.
    Count(usize),
    /// One per physical core (`auto`).
    Auto,
    /// One per logical CPU (`logical`).
    Logical,
}

impl FromStr for NumProcesses {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v {
            "auto" => Ok(NumProcesses::Auto),
            "logical" => Ok(NumProcesses::Logical),
            _ => v.parse::<usize>().map(NumProcesses::Count).map_err(|_| {
                format!("expected a whole number of 0 or more, 'auto' or 'logical', got {v:?}")
            }),
        }
    }
}

impl fmt::Display for NumProcesses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumProcesses::Count(n) => write!(f, "{n}"),
            NumProcesses::Auto => f.write_str("auto"),
            NumProcesses::Logical => f.write_str("logical"),
        }
    }
}
