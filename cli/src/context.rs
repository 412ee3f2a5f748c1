//! Global options and locating the workspace.

use std::path::{Path, PathBuf};

use anyhow::Result;
use botsync_engine::AgentLabel;

use crate::exit::UsageError;
use crate::output::Output;

/// Name of the state directory that marks a workspace.
pub use botsync_engine::layout::STATE_DIR;

/// Options every verb sees.
#[derive(Debug, Clone)]
pub struct Globals {
    /// `-w`, if given.
    pub workspace: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// How to print.
    pub out: Output,
    /// `--agent`.
    pub agent: AgentLabel,
}

impl Globals {
    /// Collect the global options.
    pub fn new(
        workspace: Option<PathBuf>,
        json: bool,
        quiet: bool,
        agent: Option<String>,
    ) -> Globals {
        Globals {
            workspace,
            json,
            out: Output { json, quiet },
            agent: AgentLabel::new(agent.as_deref().unwrap_or("")),
        }
    }

    /// The workspace root of an existing workspace: `-w`, or the nearest directory upward
    /// holding `.botsync/`.
    pub fn workspace_root(&self) -> Result<PathBuf> {
        match &self.workspace {
            Some(dir) => {
                if !dir.join(STATE_DIR).is_dir() {
                    return Err(UsageError::new(format!(
                        "{} is not a botsync workspace (no .botsync/ there); run `botsync init -w {}` first",
                        dir.display(),
                        dir.display()
                    ))
                    .into());
                }
                Ok(absolute(dir))
            }
            None => {
                let cwd = std::env::current_dir()?;
                find_upward(&cwd).ok_or_else(|| {
                    UsageError::new(format!(
                        "no botsync workspace at {} or above; run `botsync init` in the workspace or pass -w DIR",
                        cwd.display()
                    ))
                    .into()
                })
            }
        }
    }

    /// The directory `init` should use: `-w` or the current directory.
    pub fn init_root(&self) -> Result<PathBuf> {
        Ok(match &self.workspace {
            Some(dir) => absolute(dir),
            None => std::env::current_dir()?,
        })
    }
}

fn find_upward(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join(STATE_DIR).is_dir())
        .map(Path::to_path_buf)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
