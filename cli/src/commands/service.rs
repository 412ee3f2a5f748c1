//! `botsync service install|uninstall`: run this workspace's daemon as a user service — a
//! systemd user unit on Linux (`~/.config/systemd/user/botsync-NAME.service`), a launchd agent
//! on macOS (`~/Library/LaunchAgents/dev.botsync.NAME.plist`) — and say how to start, stop and
//! read it. Only files are written: starting the service is the printed command.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use botsync_engine::config::SyncConfig;
use botsync_engine::layout::Layout;
use clap::{Args, Subcommand};

use crate::context::Globals;
use crate::exit::{OK, UsageError, usage};

/// Arguments of `botsync service`.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub action: ServiceAction,
}

/// Install or remove the service.
#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Write the service file that runs `botsync serve` for this workspace at login.
    Install {
        /// Address and UDP port the daemon listens on (default: `listen` in config.json).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<String>,
    },
    /// Remove the service file written by `install`.
    Uninstall,
}

/// Which service manager this machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Systemd,
    Launchd,
}

/// The service of one workspace: its name and file.
#[derive(Debug)]
struct Service {
    manager: Manager,
    /// `botsync-NAME` (systemd) or `dev.botsync.NAME` (launchd).
    label: String,
    file: PathBuf,
}

/// `botsync service install|uninstall`.
pub fn service(args: ServiceArgs, g: &Globals) -> Result<i32> {
    let root = g.workspace_root()?;
    let layout = Layout::new(&root);
    let config = SyncConfig::load(&layout.config()).map_err(usage)?;
    let name = config.name.clone().unwrap_or_else(|| {
        root.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "workspace".into())
    });
    let svc = Service::for_name(&unit_name(&name))?;
    match args.action {
        ServiceAction::Install { listen } => install(&svc, &root, &layout, listen, g),
        ServiceAction::Uninstall => uninstall(&svc, g),
    }
}

fn install(
    svc: &Service,
    root: &Path,
    layout: &Layout,
    listen: Option<String>,
    g: &Globals,
) -> Result<i32> {
    let exe = std::env::current_exe().context("finding the botsync binary")?;
    let mut argv = vec![
        exe.display().to_string(),
        "-w".to_owned(),
        root.display().to_string(),
        "serve".to_owned(),
    ];
    if let Some(l) = listen {
        argv.push("--listen".into());
        argv.push(l);
    }
    let text = match svc.manager {
        Manager::Systemd => systemd_unit(root, &argv),
        Manager::Launchd => launchd_plist(&svc.label, &argv, &layout.daemon_log()),
    };
    if let Some(dir) = svc.file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&svc.file, text).with_context(|| format!("writing {}", svc.file.display()))?;
    let (start, stop, logs) = svc.commands(layout);
    let doc = serde_json::json!({
        "ok": true,
        "installed": svc.file.display().to_string(),
        "service": svc.label,
        "start": start,
        "stop": stop,
        "logs": logs,
    });
    g.out.emit(&doc, || {
        format!(
            "wrote {}\nstart it (and at every login): {start}\nstop it:  {stop}\nits log:  {logs}",
            svc.file.display()
        )
    })?;
    Ok(OK)
}

fn uninstall(svc: &Service, g: &Globals) -> Result<i32> {
    match std::fs::remove_file(&svc.file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UsageError::new(format!(
                "no service is installed for this workspace ({} does not exist); `botsync service install` writes it",
                svc.file.display()
            ))
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("removing {}", svc.file.display())),
    }
    let stop = match svc.manager {
        Manager::Systemd => format!(
            "systemctl --user disable --now {}.service; systemctl --user daemon-reload",
            svc.label
        ),
        Manager::Launchd => format!("launchctl remove {}", svc.label),
    };
    let doc = serde_json::json!({
        "ok": true,
        "removed": svc.file.display().to_string(),
        "service": svc.label,
        "stop": stop,
    });
    g.out.emit(&doc, || {
        format!(
            "removed {}\nif it is running, stop it: {stop}",
            svc.file.display()
        )
    })?;
    Ok(OK)
}

impl Service {
    fn for_name(name: &str) -> Result<Service> {
        let manager = if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        };
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let (label, file) = match manager {
            Manager::Systemd => {
                let config = std::env::var_os("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .or_else(|| home.map(|h| h.join(".config")))
                    .ok_or_else(|| {
                        UsageError::new("neither $XDG_CONFIG_HOME nor $HOME is set; set HOME")
                    })?;
                let label = format!("botsync-{name}");
                let file = config
                    .join("systemd")
                    .join("user")
                    .join(format!("{label}.service"));
                (label, file)
            }
            Manager::Launchd => {
                let home = home.ok_or_else(|| UsageError::new("$HOME is not set; set it"))?;
                let label = format!("dev.botsync.{name}");
                let file = home
                    .join("Library")
                    .join("LaunchAgents")
                    .join(format!("{label}.plist"));
                (label, file)
            }
        };
        Ok(Service {
            manager,
            label,
            file,
        })
    }

    /// How to start it, stop it and read its log.
    fn commands(&self, layout: &Layout) -> (String, String, String) {
        match self.manager {
            Manager::Systemd => (
                format!(
                    "systemctl --user daemon-reload && systemctl --user enable --now {}.service",
                    self.label
                ),
                format!("systemctl --user stop {}.service", self.label),
                format!("journalctl --user -u {}.service -f", self.label),
            ),
            Manager::Launchd => (
                format!("launchctl load -w {}", self.file.display()),
                format!("launchctl unload -w {}", self.file.display()),
                format!("tail -f {}", layout.daemon_log().display()),
            ),
        }
    }
}

/// A unit name from the workspace name: letters, digits, '-', '_' and '.', others become '-'.
fn unit_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "workspace".into() } else { s }
}

fn systemd_unit(root: &Path, argv: &[String]) -> String {
    let exec: Vec<String> = argv.iter().map(|a| systemd_quote(a)).collect();
    format!(
        "[Unit]\n\
         Description=botsync daemon for {}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         Environment=NO_COLOR=1\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        root.display(),
        exec.join(" ")
    )
}

/// Quote one ExecStart word: double quotes with `\` and `"` escaped, `%` doubled (specifiers).
fn systemd_quote(word: &str) -> String {
    let escaped = word
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    format!("\"{escaped}\"")
}

fn launchd_plist(label: &str, argv: &[String], log: &Path) -> String {
    let args: String = argv
        .iter()
        .map(|a| format!("    <string>{}</string>\n", xml_escape(a)))
        .collect();
    let log = xml_escape(&log.display().to_string());
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n\
         \x20 <key>Label</key>\n  <string>{}</string>\n\
         \x20 <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n\
         \x20 <key>RunAtLoad</key>\n  <true/>\n\
         \x20 <key>KeepAlive</key>\n  <true/>\n\
         \x20 <key>StandardOutPath</key>\n  <string>{log}</string>\n\
         \x20 <key>StandardErrorPath</key>\n  <string>{log}</string>\n\
         </dict>\n</plist>\n",
        xml_escape(label)
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_are_quoted_for_systemd() {
        assert_eq!(systemd_quote("/a b/c"), "\"/a b/c\"");
        assert_eq!(systemd_quote("100%"), "\"100%%\"");
        assert_eq!(unit_name("my bot/1"), "my-bot-1");
    }

    #[test]
    fn the_launchd_agent_runs_serve_and_logs_to_the_workspace() {
        let argv = vec![
            "/bin/botsync".into(),
            "-w".into(),
            "/w & x".into(),
            "serve".into(),
        ];
        let plist = launchd_plist("dev.botsync.a", &argv, Path::new("/w/.botsync/daemon.log"));
        assert!(plist.contains("<string>/w &amp; x</string>"), "{plist}");
        assert!(plist.contains("<key>StandardOutPath</key>"), "{plist}");
        assert!(plist.contains("<string>dev.botsync.a</string>"), "{plist}");
    }
}
