//! Names (docs/CONFLICTS.md, *Names*): NFC and NFD spellings of one name are one file, and a
//! case-insensitive collision is a conflict that `conflicts resolve` ends. Two real processes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::pair;

/// `memory/café.md` spelled with a combining accent (NFD), as macOS writes it.
const NFD: &str = "memory/cafe\u{301}.md";
/// The same name precomposed (NFC), as the wire carries it.
const NFC: &str = "memory/caf\u{e9}.md";

#[test]
fn a_file_that_exists_only_in_nfd_syncs() {
    let (a, b, _server) = pair();
    a.write(NFD, "un café\n");
    let (code, json, stderr) = a.run(&["sync"]);
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(b.read(NFC).unwrap(), b"un caf\xc3\xa9\n");

    // An edit on the other side updates the NFD file in place; no second spelling appears.
    b.write(NFC, "deux cafés\n");
    let (code, json, stderr) = a.run(&["sync"]);
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(a.read(NFD).unwrap(), "deux cafés\n".as_bytes());
    let names: Vec<String> = std::fs::read_dir(a.path("memory"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["cafe\u{301}.md".to_owned()],
        "one file, still NFD on disk"
    );
}

/// Alpha has `memory/Note.md`, beta `memory/note.md`: on a case-insensitive disk one would
/// overwrite the other, so the first sync takes neither and each side records a conflict.
fn collided() -> (common::Peer, common::Peer, common::Server) {
    let (a, b, server) = pair();
    a.write("memory/Note.md", "alpha's note\n");
    b.write("memory/note.md", "beta's note\n");
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 3, "a case collision needs attention: {json}");
    assert_eq!(a.read("memory/note.md"), None, "never an overwrite");
    assert_eq!(b.read("memory/Note.md"), None, "never an overwrite");
    let (code, list, _) = a.run(&["conflicts", "list"]);
    assert_eq!(code, 3);
    assert_eq!(list["conflicts"][0]["kind"], "case_collision", "{list}");
    assert_eq!(list["conflicts"][0]["path"], "memory/note.md");
    assert_eq!(list["conflicts"][0]["local_path"], "memory/Note.md");
    (a, b, server)
}

#[test]
fn a_case_collision_resolved_with_the_remote_name_ends_everywhere() {
    let (a, b, _server) = collided();
    a.ok(&["conflicts", "resolve", "memory/Note.md", "--keep", "remote"]);
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 0, "the collision is over: {json}");
    assert_eq!(a.read("memory/Note.md"), None);
    assert_eq!(a.read("memory/note.md").unwrap(), b"beta's note\n");
    assert_eq!(b.read("memory/Note.md"), None);
    assert_eq!(a.ok(&["conflicts", "list"])["open"], 0);
    assert_eq!(b.ok(&["conflicts", "list"])["open"], 0);
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 0, "and stays over: {json}");
}

#[test]
fn a_case_collision_resolved_with_the_local_name_ends_everywhere() {
    let (a, b, _server) = collided();
    a.ok(&["conflicts", "resolve", "memory/note.md", "--keep", "local"]);
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 0, "the collision is over: {json}");
    assert_eq!(
        b.read("memory/note.md"),
        None,
        "beta's name was deleted (kept restorable)"
    );
    assert_eq!(b.read("memory/Note.md").unwrap(), b"alpha's note\n");
    assert_eq!(a.ok(&["conflicts", "list"])["open"], 0);
    assert_eq!(b.ok(&["conflicts", "list"])["open"], 0);
    assert_eq!(a.run(&["sync"]).0, 0, "and stays over");
}

#[test]
fn a_rename_on_one_side_ends_a_case_collision() {
    let (a, b, _server) = collided();
    a.rename("memory/Note.md", "memory/alpha-note.md");
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 0, "the collision is over: {json}");
    assert_eq!(b.read("memory/alpha-note.md").unwrap(), b"alpha's note\n");
    assert_eq!(a.read("memory/note.md").unwrap(), b"beta's note\n");
    assert_eq!(a.ok(&["conflicts", "list"])["open"], 0);
    assert_eq!(b.ok(&["conflicts", "list"])["open"], 0);
}
