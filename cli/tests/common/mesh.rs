//! Helpers for the mesh config stories: three daemons that know each other, a seed-like
//! `.secrets/mesh-config.json` with an agent's own tokens, and a search for secret bytes in every
//! file under a peer's directory (workspace, `.botsync/` store, chunk store, database).

use std::path::Path;

use serde_json::{Value, json};

use super::{Peer, Server};

/// The designated file every workspace has.
pub const MESH: &str = ".secrets/mesh-config.json";

/// Three peers, each with a running daemon, each knowing the other two.
pub fn three_daemons() -> Vec<(Peer, Server)> {
    let peers: Vec<Peer> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|n| Peer::new(n))
        .collect();
    let servers: Vec<Server> = peers.iter().map(Peer::serve).collect();
    for (i, p) in peers.iter().enumerate() {
        for (j, q) in peers.iter().enumerate() {
            if i != j {
                p.add(q, servers[j].port);
            }
        }
    }
    peers.into_iter().zip(servers).collect()
}

/// The two secrets of agent `name`: its webhook token and its GitHub token (realistic formats,
/// distinct per agent).
pub fn secrets_of(name: &str) -> [String; 2] {
    let seed: u64 = name.bytes().map(u64::from).sum();
    let alphabet = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let random = |salt: u64, len: usize| -> String {
        let mut x = (seed * 7919 + salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize] as char
            })
            .collect()
    };
    [
        format!("ntn_{}", random(1, 40)),
        format!("ghp_{}", random(2, 36)),
    ]
}

/// A seed-like mesh config as agent `name` holds it: its own agent entry with its own tokens,
/// shared settings, and database ids (which are not secrets).
pub fn own_config(name: &str, port: u16) -> Value {
    let [hook, gh] = secrets_of(name);
    json!({
        "mesh_agents": {
            name: {
                "name": name,
                "webhook": format!("http://127.0.0.1:{port}/hooks/agent"),
                "tailscale_ip": "100.112.130.22",
                "hook_token": hook
            }
        },
        "databases": { "tasks": "2f835e81-2bbb-81b6-9700-e18108a40b1f" },
        "github": { "org": "covaultxyz", "token": gh },
        "notion": { "token_file": "/home/agent/.secrets/notion-token" }
    })
}

/// Write `value` as `p`'s mesh config, mode 0600.
pub fn write_mesh(p: &Peer, value: &Value) {
    use std::os::unix::fs::PermissionsExt;
    p.write(MESH, serde_json::to_vec_pretty(value).unwrap());
    std::fs::set_permissions(p.path(MESH), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `p`'s mesh config.
pub fn read_mesh(p: &Peer) -> Value {
    serde_json::from_slice(&p.read(MESH).unwrap()).unwrap()
}

/// `v` with every value under a key holding "token" replaced by the placeholder: the
/// non-secret content two agents must agree on.
pub fn public(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if k.contains("token") && !k.ends_with("_file") {
                        json!("<secret>")
                    } else {
                        public(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in read.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    if let Ok(bytes) = std::fs::read(&path)
                        && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                    {
                        hits.push(path.display().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    hits
}
