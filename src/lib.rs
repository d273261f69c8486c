//! rtest: run pytest suites distributed across local CPUs, other Python
//! interpreters and remote machines.
//!
//! The coordinator (this crate) never imports Python: it plans, starts
//! gateways to fresh Pythons running the embedded agent
//! (`python/agent.py`), schedules test ids, and reports. Modules are listed
//! in layer order; each uses only those above it.

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod gateway;
pub mod plan;
pub mod protocol;
pub mod report;
pub mod run;
pub mod sched;
pub mod session;
pub mod spec;
pub mod sync;

#[cfg(test)]
mod properties;
