//! Integration tests: the real `rtest` binary on real pytest projects.
//!
//! The harness makes (once) a virtualenv with pytest under
//! `target/test-venv` unless `RTEST_TEST_VENV` names one, and runs every
//! project in its own temp dir with that venv active.

mod chaos;
mod config;
mod dropin;
mod errors;
mod exec;
mod faults;
mod harness;
mod install;
mod junit;
mod outputs;
mod plugins;
mod run;
mod sched;
mod socket;
mod ssh;
mod sync;
