//! The expected errors of a run, and the exit codes they map to.
//!
//! Exit codes follow pytest: 0 all passed, 1 some tests failed, 2
//! interrupted (or collection errors), 3 internal error, 4 usage or
//! configuration error, 5 no tests collected, 6 too many warnings; a
//! plugin may set any other.

use std::fmt;

/// pytest-compatible exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitCode {
    /// Every test passed.
    Ok,
    /// Some tests failed.
    TestsFailed,
    /// The run was interrupted (Ctrl-C, collection errors, `pytest.exit`).
    Interrupted,
    /// An internal error in rtest or pytest.
    InternalError,
    /// Bad command line or configuration.
    UsageError,
    /// No tests were collected.
    NoTestsCollected,
    /// Every test passed, with more warnings than `--max-warnings` allows
    /// (pytest 9.2).
    MaxWarnings,
    /// A status a plugin set in the controller's session
    /// (`session.exitstatus = 42`), which pytest exits with as it is.
    Plugin(i32),
}

impl ExitCode {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::TestsFailed => 1,
            ExitCode::Interrupted => 2,
            ExitCode::InternalError => 3,
            ExitCode::UsageError => 4,
            ExitCode::NoTestsCollected => 5,
            ExitCode::MaxWarnings => 6,
            ExitCode::Plugin(code) => code,
        }
    }

    /// Map a pytest exit status to ours (what a process cannot exit with is
    /// an internal error).
    pub fn from_pytest(status: i32) -> ExitCode {
        match status {
            0 => ExitCode::Ok,
            1 => ExitCode::TestsFailed,
            2 => ExitCode::Interrupted,
            4 => ExitCode::UsageError,
            5 => ExitCode::NoTestsCollected,
            6 => ExitCode::MaxWarnings,
            // What a process can exit with.
            7..=255 => ExitCode::Plugin(status),
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
    /// `pytest.exit()` ended a session before it ran anything (in a
    /// conftest's `pytest_sessionstart`): pytest's line for it, and the
    /// status it gave.
    Exit(i32),
}

impl Error {
    /// `pytest.exit()` before the run: `line` is pytest's for it
    /// (`_pytest.outcomes.Exit: why`), `status` the session's.
    pub fn pytest_exit(status: i32, line: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Exit(status),
            message: line.into(),
        }
    }

    /// The run was interrupted (exit 2).
    pub fn interrupted(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Interrupted,
            message: message.into(),
        }
    }

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
            ErrorKind::Pytest | ErrorKind::Exit(_) => self.message.clone(),
            _ => format!("ERROR: {}", self.message),
        }
    }

    /// The exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self.kind {
            ErrorKind::Usage | ErrorKind::Worker | ErrorKind::Pytest => ExitCode::UsageError,
            ErrorKind::Internal => ExitCode::InternalError,
            ErrorKind::Interrupted => ExitCode::Interrupted,
            ErrorKind::Exit(status) => ExitCode::from_pytest(status),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::ExitCode;

    #[test]
    fn pytest_statuses_map_to_themselves() {
        for status in 0..=255 {
            assert_eq!(ExitCode::from_pytest(status).code(), status);
        }
        assert_eq!(ExitCode::from_pytest(6), ExitCode::MaxWarnings);
        assert_eq!(ExitCode::from_pytest(42), ExitCode::Plugin(42));
        // Not a process's exit status.
        assert_eq!(ExitCode::from_pytest(-1), ExitCode::InternalError);
        assert_eq!(ExitCode::from_pytest(256), ExitCode::InternalError);
    }
}
