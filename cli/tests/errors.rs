//! Every error a user or an agent can meet: one line that says what to do, one JSON document
//! with `--json`, and each "what to do" followed to see that it works.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use assert_cmd::cargo::CommandCargoExt;
use common::Peer;
use serde_json::Value;
use std::process::Command;

fn botsync() -> Command {
    let mut c = Command::cargo_bin("botsync").unwrap();
    c.env_remove("BOTSYNC_WORKSPACE");
    c
}

/// Run, expecting failure with `code`: (the JSON document, the stderr error line).
fn fails(p: &Peer, args: &[&str], code: i32) -> (Value, String) {
    let out = p.cmd().arg("--json").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: no JSON document ({e}): {out:?}"));
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], code);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("botsync: error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
        .to_owned();
    assert_eq!(
        doc["error"].as_str().unwrap(),
        &line["botsync: error: ".len()..]
    );
    (doc, line)
}

#[test]
fn usage_errors_with_json_print_one_json_document_and_exit_2() {
    for args in [
        &["--json", "bogus"][..],
        &["--json", "sync", "--nope"],
        &["--json", "add", "only-a-name"],
        &["auto", "maybe", "--json"],
    ] {
        let out = botsync().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"));
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["exit_code"], 2);
        assert!(doc["error"].as_str().unwrap().contains("botsync --help"));
    }
    // Without --json, nothing on stdout.
    let out = botsync().arg("bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn every_verb_outside_a_workspace_fails_with_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    for verb in [
        &["status"][..],
        &["id"],
        &["peers"],
        &["add", "x", "127.0.0.1:7474", "--id", "AAAA"],
        &["remove", "x"],
        &["sync"],
        &["push"],
        &["pull"],
        &["diff"],
        &["scan"],
        &["auto", "off"],
        &["serve"],
    ] {
        let out = botsync()
            .arg("-w")
            .arg(dir.path())
            .arg("--json")
            .args(verb)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{verb:?}: {out:?}");
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{verb:?}: {e}: {out:?}"));
        assert!(
            doc["error"]
                .as_str()
                .unwrap()
                .contains("run `botsync init -w"),
            "{verb:?}: {doc}"
        );
    }
}

#[test]
fn a_malformed_config_names_line_and_column_and_reset_config_repairs_it() {
    let p = Peer::new("alpha");
    let cfg = p.path(".botsync/config.json");
    std::fs::write(&cfg, "{\n  \"version\": 1,\n  oops\n}\n").unwrap();
    let (_, line) = fails(&p, &["status"], 2);
    assert!(line.contains("config.json line 3 column"), "{line}");
    assert!(line.contains("`botsync init --reset-config`"), "{line}");
    // init over the garbage config does not say "already initialized": it says the same.
    let (_, line) = fails(&p, &["init"], 2);
    assert!(line.contains("`botsync init --reset-config`"), "{line}");
    // Follow the advice.
    let json = p.ok(&["init", "--reset-config"]);
    let backup = json["config_backup"].as_str().unwrap();
    assert!(std::fs::read_to_string(backup).unwrap().contains("oops"));
    p.ok(&["status"]);
}

#[test]
fn a_malformed_peers_file_is_started_anew_by_peers_reset_and_add_works_after() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    std::fs::write(a.path(".botsync/peers.json"), "{ \"peers\": [ garbage").unwrap();
    for args in [
        &["add", "beta", "127.0.0.1:7474", "--id", &b.id()][..],
        &["remove", "beta"],
        &["peers"],
    ] {
        let (_, line) = fails(&a, args, 2);
        assert!(line.contains("peers.json line 1 column"), "{line}");
        assert!(line.contains("`botsync peers --reset`"), "{line}");
    }
    let json = a.ok(&["peers", "--reset"]);
    let backup = json["backup"].as_str().unwrap();
    assert!(std::fs::read_to_string(backup).unwrap().contains("garbage"));
    a.add(&b, 7474);
    assert_eq!(a.ok(&["peers"])["peers"][0]["name"], "beta");
}

#[test]
fn a_missing_certificate_is_rebuilt_by_init_with_the_same_id() {
    let p = Peer::new("alpha");
    let id = p.id();
    std::fs::remove_file(p.path(".botsync/identity/cert.pem")).unwrap();
    let (_, line) = fails(&p, &["status"], 2);
    assert!(
        line.contains("cert.pem is missing; run `botsync init`"),
        "{line}"
    );
    let json = p.ok(&["init"]);
    assert_eq!(json["identity"], "certificate_rebuilt");
    assert_eq!(p.id(), id);
}

#[test]
fn a_deleted_key_is_replaced_only_with_new_identity_and_a_warning() {
    let p = Peer::new("alpha");
    let old = p.id();
    std::fs::remove_file(p.path(".botsync/identity/key.pem")).unwrap();
    let (_, line) = fails(&p, &["init"], 2);
    assert!(line.contains("has no identity key"), "{line}");
    assert!(line.contains("`botsync init --new-identity`"), "{line}");
    let (_, line) = fails(&p, &["id"], 2);
    assert!(line.contains("`botsync init --new-identity`"), "{line}");
    let out = p
        .cmd()
        .args(["--json", "init", "--new-identity"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["identity"], "replaced");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NEW peer id"), "{stderr}");
    let new = p.id();
    assert_ne!(new, old);
    assert!(stderr.contains(&new), "{stderr}");
    // A working identity is not replaced by accident.
    let (_, line) = fails(&p, &["init", "--new-identity"], 2);
    assert!(line.contains("identity is fine"), "{line}");
    assert_eq!(p.id(), new);
}

#[test]
fn an_index_path_that_is_a_file_is_one_clear_line_and_moving_it_away_works() {
    let p = Peer::new("alpha");
    p.write("memory/a.md", "a\n");
    p.ok(&["scan"]);
    let db = p.path(".botsync/db");
    std::fs::remove_dir_all(&db).unwrap();
    std::fs::write(&db, "not a directory").unwrap();
    let (_, line) = fails(&p, &["scan"], 2);
    assert!(
        line.contains("is a file, not botsync's index directory"),
        "{line}"
    );
    assert!(!line.contains("os error"), "{line}");
    std::fs::rename(&db, p.path(".botsync/db.bad")).unwrap();
    let json = p.ok(&["scan"]);
    assert_eq!(json["files"], 1, "{json}");
}

#[test]
fn a_garbled_certificate_is_rebuilt_and_a_garbled_key_is_replaced_only_when_asked() {
    let p = Peer::new("alpha");
    let id = p.id();
    std::fs::write(p.path(".botsync/identity/cert.pem"), "garbage").unwrap();
    let (_, line) = fails(&p, &["status"], 2);
    assert!(
        line.contains("run `botsync init` to rebuild it from key.pem"),
        "{line}"
    );
    assert_eq!(p.ok(&["init"])["identity"], "certificate_rebuilt");
    assert_eq!(p.id(), id);

    std::fs::write(p.path(".botsync/identity/key.pem"), "garbage").unwrap();
    let (_, line) = fails(&p, &["status"], 2);
    assert!(line.contains("`botsync init --new-identity`"), "{line}");
    let (_, line) = fails(&p, &["init"], 2);
    assert!(line.contains("`botsync init --new-identity`"), "{line}");
    assert_eq!(p.ok(&["init", "--new-identity"])["identity"], "replaced");
    assert_ne!(p.id(), id);
    let damaged = p.path(".botsync/identity/key.pem.damaged");
    assert_eq!(std::fs::read_to_string(damaged).unwrap(), "garbage");
}
