//! `botsync config validate` and `botsync config template [FILE]`.
//!
//! `validate` checks `.botsync/config.json` (the JSON, every field, the patterns) and names the
//! file, line and field of the first problem; the daemon runs the same check before it starts
//! ([`check`]). `template` prints the secret-free form of the mesh config file (the seed's
//! "push template" step): every secret key's value and every secret-looking value replaced by
//! `<secret>` (`botsync_engine::mesh::strip`). Both read files only: no daemon is involved.

use std::path::{Path, PathBuf};

use anyhow::Result;
use botsync_engine::config::{ConfigError, SyncConfig};
use botsync_engine::layout::Layout;
use botsync_engine::mesh;
use botsync_engine::rules::Selection;
use botsync_engine::secrets::SecretRules;
use clap::{Args, Subcommand};

use crate::context::Globals;
use crate::exit::{OK, usage};

/// The mesh config file `template` reads when no file is given, relative to the workspace.
pub const DEFAULT_MESH_CONFIG: &str = mesh::DEFAULT_PATH;

/// Arguments of `botsync config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

/// What `botsync config` does.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Check .botsync/config.json; a problem is one line naming the file, line and field.
    Validate,
    /// Print the secret-free template of a mesh config file (default
    /// .secrets/mesh-config.json): secret values become `"<secret>"`.
    Template {
        /// The JSON file (default: .secrets/mesh-config.json in the workspace).
        file: Option<PathBuf>,
    },
}

/// Run `botsync config ...`.
pub fn config(args: ConfigArgs, g: &Globals) -> Result<i32> {
    match args.action {
        ConfigAction::Validate => validate(g),
        ConfigAction::Template { file } => template(file, g),
    }
}

/// The workspace's config, checked completely (what `load` checks, and the selection patterns);
/// a problem is a usage error of one line naming the file, line and field.
pub fn check(config_path: &Path) -> Result<SyncConfig> {
    let text = std::fs::read_to_string(config_path).map_err(|e| {
        usage(format!(
            "reading {}: {e}; run `botsync init` there to write the default config",
            config_path.display()
        ))
    })?;
    let config = SyncConfig::parse(config_path, &text).map_err(|e| usage(describe(&e, &text)))?;
    if let Err(e) = Selection::new(&config) {
        let problem = e.to_string();
        let problem = problem
            .strip_suffix("; fix it in .botsync/config.json")
            .unwrap_or(&problem);
        return Err(usage(located(config_path, &text, problem)));
    }
    Ok(config)
}

fn validate(g: &Globals) -> Result<i32> {
    let root = g.workspace_root()?;
    let path = Layout::new(&root).config();
    let config = check(&path)?;
    // The mesh config files too: one that is not JSON neither syncs nor takes peers' versions.
    for rel in config.mesh_config_paths().map_err(usage)? {
        let file = root.join(rel.as_str());
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            return Err(usage(format!(
                "{} line {} column {}: not valid JSON ({}); fix it there: until then this mesh config neither syncs nor takes peers' versions",
                file.display(),
                e.line(),
                e.column(),
                message_without_position(&e)
            )));
        }
    }
    let doc = serde_json::json!({ "ok": true, "exit_code": OK, "file": path });
    g.out.emit(&doc, || format!("{}: valid", path.display()))?;
    Ok(OK)
}

fn template(file: Option<PathBuf>, g: &Globals) -> Result<i32> {
    // The workspace's secret settings count when there is one; a lone file uses the defaults.
    let root = g.workspace_root().ok();
    let rules = match &root {
        Some(root) => check(&Layout::new(root).config())?
            .secret_rules()
            .map_err(usage)?,
        None => SecretRules::default(),
    };
    let path = match (file, &root) {
        (Some(f), _) => f,
        (None, Some(root)) => root.join(DEFAULT_MESH_CONFIG),
        (None, None) => {
            return Err(usage(format!(
                "not in a botsync workspace, so there is no {DEFAULT_MESH_CONFIG}: name the file (`botsync config template FILE`)"
            )));
        }
    };
    let bytes = std::fs::read(&path).map_err(|e| {
        usage(format!(
            "reading {}: {e}; name the mesh config file (`botsync config template FILE`)",
            path.display()
        ))
    })?;
    let (stripped, pointers) = mesh::strip_bytes(&bytes, &rules).map_err(|e| {
        usage(format!(
            "{} line {} column {}: not valid JSON ({}); fix it there",
            path.display(),
            e.line(),
            e.column(),
            message_without_position(&e)
        ))
    })?;
    let text = String::from_utf8_lossy(&stripped).into_owned();
    let template: serde_json::Value = serde_json::from_slice(&stripped)?;
    let doc = serde_json::json!({
        "ok": true,
        "exit_code": OK,
        "file": path,
        "stripped": pointers,
        "template": template,
    });
    g.out.emit(&doc, || text)?;
    Ok(OK)
}

/// One line for a config error: file, line, column and field where known, what is wrong, what to
/// do.
pub fn describe(err: &ConfigError, text: &str) -> String {
    match err {
        ConfigError::Parse {
            path,
            line,
            column,
            message,
        } => {
            let field = field_of_message(message).or_else(|| {
                text.lines()
                    .nth(line.saturating_sub(1))
                    .and_then(key_on_line)
            });
            let field = field
                .map(|f| format!(", field \"{f}\""))
                .unwrap_or_default();
            let message = message.split(", expected one of").next().unwrap_or(message);
            format!(
                "{} line {line} column {column}{field}: {message}; {FIX}",
                path.display()
            )
        }
        ConfigError::Invalid { path, problem } => located(path, text, problem),
        ConfigError::Io { .. } => err.to_string(),
    }
}

const FIX: &str = "fix it there, then run `botsync config validate` (or `botsync init --reset-config` to keep it as a backup and write the default)";

/// A problem with a field named by its first word (`delete_threshold.percent is 101`): the line
/// where that key is written, and the field.
fn located(path: &Path, text: &str, problem: &str) -> String {
    let field = problem
        .split_whitespace()
        .next()
        .filter(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c))
        })
        .map(str::to_owned);
    let line = field.as_deref().and_then(|f| {
        let key = f.rsplit('.').next().unwrap_or(f);
        let key = key.split('[').next().unwrap_or(key);
        let quoted = format!("\"{key}\"");
        text.lines()
            .position(|l| l.contains(&quoted))
            .map(|i| i + 1)
    });
    let at = match (line, &field) {
        (Some(l), Some(f)) => format!(" line {l}, field \"{f}\""),
        (None, Some(f)) => format!(", field \"{f}\""),
        _ => String::new(),
    };
    format!("{}{at}: {problem}; {FIX}", path.display())
}

/// The field serde names in its message (`unknown field `foo``, `missing field `bar``).
fn field_of_message(message: &str) -> Option<String> {
    let rest = message.split_once("field `")?.1;
    Some(rest.split('`').next()?.to_owned())
}

/// The key written on a line (`  "sync_skills": "yes",` is `sync_skills`).
fn key_on_line(line: &str) -> Option<String> {
    let start = line.find('"')? + 1;
    let len = line[start..].find('"')?;
    let after = line[start + len + 1..].trim_start();
    after
        .starts_with(':')
        .then(|| line[start..start + len].to_owned())
}

/// serde_json's message without its " at line L column C" suffix.
fn message_without_position(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> String {
        SyncConfig::parse(Path::new(".botsync/config.json"), text)
            .err()
            .map(|e| describe(&e, text))
            .unwrap_or_default()
    }

    #[test]
    fn a_wrong_type_names_the_line_and_the_field() {
        let line = problem("{\n  \"version\": 1,\n  \"sync_skills\": \"yes\"\n}\n");
        assert!(
            line.starts_with(".botsync/config.json line 3 column"),
            "{line}"
        );
        assert!(line.contains("field \"sync_skills\""), "{line}");
        assert!(line.contains("expected a boolean"), "{line}");
        assert!(line.contains("botsync config validate"), "{line}");
    }

    #[test]
    fn an_unknown_field_is_named_without_the_list_of_every_field() {
        let line = problem("{\n  \"retention\": 3\n}\n");
        assert!(line.contains("line 2"), "{line}");
        assert!(line.contains("field \"retention\""), "{line}");
        assert!(!line.contains("expected one of"), "{line}");
    }

    #[test]
    fn an_out_of_range_value_names_its_line_and_field() {
        let line = problem("{\n  \"delete_threshold\": {\n    \"percent\": 101\n  }\n}\n");
        assert!(
            line.starts_with(".botsync/config.json line 3, field \"delete_threshold.percent\""),
            "{line}"
        );
        let line = problem("{\n  \"secret_patterns\": [\"(x\"]\n}\n");
        assert!(
            line.contains("line 2, field \"secret_patterns[0]\""),
            "{line}"
        );
    }

    #[test]
    fn keys_on_lines() {
        assert_eq!(key_on_line("  \"a_b\": 1,"), Some("a_b".into()));
        assert_eq!(key_on_line("  \"just a string\","), None);
        assert_eq!(key_on_line("}"), None);
    }
}
