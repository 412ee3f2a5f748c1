//! `gen list|validate|run|approve`: discover SYNC.json manifests beside SKILL.md, check them,
//! approve them, and run their generators (engine/src/skill.rs, cli/src/runner/).
//!
//! These verbs run in this process, never through the daemon, and never open the index: a
//! generator calls `botsync state list` itself, which must find the index free (or the daemon).
//! The daemon runs approved generators itself through [`run_approved`], under the same checks
//! (`cli/src/daemon/regenerate.rs`).
//!
//! Local settings live in `.botsync/gen.json` (optional, never synced):
//! `{"timeout_secs": 60, "data_dirs": ["/data"], "skill_roots": ["/data/.codex/skills"]}`.
//! Approvals live in `.botsync/approvals.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use botsync_engine::layout::Layout;
use botsync_engine::skill::{self, Manifest, SkillDir, SkillError};
use botsync_engine::state::Patterns;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::commands::history::utc;
use crate::context::Globals;
use crate::exit::{FAILED, OK, usage};
use crate::node::replica::now_ns;
use crate::runner::{self, DEFAULT_TIMEOUT, RunFailure, RunSpec};

/// Arguments of `gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: GenAction,
}

/// Which skills a verb acts on.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// One skill, by its directory name.
    #[arg(long, value_name = "NAME")]
    pub skill: Option<String>,
    /// Every skill with a SYNC.json (skills without one are skipped).
    #[arg(long)]
    pub all: bool,
}

/// The `gen` sub-verbs.
#[derive(Debug, Subcommand)]
pub enum GenAction {
    /// List skills, whether their SYNC.json is valid, and which await approval.
    List,
    /// Check manifests, generators and output paths.
    Validate(Which),
    /// Run generators and install their output atomically.
    Run {
        /// Which skills.
        #[command(flatten)]
        which: Which,
        /// Seconds a generator may run before it and its children are killed (default 60, or
        /// "timeout_secs" in .botsync/gen.json).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Approve a skill's SYNC.json and generator as they are now (needed before it runs, and
    /// again after any change).
    Approve {
        /// The skill.
        #[arg(long, value_name = "NAME")]
        skill: String,
    },
}

/// `.botsync/gen.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GenConfig {
    timeout_secs: Option<u64>,
    data_dirs: Vec<PathBuf>,
    skill_roots: Vec<PathBuf>,
}

/// One approval in `.botsync/approvals.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Approval {
    hash: String,
    dir: PathBuf,
    approved_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Approvals {
    skills: BTreeMap<String, Approval>,
}

/// Everything a `gen` verb needs: the workspace, its settings, the skills found.
struct Gen {
    root: PathBuf,
    layout: Layout,
    config: GenConfig,
    roots: Vec<PathBuf>,
    skills: Vec<SkillDir>,
}

/// A skill whose manifest, generator and output path all check out.
struct Checked {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    generator: PathBuf,
    output: PathBuf,
    hash: String,
}

impl Gen {
    fn open(g: &Globals) -> Result<Gen> {
        Gen::at(g.workspace_root()?)
    }

    /// The skills and settings of the workspace at `root`.
    fn at(root: PathBuf) -> Result<Gen> {
        let layout = Layout::new(&root);
        let path = layout.state().join("gen.json");
        let config: GenConfig = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                usage(format!(
                    "{}: {e}; fields are timeout_secs, data_dirs, skill_roots",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => GenConfig::default(),
            Err(e) => return Err(anyhow!("reading {}: {e}", path.display())),
        };
        for d in config.data_dirs.iter().chain(&config.skill_roots) {
            if !d.is_absolute() {
                return Err(usage(format!(
                    "{}: {} is not an absolute path; data_dirs and skill_roots must be absolute",
                    path.display(),
                    d.display()
                )));
            }
        }
        let mut roots = vec![root.join("skills")];
        roots.extend(config.skill_roots.iter().cloned());
        let skills = skill::discover(&roots);
        Ok(Gen {
            root,
            layout,
            config,
            roots,
            skills,
        })
    }

    fn roots_text(&self) -> String {
        self.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The skills a `--skill`/`--all` choice names; under `--all`, only those with a manifest.
    fn chosen(&self, which: &Which) -> Result<Vec<SkillDir>> {
        match &which.skill {
            Some(name) => {
                let s = self
                    .skills
                    .iter()
                    .find(|s| &s.name == name)
                    .ok_or_else(|| {
                        usage(SkillError::NoSkill {
                            name: name.clone(),
                            searched: self.roots_text(),
                        })
                    })?;
                if !s.has_manifest {
                    return Err(usage(SkillError::NoManifest {
                        name: name.clone(),
                        dir: s.dir.clone(),
                    }));
                }
                Ok(vec![s.clone()])
            }
            None => Ok(self
                .skills
                .iter()
                .filter(|s| s.has_manifest)
                .cloned()
                .collect()),
        }
    }

    fn check(&self, s: &SkillDir) -> Result<Checked, String> {
        let file = s.manifest_path();
        let (manifest, manifest_bytes) = Manifest::load(&file).map_err(|e| e.to_string())?;
        let generator =
            skill::check_generator(&file, &s.dir, &manifest).map_err(|e| e.to_string())?;
        let output = skill::resolve_output(
            &file,
            &manifest.output_file,
            &self.root,
            &self.config.data_dirs,
        )
        .map_err(|e| e.to_string())?;
        let script = std::fs::read(&generator)
            .map_err(|e| format!("{}: cannot read it: {e}", generator.display()))?;
        let hash = skill::approval_hash(&manifest_bytes, &script);
        Ok(Checked {
            manifest,
            manifest_bytes,
            generator,
            output,
            hash,
        })
    }

    fn approvals_path(&self) -> PathBuf {
        self.layout.state().join("approvals.json")
    }

    fn approvals(&self) -> Result<Approvals> {
        let path = self.approvals_path();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                anyhow!(
                    "{} is damaged ({e}); move it away and approve the skills again with `botsync gen approve --skill NAME`",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Approvals::default()),
            Err(e) => Err(anyhow!("reading {}: {e}", path.display())),
        }
    }

    fn save_approvals(&self, a: &Approvals) -> Result<()> {
        let path = self.approvals_path();
        let dir = self.layout.state();
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("writing {}", path.display()))?;
        serde_json::to_writer_pretty(&mut tmp, a)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// Whether a checked skill may run.
fn approval_state(approvals: &Approvals, s: &SkillDir, c: &Checked) -> &'static str {
    match approvals.skills.get(&s.name) {
        Some(a) if a.hash == c.hash && a.dir == s.dir => "approved",
        Some(_) => "changed",
        None => "awaits_approval",
    }
}

/// Run a `gen` verb; returns the exit code.
pub fn gen_verb(a: GenArgs, g: &Globals) -> Result<i32> {
    let gs = Gen::open(g)?;
    match a.action {
        GenAction::List => list(&gs, g),
        GenAction::Validate(which) => validate(&gs, g, &which),
        GenAction::Run { which, timeout } => run(&gs, g, &which, timeout),
        GenAction::Approve { skill } => approve(&gs, g, &skill),
    }
}

fn list(gs: &Gen, g: &Globals) -> Result<i32> {
    let approvals = gs.approvals()?;
    let mut rows = Vec::new();
    let mut human = String::new();
    for s in &gs.skills {
        if !s.has_manifest {
            human.push_str(&format!("{}  no SYNC.json\n", s.name));
            rows.push(serde_json::json!({
                "name": s.name, "dir": s.dir, "has_manifest": false,
            }));
            continue;
        }
        match gs.check(s) {
            Ok(c) => {
                let state = approval_state(&approvals, s, &c);
                let shown = match state {
                    "approved" => "approved".to_owned(),
                    "changed" => format!(
                        "changed since approval, awaits approval (`botsync gen approve --skill {}`)",
                        s.name
                    ),
                    _ => format!("awaits approval (`botsync gen approve --skill {}`)", s.name),
                };
                human.push_str(&format!(
                    "{}  -> {}  [{}]  {}\n",
                    s.name,
                    c.manifest.output_file,
                    c.manifest.patterns.join(","),
                    shown
                ));
                if let Some(d) = &c.manifest.description {
                    human.push_str(&format!("    {d}\n"));
                }
                rows.push(serde_json::json!({
                    "name": s.name, "dir": s.dir, "has_manifest": true, "valid": true,
                    "outputFile": c.manifest.output_file, "output": c.output,
                    "patterns": c.manifest.patterns, "generator": c.manifest.generator,
                    "description": c.manifest.description, "approval": state,
                }));
            }
            Err(e) => {
                human.push_str(&format!("{}  invalid: {e}\n", s.name));
                rows.push(serde_json::json!({
                    "name": s.name, "dir": s.dir, "has_manifest": true, "valid": false,
                    "error": e,
                }));
            }
        }
    }
    if gs.skills.is_empty() {
        human.push_str(&format!("no skills found under {}\n", gs.roots_text()));
    }
    let doc = serde_json::json!({ "ok": true, "skills": rows });
    g.out.emit(&doc, || human)?;
    Ok(OK)
}

fn validate(gs: &Gen, g: &Globals, which: &Which) -> Result<i32> {
    let chosen = gs.chosen(which)?;
    let mut rows = Vec::new();
    let mut human = String::new();
    let mut bad = 0;
    for s in &chosen {
        match gs.check(s) {
            Ok(c) => {
                human.push_str(&format!("{}  valid -> {}\n", s.name, c.output.display()));
                rows.push(serde_json::json!({ "name": s.name, "valid": true, "output": c.output }));
            }
            Err(e) => {
                bad += 1;
                human.push_str(&format!("{}  invalid: {e}\n", s.name));
                rows.push(serde_json::json!({ "name": s.name, "valid": false, "error": e }));
            }
        }
    }
    let skipped: Vec<&str> = if which.all {
        gs.skills
            .iter()
            .filter(|s| !s.has_manifest)
            .map(|s| s.name.as_str())
            .collect()
    } else {
        Vec::new()
    };
    if chosen.is_empty() {
        human.push_str(&format!(
            "no skill with a SYNC.json under {}\n",
            gs.roots_text()
        ));
    }
    let code = if bad == 0 { OK } else { FAILED };
    let doc = serde_json::json!({
        "ok": bad == 0, "exit_code": code, "skills": rows, "skipped": skipped,
    });
    g.out.emit(&doc, || human)?;
    if bad > 0 && !g.json {
        eprintln!(
            "botsync: error: {bad} invalid SYNC.json; fix the fields named above and run `botsync gen validate` again"
        );
    }
    Ok(code)
}

fn approve(gs: &Gen, g: &Globals, name: &str) -> Result<i32> {
    let which = Which {
        skill: Some(name.to_owned()),
        all: false,
    };
    let s = gs
        .chosen(&which)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no skill {name:?}"))?;
    let c = gs
        .check(&s)
        .map_err(|e| usage(format!("{e}; fix it, then approve")))?;
    let mut approvals = gs.approvals()?;
    approvals.skills.insert(
        s.name.clone(),
        Approval {
            hash: c.hash.clone(),
            dir: s.dir.clone(),
            approved_at: utc(now_ns()),
        },
    );
    gs.save_approvals(&approvals)?;
    let doc = serde_json::json!({
        "ok": true, "skill": s.name, "hash": c.hash, "generator": c.generator,
        "manifest_bytes": c.manifest_bytes.len(),
    });
    g.out.emit(&doc, || {
        format!(
            "approved {}: {} and {} as they are now (any change needs a new approval)\n",
            s.name,
            s.manifest_path().display(),
            c.generator.display()
        )
    })?;
    Ok(OK)
}

fn run(gs: &Gen, g: &Globals, which: &Which, timeout: Option<u64>) -> Result<i32> {
    let chosen = gs.chosen(which)?;
    let secs = timeout.or(gs.config.timeout_secs);
    let timeout = secs.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err(usage("--timeout must be at least 1 second"));
    }
    let approvals = gs.approvals()?;
    let mut rows = Vec::new();
    let mut human = String::new();
    let mut errors = Vec::new();
    for s in &chosen {
        match run_one(gs, &approvals, s, timeout) {
            Ok((c, outcome)) => {
                human.push_str(&format!(
                    "{}  wrote {} ({} ms)\n",
                    s.name,
                    c.output.display(),
                    outcome.elapsed.as_millis()
                ));
                rows.push(serde_json::json!({
                    "name": s.name, "ok": true, "output": c.output,
                    "elapsed_ms": outcome.elapsed.as_millis(),
                    "stdout": outcome.stdout, "stderr": outcome.stderr,
                }));
            }
            Err(e) => {
                let stderr = e
                    .downcast_ref::<RunFailure>()
                    .map(|f| f.stderr.clone())
                    .unwrap_or_default();
                let line = crate::exit::one_line(&e);
                errors.push((
                    crate::exit::code_for(&e),
                    format!("skill {}: {line}", s.name),
                ));
                rows.push(serde_json::json!({
                    "name": s.name, "ok": false, "error": line, "stderr": stderr,
                }));
            }
        }
    }
    if which.skill.is_some()
        && let Some((code, line)) = errors.first()
    {
        // One skill asked for: its failure is the verb's one-line error.
        crate::output::report_error(g.json, *code, line);
        return Ok(*code);
    }
    if chosen.is_empty() {
        human.push_str(&format!(
            "no skill with a SYNC.json under {}\n",
            gs.roots_text()
        ));
    }
    let code = if errors.is_empty() { OK } else { FAILED };
    let doc = serde_json::json!({ "ok": errors.is_empty(), "exit_code": code, "runs": rows });
    g.out.emit(&doc, || human)?;
    for (_, line) in &errors {
        eprintln!("botsync: error: {line}");
    }
    Ok(code)
}

/// What one run started by the daemon did: the output written, or why not (a skill that awaits
/// approval is not run and says so).
#[derive(Debug)]
pub(crate) struct AutoRun {
    /// The skill.
    pub skill: String,
    /// The output it wrote, or the one-line reason it did not run or failed.
    pub result: std::result::Result<PathBuf, String>,
}

/// Run, as `gen run` does (same checks, approval required), every skill with a SYNC.json in the
/// workspace at `root` whose patterns match one of `changed` (every skill when `None`), one
/// after the other.
pub(crate) fn run_approved(
    root: &Path,
    changed: Option<&std::collections::BTreeSet<String>>,
) -> Result<Vec<AutoRun>> {
    let gs = Gen::at(root.to_path_buf())?;
    let timeout = gs
        .config
        .timeout_secs
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let approvals = gs.approvals()?;
    let mut out = Vec::new();
    for s in gs.skills.iter().filter(|s| s.has_manifest) {
        if let Some(keys) = changed {
            // An invalid manifest matches nothing here; `gen validate` says why.
            let Ok((manifest, _)) = Manifest::load(&s.manifest_path()) else {
                continue;
            };
            let Ok(patterns) = Patterns::new(&manifest.patterns) else {
                continue;
            };
            if !keys.iter().any(|k| patterns.matches(k)) {
                continue;
            }
        }
        let result = run_one(&gs, &approvals, s, timeout)
            .map(|(c, _)| c.output)
            .map_err(|e| crate::exit::one_line(&e));
        out.push(AutoRun {
            skill: s.name.clone(),
            result,
        });
    }
    Ok(out)
}

fn run_one(
    gs: &Gen,
    approvals: &Approvals,
    s: &SkillDir,
    timeout: Duration,
) -> Result<(Checked, runner::RunOutcome)> {
    let c = gs.check(s).map_err(usage)?;
    match approval_state(approvals, s, &c) {
        "approved" => {}
        "changed" => {
            return Err(anyhow!(
                "its SYNC.json or generator changed since it was approved; review them, then run `botsync gen approve --skill {}`",
                s.name
            ));
        }
        _ => {
            return Err(anyhow!(
                "not approved to run on this machine; review {} and its generator, then run `botsync gen approve --skill {}`",
                s.manifest_path().display(),
                s.name
            ));
        }
    }
    let spec = RunSpec {
        skill: s.name.clone(),
        program: c.generator.clone(),
        skill_dir: s.dir.clone(),
        workspace: gs.root.clone(),
        output: c.output.clone(),
        patterns: c.manifest.patterns.clone(),
        timeout,
    };
    let file = s.manifest_path();
    let recheck = || {
        skill::resolve_output(
            &file,
            &c.manifest.output_file,
            &gs.root,
            &gs.config.data_dirs,
        )
        .map_err(|e| e.why)
    };
    let outcome = runner::run(&spec, &recheck)?;
    Ok((c, outcome))
}
