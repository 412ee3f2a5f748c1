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
