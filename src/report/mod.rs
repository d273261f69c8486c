//! Reporters: consumers of session [`Event`](crate::events::Event)s.
//!
//! [`terminal`] draws pytest's look, [`junit`] writes JUnit XML and
//! [`reportlog`] writes pytest-reportlog JSON lines. [`Fanout`] hands every
//! event to each of them. None of them knows the session.

pub mod junit;
pub mod reportlog;
pub mod terminal;

use crate::events::{Event, Reporter};

/// Sends every event to several reporters, in order.
pub struct Fanout {
    /// The reporters.
    pub reporters: Vec<Box<dyn Reporter>>,
}

impl Reporter for Fanout {
    fn on_event(&mut self, event: &Event) {
        for r in &mut self.reporters {
            r.on_event(event);
        }
    }

    fn tick(&mut self) {
        for r in &mut self.reporters {
            r.tick();
        }
    }
}

/// Shared by the file reporters: errors writing an output are kept and
/// shown at the end instead of being lost.
pub type WriteErrors = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
