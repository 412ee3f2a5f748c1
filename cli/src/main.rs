//! `botsync`: the command-line front of botsync. Glue only: argument parsing, configuration
//! files, output and progress; the logic lives in `botsync-engine` and `botsync-proto`.

mod commands;
mod context;
mod coord;
mod daemon;
mod exit;
mod node;
mod output;
mod progress;
mod runner;
mod verb;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::context::Globals;

/// Content-addressed peer-to-peer sync for AI agent workspaces.
#[derive(Debug, Parser)]
#[command(name = "botsync", version, about, propagate_version = true)]
struct Cli {
    /// The workspace (default: the nearest directory upward holding .botsync/).
    #[arg(
        short,
        long,
        global = true,
        env = "BOTSYNC_WORKSPACE",
        value_name = "DIR"
    )]
    workspace: Option<PathBuf>,
    /// Print one JSON document on stdout (stable field names).
    #[arg(long, global = true)]
    json: bool,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less output.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// The agent making changes, recorded with every change.
    #[arg(long, global = true, env = "BOTSYNC_AGENT", value_name = "NAME")]
    agent: Option<String>,
    #[command(subcommand)]
    command: Option<commands::Command>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_tracing(cli.verbose, cli.quiet);
    let globals = Globals::new(cli.workspace, cli.json, cli.quiet, cli.agent);
    let command = cli.command.unwrap_or(commands::Command::Status);
    let code = match commands::run(command, &globals, Cli::command) {
        Ok(code) => code,
        Err(err) => {
            let code = exit::code_for(&err);
            output::report_error(globals.json, code, &exit::one_line(&err));
            code
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// A command line clap refused (or `--help`/`--version`): with `--json` anywhere on it, one JSON
/// document on stdout too; exit code 2 for a usage error.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if json {
        let rendered = e.render().to_string();
        let line = rendered
            .lines()
            .next()
            .unwrap_or("invalid command line")
            .trim_start_matches("error: ")
            .to_owned();
        let usage = rendered
            .lines()
            .find_map(|l| l.strip_prefix("Usage: "))
            .map(str::to_owned);
        let doc = serde_json::json!({
            "ok": false,
            "exit_code": exit::USAGE,
            "error": format!("{line}; run `botsync --help` for usage"),
            "usage": usage,
        });
        println!("{doc}");
    }
    let _ = e.print();
    ExitCode::from(u8::try_from(exit::USAGE).unwrap_or(2))
}

fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info,botsync=info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // BOTSYNC_LOG, else the usual RUST_LOG, else the level -v/-q ask for.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOTSYNC_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: a daemon's log file or a pipe gets plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
