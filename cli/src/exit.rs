//! Exit codes and the one-line error report (PRODUCT.md §6).

use std::fmt;

/// Exit code: success.
pub const OK: i32 = 0;
/// Exit code: the operation failed.
pub const FAILED: i32 = 1;
/// Exit code: usage or configuration error.
pub const USAGE: i32 = 2;
/// Exit code: done, but attention is needed (conflicts pending, drift found).
pub const ATTENTION: i32 = 3;

/// An error the user fixes by changing how botsync is called or configured (exit code 2).
#[derive(Debug)]
pub struct UsageError(String);

impl UsageError {
    /// A usage error with its one-line message.
    pub fn new(msg: impl Into<String>) -> UsageError {
        UsageError(msg.into())
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Wrap an error the user fixes in their files or arguments as a usage error (exit code 2).
pub fn usage(err: impl fmt::Display) -> anyhow::Error {
    UsageError::new(err.to_string()).into()
}

/// The exit code for an error: 2 if any cause in its chain is a [`UsageError`], else 1.
pub fn code_for(err: &anyhow::Error) -> i32 {
    if err
        .chain()
        .any(|c| c.downcast_ref::<UsageError>().is_some())
    {
        USAGE
    } else {
        FAILED
    }
}

/// The error as one line: the whole cause chain joined by ": ".
pub fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for (i, cause) in err.chain().enumerate() {
        let text = cause.to_string();
        if i > 0 {
            if out.contains(&text) {
                continue;
            }
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}
