//! TTL locks across the mesh with no server (issue 16, docs/LOCKS.md): three daemons on
//! 127.0.0.1 replicate one lock table; one holder at a time, fencing tokens that grow, leases
//! that run out, and no grant at all without a majority of the voters.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Peer, Server, eventually, human, mesh};
use serde_json::Value;

/// `args` with `--json` as `agent` on `p`: (exit code, document, stderr).
fn lock(p: &Peer, agent: &str, args: &[&str]) -> (i32, Value, String) {
    let out = p
        .cmd()
        .env("BOTSYNC_AGENT", agent)
        .env("MACHINE_ID", format!("{}-box", p.name))
        .arg("--json")
        .arg("lock")
        .args(args)
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        doc,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn restart(p: &Peer, port: u16) -> Server {
    p.serve_on(&format!("127.0.0.1:{port}"))
}

#[test]
fn one_holder_across_three_machines_and_the_refusal_says_who_why_and_until_when() {
    let peers = mesh(&["alpha", "beta", "gamma"], false);
    let (a, b, c) = (&peers[0].0, &peers[1].0, &peers[2].0);
    let (code, first, err) = lock(
        a,
        "claude",
        &[
            "acquire",
            "github-push",
            "--project",
            "site",
            "--ttl",
            "60s",
            "--reason",
            "deploying the hero",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let t1 = first["token"].as_u64().unwrap();
    let (code, refused, _) = lock(
        b,
        "gemini",
        &["acquire", "github-push", "--project", "site"],
    );
    assert_eq!(code, 3);
    assert_eq!(refused["blocked"], true);
    assert_eq!(refused["lock"]["holder"]["agent"], "claude");
    let (code, out, _) = human(b, &["lock", "acquire", "github-push", "--project", "site"]);
    assert_eq!(code, 3);
    assert!(out.contains("BLOCKED: @"), "{out}");
    assert!(out.contains("holds github-push (project site)"), "{out}");
    assert!(
        out.contains("Reason: deploying the hero") && out.contains("Expires: "),
        "{out}"
    );
    // Every machine sees the same table.
    let (code, status, _) = lock(c, "grok", &["status"]);
    assert_eq!(code, 0);
    assert_eq!(status["locks"][0]["holder"]["machine"], "alpha-box");
    assert_eq!(status["voters"].as_array().unwrap().len(), 3);
    // Only the holder can release; then the other gets it with a larger token.
    let (code, _, err) = lock(
        b,
        "gemini",
        &["release", "github-push", "--project", "site"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("you do not hold github-push: @claude on alpha-box does"),
        "{err}"
    );
    let (code, _, err) = lock(
        a,
        "claude",
        &["release", "github-push", "--project", "site"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, second, err) = lock(
        b,
        "gemini",
        &["acquire", "github-push", "--project", "site"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(second["token"].as_u64().unwrap() > t1);
    let (code, renewed, err) = lock(
        b,
        "gemini",
        &["renew", "github-push", "--project", "site", "--ttl", "2m"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(renewed["token"], second["token"]);
}

#[test]
fn two_agents_racing_for_one_lock_never_hold_it_at_once() {
    let peers = mesh(&["north", "south", "east"], false);
    let rounds = 6;
    let grants = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (i, agent) in ["claude", "gemini"].into_iter().enumerate() {
            let p = &peers[i].0;
            let grants = &grants;
            s.spawn(move || {
                for _ in 0..rounds {
                    let (code, got, err) = lock(
                        p,
                        agent,
                        &["acquire", "deploy", "--ttl", "20s", "--wait", "60s"],
                    );
                    assert_eq!(code, 0, "{agent}: {err}");
                    let start = Instant::now();
                    std::thread::sleep(Duration::from_millis(150));
                    let end = Instant::now();
                    let (code, _, err) = lock(p, agent, &["release", "deploy"]);
                    assert_eq!(code, 0, "{agent}: {err}");
                    grants.lock().unwrap().push((
                        got["token"].as_u64().unwrap(),
                        agent,
                        start,
                        end,
                    ));
                }
            });
        }
    });
    let mut grants = grants.into_inner().unwrap();
    grants.sort_by_key(|g| g.0);
    assert_eq!(grants.len(), 2 * rounds);
    for w in grants.windows(2) {
        assert!(w[0].0 < w[1].0, "tokens repeat: {:?}", (w[0].0, w[1].0));
        // The next holder got the lock only after the previous one was done with it.
        assert!(w[0].3 <= w[1].2, "grants {} and {} overlap", w[0].0, w[1].0);
    }
}

#[test]
fn a_holder_that_is_killed_loses_the_lock_when_its_lease_runs_out() {
    let mut peers = mesh(&["one", "two", "three"], false);
    let (code, held, err) = lock(&peers[0].0, "claude", &["acquire", "deploy", "--ttl", "3s"]);
    assert_eq!(code, 0, "{err}");
    let (dead, server) = peers.remove(0);
    server.kill();
    let asked = Instant::now();
    let (code, got, err) = lock(
        &peers[0].0,
        "gemini",
        &["acquire", "deploy", "--ttl", "30s", "--wait", "30s"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(got["token"].as_u64().unwrap() > held["token"].as_u64().unwrap());
    assert_eq!(got["holder"]["agent"], "gemini");
    // Not before the dead holder's lease ran out.
    assert!(
        asked.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        asked.elapsed()
    );
    drop(dead);
}

#[test]
fn without_a_majority_of_voters_no_lock_is_granted_and_it_works_again_when_they_return() {
    let mut peers = mesh(&["left", "middle", "right"], false);
    // The table forms while everyone is up.
    let (code, _, err) = lock(&peers[0].0, "claude", &["status"]);
    assert_eq!(code, 0, "{err}");
    let ports: Vec<u16> = peers.iter().map(|(_, s)| s.port).collect();
    let (right, s_right) = peers.pop().unwrap();
    let (middle, s_middle) = peers.pop().unwrap();
    s_right.kill();
    s_middle.kill();
    let (code, _, err) = lock(
        &peers[0].0,
        "claude",
        &["acquire", "deploy", "--ttl", "30s"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a majority (2 of 3)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let _m = restart(&middle, ports[1]);
    let _r = restart(&right, ports[2]);
    let (code, got, err) = lock(
        &peers[0].0,
        "claude",
        &["acquire", "deploy", "--ttl", "30s"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(got["holder"]["agent"], "claude");
}

#[test]
fn locks_need_the_daemon_and_bad_arguments_are_refused_before_it_is_asked() {
    let p = Peer::new("solo");
    let (code, _, err) = human(&p, &["lock", "acquire", "deploy"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("start this workspace's daemon with `botsync serve`"),
        "{err}"
    );
    for (args, why) in [
        (&["lock", "acquire", "two words"][..], "invalid lock name"),
        (
            &["lock", "acquire", "x", "--ttl", "soon"][..],
            "not a duration",
        ),
        (
            &["lock", "acquire", "x", "--project", "a/b"][..],
            "invalid project",
        ),
    ] {
        let (code, _, err) = human(&p, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
}

/// The table's voters as `p` has applied them, sorted.
fn members(p: &Peer) -> Vec<String> {
    let (_, status, _) = lock(p, "claude", &["status"]);
    let mut m: Vec<String> = status["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    m.sort();
    m
}

#[test]
fn a_machine_that_joins_the_mesh_after_the_table_formed_becomes_one_of_its_voters() {
    let mut peers = mesh(&["alpha", "beta", "gamma"], false);
    let (code, _, err) = lock(
        &peers[0].0,
        "claude",
        &["acquire", "deploy", "--ttl", "60s"],
    );
    assert_eq!(code, 0, "{err}");
    // delta joins: every peer lists it, it lists every peer (the default voters follow).
    let delta = Peer::new("delta");
    let s_delta = delta.serve();
    for (p, s) in &peers {
        p.add(&delta, s_delta.port);
        delta.add(p, s.port);
    }
    // It does not form a table of its own: its request reaches the table the others formed.
    let (code, refused, err) = lock(&delta, "gemini", &["acquire", "deploy"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(refused["lock"]["holder"]["agent"], "claude");
    let four = vec!["alpha", "beta", "delta", "gamma"];
    assert!(
        eventually(30, || members(&peers[0].0) == four
            && members(&delta) == four),
        "alpha counts {:?}, delta {:?}",
        members(&peers[0].0),
        members(&delta)
    );
    // With alpha gone, beta, gamma and delta are 3 of 4: a majority only because delta votes.
    let (alpha, s_alpha) = peers.remove(0);
    s_alpha.kill();
    let (code, got, err) = lock(&delta, "gemini", &["acquire", "review", "--ttl", "30s"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(got["holder"]["agent"], "gemini");
    drop(alpha);
}

#[test]
fn the_voters_shrink_to_the_one_always_on_machine_when_the_config_says_so() {
    let mut peers = mesh(&["server", "laptop", "desktop"], false);
    let ports: Vec<u16> = peers.iter().map(|(_, s)| s.port).collect();
    let (code, first, err) = lock(&peers[1].0, "claude", &["acquire", "deploy", "--ttl", "1s"]);
    assert_eq!(code, 0, "{err}");
    // Every machine is told that only the server votes, and the daemons restart to read it.
    let mut restarted = Vec::new();
    for (i, (p, s)) in peers.drain(..).enumerate() {
        s.terminate();
        let voters = if i == 0 { "self" } else { "server" };
        p.configure(serde_json::json!({ "lock_voters": [voters] }));
        let s = restart(&p, ports[i]);
        restarted.push((p, s));
    }
    let (desktop, s_desktop) = restarted.pop().unwrap();
    let (server, laptop) = (&restarted[0].0, &restarted[1].0);
    assert!(
        eventually(30, || members(server) == ["server"]),
        "the server counts {:?}",
        members(server)
    );
    // Now the server alone is a majority: the laptop's lock works with the desktop off.
    s_desktop.kill();
    let (code, got, err) = lock(
        laptop,
        "claude",
        &["acquire", "deploy", "--ttl", "30s", "--wait", "20s"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(got["token"].as_u64().unwrap() > first["token"].as_u64().unwrap());
    let (code, status, _) = lock(laptop, "claude", &["status"]);
    assert_eq!(code, 0);
    assert_eq!(status["voters"], serde_json::json!(["server"]));
    drop(desktop);
}
