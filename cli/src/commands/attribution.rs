//! `attribution [--install-hook [REPO]]`: the seed's commit trailer,
//! `[botsync] claude/@milo | Machine: mini`, printed for a commit message, or added to every
//! commit of a git repository by its `commit-msg` hook. The hook asks `botsync attribution` at
//! commit time, so each agent's commits carry that agent's name (`BOTSYNC_AGENT`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use crate::commands::feed::CallerEnv;
use crate::context::Globals;
use crate::exit::{self, usage};

/// Arguments of `attribution`.
#[derive(Debug, Args)]
pub struct AttributionArgs {
    /// Add the trailer to every commit of the git repository at REPO (default: the current
    /// directory's) through its commit-msg hook.
    #[arg(long, value_name = "REPO", num_args = 0..=1, default_missing_value = ".")]
    pub install_hook: Option<PathBuf>,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Doc {
    trailer: String,
    agent: String,
    ai: String,
    machine: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hook: Option<PathBuf>,
}

/// The marker of the lines botsync adds to a hook.
const MARK: &str = "# botsync attribution";

/// `attribution`.
pub fn attribution(a: AttributionArgs, g: &Globals) -> Result<i32> {
    let env = CallerEnv::here();
    let agent = g.agent.as_str().to_owned();
    let trailer = trailer(&env, &agent);
    let hook = match &a.install_hook {
        None => {
            if agent.is_empty() {
                return Err(usage(
                    "no agent to attribute: pass --agent NAME or set BOTSYNC_AGENT (and AI_IDENTITY for the AI)",
                ));
            }
            None
        }
        Some(repo) => Some(install(repo)?),
    };
    let human = match &hook {
        None => trailer.clone(),
        Some(h) => format!(
            "installed in {}: each commit gets `{}` with the committing agent's BOTSYNC_AGENT",
            h.display(),
            trailer_shape()
        ),
    };
    let doc = Doc {
        trailer,
        agent,
        ai: env.ai,
        machine: env.machine,
        hook,
    };
    g.out.emit(&doc, || human)?;
    Ok(exit::OK)
}

/// `[botsync] claude/@milo | Machine: mini`.
fn trailer(env: &CallerEnv, agent: &str) -> String {
    let who = match (env.ai.as_str(), agent) {
        ("", a) => format!("@{a}"),
        (ai, a) => format!("{ai}/@{a}"),
    };
    format!("[botsync] {who} | Machine: {}", env.machine)
}

fn trailer_shape() -> &'static str {
    "[botsync] AI/@AGENT | Machine: NAME"
}

/// Add our lines to the repository's commit-msg hook (creating it if needed); idempotent.
fn install(repo: &Path) -> Result<PathBuf> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--git-path", "hooks/commit-msg"])
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "{} is not in a git repository ({}); pass the repository: botsync attribution --install-hook REPO",
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let rel = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let hook = if rel.is_absolute() {
        rel
    } else {
        repo.join(rel)
    };
    let exe = std::env::current_exe().context("finding the botsync executable")?;
    let block = format!(
        "{MARK}: add the agent's trailer once\n\
         line=$('{}' attribution 2>/dev/null) && {{ grep -qxF \"$line\" \"$1\" || printf '\\n%s\\n' \"$line\" >> \"$1\"; }}\n\
         {MARK} end\n",
        exe.display()
    );
    let existing = match fs::read_to_string(&hook) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", hook.display())),
    };
    let text = match existing {
        None => format!("#!/bin/sh\n{block}"),
        Some(t) if t.contains(MARK) => replace_block(&t, &block),
        Some(t)
            if t.starts_with("#!/bin/sh")
                || t.starts_with("#!/bin/bash")
                || t.starts_with("#!/usr/bin/env bash") =>
        {
            // Before a final `exit`, our lines would never run: put them first after the
            // interpreter line.
            let (first, rest) = t.split_once('\n').unwrap_or((&t, ""));
            format!("{first}\n{block}{rest}")
        }
        Some(_) => bail!(
            "{} exists and is not a shell script; add this line to it yourself: botsync attribution",
            hook.display()
        ),
    };
    if let Some(dir) = hook.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(&hook, text).with_context(|| format!("writing {}", hook.display()))?;
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", hook.display()))?;
    Ok(hook)
}

fn replace_block(text: &str, block: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    let mut placed = false;
    for line in text.lines() {
        if line.starts_with(MARK) && !line.starts_with(&format!("{MARK} end")) && !skipping {
            skipping = true;
            if !placed {
                out.push_str(block);
                placed = true;
            }
            continue;
        }
        if skipping {
            if line.starts_with(&format!("{MARK} end")) {
                skipping = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
