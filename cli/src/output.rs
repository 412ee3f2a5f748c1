//! Output: human text on a terminal, or exactly one JSON document with `--json`.

use std::io::{IsTerminal, Write};

use serde::Serialize;

/// Where and how a verb reports.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON document on stdout instead of human text.
    pub json: bool,
    /// Less human output (`-q`).
    pub quiet: bool,
}

impl Output {
    /// Print the verb's result: `value` as JSON with `--json`, else the human text.
    pub fn emit<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut out, value)?;
            writeln!(out)?;
        } else if !self.quiet {
            let text = human();
            if !text.is_empty() {
                writeln!(out, "{}", text.trim_end())?;
            }
        }
        Ok(())
    }

    /// True if progress bars may be drawn (a terminal on stderr, no `--json`, no `-q`).
    pub fn progress_allowed(&self) -> bool {
        !self.json && !self.quiet && std::io::stderr().is_terminal()
    }
}

/// Print a failure as one line (and in `--json` mode also as a JSON document on stdout).
pub fn report_error(json: bool, code: i32, line: &str) {
    if json {
        let doc = serde_json::json!({ "ok": false, "exit_code": code, "error": line });
        println!("{doc}");
    }
    eprintln!("botsync: error: {line}");
}

/// Human-readable byte count (`1.4 MiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_units() {
        assert_eq!(super::bytes(12), "12 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
