//! `botsync completions SHELL`: the shell completion script, printed on stdout.

use anyhow::Result;
use clap::Args;
use clap_complete::Shell;

use crate::exit::OK;

/// Arguments of `botsync completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// Print the completion script of `cmd` for `shell`.
///
/// bash: `botsync completions bash > ~/.local/share/bash-completion/completions/botsync`;
/// zsh: into a directory of `$fpath` as `_botsync`; fish: `~/.config/fish/completions/botsync.fish`.
pub fn print(args: CompletionsArgs, mut cmd: clap::Command) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "botsync", &mut out);
    Ok(OK)
}
