//! Running one SYNC.json generator safely (issue 14): a minimal environment, its own process
//! group, a timeout after which the whole group is killed, capped output, and an atomic install
//! of what it wrote only when it exits 0. A failed, killed or timed-out generator leaves the
//! previous output untouched.
//!
//! The generator writes to `SYNC_OUTPUT_FILE`, a temporary file beside the output (named
//! `.botsync-tmp-gen-…`, which a scan never syncs); botsync renames it over the output.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use botsync_engine::apply::GENERATOR_TEMP_PREFIX;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// The most of each of stdout and stderr kept from a generator: 1 MiB (the rest is read and
/// dropped, so a chatty generator never blocks on a full pipe).
pub const OUTPUT_CAP: usize = 1024 * 1024;

/// The default timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The skill's name.
    pub skill: String,
    /// The generator (checked: an executable regular file inside `skill_dir`).
    pub program: PathBuf,
    /// The skill directory (the generator's working directory, `SKILL_DIR`).
    pub skill_dir: PathBuf,
    /// The workspace root (`BOTSYNC_WORKSPACE`).
    pub workspace: PathBuf,
    /// Where the output goes (checked by `skill::resolve_output`).
    pub output: PathBuf,
    /// The manifest's patterns (`SYNC_PATTERNS`, comma-separated).
    pub patterns: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
}

/// What a successful run did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Its stdout (capped, lossy UTF-8).
    pub stdout: String,
    /// Its stderr (capped, lossy UTF-8).
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// A run that failed: why, and what the generator said on stderr.
#[derive(Debug)]
pub struct RunFailure {
    /// One line: what happened and that the old output is intact.
    pub message: String,
    /// Its stderr (capped).
    pub stderr: String,
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunFailure {}

/// Checks the output path again right before the install (it may have changed while the
/// generator ran): the path it resolves to now, or why it is refused.
pub type Recheck<'a> = &'a dyn Fn() -> Result<PathBuf, String>;

/// Run `spec`'s generator and install its output (if `recheck` still resolves the output to
/// the same path).
pub fn run(spec: &RunSpec, recheck: Recheck<'_>) -> Result<RunOutcome> {
    let parent = spec
        .output
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", spec.output.display()))?;
    sweep_dead_runs(parent);
    let tmp = parent.join(format!(
        "{GENERATOR_TEMP_PREFIX}{}-{}",
        std::process::id(),
        spec.skill
    ));
    remove_if_there(&tmp);
    let result = run_to(spec, &tmp, recheck);
    if result.is_err() {
        remove_if_there(&tmp);
    }
    result
}

fn run_to(spec: &RunSpec, tmp: &Path, recheck: Recheck<'_>) -> Result<RunOutcome> {
    let started = Instant::now();
    let mut cmd = Command::new(&spec.program);
    cmd.current_dir(&spec.skill_dir)
        .env_clear()
        .env("PATH", search_path())
        .env("SYNC_OUTPUT_FILE", tmp)
        .env("SYNC_PATTERNS", spec.patterns.join(","))
        .env("SKILL_DIR", &spec.skill_dir)
        .env("BOTSYNC_WORKSPACE", &spec.workspace)
        .env("BOTSYNC_AGENT", format!("gen:{}", spec.skill))
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the generator {}", spec.program.display()))?;
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| anyhow!("the generator's process id is out of range"))?;
    let out = capture(child.stdout.take());
    let err = capture(child.stderr.take());

    let mut timed_out = false;
    loop {
        // Look without reaping: the group id stays ours until we reap the leader.
        let exited = rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG,
        )
        .context("waiting for the generator")?;
        if exited.is_some() {
            break;
        }
        if started.elapsed() >= spec.timeout {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Whatever it started goes with it (on a timeout, and any child left behind after exit,
    // which would otherwise hold the pipes open).
    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
    let status = child.wait().context("reaping the generator")?;
    let stdout = join(out);
    let stderr = join(err);
    let elapsed = started.elapsed();
    let what = format!("generator of skill {}", spec.skill);
    let kept = format!("{} was left as it was", spec.output.display());
    if timed_out {
        return Err(RunFailure {
            message: format!(
                "{what} ran longer than {}s and was killed with every process it started; {kept} (raise it with --timeout SECS)",
                spec.timeout.as_secs()
            ),
            stderr,
        }
        .into());
    }
    if !status.success() {
        let how = match status.code() {
            Some(c) => format!("exited with code {c}"),
            None => "was killed by a signal".to_owned(),
        };
        let said = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(" (its last words: {})", l.trim()))
            .unwrap_or_default();
        return Err(RunFailure {
            message: format!("{what} {how}{said}; {kept}"),
            stderr,
        }
        .into());
    }
    let still = match recheck() {
        Ok(p) if p == spec.output => Ok(()),
        Ok(p) => Err(anyhow!("the output now resolves to {}", p.display())),
        Err(why) => Err(anyhow!("the output path is no longer safe ({why})")),
    };
    still
        .and_then(|()| install(tmp, &spec.output))
        .map_err(|e| RunFailure {
            message: format!("{what} exited 0 but {e}; {kept}"),
            stderr: stderr.clone(),
        })?;
    Ok(RunOutcome {
        stdout,
        stderr,
        elapsed,
    })
}

/// Rename the generator's file over the output, if it is a regular file and the output is not
/// (now) a symlink.
fn install(tmp: &Path, output: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(tmp) {
        Ok(m) => m,
        Err(_) => bail!("it wrote nothing to SYNC_OUTPUT_FILE"),
    };
    if !meta.is_file() {
        bail!("SYNC_OUTPUT_FILE is not a regular file (a symlink or directory)");
    }
    if let Ok(m) = std::fs::symlink_metadata(output)
        && !m.is_file()
    {
        bail!(
            "{} became a symlink or directory while it ran",
            output.display()
        );
    }
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .context("flushing the generated file")?;
    std::fs::rename(tmp, output).with_context(|| format!("installing {}", output.display()))?;
    Ok(())
}

/// `PATH` for a generator: the directory of this botsync binary, then /usr/bin and /bin.
fn search_path() -> String {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir.to_string_lossy().into_owned());
    }
    dirs.push("/usr/bin".to_owned());
    dirs.push("/bin".to_owned());
    dirs.join(":")
}

/// Remove from `dir` the outputs of generator runs whose process is gone (a `gen run` or a
/// daemon killed before it installed). A run still going, here or in another process, is left
/// alone: a scan never removes these, so this is where they end.
fn sweep_dead_runs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(GENERATOR_TEMP_PREFIX))
        else {
            continue;
        };
        let alive = rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .and_then(Pid::from_raw)
            .is_some_and(|pid| {
                // EPERM means it exists under another user: still running.
                !matches!(
                    rustix::process::test_kill_process(pid),
                    Err(rustix::io::Errno::SRCH)
                )
            });
        if !alive {
            remove_if_there(&e.path());
        }
    }
}

fn remove_if_there(p: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(p) {
        let _ = if m.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
    }
}

/// Read a pipe to its end on a thread, keeping the first [`OUTPUT_CAP`] bytes.
fn capture<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<String>> {
    let mut pipe = pipe?;
    Some(std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = OUTPUT_CAP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        let mut s = String::from_utf8_lossy(&kept).into_owned();
        if kept.len() >= OUTPUT_CAP {
            s.push_str("\n[output cut at 1 MiB]\n");
        }
        s
    }))
}

fn join(h: Option<JoinHandle<String>>) -> String {
    h.and_then(|h| h.join().ok()).unwrap_or_default()
}
