//! `botsync demo`: two workspaces in a temporary directory, two peers on loopback, a real sync
//! over QUIC in both directions, then clean up. The README's main-job command.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use botsync_engine::AgentLabel;
use botsync_proto::messages::SessionMode;
use serde::Serialize;

use super::sync::{How, runtime, session_with};
use crate::context::{Globals, STATE_DIR};
use crate::exit::OK;
use crate::node::Node;
use crate::node::peers::{Peer, Peers};
use crate::output;
use crate::verb::Ctx;

#[derive(Debug, Serialize)]
struct Step {
    step: String,
    files_in: usize,
    files_out: usize,
    bytes_received: u64,
    bytes_sent: u64,
    round_trips: u32,
}

/// `botsync demo`.
pub fn demo(g: &Globals) -> Result<i32> {
    let tmp = tempfile::Builder::new()
        .prefix("botsync-demo-")
        .tempdir()
        .context("creating a temp dir")?;
    let (a_root, b_root) = (tmp.path().join("alpha"), tmp.path().join("beta"));
    let a = setup(&a_root, "alpha")?;
    let b = setup(&b_root, "beta")?;
    fill_sample(&a_root)?;
    introduce(&a, &b, "beta")?;
    introduce(&b, &a, "alpha")?;

    let rt = runtime()?;
    let ctx = Ctx::direct(&a_root, g.agent.clone(), rt.handle().clone());
    let steps = rt.block_on(async {
        let (b_addr, server) = super::serve::spawn(Arc::clone(&b), "127.0.0.1:0".parse()?).await?;
        set_port(&a_root, "beta", b_addr.port())?;
        let peer = a
            .peers()?
            .find("beta")
            .cloned()
            .context("peer beta missing")?;
        let mut steps = Vec::new();

        let first = session_with(&ctx, &a, &peer, SessionMode::Sync, How::default(), None).await?;
        steps.push(step("initial sync alpha -> beta", &first));

        edit_both(&a_root, &b_root)?;
        let second = session_with(&ctx, &a, &peer, SessionMode::Sync, How::default(), None).await?;
        steps.push(step("after edits on both sides", &second));

        let third = session_with(&ctx, &a, &peer, SessionMode::Sync, How::default(), None).await?;
        steps.push(step("no-op re-sync", &third));
        server.abort();
        Ok::<_, anyhow::Error>(steps)
    })?;

    let identical = synced_files(&a_root)? == synced_files(&b_root)?;
    if !identical {
        bail!("demo failed: the two workspaces differ after syncing (please report this)");
    }
    let not_synced_stayed = !b_root.join("IDENTITY.md").exists() && !b_root.join(".env").exists();
    let doc = serde_json::json!({
        "ok": true,
        "workspaces": tmp.path().display().to_string(),
        "steps": steps,
        "identical": identical,
        "private_files_stayed_home": not_synced_stayed,
    });
    g.out.emit(&doc, || {
        let mut s = format!("botsync demo in {} (removed afterwards)\n", tmp.path().display());
        s.push_str("two peers, alpha and beta, on 127.0.0.1 over QUIC with pinned mutual TLS\n");
        for st in &steps {
            s.push_str(&format!(
                "  {:<28} {:>3} files in, {:>3} files out, {:>9} received, {:>9} sent, {} round trip(s)\n",
                st.step,
                st.files_in,
                st.files_out,
                output::bytes(st.bytes_received),
                output::bytes(st.bytes_sent),
                st.round_trips
            ));
        }
        s.push_str("synced files identical on both sides: yes\n");
        s.push_str(&format!(
            "IDENTITY.md, config/ and .env stayed on alpha: {}\n",
            if not_synced_stayed { "yes" } else { "NO" }
        ));
        s
    })?;
    drop(a);
    drop(b);
    tmp.close().context("removing the demo directory")?;
    Ok(OK)
}

fn setup(root: &Path, name: &str) -> Result<Arc<Node>> {
    fs::create_dir_all(root)?;
    botsync_engine::workspace::Workspace::init(root, Some(name))?;
    crate::node::identity::save(
        &botsync_engine::layout::Layout::new(root),
        &botsync_proto::identity::Identity::generate()?,
    )?;
    Ok(Arc::new(Node::open(
        root,
        AgentLabel::new(&format!("demo-{name}")),
    )?))
}

fn introduce(me: &Node, other: &Node, other_name: &str) -> Result<()> {
    let state = me.root.join(STATE_DIR);
    let mut peers = Peers::load(&state)?;
    peers.add(Peer {
        name: other_name.into(),
        host: "127.0.0.1".into(),
        port: 7474,
        id: other.identity.peer_id(),
    })?;
    peers.save(&state)
}

fn set_port(root: &Path, name: &str, port: u16) -> Result<()> {
    let state = root.join(STATE_DIR);
    let mut peers = Peers::load(&state)?;
    for p in peers.peers.iter_mut().filter(|p| p.name == name) {
        p.port = port;
    }
    peers.save(&state)
}

fn step(name: &str, r: &botsync_proto::session::SessionReport) -> Step {
    let moved = |items: &[botsync_engine::plan::ItemReport]| {
        items.iter().filter(|i| i.action.writes_file()).count()
    };
    Step {
        step: name.into(),
        files_in: moved(&r.pulled),
        files_out: moved(&r.pushed),
        bytes_received: r.counters.chunk_wire_bytes_received,
        bytes_sent: r.bytes_sent,
        round_trips: r.counters.round_trips,
    }
}

fn write(root: &Path, rel: &str, text: &str) -> Result<()> {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
}

fn fill_sample(root: &Path) -> Result<()> {
    write(
        root,
        "MEMORY.md",
        "# Memory\n\n- The user prefers short answers.\n- Project botsync ships on Fridays.\n",
    )?;
    write(
        root,
        "USER.md",
        "# User\n\nName: Sam\nTimezone: Europe/Paris\n",
    )?;
    write(
        root,
        "IDENTITY.md",
        "# Identity\n\nI am alpha, running on the home server.\n",
    )?;
    write(root, ".env", "API_TOKEN=never-leaves-this-machine\n")?;
    write(root, "config/local.json", "{\"gpu\": false}\n")?;
    for day in 1..=7 {
        write(
            root,
            &format!("memory/2026-11-{day:02}.md"),
            &format!(
                "# 2026-11-{day:02}\n\n{}",
                "- met the user, took notes\n".repeat(40)
            ),
        )?;
    }
    for topic in ["rust", "quic", "cooking", "travel"] {
        write(
            root,
            &format!("memory/topics/{topic}.md"),
            &format!(
                "# {topic}\n\n{}",
                format!("notes about {topic}\n").repeat(200)
            ),
        )?;
    }
    let log: String = (0..2000)
        .map(|i| format!("{{\"seq\":{i},\"event\":\"tool_call\",\"ok\":true}}\n"))
        .collect();
    write(root, "memory/events.jsonl", &log)
}

fn edit_both(a: &Path, b: &Path) -> Result<()> {
    use std::io::Write;
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(a.join("memory/events.jsonl"))?;
    for i in 2000..2100 {
        writeln!(log, "{{\"seq\":{i},\"event\":\"tool_call\",\"ok\":true}}")?;
    }
    write(
        a,
        "MEMORY.md",
        "# Memory\n\n- The user prefers short answers.\n- Project botsync ships on Fridays.\n- alpha learned: demos must be fast.\n",
    )?;
    write(
        b,
        "memory/from-beta.md",
        "# Note from beta\n\nbeta found a bug in the parser.\n",
    )?;
    fs::remove_file(b.join("memory/topics/travel.md"))?;
    Ok(())
}

/// Every synced file (what the default selection syncs) with its bytes, for comparison.
fn synced_files(root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
            let synced = rel == "MEMORY.md" || rel == "USER.md" || rel.starts_with("memory");
            if e.file_type()?.is_dir() {
                if rel != STATE_DIR {
                    stack.push(p);
                }
            } else if synced {
                out.push((rel, fs::read(&p)?));
            }
        }
    }
    out.sort();
    Ok(out)
}
