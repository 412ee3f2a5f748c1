//! The daemon as a user meets it: two real daemons on 127.0.0.1, every verb answered while a
//! daemon holds the workspace, files that travel with no command, a daemon that was down
//! catching up, one daemon per workspace, and a clean stop.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Peer, Server, eventually, noise};

/// Two peers, each with a running daemon, that know each other's real ports.
fn two_daemons() -> (Peer, Server, Peer, Server) {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let (da, db) = (a.serve(), b.serve());
    a.add(&b, db.port);
    b.add(&a, da.port);
    (a, da, b, db)
}

fn status(p: &Peer) -> serde_json::Value {
    p.ok(&["status"])
}

fn rescans(p: &Peer) -> u64 {
    status(p)["daemon"]["rescans"].as_u64().unwrap()
}

#[test]
fn every_verb_works_while_the_daemon_runs() {
    let (a, da, b, _db) = two_daemons();
    a.write("memory/note.md", "hello\n");
    b.write("memory/other.md", "from beta\n");

    // The daemon answers: status names it.
    let st = status(&a);
    assert_eq!(
        st["daemon"]["pid"].as_u64().unwrap(),
        u64::from(da.child.id())
    );
    assert_eq!(a.ok(&["id"])["id"], a.id());
    assert_eq!(a.ok(&["peers"])["peers"][0]["name"], "beta");
    let scan = a.ok(&["scan"]);
    assert!(scan["files"].as_u64().unwrap() >= 1, "{scan}");

    let diff = a.ok(&["diff"]);
    assert_eq!(diff["dry_run"], true);
    assert!(b.read("memory/note.md").is_none(), "diff writes nothing");
    a.ok(&["push", "beta"]);
    assert_eq!(b.read("memory/note.md").unwrap(), b"hello\n");
    a.ok(&["pull"]);
    assert_eq!(a.read("memory/other.md").unwrap(), b"from beta\n");
    let noop = a.ok(&["sync"]);
    assert_eq!(noop["peers"][0]["in_sync"], true, "{noop}");
    assert_eq!(
        noop["peers"][0]["peer"], "beta",
        "the configured name, not the id"
    );
    a.ok(&["now", "beta"]);

    // Peers added and removed through the daemon.
    let extra = Peer::new("gamma");
    a.ok(&["add", "gamma", "127.0.0.1:9", "--id", &extra.id()]);
    assert_eq!(a.ok(&["peers"])["peers"].as_array().unwrap().len(), 2);
    a.ok(&["remove", "gamma"]);
    assert_eq!(a.ok(&["peers"])["peers"].as_array().unwrap().len(), 1);

    // The same verbs in human form.
    for args in [
        &["status"][..],
        &["id"],
        &["peers"],
        &["scan"],
        &["sync"],
        &["diff"],
        &["push"],
        &["pull"],
    ] {
        let out = a.cmd().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(!text.contains("locked"), "{args:?}: {text}");
        assert!(!text.trim().is_empty(), "{args:?} printed nothing");
    }
    let human = a.cmd().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("daemon pid"), "{text}");
    assert!(text.contains("beta"), "{text}");
}

#[test]
fn a_sync_with_nothing_new_rescans_nothing_through_the_daemon() {
    let (a, _da, b, _db) = two_daemons();
    a.write("memory/note.md", "hello\n");
    a.ok(&["sync"]);
    let before = (rescans(&a), rescans(&b));
    let noop = a.ok(&["sync"]);
    assert_eq!(noop["peers"][0]["in_sync"], true);
    assert_eq!(noop["peers"][0]["counters"]["round_trips"], 1);
    assert_eq!(
        (rescans(&a), rescans(&b)),
        before,
        "no rescan of an unchanged tree"
    );
    // A change is seen by the watcher: the next sync carries it.
    a.write("memory/note.md", "hello again\n");
    a.ok(&["sync"]);
    assert_eq!(b.read("memory/note.md").unwrap(), b"hello again\n");
}

#[test]
fn a_daemon_at_rest_lets_go_of_its_index_and_takes_it_back_when_a_sync_needs_it() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    for p in [&a, &b] {
        p.configure(serde_json::json!({"daemon": {"unload_index_secs": 1}}));
    }
    for i in 0..50 {
        a.write(&format!("memory/n{i}.md"), format!("note {i}\n"));
    }
    let (da, db) = (a.serve(), b.serve());
    a.add(&b, db.port);
    b.add(&a, da.port);
    a.ok(&["sync"]);
    let in_memory = |p: &Peer| status(p)["daemon"]["index_in_memory"].as_bool().unwrap();
    let at_rest = |p: &Peer| eventually(20, || !in_memory(p));
    assert!(
        at_rest(&a) && at_rest(&b),
        "an unused index stayed in memory"
    );

    // A sync with nothing new, on either side, needs no more than the roots.
    let noop = a.ok(&["sync"]);
    assert_eq!(noop["peers"][0]["in_sync"], true);
    assert!(
        !in_memory(&a) && !in_memory(&b),
        "a no-op sync loaded the index"
    );

    // An edit of a file both know, made at rest: a fast-forward, not a conflict, so the
    // versions read back from disk are the ones the index had.
    b.write("memory/n7.md", "edited on beta\n");
    b.write("memory/new.md", "new on beta\n");
    b.ok(&["sync"]);
    assert_eq!(a.read("memory/n7.md").unwrap(), b"edited on beta\n");
    assert_eq!(a.read("memory/new.md").unwrap(), b"new on beta\n");
    assert_eq!(a.ok(&["conflicts", "list"])["open"], 0);
    for p in [&a, &b] {
        assert_eq!(status(p)["files_indexed"], 51);
    }
    assert!(at_rest(&a), "the index came back and never left again");
}

#[test]
fn a_file_written_in_one_workspace_appears_in_the_other_with_no_command() {
    let (a, _da, b, _db) = two_daemons();
    a.ok(&["auto", "on"]);
    b.ok(&["auto", "on"]);
    a.write("memory/2026-12-04.md", "written on alpha\n");
    assert!(
        eventually(30, || b.read("memory/2026-12-04.md").as_deref()
            == Some(&b"written on alpha\n"[..])),
        "alpha's file never reached beta"
    );
    b.write("USER.md", "edited on beta\n");
    assert!(
        eventually(30, || a.read("USER.md").as_deref()
            == Some(&b"edited on beta\n"[..])),
        "beta's edit never reached alpha"
    );
    // auto is persisted in the config.
    let config = std::fs::read_to_string(a.path(".botsync/config.json")).unwrap();
    assert!(config.contains("\"auto\": true"), "{config}");
    a.ok(&["auto", "off"]);
    assert_eq!(status(&a)["daemon"]["auto"], false);
}

#[test]
fn an_edit_made_while_the_other_daemon_is_down_arrives_after_it_restarts() {
    let (a, _da, b, db) = two_daemons();
    a.ok(&["auto", "on"]);
    b.ok(&["auto", "on"]);
    let port = db.port;
    assert_eq!(db.terminate(), Some(0), "SIGTERM is a clean exit");
    assert!(
        !b.path(".botsync/daemon.sock").exists(),
        "the socket is removed at shutdown"
    );
    a.write("memory/while-down.md", "beta was away\n");
    // Verbs work on beta without its daemon (they open the workspace themselves).
    b.ok(&["status"]);
    let _db = b.serve_on(&format!("127.0.0.1:{port}"));
    assert!(
        eventually(40, || b.read("memory/while-down.md").as_deref()
            == Some(&b"beta was away\n"[..])),
        "the edit made while beta was down never arrived"
    );
}

#[test]
fn a_second_daemon_is_refused_naming_the_first() {
    let a = Peer::new("alpha");
    let first = a.serve();
    let out = a
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", first.child.id())),
        "the refusal names the first daemon: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn a_stale_socket_from_a_killed_daemon_is_detected_and_replaced() {
    let a = Peer::new("alpha");
    a.serve().kill();
    assert!(
        a.path(".botsync/daemon.sock").exists(),
        "SIGKILL leaves the socket"
    );
    // No daemon answers: the verb opens the workspace itself.
    let st = a.ok(&["status"]);
    assert!(st["daemon"].is_null(), "{st}");
    // A new daemon replaces the stale socket.
    let second = a.serve();
    assert_eq!(
        status(&a)["daemon"]["pid"].as_u64().unwrap(),
        u64::from(second.child.id())
    );
}

#[test]
fn sigterm_during_a_large_transfer_leaves_every_file_old_or_new_and_the_next_start_resumes() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let db = b.serve();
    b.add(&a, 9);
    a.add(&b, db.port);
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("memory/big{i}.bin"), noise(8_000_000, i)))
        .collect();
    for (p, bytes) in &files {
        a.write(p, bytes);
    }
    // Push from alpha (no daemon) into beta's daemon, and stop beta mid-way.
    let push = a.cmd().args(["--json", "push"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let port = db.port;
    db.terminate();
    let _ = push.wait_with_output();
    for (p, bytes) in &files {
        if let Some(got) = b.read(p) {
            assert_eq!(&got, bytes, "{p} is torn");
        }
    }
    let _db = b.serve_on(&format!("127.0.0.1:{port}"));
    a.ok(&["push"]);
    for (p, bytes) in &files {
        assert_eq!(
            b.read(p).as_ref(),
            Some(bytes),
            "{p} after the resumed push"
        );
    }
    let left: Vec<_> = std::fs::read_dir(b.path("memory"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".botsync-tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn the_watcher_converges_after_a_burst_a_directory_rename_and_lost_events() {
    let (a, _da, b, _db) = two_daemons();
    a.ok(&["auto", "on"]);
    b.ok(&["auto", "on"]);
    for i in 0..5000 {
        a.write(
            &format!("memory/burst/{:02}/{i}.md", i % 50),
            format!("line {i}\n"),
        );
    }
    let converged = |a: &Peer, b: &Peer| a.tree() == b.tree();
    assert!(
        eventually(120, || converged(&a, &b)),
        "the burst of 5,000 files never converged"
    );
    a.rename("memory/burst/07", "memory/renamed-07");
    assert!(
        eventually(60, || b.read("memory/renamed-07/7.md").is_some()
            && b.read("memory/burst/07/7.md").is_none()),
        "the directory rename never reached beta"
    );
}

#[test]
fn a_change_made_while_watch_events_are_lost_is_found_by_the_overflow_rescan() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    // The directory exists before the daemon watches it, so every event of the write below
    // reaches the watcher (events in a directory created a moment before can be missed).
    a.write("memory/before.md", "already here\n");
    // Alpha's watcher drops its first event, then reports the overflow, as the kernel does.
    let da = {
        let mut cmd = a.cmd();
        cmd.env("BOTSYNC_TEST_DROP_WATCH_EVENTS", "1");
        common::Server::spawn(cmd, "127.0.0.1:0")
    };
    let db = b.serve();
    a.add(&b, db.port);
    b.add(&a, da.port);
    a.ok(&["auto", "on"]);
    a.write("memory/lost-event.md", "seen only by the rescan\n");
    assert!(
        eventually(30, || b.read("memory/lost-event.md").as_deref()
            == Some(&b"seen only by the rescan\n"[..])),
        "a change whose events were lost never synced"
    );
}

#[test]
fn a_file_written_just_before_a_push_is_pushed_even_while_its_events_wait_in_the_queue() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    a.write("memory/before.md", "already here\n");
    // Alpha's watcher handles each event 150 ms late, as on a loaded machine: the write below
    // is still queued in the kernel when the push reaches the daemon.
    let da = {
        let mut cmd = a.cmd();
        cmd.env("BOTSYNC_TEST_DELAY_WATCH_EVENTS_MS", "150");
        common::Server::spawn(cmd, "127.0.0.1:0")
    };
    let db = b.serve();
    a.add(&b, db.port);
    b.add(&a, da.port);
    a.ok(&["push", "beta"]);
    assert_eq!(b.read("memory/before.md").unwrap(), b"already here\n");
    a.write("memory/late.md", "written a moment before the push\n");
    let doc = a.ok(&["push", "beta"]);
    assert_eq!(
        b.read("memory/late.md").as_deref(),
        Some(&b"written a moment before the push\n"[..]),
        "the push said: {doc}"
    );
    // A cookie lives only while a refresh waits for it (the daemon's own rescans make some).
    let cookies = || {
        std::fs::read_dir(a.root())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".botsync-tmp-"))
            .count()
    };
    assert!(eventually(10, || cookies() == 0), "a cookie was left");
}

#[test]
fn verbs_run_at_once_without_a_daemon_take_turns_and_never_say_locked() {
    let (a, b, _server) = common::pair();
    for i in 0..20 {
        a.write(&format!("memory/n{i}.md"), format!("note {i}\n"));
    }
    let runs: Vec<_> = (0..3)
        .map(|_| {
            a.cmd()
                .args(["--json", "sync"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a concurrent sync failed: {err}");
        assert!(!err.contains("locked"), "{err}");
    }
    assert_eq!(b.read("memory/n19.md").unwrap(), b"note 19\n");
}

/// Send one request line to the daemon's control socket and read every line it answers.
fn control(p: &Peer, request: &str) -> Vec<serde_json::Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(p.path(".botsync/daemon.sock")).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    BufReader::new(s)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

#[test]
fn the_control_socket_streams_progress_then_the_reply_json_prints() {
    // Written before the daemons start, so their first rescan finds it: a file written just
    // before a verb reaches the daemon can be missed while the watcher's event is still queued
    // (a known race of the watcher, noted on issue 13), and this test is about progress lines.
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    a.write("memory/big.bin", noise(6_000_000, 3));
    let (da, db) = (a.serve(), b.serve());
    a.add(&b, db.port);
    b.add(&a, da.port);
    let lines = control(
        &a,
        r#"{"version":1,"agent":"tester","request":{"verb":"sync","peer":"beta","mode":"push","dry_run":false,"force":false,"itemize":false}}"#,
    );
    let (reply, progress) = lines.split_last().unwrap();
    assert_eq!(reply["type"], "reply", "{reply}");
    assert_eq!(reply["exit_code"], 0, "{reply}");
    assert_eq!(reply["doc"]["peers"][0]["peer"], "beta");
    assert!(
        progress
            .iter()
            .any(|l| l["type"] == "progress" && l["peer"] == "beta"),
        "no progress before the reply: {lines:?}"
    );
    assert_eq!(b.read("memory/big.bin").unwrap(), noise(6_000_000, 3));
    // The reply's document is exactly what `--json` prints.
    let status_line = control(&a, r#"{"version":1,"request":{"verb":"id"}}"#);
    assert_eq!(status_line[0]["doc"], a.ok(&["id"]));
}

#[test]
fn a_request_of_another_control_version_is_refused_by_name() {
    let a = Peer::new("alpha");
    let _da = a.serve();
    let lines = control(&a, r#"{"version":99,"request":{"verb":"status"}}"#);
    let err = lines[0]["error"].as_str().unwrap();
    assert!(
        err.contains("control version 1") && err.contains("99"),
        "{err}"
    );
    assert_ne!(lines[0]["exit_code"], 0);
    let lines = control(&a, "not json");
    assert!(
        lines[0]["error"].as_str().unwrap().contains("restart"),
        "{lines:?}"
    );
}

#[test]
fn a_control_socket_owned_by_another_user_is_refused() {
    let a = Peer::new("alpha");
    let _da = a.serve();
    let socket = a.path(".botsync/daemon.sock");
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600,
        "the socket is private"
    );
    // Only root can give the socket away; elsewhere the owner check cannot be staged.
    if current_uid() != 0 {
        return;
    }
    let ok = std::process::Command::new("chown")
        .args(["65534"])
        .arg(&socket)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let (code, json, stderr) = a.run(&["status"]);
    assert_eq!(code, 1, "{json}");
    assert!(stderr.contains("belongs to user 65534"), "{stderr}");
}

fn current_uid() -> u32 {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn an_edit_is_rescanned_alone_not_with_the_whole_workspace() {
    let a = Peer::new("alpha");
    for i in 0..200 {
        a.write(&format!("memory/n{i}.md"), format!("note {i}\n"));
    }
    let _da = a.serve();
    let counts = |p: &Peer| {
        let d = status(p)["daemon"].clone();
        (
            d["rescans"].as_u64().unwrap(),
            d["partial_rescans"].as_u64().unwrap(),
        )
    };
    // The start-up scan is a full one.
    assert!(eventually(10, || counts(&a).0 >= 1));
    let (all, partial) = counts(&a);
    let full = all - partial;
    a.write("memory/n7.md", "edited\n");
    assert!(
        eventually(10, || counts(&a).1 > partial),
        "the edit was not rescanned on its own"
    );
    let (all, partial) = counts(&a);
    assert_eq!(all - partial, full, "no full rescan for one edit");
    let scan = a.ok(&["status"]);
    assert!(scan["files_indexed"].as_u64().unwrap() >= 200);
}

/// Kills a process by pid when dropped (a daemon started in the background by `auto on`).
struct KillOnDrop(u64);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.0.to_string())
            .status();
    }
}

#[test]
fn auto_on_without_a_daemon_starts_one_in_the_background() {
    let a = Peer::new("alpha");
    // Listen on a free loopback port, not the default 0.0.0.0:7474.
    let config = a.path(".botsync/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("0.0.0.0:7474", "127.0.0.1:0")).unwrap();
    let out = a
        .cmd()
        .env("BOTSYNC_LOG", "info")
        .args(["--json", "auto", "on"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let on: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(on["daemon_started"], true, "{on}");
    let pid = on["daemon_pid"].as_u64().unwrap();
    let _daemon = KillOnDrop(pid);
    let st = status(&a);
    assert_eq!(st["daemon"]["pid"].as_u64(), Some(pid));
    assert_eq!(st["daemon"]["auto"], true);
    let log = std::fs::read_to_string(a.path(".botsync/daemon.log")).unwrap();
    assert!(log.contains("daemon started"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file: {log:?}"
    );
    // `auto off` keeps it serving.
    a.ok(&["auto", "off"]);
    assert_eq!(status(&a)["daemon"]["pid"].as_u64(), Some(pid));
}

#[test]
fn files_written_by_an_apply_do_not_wake_the_watcher() {
    let (a, _da, b, _db) = two_daemons();
    for i in 0..50 {
        a.write(&format!("memory/n{i}.md"), format!("note {i}\n"));
    }
    // Let beta's start-up scans settle, then count.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let before = rescans(&b);
    a.ok(&["push"]);
    assert_eq!(b.read("memory/n49.md").unwrap(), b"note 49\n");
    // Past the debounce: the files beta's apply wrote caused no rescan there.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        rescans(&b),
        before,
        "beta rescanned what its own apply wrote"
    );
    // A real edit on beta afterwards is still seen.
    b.write("memory/n3.md", "edited on beta\n");
    assert!(eventually(10, || rescans(&b) > before));
}

#[test]
fn a_background_daemon_that_never_answers_is_stopped_not_left_behind() {
    let a = Peer::new("alpha");
    let config = a.path(".botsync/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("0.0.0.0:7474", "127.0.0.1:0")).unwrap();
    // Another process holds the index for longer than `auto on` waits for its daemon.
    let holder = std::fs::File::create(a.path(".botsync/index.lock")).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let (code, json, stderr) = a.run(&["auto", "on"]);
    drop(holder);
    assert_eq!(code, 1, "{json}");
    assert!(
        stderr.contains("did not answer within 15 s and was stopped"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Nothing runs: the verb opens the workspace itself.
    assert!(status(&a)["daemon"].is_null());
}
