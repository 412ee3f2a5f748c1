//! Errors shared across the engine.

use std::io;
use std::path::PathBuf;

/// The error a fault point injects (`fail::fail_point!`, active only in builds with the `fail`
/// crate's `failpoints` feature, as the engine's tests are): `ENOSPC` when the point's argument
/// says so (`return(ENOSPC)`), `EIO` otherwise.
#[allow(dead_code)] // referenced only from fault points, which normal builds compile out
pub(crate) fn injected(arg: Option<String>) -> io::Error {
    match arg.as_deref() {
        Some("ENOSPC") => io::Error::from_raw_os_error(libc::ENOSPC),
        _ => io::Error::from_raw_os_error(libc::EIO),
    }
}

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
