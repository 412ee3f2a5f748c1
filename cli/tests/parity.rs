//! `botsync parity` as agents use it to check that the mesh agrees: in parity after syncs, drift
//! that names the mesh config key or the files after a one-sided edit, parity again after a
//! sync, "differs by policy" for a peer that selects other files, and one clear line (exit 1)
//! for a peer that is down.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::mesh::{own_config, read_mesh, three_daemons, write_mesh};
use common::{Peer, human};
use serde_json::{Value, json};

fn peer<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == name)
        .unwrap_or_else(|| panic!("no {name} in {doc}"))
}

#[test]
fn parity_holds_after_syncs_names_the_drift_of_a_one_sided_edit_and_holds_again_after_a_sync() {
    let mesh = three_daemons();
    for (p, s) in &mesh {
        write_mesh(p, &own_config(&p.name, s.port));
        p.write(&format!("memory/{}.md", p.name), "notes\n");
    }
    let (a, b, c) = (&mesh[0].0, &mesh[1].0, &mesh[2].0);
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    c.ok(&["sync"]);

    // Everyone agrees: exit 0, from every side.
    for p in [a, b, c] {
        let doc = p.ok(&["parity"]);
        assert_eq!(doc["in_parity"], true, "{}: {doc}", p.name);
    }
    let (code, out, _) = human(a, &["parity"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("beta: in parity") && out.contains("gamma: in parity"),
        "{out}"
    );

    // alpha adds an agent and moves beta's address: drift, naming both keys.
    let mut config = read_mesh(a);
    config["mesh_agents"]["delta"] = json!({"name": "delta"});
    config["mesh_agents"]["beta"]["tailscale_ip"] = json!("100.64.0.9");
    write_mesh(a, &config);
    let (code, doc, _) = a.run(&["parity"]);
    assert_eq!(code, 3, "{doc}");
    let beta = peer(&doc, "beta");
    assert_eq!(beta["state"], "mesh_drift", "{beta}");
    let keys = &beta["mesh"][0]["keys"];
    assert!(
        keys.as_array()
            .unwrap()
            .contains(&json!({"pointer": "/mesh_agents/beta/tailscale_ip", "state": "differs"})),
        "{keys}"
    );
    assert!(
        keys.as_array()
            .unwrap()
            .contains(&json!({"pointer": "/mesh_agents/delta", "state": "missing_there"})),
        "{keys}"
    );
    let (code, out, _) = human(a, &["parity"]);
    assert_eq!(code, 3);
    assert!(out.contains("/mesh_agents/delta (missing there)"), "{out}");

    // beta's side of the same drift, and a file only beta has: behind, naming the path.
    b.write("memory/late.md", "late\n");
    let doc = a.run(&["parity", "beta"]).1;
    assert_eq!(peer(&doc, "beta")["state"], "behind", "{doc}");
    assert_eq!(
        peer(&doc, "beta")["behind"]["paths"],
        json!(["memory/late.md"])
    );
    let (_, status, _) = human(a, &["status"]);
    assert!(
        status.contains("parity: behind: 1 file to receive (memory/late.md)"),
        "{status}"
    );

    // A sync from alpha, then from beta, brings everyone back.
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    for p in [a, b, c] {
        let (code, doc, _) = p.run(&["parity"]);
        assert_eq!(code, 0, "{}: {doc}", p.name);
    }
    assert_eq!(
        read_mesh(c)["mesh_agents"]["beta"]["tailscale_ip"],
        "100.64.0.9"
    );
}

#[test]
fn a_peer_with_other_selection_rules_differs_by_policy() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let config = b.path(".botsync/config.json");
    let mut rules: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    rules["exclude"] = json!(["*.tmp.md"]);
    std::fs::write(&config, serde_json::to_vec_pretty(&rules).unwrap()).unwrap();
    let sb = b.serve();
    a.add(&b, sb.port);
    b.add(&a, 7474);
    a.write("memory/draft.tmp.md", "draft\n");
    a.write("memory/kept.md", "kept\n");
    // No daemon on alpha: parity dials beta itself.
    a.ok(&["push", "beta"]);

    let (code, doc, _) = a.run(&["parity"]);
    assert_eq!(code, 3, "{doc}");
    let beta = peer(&doc, "beta");
    assert_eq!(beta["state"], "differs_by_policy", "{beta}");
    assert_eq!(beta["policy"]["only_theirs"], json!(["exclude *.tmp.md"]));
    let (_, out, _) = human(&a, &["parity"]);
    assert!(
        out.contains("beta: differs by policy: only here nothing; only there exclude *.tmp.md"),
        "{out}"
    );
}

#[test]
fn parity_with_a_stopped_peer_exits_1_with_one_clear_line() {
    let mut mesh = three_daemons();
    let (c, server) = mesh.pop().unwrap();
    server.terminate();
    let a = &mesh[0].0;
    let (code, out, err) = human(a, &["parity"]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("gamma")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("cannot reach peer gamma at 127.0.0.1:"),
        "{err}"
    );
    assert!(lines[0].contains("botsync serve"), "{err}");
    assert!(out.contains("beta: in parity"), "{out}");
    let (code, doc, _) = a.run(&["parity"]);
    assert_eq!(code, 1);
    assert_eq!(peer(&doc, "gamma")["state"], "unreachable");
    drop(c);
}

#[test]
fn a_peer_with_more_selection_rules_than_one_parity_report_holds_still_answers() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let config = b.path(".botsync/config.json");
    let mut rules: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let many: Vec<String> = (0..300).map(|i| format!("*.tmp{i}.md")).collect();
    rules["exclude"] = json!(many);
    std::fs::write(&config, serde_json::to_vec_pretty(&rules).unwrap()).unwrap();
    let sb = b.serve();
    a.add(&b, sb.port);
    b.add(&a, 7474);
    a.write("memory/kept.md", "kept\n");
    a.ok(&["push", "beta"]);

    let (code, doc, _) = a.run(&["parity"]);
    assert_eq!(code, 3, "{doc}");
    let beta = peer(&doc, "beta");
    assert_eq!(beta["state"], "differs_by_policy", "{beta}");
    let theirs = beta["policy"]["only_theirs"].as_array().unwrap();
    assert!(theirs.iter().any(|r| r == "exclude *.tmp0.md"), "{beta}");
}
