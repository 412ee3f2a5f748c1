//! Agents coordinating over the mesh with no server (issue 16): the feed (`say`, `feed`,
//! `feed --follow`), handoffs between agents on two machines, and the commit trailer.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::{Peer, Server, as_agent, eventually, human, mesh};
use serde_json::Value;

fn feed_ids(p: &Peer) -> Vec<String> {
    p.ok(&["feed", "--limit", "0"])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_message_said_on_one_machine_reads_the_same_on_the_other_after_a_sync() {
    let (a, b, _server) = common::pair();
    let said = as_agent(
        &a,
        "marcus",
        &[
            "say",
            "Starting the refresh. Need @Rowan",
            "--type",
            "alert",
            "--mention",
            "priya",
            "--project",
            "dj-waste",
            "--meta",
            r#"{"ticket": 12}"#,
        ],
    );
    a.ok(&["sync"]);
    let feed = b.ok(&["feed"]);
    let m = &feed.as_array().unwrap()[0];
    assert_eq!(m["id"], said["id"]);
    assert_eq!(m["agent_id"], "marcus");
    assert_eq!(m["ai_source"], "claude");
    assert_eq!(m["machine_id"], "alpha-box");
    assert_eq!(m["message_type"], "alert");
    assert_eq!(m["project_context"], "dj-waste");
    assert_eq!(m["mentions"], serde_json::json!(["priya", "rowan"]));
    assert_eq!(m["metadata"]["ticket"], 12);
    // Filters.
    assert_eq!(
        b.ok(&["feed", "--mentions", "@ROWAN"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        b.ok(&["feed", "--project", "other"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        b.ok(&["feed", "--since", "1h"]).as_array().unwrap().len(),
        1
    );
    let (code, out, _) = human(&b, &["feed"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("claude/@marcus (alpha-box)  [alert]  #dj-waste  Starting the refresh"),
        "{out}"
    );
}

#[test]
fn bad_messages_are_refused_with_one_line_and_nothing_is_written() {
    let p = Peer::new("solo");
    for (args, why) in [
        (&["say", " "][..], "empty"),
        (&["say", "x", "--type", "shout"][..], "unknown message type"),
        (&["say", "x", "--meta", "[1]"][..], "JSON object"),
        (&["say", "x", "--meta", "{oops"][..], "not JSON"),
        (
            &["say", "x", "--mention", "two words"][..],
            "invalid mention",
        ),
        (&["feed", "--since", "last tuesday"][..], "RFC 3339"),
    ] {
        let (code, _, err) = human(&p, args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(why), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(p.read("memory/bot-sync/feed.jsonl").is_none());
    let (code, _, err) = human(&p, &["feed", "--follow"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("needs the daemon") && err.contains("botsync serve"),
        "{err}"
    );
}

#[test]
fn follow_prints_a_message_said_on_another_machine_as_it_arrives() {
    let peers = mesh(&["north", "south"], true);
    let (north, south) = (&peers[0].0, &peers[1].0);
    as_agent(north, "marcus", &["say", "before the follow"]);
    let mut follow = south
        .cmd()
        .args(["--json", "feed", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(serde_json::from_str(&line).unwrap());
        }
    });
    // Either the old message is already there (printed first) or it arrives with the new one.
    std::thread::sleep(Duration::from_millis(500));
    as_agent(north, "marcus", &["say", "hello from the north @milo"]);
    let mut texts = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !texts
        .iter()
        .any(|t: &String| t.contains("hello from the north"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) => texts.push(m["message"].as_str().unwrap().to_owned()),
            Err(_) => panic!("follow on south printed only {texts:?} in 30 s"),
        }
    }
    assert_eq!(texts.iter().filter(|t| t.contains("hello from")).count(), 1);
    // A follower that goes away is let go: the daemon keeps answering.
    let _ = follow.kill();
    let _ = follow.wait();
    south.ok(&["status"]);
}

#[test]
fn messages_said_at_once_on_three_machines_read_in_one_order_everywhere() {
    let peers = mesh(&["ash", "birch", "cedar"], true);
    std::thread::scope(|s| {
        for (p, _) in &peers {
            s.spawn(move || {
                for i in 0..4 {
                    as_agent(
                        p,
                        &format!("agent-{}", p.name),
                        &["say", &format!("{} says {i}", p.name)],
                    );
                }
            });
        }
    });
    let converged = eventually(60, || {
        let feeds: Vec<Vec<String>> = peers.iter().map(|(p, _)| feed_ids(p)).collect();
        feeds[0].len() == 12 && feeds.iter().all(|f| *f == feeds[0])
    });
    let feeds: Vec<Vec<String>> = peers.iter().map(|(p, _)| feed_ids(p)).collect();
    assert!(converged, "feeds did not converge: {feeds:?}");
}

#[test]
fn a_handoff_goes_from_one_agent_to_another_and_comes_back_done() {
    let (a, b, _server) = common::pair();
    let given = as_agent(
        &a,
        "priya",
        &[
            "handoff",
            "--to",
            "Milo",
            "--artifact",
            "hero-section-v2.tsx",
            "--context",
            "desktop design done, needs mobile QA",
        ],
    );
    let id = given["id"].as_str().unwrap().to_owned();
    a.ok(&["sync"]);
    let open = as_agent(&b, "milo", &["handoffs", "--open"]);
    let h = &open.as_array().unwrap()[0];
    assert_eq!(h["id"], id.as_str());
    assert_eq!(h["to"], "milo");
    assert_eq!(h["artifact"], "hero-section-v2.tsx");
    assert_eq!(h["from"], "claude/@priya (alpha-box)");
    // The mention reaches milo's filtered feed too.
    assert_eq!(
        b.ok(&["feed", "--mentions", "milo"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    as_agent(&b, "milo", &["handoff", "done", &id]);
    a.ok(&["sync"]);
    assert!(a.ok(&["handoffs", "--open"]).as_array().unwrap().is_empty());
    let all = a.ok(&["handoffs"]);
    assert_eq!(all[0]["done"]["by"], "claude/@milo (beta-box)");
    // Twice done, or an unknown id: one line saying why.
    let (code, _, err) = human(&a, &["handoff", "done", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("already marked done by claude/@milo"), "{err}");
    let (code, _, err) = human(&a, &["handoff", "done", "0123456789abcdef"]);
    assert_eq!(code, 2);
    assert!(err.contains("no handoff 0123456789abcdef"), "{err}");
}

#[test]
fn commits_carry_the_committing_agents_trailer_once_the_hook_is_installed() {
    let p = Peer::new("desk");
    let repo = p.path("repo");
    let git = |args: &[&str], agent: &str| {
        let out = std::process::Command::new("git")
            .current_dir(&repo)
            .env("BOTSYNC_AGENT", agent)
            .env("AI_IDENTITY", "claude")
            .env("MACHINE_ID", "jonny-desktop")
            .args(["-c", "user.email=a@example.invalid", "-c", "user.name=a"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::fs::create_dir_all(&repo).unwrap();
    git(&["init", "-q"], "");
    // An existing shell hook keeps its own lines.
    let hook = repo.join(".git/hooks/commit-msg");
    std::fs::write(&hook, "#!/bin/sh\necho checked >/dev/null\n").unwrap();
    for _ in 0..2 {
        let (code, out, err) = human(
            &p,
            &["attribution", "--install-hook", repo.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("installed in"), "{out}");
    }
    let text = std::fs::read_to_string(&hook).unwrap();
    assert_eq!(text.matches("# botsync attribution:").count(), 1, "{text}");
    assert!(text.contains("echo checked"), "{text}");
    git(
        &["commit", "-q", "--allow-empty", "-m", "feat: hero section"],
        "milo",
    );
    let msg = git(&["log", "-1", "--format=%B"], "");
    assert!(
        msg.contains("[botsync] claude/@milo | Machine: jonny-desktop"),
        "{msg}"
    );
    // Without an agent, the trailer is refused (and the hook adds nothing).
    let out = p
        .cmd()
        .env_remove("BOTSYNC_AGENT")
        .arg("attribution")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BOTSYNC_AGENT"));
    // A hook that is not a shell script is left alone.
    std::fs::write(&hook, "#!/usr/bin/python3\nprint()\n").unwrap();
    let (code, _, err) = human(
        &p,
        &["attribution", "--install-hook", repo.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("not a shell script"), "{err}");
}

#[test]
fn check_says_who_pushed_since_the_last_pull_and_a_pull_clears_it() {
    // Milo's machine runs its daemon as milo: what its watcher finds is milo's.
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let mut cmd = b.cmd();
    cmd.env("BOTSYNC_AGENT", "milo");
    let server = Server::spawn(cmd, "127.0.0.1:0");
    a.add(&b, server.port);
    b.add(&a, 7474);
    let (code, out, _) = human(&a, &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("beta: nothing new since your last pull"),
        "{out}"
    );
    b.write("memory/plan.md", "the plan, by milo\n");
    b.write("memory/notes.md", "notes\n");
    b.ok(&["scan"]);
    let (code, out, _) = human(&a, &["check"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("WARNING: @milo on beta changed 2 files you have not pulled from beta"),
        "{out}"
    );
    assert!(
        out.contains("memory/notes.md, memory/plan.md")
            || out.contains("memory/plan.md, memory/notes.md"),
        "{out}"
    );
    assert!(out.contains("botsync pull"), "{out}");
    let (code, doc, _) = a.run(&["check"]);
    assert_eq!(code, 3);
    assert_eq!(doc["pushed_since_last_pull"], true);
    assert_eq!(doc["peers"][0]["pushed"][0]["agent"], "milo");
    assert_eq!(doc["peers"][0]["pushed"][0]["files"], 2);
    // check is a dry run: nothing arrived.
    assert!(a.read("memory/plan.md").is_none());
    a.ok(&["pull"]);
    let (code, out, _) = human(&a, &["check"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn check_against_a_peer_that_is_down_exits_1_naming_it() {
    let (a, b, server) = common::pair();
    drop(server);
    let _ = b;
    let (code, _, err) = human(&a, &["check"]);
    assert_eq!(code, 1);
    assert!(err.contains("could not check beta"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_push_that_moved_files_says_so_in_the_feed_on_both_sides() {
    let (a, b, _server) = common::pair();
    // Without a feed, a push leaves none behind.
    a.write("memory/first.md", "first\n");
    a.ok(&["push"]);
    assert!(a.read("memory/bot-sync/feed.jsonl").is_none());
    as_agent(&a, "sebastian", &["say", "starting on the hero copy"]);
    a.ok(&["push"]);
    a.write("memory/hero.md", "hero copy\n");
    as_agent(&a, "sebastian", &["push"]);
    let on_b = b.ok(&["feed", "--type", "sync"]);
    let m = &on_b.as_array().unwrap()[0];
    assert_eq!(m["agent_id"], "sebastian");
    assert_eq!(m["message"], "pushed 1 file to beta (memory/hero.md)");
    // The push leaves both sides in sync, feed included.
    assert_eq!(a.tree(), b.tree());
    // Nothing moved: nothing said.
    as_agent(&a, "sebastian", &["sync"]);
    assert_eq!(
        b.ok(&["feed", "--type", "sync"]).as_array().unwrap().len(),
        1
    );
    // The last sync on record is the one asked for, not the feed's follow-up push.
    let status = a.ok(&["status"]);
    assert_eq!(
        status["peers"][0]["last_sync"]["summary"], "already in sync",
        "{status}"
    );
}

#[test]
fn status_shows_per_peer_what_last_came_in_and_went_out_and_who_made_it() {
    // Milo's machine runs its daemon as milo.
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let mut cmd = b.cmd();
    cmd.env("BOTSYNC_AGENT", "milo");
    let server = Server::spawn(cmd, "127.0.0.1:0");
    a.add(&b, server.port);
    b.add(&a, 7474);
    a.write("memory/plan.md", "the plan\n");
    as_agent(&a, "claude", &["push"]);
    b.write("memory/review.md", "reviewed by milo\n");
    b.ok(&["scan"]);
    a.ok(&["pull"]);
    let status = a.run(&["status"]).1;
    let peer = &status["peers"][0];
    assert_eq!(peer["last_out"]["files"], 1, "{peer}");
    assert_eq!(peer["last_out"]["paths"][0], "memory/plan.md");
    assert_eq!(peer["last_out"]["by"][0], "@claude");
    assert_eq!(peer["last_in"]["paths"][0], "memory/review.md");
    assert_eq!(peer["last_in"]["by"][0], "@milo on beta");
    let (_, out, _) = human(&a, &["status"]);
    assert!(
        out.contains("last in: ") && out.contains("by @milo on beta (memory/review.md)"),
        "{out}"
    );
    assert!(
        out.contains("last out: ") && out.contains("by @claude (memory/plan.md)"),
        "{out}"
    );
}

#[test]
fn a_change_names_the_machine_it_was_made_on_even_where_that_machine_is_not_configured() {
    // gamma and alpha never met: beta carries gamma's change to alpha. Codex runs gamma's
    // daemon, so what its watcher finds is codex's.
    let (alpha, beta, gamma) = (Peer::new("alpha"), Peer::new("beta"), Peer::new("gamma"));
    let beta_server = beta.serve();
    let mut cmd = gamma.cmd();
    cmd.env("BOTSYNC_AGENT", "codex");
    let gamma_server = Server::spawn(cmd, "127.0.0.1:0");
    alpha.add(&beta, beta_server.port);
    beta.add(&alpha, 7474);
    beta.add(&gamma, gamma_server.port);
    gamma.add(&beta, beta_server.port);

    gamma.write("memory/plan.md", "the plan, by codex on gamma\n");
    gamma.ok(&["scan"]);
    beta.ok(&["pull", "gamma"]);

    // Before alpha pulls, `check` names who made what is waiting on beta.
    let (code, out, _) = human(&alpha, &["check"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("@codex on gamma changed 1 file you have not pulled from beta"),
        "{out}"
    );

    alpha.ok(&["pull"]);
    let doc = alpha.ok(&["history", "memory/plan.md"]);
    let change = &doc["files"][0];
    assert_eq!(change["machine"], "gamma", "{doc}");
    assert_eq!(change["agent"], "codex", "{doc}");
    // alpha has no name of its own for gamma: only the id it has never configured.
    assert_ne!(change["peer_name"], "gamma", "{doc}");
    let (code, out, _) = human(&alpha, &["history", "memory/plan.md"]);
    assert_eq!(code, 0);
    assert!(out.contains("by gamma/codex"), "{out}");

    // An edit here is alpha's own, on alpha.
    alpha.write("memory/plan.md", "the plan, revised on alpha\n");
    as_agent(&alpha, "milo", &["scan"]);
    let doc = alpha.ok(&["history", "memory/plan.md"]);
    assert_eq!(doc["files"][0]["machine"], "alpha", "{doc}");
    assert_eq!(doc["files"][0]["agent"], "milo", "{doc}");
}
