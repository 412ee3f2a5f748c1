//! The secret guard, end to end: an agent's note that holds a private key or a token stays on
//! its machine, the sync says which file, which line and how to allow it, an allowed path is
//! sent, and notes full of hashes, ids and images sync as usual.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Peer, pair};

const PEM_NOTE: &str = "# deploy box\n\nlogin with:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB\n-----END OPENSSH PRIVATE KEY-----\n";
const TOKEN_NOTE: &str =
    "# github\nthe bot pushes with\nexport GH_TOKEN=ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEf1234\n";

/// Hashes, UUIDs, the seed's database ids and an inline image: random-looking, not secret.
const INNOCENT_NOTE: &str = "# mesh\n\
    tasks db: 2f835e81-2bbb-81b6-9700-e18108a40b1f\n\
    build sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n\
    blob af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\n\
    run 123e4567-e89b-12d3-a456-426614174000\n\
    ![dot](data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==)\n\
    \"token_file\": \"/home/agent/.secrets/notion-token\"\n\
    max_tokens: 4096\n";

fn allow(p: &Peer, globs: &[&str]) {
    let path = p.path(".botsync/config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["secret_allow"] = serde_json::json!(globs);
    std::fs::write(path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

#[test]
fn a_note_holding_a_private_key_or_a_token_is_not_sent() {
    let (alpha, beta, _server) = pair();
    alpha.write("memory/deploy.md", PEM_NOTE);
    alpha.write("memory/github.md", TOKEN_NOTE);
    alpha.write("memory/plain.md", "nothing to hide\n");

    let (code, json, _) = alpha.run(&["sync"]);
    assert_eq!(code, 3, "something was held back: {json}");
    assert_eq!(beta.read("memory/plain.md").unwrap(), b"nothing to hide\n");
    assert_eq!(beta.read("memory/deploy.md"), None);
    assert_eq!(beta.read("memory/github.md"), None);

    let skipped = json["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{json}");
    assert_eq!(skipped[0]["path"], "memory/deploy.md");
    assert_eq!(
        skipped[0]["reason"],
        "holds a secret: line 4 has a private key"
    );
    assert_eq!(skipped[1]["path"], "memory/github.md");
    assert_eq!(
        skipped[1]["reason"],
        "holds a secret: line 3 has a GitHub token"
    );
    assert!(
        skipped[0]["what_to_do"]
            .as_str()
            .unwrap()
            .contains("\"secret_allow\" in .botsync/config.json"),
        "{json}"
    );

    // No byte of either secret reached the peer, in its files or its store.
    for needle in ["ghp_R4nd0mT0k3n", "b3BlbnNzaC1rZXktdjEAAAAA"] {
        assert!(
            !grep_tree(beta.root(), needle.as_bytes()),
            "{needle} on beta"
        );
    }
}

#[test]
fn the_sync_line_names_the_file_the_line_and_the_allow_rule() {
    let (alpha, _beta, _server) = pair();
    alpha.write("memory/github.md", TOKEN_NOTE);
    let out = alpha.cmd().arg("sync").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("memory/github.md"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("line 3 has a GitHub token"), "{text}");
    assert!(lines[0].contains("secret_allow"), "{text}");

    // `scan` says the same, before any sync.
    let (_, json, _) = alpha.run(&["scan"]);
    assert_eq!(json["skipped"][0]["path"], "memory/github.md", "{json}");
}

#[test]
fn an_allowed_path_is_sent() {
    let (alpha, beta, _server) = pair();
    allow(&alpha, &["memory/keys/**"]);
    alpha.write("memory/keys/deploy.md", PEM_NOTE);
    alpha.write("memory/github.md", TOKEN_NOTE);
    let (code, json, _) = alpha.run(&["sync"]);
    assert_eq!(code, 3, "the token note is still held back: {json}");
    assert_eq!(
        beta.read("memory/keys/deploy.md").unwrap(),
        PEM_NOTE.as_bytes()
    );
    assert_eq!(beta.read("memory/github.md"), None);

    // Once the token leaves the note, the note syncs and the sync is clean.
    alpha.write(
        "memory/github.md",
        "# github\nthe token lives in .secrets/\n",
    );
    let (code, json, _) = alpha.run(&["sync"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(
        beta.read("memory/github.md").unwrap(),
        b"# github\nthe token lives in .secrets/\n"
    );
}

#[test]
fn hashes_ids_and_images_sync_as_usual() {
    let (alpha, beta, _server) = pair();
    alpha.write("memory/mesh.md", INNOCENT_NOTE);
    let (code, json, _) = alpha.run(&["sync"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(
        beta.read("memory/mesh.md").unwrap(),
        INNOCENT_NOTE.as_bytes()
    );
}

#[test]
fn a_bad_secret_pattern_is_one_clear_line() {
    let p = Peer::new("alpha");
    let path = p.path(".botsync/config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["secret_patterns"] = serde_json::json!(["(unclosed"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let out = p.cmd().arg("scan").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("secret_patterns[0]"), "{err}");
}

/// True if any file under `dir` (workspace, `.botsync/` store and database) holds `needle`.
fn grep_tree(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                return true;
            }
        }
    }
    false
}

// `botsync config validate` and `botsync config template`: the seed's "config validation on
// startup" and "push template" steps.

fn write_config(p: &Peer, text: &str) {
    std::fs::write(p.path(".botsync/config.json"), text).unwrap();
}

#[test]
fn config_validate_passes_a_good_config_and_names_the_line_and_field_of_a_bad_one() {
    let p = Peer::new("alpha");
    let json = p.ok(&["config", "validate"]);
    assert_eq!(json["ok"], true, "{json}");

    write_config(&p, "{\n  \"version\": 1,\n  \"sync_skills\": \"yes\"\n}\n");
    let out = p.cmd().args(["config", "validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("config.json line 3 column"), "{err}");
    assert!(err.contains("field \"sync_skills\""), "{err}");
    assert!(err.contains("botsync config validate"), "{err}");

    let (code, json, _) = p.run(&["config", "validate"]);
    assert_eq!(code, 2);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("field \"sync_skills\""),
        "{json}"
    );

    write_config(
        &p,
        "{\n  \"delete_threshold\": {\n    \"percent\": 140\n  }\n}\n",
    );
    let out = p.cmd().args(["config", "validate"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.json line 3, field \"delete_threshold.percent\""),
        "{err}"
    );

    // More state_sync patterns than a peer takes: refused here, by name, not at sync time.
    let patterns: Vec<String> = (0..65).map(|i| format!("\"state/k{i}/*\"")).collect();
    write_config(
        &p,
        &format!("{{\n  \"state_sync\": [{}]\n}}\n", patterns.join(", ")),
    );
    let out = p.cmd().args(["config", "validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("state_sync has 65 patterns, at most 64"),
        "{err}"
    );
}

#[test]
fn the_daemon_refuses_to_start_on_an_invalid_config_with_the_same_line() {
    let p = Peer::new("alpha");
    write_config(&p, "{\n  \"secret_allow\": [\"a/{b\"]\n}\n");
    let validate = p.cmd().args(["config", "validate"]).output().unwrap();
    let mut child = p
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stopped = common::eventually(20, || child.try_wait().unwrap().is_some());
    if !stopped {
        let _ = child.kill();
    }
    assert!(stopped, "the daemon started on an invalid config");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let served = String::from_utf8_lossy(&out.stderr);
    let validated = String::from_utf8_lossy(&validate.stderr);
    assert!(served.contains("field \"secret_allow[0]\""), "{served}");
    assert_eq!(served, validated);
}

const MESH_CONFIG: &str = r#"{
  "mesh_agents": {
    "cassian": {
      "name": "Cassian Sandman",
      "bot": "@Covault_Sandman_Bot",
      "webhook": "http://100.112.130.22:18789/hooks/agent",
      "tailscale_ip": "100.112.130.22",
      "hook_token": "Zx8qL2mN9vB4cR7tY1wE6uI3oP5aS0dF"
    }
  },
  "databases": {
    "tasks": "2f835e81-2bbb-81b6-9700-e18108a40b1f"
  },
  "github": { "org": "covaultxyz", "token": "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEf1234" },
  "notion": { "token_file": "/home/agent/.secrets/notion-token" }
}
"#;

#[test]
fn config_template_prints_the_mesh_config_without_its_secrets() {
    let p = Peer::new("alpha");
    p.write(".secrets/mesh-config.json", MESH_CONFIG);
    let out = p.cmd().args(["config", "template"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let template: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        !text.contains("Zx8qL2mN9vB4") && !text.contains("ghp_"),
        "{text}"
    );
    assert_eq!(template["mesh_agents"]["cassian"]["hook_token"], "<secret>");
    assert_eq!(template["github"]["token"], "<secret>");
    assert_eq!(
        template["notion"]["token_file"],
        "/home/agent/.secrets/notion-token"
    );
    assert_eq!(
        template["databases"]["tasks"],
        "2f835e81-2bbb-81b6-9700-e18108a40b1f"
    );

    // Any file by name, and the stripped keys in the JSON document.
    p.write("notes/mesh.json", MESH_CONFIG);
    let json = p.ok(&[
        "config",
        "template",
        &p.path("notes/mesh.json").to_string_lossy(),
    ]);
    assert_eq!(
        json["stripped"],
        serde_json::json!(["/mesh_agents/cassian/hook_token", "/github/token"])
    );

    // No file: one line saying what to do.
    std::fs::remove_file(p.path(".secrets/mesh-config.json")).unwrap();
    let out = p.cmd().args(["config", "template"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".secrets/mesh-config.json"), "{err}");
    assert!(err.contains("botsync config template FILE"), "{err}");
}

#[test]
fn status_names_a_held_back_file_too() {
    let (alpha, _beta, _server) = pair();
    alpha.write("memory/deploy.md", PEM_NOTE);
    // `status` reports (its exit code is about open conflicts, as before).
    let (code, json, _) = alpha.run(&["status"]);
    assert_eq!(code, 0, "{json}");
    let skipped = json["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{json}");
    assert_eq!(skipped[0]["path"], "memory/deploy.md");
    assert_eq!(
        skipped[0]["reason"],
        "holds a secret: line 4 has a private key"
    );
    let out = alpha.cmd().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("memory/deploy.md"), "{text}");
    assert!(text.contains("secret_allow"), "{text}");
}

#[test]
fn a_held_back_file_is_not_overwritten_by_the_peers_version() {
    let (alpha, beta, _server) = pair();
    // Both have a note at one path; alpha's, never synced, holds a token.
    beta.write("memory/github.md", "# github\nbeta's notes\n");
    alpha.write("memory/github.md", TOKEN_NOTE);
    // Both have a synced note; alpha's edit adds a token, beta edits it too.
    alpha.write("memory/edited.md", "v1\n");
    let (code, json, _) = alpha.run(&["push"]);
    assert_eq!(code, 3, "{json}");
    assert_eq!(beta.read("memory/edited.md").unwrap(), b"v1\n");
    alpha.write("memory/edited.md", format!("v2\n{TOKEN_NOTE}"));
    beta.write("memory/edited.md", "v1\nbeta edited\n");

    let (code, json, _) = alpha.run(&["sync"]);
    assert_eq!(code, 3, "{json}");
    assert_eq!(
        alpha.read("memory/github.md").unwrap(),
        TOKEN_NOTE.as_bytes()
    );
    assert_eq!(
        alpha.read("memory/edited.md").unwrap(),
        format!("v2\n{TOKEN_NOTE}").as_bytes()
    );
    assert!(!grep_tree(beta.root(), b"ghp_R4nd0mT0k3n"));
}

#[test]
fn with_daemons_and_auto_sync_a_token_note_stays_home_and_is_named() {
    let (alpha, beta) = (Peer::new("alpha"), Peer::new("beta"));
    let (da, db) = (alpha.serve(), beta.serve());
    alpha.add(&beta, db.port);
    beta.add(&alpha, da.port);
    alpha.ok(&["auto", "on"]);
    // The watcher sees both files; the daemon's partial rescan holds the token note back.
    alpha.write("memory/github.md", TOKEN_NOTE);
    alpha.write("memory/plain.md", "nothing to hide\n");
    assert!(
        common::eventually(30, || beta.read("memory/plain.md").is_some()),
        "the plain note never reached beta"
    );
    let (code, json, _) = alpha.run(&["sync"]);
    assert_eq!(code, 3, "{json}");
    assert_eq!(json["skipped"][0]["path"], "memory/github.md", "{json}");
    assert_eq!(beta.read("memory/github.md"), None);
    assert!(!grep_tree(beta.root(), b"ghp_R4nd0mT0k3n"));
}
