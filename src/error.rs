//! The expected errors of a run, and the exit codes they map to.
//!
//! Exit codes follow pytest: 0 all passed, 1 some tests failed, 2
//! interrupted (or collection errors), 3 internal error, 4 usage or
//! configuration error, 5 no tests collected.

use std::fmt;

/// pytest-compatible exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitCode {
    /// Every test passed.
    Ok = 0,
    /// Some tests failed.
    TestsFailed = 1,
    /// The run was interrupted (Ctrl-C, collection errors, `pytest.exit`).
    Interrupted = 2,
    /// An internal error in rtest or pytest.
    InternalError = 3,
    /// Bad command line or configuration.
    UsageError = 4,
    /// No tests were collected.
    NoTestsCollected = 5,
}

impl ExitCode {
    /// The process exit code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Map a pytest exit status to ours (unknown values are internal errors).
    pub fn from_pytest(status: i32) -> ExitCode {
        match status {
            0 => ExitCode::Ok,
            1 => ExitCode::TestsFailed,
            2 => ExitCode::Interrupted,
            4 => ExitCode::UsageError,
            5 => ExitCode::NoTestsCollected,
            _ => ExitCode::InternalError,
        }
    }
}

/// An error that ends a run before or instead of test results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What kind of error, which decides the exit code.
    pub kind: ErrorKind,
    /// The message, a lowercase fragment naming the file, value or worker.
    pub message: String,
}

/// The kinds of [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad command line or configuration (exit 4).
    Usage,
    /// A worker could not be started or its Python is unusable (exit 4).
    Worker,
    /// An internal error (exit 3).
    Internal,
    /// Interrupted (exit 2).
    Interrupted,
    /// pytest refused to start and said why in its own words (a conftest
    /// that does not import): shown as pytest shows it (exit 4).
    Pytest,
}

impl Error {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Usage,
            message: message.into(),
        }
    }

    /// A worker start error.
    pub fn worker(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Worker,
            message: message.into(),
        }
    }

    /// An internal error.
    pub fn internal(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }

    /// The error as the terminal shows it: `ERROR: message`, or pytest's
    /// own words as they are.
    pub fn rendered(&self) -> String {
        match self.kind {
            ErrorKind::Pytest => self.message.clone(),
            _ => format!("ERROR: {}", self.message),
        }
    }

    /// The exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self.kind {
            ErrorKind::Usage | ErrorKind::Worker | ErrorKind::Pytest => ExitCode::UsageError,
            ErrorKind::Internal => ExitCode::InternalError,
            ErrorKind::Interrupted => ExitCode::Interrupted,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
