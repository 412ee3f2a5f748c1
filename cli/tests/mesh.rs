//! The seed's mesh config as three agents meet it: each keeps its own tokens in
//! `.secrets/mesh-config.json`, `botsync sync` shares everything else, agents added on two
//! machines at once both arrive everywhere, and no token ever leaves its machine (not in a
//! workspace, a `.botsync/` store, a chunk store or a database of another peer).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;

use common::mesh::{
    MESH, files_containing, own_config, public, read_mesh, secrets_of, three_daemons, write_mesh,
};
use common::{Peer, human};
use serde_json::json;

#[test]
fn three_agents_share_their_mesh_config_and_keep_their_own_tokens() {
    let mesh = three_daemons();
    for (p, s) in &mesh {
        write_mesh(p, &own_config(&p.name, s.port));
        p.write(
            &format!("memory/{}.md", p.name),
            format!("notes of {}\n", p.name),
        );
    }
    let (a, b, c) = (&mesh[0].0, &mesh[1].0, &mesh[2].0);

    // alpha syncs with both, then beta and gamma catch up.
    let (code, out, err) = human(a, &["sync"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "mesh config: merged 1 key from beta into .secrets/mesh-config.json (/mesh_agents/beta)"
        ),
        "{out}"
    );
    b.ok(&["sync"]);
    c.ok(&["sync"]);

    let configs: Vec<_> = [a, b, c].iter().map(|p| read_mesh(p)).collect();
    for (p, config) in [a, b, c].iter().zip(&configs) {
        // Every agent is known everywhere, with the same non-secret content.
        assert_eq!(public(config), public(&configs[0]), "{}", p.name);
        for q in [a, b, c] {
            assert_eq!(config["mesh_agents"][&q.name]["name"], q.name.as_str());
        }
        // Each keeps its own tokens; another agent's token reads as the placeholder.
        let [hook, gh] = secrets_of(&p.name);
        assert_eq!(config["github"]["token"], gh.as_str());
        assert_eq!(config["mesh_agents"][&p.name]["hook_token"], hook.as_str());
        for q in [a, b, c].iter().filter(|q| q.name != p.name) {
            assert_eq!(config["mesh_agents"][&q.name]["hook_token"], "<secret>");
        }
        assert_eq!(
            std::fs::metadata(p.path(MESH))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        // Files still sync as before.
        for q in [a, b, c] {
            let note = p.read(&format!("memory/{}.md", q.name));
            assert_eq!(note.unwrap(), format!("notes of {}\n", q.name).as_bytes());
        }
    }

    // No secret byte of one peer anywhere under another peer's directory.
    for p in [a, b, c] {
        for secret in secrets_of(&p.name) {
            for q in [a, b, c].iter().filter(|q| q.name != p.name) {
                let hits = files_containing(q.root(), &secret);
                assert!(hits.is_empty(), "{}'s secret found at {hits:?}", p.name);
            }
        }
    }

    // A second round changes nothing.
    let (_, again, _) = human(a, &["sync"]);
    assert!(!again.contains("mesh config"), "{again}");
}

#[test]
fn two_agents_added_at_the_same_time_on_two_machines_are_both_kept_everywhere() {
    let mesh = three_daemons();
    for (p, s) in &mesh {
        write_mesh(p, &own_config(&p.name, s.port));
    }
    let (a, b, c) = (&mesh[0].0, &mesh[1].0, &mesh[2].0);
    a.ok(&["sync"]);
    b.ok(&["sync"]);

    // alpha adds delta while beta adds epsilon, neither having seen the other's change.
    let mut on_a = read_mesh(a);
    on_a["mesh_agents"]["delta"] = json!({"name": "delta", "tailscale_ip": "100.64.0.4"});
    write_mesh(a, &on_a);
    let mut on_b = read_mesh(b);
    on_b["mesh_agents"]["epsilon"] = json!({"name": "epsilon", "tailscale_ip": "100.64.0.5"});
    write_mesh(b, &on_b);

    a.ok(&["sync"]);
    b.ok(&["sync"]);
    c.ok(&["sync"]);
    for p in [a, b, c] {
        let config = read_mesh(p);
        for agent in ["alpha", "beta", "gamma", "delta", "epsilon"] {
            assert!(
                config["mesh_agents"].get(agent).is_some(),
                "{} lacks {agent}: {config}",
                p.name
            );
        }
        assert_eq!(config["github"]["token"], secrets_of(&p.name)[1].as_str());
    }
}

#[test]
fn an_agent_without_the_file_gets_it_without_anyones_secrets_and_a_push_goes_one_way() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let (sa, sb) = (a.serve(), b.serve());
    a.add(&b, sb.port);
    b.add(&a, sa.port);
    write_mesh(&b, &own_config("beta", sb.port));

    let (code, out, err) = human(&a, &["pull", "beta"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("mesh config: created .secrets/mesh-config.json from beta"),
        "{out}"
    );
    let created = read_mesh(&a);
    assert_eq!(created["github"]["token"], "<secret>");
    assert_eq!(public(&created), public(&read_mesh(&b)));
    assert_eq!(
        std::fs::metadata(a.path(MESH))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(files_containing(a.root(), &secrets_of("beta")[1]).is_empty());

    // alpha fills in its own token and adds itself; a push takes it to beta, not back.
    let mut mine = created;
    mine["github"]["token"] = json!(secrets_of("alpha")[1]);
    mine["mesh_agents"]["alpha"] = json!({"name": "alpha"});
    write_mesh(&a, &mine);
    let pushed = a.ok(&["push", "beta"]);
    assert_eq!(pushed["ok"], true, "{pushed}");
    let on_b = read_mesh(&b);
    assert_eq!(on_b["mesh_agents"]["alpha"]["name"], "alpha");
    assert_eq!(on_b["github"]["token"], secrets_of("beta")[1].as_str());
    assert!(files_containing(b.root(), &secrets_of("alpha")[1]).is_empty());
}

#[test]
fn a_mesh_config_that_is_not_json_is_reported_by_sync_and_named_by_config_validate() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let sb = b.serve();
    a.add(&b, sb.port);
    b.add(&a, 7474);
    write_mesh(&b, &own_config("beta", sb.port));
    a.write(MESH, "{\n  \"mesh_agents\": {,\n}\n");

    let (code, out, err) = human(&a, &["pull", "beta"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("!! mesh config: beta's version of .secrets/mesh-config.json not merged"),
        "{out}"
    );
    assert_eq!(a.read(MESH).unwrap(), b"{\n  \"mesh_agents\": {,\n}\n");
    let (code, _, err) = human(&a, &["config", "validate"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mesh-config.json line 2 column"), "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn a_key_both_agents_changed_keeps_each_ones_value_and_the_sync_asks_for_attention() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let sb = b.serve();
    a.add(&b, sb.port);
    b.add(&a, 7474);
    write_mesh(&a, &json!({"shared": {"channel": "#general"}}));
    a.ok(&["push", "beta"]);
    assert_eq!(read_mesh(&b)["shared"]["channel"], "#general");

    write_mesh(&a, &json!({"shared": {"channel": "#ops"}}));
    write_mesh(&b, &json!({"shared": {"channel": "#dev"}}));
    let (code, out, err) = human(&a, &["pull", "beta"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("changed on both sides, ours kept: /shared/channel"),
        "{out}"
    );
    assert_eq!(read_mesh(&a)["shared"]["channel"], "#ops");
    assert_eq!(read_mesh(&b)["shared"]["channel"], "#dev");
}

#[test]
fn a_mesh_config_change_is_told_in_the_feed_of_a_workspace_that_has_one() {
    let mesh = three_daemons();
    for (p, s) in &mesh {
        write_mesh(p, &own_config(&p.name, s.port));
    }
    let (a, b) = (&mesh[0].0, &mesh[1].0);
    // beta's agents use the feed; alpha's do not.
    b.ok(&["say", "hello"]);
    let mut on_a = read_mesh(a);
    on_a["mesh_agents"]["delta"] = json!({"name": "delta", "tailscale_ip": "100.64.0.4"});
    write_mesh(a, &on_a);
    b.ok(&["pull", "alpha"]);
    let said = b.ok(&["feed", "--type", "sync"]);
    let lines: Vec<&str> = said
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert!(
        lines.iter().any(
            |l| l.starts_with("mesh config .secrets/mesh-config.json: merged from")
                && l.contains("/mesh_agents/delta")
        ),
        "{lines:?}"
    );
    // No token travels in the feed line either.
    for secret in secrets_of("alpha") {
        assert!(files_containing(b.root(), &secret).is_empty());
    }
    assert!(a.read("memory/bot-sync/feed.jsonl").is_none());
}

#[test]
fn an_edit_of_the_mesh_config_reaches_every_daemon_by_itself_and_then_all_is_quiet() {
    let mesh = three_daemons();
    for (p, s) in &mesh {
        write_mesh(p, &own_config(&p.name, s.port));
    }
    let (a, b, c) = (&mesh[0].0, &mesh[1].0, &mesh[2].0);
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    for p in [a, b, c] {
        p.ok(&["auto", "on"]);
    }
    let mut on_a = read_mesh(a);
    on_a["mesh_agents"]["delta"] = json!({"name": "delta", "tailscale_ip": "100.64.0.4"});
    write_mesh(a, &on_a);
    for p in [b, c] {
        assert!(
            common::eventually(30, || read_mesh(p)["mesh_agents"].get("delta").is_some()),
            "{} never got alpha's edit: {}",
            p.name,
            read_mesh(p)
        );
        assert_eq!(
            read_mesh(p)["github"]["token"],
            secrets_of(&p.name)[1].as_str()
        );
    }
    // The merges the peers wrote are not edits: no sync keeps another one going (every real
    // session a daemon starts rewrites its record of the last sync with that peer).
    let last_syncs =
        |p: &Peer| std::fs::read_to_string(p.path(".botsync/last-sync.json")).unwrap_or_default();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let before: Vec<String> = [a, b, c].iter().map(|p| last_syncs(p)).collect();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let after: Vec<String> = [a, b, c].iter().map(|p| last_syncs(p)).collect();
    assert_eq!(
        before, after,
        "syncs kept going after the mesh config converged"
    );
}
