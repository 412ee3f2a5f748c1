//! SYNC.json generators (`botsync gen list|validate|run|approve`), end to end: a skill declares a
//! generator that renders state keys into a markdown file; botsync finds it, checks it, refuses
//! to run it until approved here, and installs its output only when it succeeds.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Peer, human};

/// A skill `skills/NAME/` with SKILL.md, the manifest `sync_json` and an executable
/// `scripts/sync.sh` holding `script`.
fn skill(p: &Peer, name: &str, sync_json: &str, script: &str) {
    p.write(&format!("skills/{name}/SKILL.md"), format!("# {name}\n"));
    p.write(&format!("skills/{name}/SYNC.json"), sync_json);
    let script_path = format!("skills/{name}/scripts/sync.sh");
    p.write(&script_path, script);
    std::fs::set_permissions(p.path(&script_path), std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn manifest(output: &str) -> String {
    format!(
        r#"{{"version":"1","outputFile":"{output}","patterns":["memory:*"],"generator":"./scripts/sync.sh","description":"memories"}}"#
    )
}

const RENDER: &str = "#!/bin/sh\nset -eu\n{ echo '# Memory'; botsync state list --pattern \"$SYNC_PATTERNS\"; } > \"$SYNC_OUTPUT_FILE\"\n";

/// A memory skill writing MEMORY.md, approved, with MEMORY.md already holding "old".
fn approved(script: &str) -> Peer {
    let a = Peer::new("alpha");
    skill(&a, "mem", &manifest("MEMORY.md"), script);
    a.ok(&["gen", "approve", "--skill", "mem"]);
    a.write("MEMORY.md", "old\n");
    a
}

fn memory(p: &Peer) -> String {
    String::from_utf8(p.read("MEMORY.md").unwrap()).unwrap()
}

#[test]
fn a_skill_runs_only_after_approval_and_its_output_appears() {
    let a = Peer::new("alpha");
    a.ok(&["state", "set", "memory:editor", "helix"]);
    skill(&a, "mem", &manifest("MEMORY.md"), RENDER);

    let list = a.ok(&["gen", "list"]);
    assert_eq!(list["skills"][0]["approval"], "awaits_approval");
    let (_, out, _) = human(&a, &["gen", "list"]);
    assert!(
        out.contains("mem  -> MEMORY.md  [memory:*]  awaits approval"),
        "{out}"
    );

    let (code, _, err) = human(&a, &["gen", "run", "--skill", "mem"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("run `botsync gen approve --skill mem`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(a.read("MEMORY.md").is_none(), "nothing ran");

    a.ok(&["gen", "approve", "--skill", "mem"]);
    assert_eq!(a.ok(&["gen", "list"])["skills"][0]["approval"], "approved");
    let run = a.ok(&["gen", "run", "--skill", "mem"]);
    assert_eq!(run["runs"][0]["ok"], true, "{run}");
    assert_eq!(memory(&a), "# Memory\nmemory:editor\thelix\n");
    let leftovers: Vec<_> = std::fs::read_dir(a.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".botsync-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Any change to the generator (say, one that arrived from a peer) needs a new approval.
    a.write(
        "skills/mem/scripts/sync.sh",
        format!("{RENDER}echo changed\n"),
    );
    let (code, _, err) = human(&a, &["gen", "run", "--all"]);
    assert_eq!(code, 1);
    assert!(err.contains("changed since it was approved"), "{err}");
    assert_eq!(a.ok(&["gen", "list"])["skills"][0]["approval"], "changed");
}

#[test]
fn the_generator_gets_a_minimal_environment_and_the_daemon_answers_its_state_list() {
    let a = approved(
        "#!/bin/sh\nset -eu\n{ botsync state list; env | sort; } > \"$SYNC_OUTPUT_FILE\"\n",
    );
    a.ok(&["state", "set", "memory:x", "1"]);
    let _daemon = a.serve();
    let out = a
        .cmd()
        .args(["gen", "run", "--skill", "mem"])
        .env("GITHUB_TOKEN", "secret-token")
        .env("SSH_AUTH_SOCK", "/tmp/agent.sock")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = memory(&a);
    assert!(m.starts_with("memory:x\t1\n"), "{m}");
    assert!(
        !m.contains("secret-token") && !m.contains("SSH_AUTH_SOCK"),
        "{m}"
    );
    let root = a.root().display().to_string();
    assert!(m.contains(&format!("BOTSYNC_WORKSPACE={root}\n")), "{m}");
    assert!(m.contains(&format!("SKILL_DIR={root}/skills/mem\n")), "{m}");
    assert!(m.contains("SYNC_PATTERNS=memory:*\n"), "{m}");
    assert!(
        m.contains(&format!("SYNC_OUTPUT_FILE={root}/.botsync-tmp-gen-")),
        "{m}"
    );
    assert!(m.contains(":/usr/bin:/bin\n"), "{m}");
}

#[test]
fn a_failing_generator_leaves_the_old_output_and_says_why() {
    let a = approved(
        "#!/bin/sh\necho partial > \"$SYNC_OUTPUT_FILE\"\necho 'no database' >&2\nexit 3\n",
    );
    let (code, _, err) = human(&a, &["gen", "run", "--skill", "mem"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("exited with code 3 (its last words: no database)"),
        "{err}"
    );
    assert!(err.contains("was left as it was"), "{err}");
    assert_eq!(memory(&a), "old\n");
}

#[test]
fn a_generator_that_exits_0_but_writes_nothing_changes_nothing() {
    let a = approved("#!/bin/sh\nexit 0\n");
    let (code, _, err) = human(&a, &["gen", "run", "--skill", "mem"]);
    assert_eq!(code, 1);
    assert!(err.contains("wrote nothing to SYNC_OUTPUT_FILE"), "{err}");
    assert_eq!(memory(&a), "old\n");
}

fn alive(pid: u32) -> bool {
    // A zombie waiting for its reaper is gone as far as the generator is concerned.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn a_hanging_generator_is_killed_at_the_timeout_with_the_child_it_forked() {
    let a = approved(
        "#!/bin/sh\necho partial > \"$SYNC_OUTPUT_FILE\"\nsleep 300 &\necho $! > \"$SKILL_DIR/child.pid\"\nsleep 300\n",
    );
    let started = Instant::now();
    let (code, _, err) = human(&a, &["gen", "run", "--skill", "mem", "--timeout", "1"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it was not killed"
    );
    assert_eq!(code, 1);
    assert!(err.contains("ran longer than 1s and was killed"), "{err}");
    assert_eq!(memory(&a), "old\n", "the old output is intact");
    let pid: u32 = String::from_utf8(a.read("skills/mem/child.pid").unwrap())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        common::eventually(5, || !alive(pid)),
        "the forked child {pid} outlived the timeout"
    );
}

#[test]
fn an_output_outside_the_workspace_is_refused_before_anything_runs() {
    let a = Peer::new("alpha");
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("ESCAPED.md");
    skill(&a, "up", &manifest("../ESCAPED.md"), RENDER);
    skill(&a, "abs", &manifest(target.to_str().unwrap()), RENDER);
    skill(&a, "own", &manifest(".botsync/config.json"), RENDER);
    for (name, why) in [
        ("up", "uses \"..\""),
        ("abs", "is outside the workspace"),
        ("own", "is inside .botsync/"),
    ] {
        let (code, _, err) = human(&a, &["gen", "approve", "--skill", name]);
        assert_eq!(code, 2, "{name}");
        assert!(err.contains("SYNC.json: field \"outputFile\""), "{err}");
        assert!(err.contains(why), "{name}: {err}");
        let (code, _, err) = human(&a, &["gen", "run", "--skill", name]);
        assert_eq!(code, 2, "{name}");
        assert!(err.contains(why), "{name}: {err}");
    }
    assert!(!target.exists());
    assert!(!a.root().parent().unwrap().join("ESCAPED.md").exists());

    // The same absolute path is fine once it is a configured data directory.
    a.write(
        ".botsync/gen.json",
        format!(r#"{{"data_dirs": ["{}"]}}"#, outside.path().display()),
    );
    a.ok(&["gen", "approve", "--skill", "abs"]);
    a.ok(&["gen", "run", "--skill", "abs"]);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "# Memory\n");
}

#[test]
fn an_output_path_that_is_a_symlink_is_never_written_through() {
    let a = Peer::new("alpha");
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    skill(&a, "mem", &manifest("MEMORY.md"), RENDER);
    a.ok(&["gen", "approve", "--skill", "mem"]);
    std::os::unix::fs::symlink(&victim, a.path("MEMORY.md")).unwrap();
    let (code, _, err) = human(&a, &["gen", "run", "--skill", "mem"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("is a symlink; botsync never writes through one"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(a.path("MEMORY.md").is_symlink(), "the link is left alone");
}

#[test]
fn validate_names_the_file_the_field_and_why() {
    let a = Peer::new("alpha");
    skill(&a, "good", &manifest("GOOD.md"), RENDER);
    skill(
        &a,
        "future",
        r#"{"version":"2","outputFile":"F.md","patterns":["a:*"],"generator":"./scripts/sync.sh"}"#,
        RENDER,
    );
    skill(
        &a,
        "nopat",
        r#"{"version":"1","outputFile":"N.md","patterns":["memory:["],"generator":"./scripts/sync.sh"}"#,
        RENDER,
    );
    skill(
        &a,
        "noout",
        r#"{"version":"1","patterns":["a:*"],"generator":"./scripts/sync.sh"}"#,
        RENDER,
    );
    skill(
        &a,
        "nogen",
        r#"{"version":"1","outputFile":"G.md","patterns":["a:*"],"generator":"./scripts/missing.sh"}"#,
        RENDER,
    );
    skill(&a, "noexec", &manifest("X.md"), RENDER);
    std::fs::set_permissions(
        a.path("skills/noexec/scripts/sync.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    a.write("skills/plain/SKILL.md", "# no SYNC.json here\n");

    let (code, doc, _) = a.run(&["gen", "validate", "--all"]);
    assert_eq!(code, 1);
    assert_eq!(
        doc["skipped"],
        serde_json::json!(["plain"]),
        "missing SYNC.json is skipped"
    );
    let error = |name: &str| -> String {
        let row = doc["skills"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap();
        row["error"].as_str().unwrap_or("").to_owned()
    };
    assert_eq!(error("good"), "");
    assert!(
        error("future").contains(
            "skills/future/SYNC.json: field \"version\": schema version \"2\" is not supported"
        ),
        "{}",
        error("future")
    );
    assert!(
        error("nopat").contains("field \"patterns\": invalid pattern \"memory:[\""),
        "{}",
        error("nopat")
    );
    assert!(
        error("noout").contains("field \"outputFile\": is required"),
        "{}",
        error("noout")
    );
    assert!(
        error("nogen").contains("field \"generator\"") && error("nogen").contains("does not exist"),
        "{}",
        error("nogen")
    );
    assert!(
        error("noexec").contains("is not executable; run `chmod +x"),
        "{}",
        error("noexec")
    );

    let (code, _, err) = human(&a, &["gen", "validate", "--skill", "plain"]);
    assert_eq!(code, 2);
    assert!(err.contains("skill \"plain\" has no SYNC.json"), "{err}");
    let (code, _, err) = human(&a, &["gen", "validate", "--skill", "nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`botsync gen list` shows the skills found"),
        "{err}"
    );
    a.ok(&["gen", "validate", "--skill", "good"]);

    // --all runs what is valid and approved, and reports the rest.
    a.ok(&["gen", "approve", "--skill", "good"]);
    let (code, doc, _) = a.run(&["gen", "run", "--all"]);
    assert_eq!(code, 1);
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "plain is skipped: {doc}");
    assert!(
        runs.iter().any(|r| r["name"] == "good" && r["ok"] == true),
        "{doc}"
    );
    assert_eq!(a.read("GOOD.md").unwrap(), b"# Memory\n");
}

/// Copy a directory tree (permissions too: `fs::copy` keeps them).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn the_example_memory_manager_skill_renders_memories_into_memory_md() {
    let a = Peer::new("alpha");
    let example = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/skills/memory-manager");
    copy_tree(&example, &a.path("skills/memory-manager"));
    a.ok(&["gen", "validate", "--skill", "memory-manager"]);
    a.ok(&["gen", "approve", "--skill", "memory-manager"]);

    a.ok(&["gen", "run", "--skill", "memory-manager"]);
    assert!(memory(&a).contains("_No memories yet._"), "{}", memory(&a));

    a.ok(&["state", "set", "memory:editor", "helix with vim keys"]);
    a.ok(&["state", "set", "memory:git", "prefers small commits"]);
    a.ok(&["state", "set", "notes:todo", "not a memory"]);
    let _daemon = a.serve();
    let run = a.ok(&["gen", "run", "--all"]);
    assert_eq!(
        run["runs"][0]["stdout"],
        "memory-manager: rendered 2 keys\n"
    );
    let m = memory(&a);
    assert!(m.starts_with("# Memory\n"), "{m}");
    assert!(
        m.ends_with(
            "- **memory:editor**: helix with vim keys\n- **memory:git**: prefers small commits\n"
        ),
        "{m}"
    );
    assert!(!m.contains("notes:todo"), "{m}");
}

#[test]
fn an_output_directory_swapped_for_a_symlink_while_the_generator_runs_is_not_written_through() {
    let a = Peer::new("alpha");
    let outside = tempfile::tempdir().unwrap();
    a.write("out/KEEP.md", "keep\n");
    let script = format!(
        "#!/bin/sh\nset -eu\necho new > \"$SYNC_OUTPUT_FILE\"\nmv \"$BOTSYNC_WORKSPACE/out\" \"$BOTSYNC_WORKSPACE/out.real\"\nln -s {} \"$BOTSYNC_WORKSPACE/out\"\n",
        outside.path().display()
    );
    skill(&a, "swap", &manifest("out/M.md"), &script);
    a.ok(&["gen", "approve", "--skill", "swap"]);
    let (code, _, err) = human(&a, &["gen", "run", "--skill", "swap"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no longer safe") && err.contains("symlink"),
        "{err}"
    );
    assert!(
        !outside.path().join("M.md").exists(),
        "nothing was written through the link"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn skills_are_also_found_in_extra_roots_and_the_timeout_comes_from_gen_json() {
    let a = Peer::new("alpha");
    let extra = tempfile::tempdir().unwrap();
    let dir = extra.path().join("slow");
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(dir.join("SKILL.md"), "# slow\n").unwrap();
    std::fs::write(dir.join("SYNC.json"), manifest("SLOW.md")).unwrap();
    let script = dir.join("scripts/sync.sh");
    std::fs::write(&script, "#!/bin/sh\nsleep 300\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let (_, out, _) = human(&a, &["gen", "list"]);
    assert!(out.contains("no skills found under"), "{out}");
    a.write(
        ".botsync/gen.json",
        format!(
            r#"{{"skill_roots": ["{}"], "timeout_secs": 1}}"#,
            extra.path().display()
        ),
    );
    let list = a.ok(&["gen", "list"]);
    assert_eq!(list["skills"][0]["name"], "slow", "{list}");
    a.ok(&["gen", "approve", "--skill", "slow"]);
    let started = Instant::now();
    let (code, _, err) = human(&a, &["gen", "run", "--skill", "slow"]);
    assert_eq!(code, 1);
    assert!(err.contains("ran longer than 1s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));

    a.write(".botsync/gen.json", r#"{"timeout": 5}"#);
    let (code, _, err) = human(&a, &["gen", "list"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("gen.json") && err.contains("timeout_secs"),
        "{err}"
    );
}

#[test]
fn a_scan_while_the_generator_runs_does_not_sweep_its_output() {
    // Found in CI: the daemon rescanned while a generator ran and removed its half-written
    // SYNC_OUTPUT_FILE as a stale temp, so the run failed with "wrote nothing". Here the
    // generator itself starts the scan between writing and exiting.
    let a = approved(
        "#!/bin/sh\nset -eu\necho fresh > \"$SYNC_OUTPUT_FILE\"\nbotsync scan > /dev/null\n",
    );
    let run = a.ok(&["gen", "run", "--skill", "mem"]);
    assert_eq!(run["runs"][0]["ok"], true, "{run}");
    assert_eq!(memory(&a), "fresh\n");
    let scan = a.ok(&["scan"]);
    assert_eq!(scan["skipped"], serde_json::json!([]), "{scan}");
}

#[test]
fn a_generator_killed_mid_run_leaves_no_temp_after_the_next_run() {
    // A `gen run` killed before it installed leaves `.botsync-tmp-gen-PID-SKILL`; a scan never
    // syncs it and the next run of any generator in that directory removes it (its process is gone).
    let a = approved("#!/bin/sh\nset -eu\necho new > \"$SYNC_OUTPUT_FILE\"\n");
    let dead = a.path(".botsync-tmp-gen-999999999-mem");
    std::fs::write(&dead, "left by a killed run\n").unwrap();
    let scan = a.ok(&["scan"]);
    assert_eq!(scan["files"], 1, "only MEMORY.md: {scan}");
    assert!(dead.exists(), "a scan leaves generator temps to the runner");
    a.ok(&["gen", "run", "--skill", "mem"]);
    assert_eq!(memory(&a), "new\n");
    assert!(!dead.exists(), "the dead run's temp is swept");
}
