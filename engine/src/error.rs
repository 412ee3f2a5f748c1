//! Errors shared across the engine.

use std::io;
use std::path::PathBuf;

/// An I/O failure on a named path.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct IoError {
    /// What was being done ("reading", "creating", ...).
    pub action: &'static str,
    /// The path involved.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// Attach an action and path to an [`io::Error`].
pub trait IoContext<T> {
    /// Wrap the error with what was being done to which path.
    fn io_context(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T, IoError>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn io_context(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T, IoError> {
        self.map_err(|source| IoError {
            action,
            path: path.into(),
            source,
        })
    }
}
