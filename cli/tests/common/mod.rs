//! Test helpers: a botsync workspace in a temp dir driven through the real binary, and a
//! `botsync serve` process that is stopped when dropped.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

pub mod mesh;
pub mod netem;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;
use tempfile::TempDir;

/// One peer: a workspace with an identity.
pub struct Peer {
    pub dir: TempDir,
    pub name: String,
}

impl Peer {
    /// `botsync init --name NAME` in a fresh temp dir.
    pub fn new(name: &str) -> Peer {
        Peer::new_in(name, &std::env::temp_dir())
    }

    /// `botsync init --name NAME` in a fresh directory under `parent` (a small file system).
    pub fn new_in(name: &str, parent: &Path) -> Peer {
        let dir = tempfile::Builder::new()
            .prefix(&format!("botsync-{name}-"))
            .tempdir_in(parent)
            .unwrap();
        let p = Peer {
            dir,
            name: name.to_owned(),
        };
        p.ok(&["init", "--name", name]);
        p
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The binary with `-w` pointing here.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("botsync").unwrap();
        c.arg("-w").arg(self.root());
        c.env_remove("BOTSYNC_WORKSPACE")
            .env("BOTSYNC_CONNECT_TIMEOUT_SECS", "3");
        c
    }

    /// Run with `--json`, return (exit code, stdout JSON).
    pub fn run(&self, args: &[&str]) -> (i32, Value, String) {
        let out = self.cmd().arg("--json").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: bad JSON ({e}): {}\n{stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code().unwrap_or(-1), json, stderr)
    }

    /// Run and require exit code 0.
    pub fn ok(&self, args: &[&str]) -> Value {
        let (code, json, stderr) = self.run(args);
        assert_eq!(code, 0, "{args:?} failed: {json}\n{stderr}");
        json
    }

    pub fn id(&self) -> String {
        self.ok(&["id"])["id"].as_str().unwrap().to_owned()
    }

    /// Configure `other`, serving at `port`, as a peer.
    pub fn add(&self, other: &Peer, port: u16) {
        self.ok(&[
            "add",
            &other.name,
            &format!("127.0.0.1:{port}"),
            "--id",
            &other.id(),
        ]);
    }

    /// Set top-level keys of `.botsync/config.json` (a daemon reads it when it starts).
    pub fn configure(&self, keys: Value) {
        let path = self.path(".botsync/config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for (k, v) in keys.as_object().unwrap() {
            config[k] = v.clone();
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(rel)).ok()
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel)).unwrap();
    }

    pub fn rename(&self, from: &str, to: &str) {
        let dst = self.path(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::rename(self.path(from), dst).unwrap();
    }

    /// Start `botsync serve` on a free loopback port.
    pub fn serve(&self) -> Server {
        self.serve_on("127.0.0.1:0")
    }

    /// Start `botsync serve` (the daemon) listening on `listen`; returns once it answers.
    pub fn serve_on(&self, listen: &str) -> Server {
        Server::spawn(self.cmd(), listen)
    }

    /// Every synced file under `memory/`, `MEMORY.md` and `USER.md` with its bytes.
    pub fn tree(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.root().to_path_buf()];
        while let Some(dir) = stack.pop() {
            // A daemon may be changing the tree while we read it: what vanished is skipped.
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let Ok(e) = e else { continue };
                let rel = e
                    .path()
                    .strip_prefix(self.root())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if rel == ".botsync" {
                    continue;
                }
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(e.path()),
                    Ok(_) => {
                        if let Ok(bytes) = std::fs::read(e.path()) {
                            out.push((rel, bytes));
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        out.sort();
        out
    }
}

/// A running `botsync serve`; killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    /// Run `cmd serve --listen LISTEN` and wait for its "listening" line.
    pub fn spawn(mut cmd: Command, listen: &str) -> Server {
        let mut child = cmd
            .args(["--json", "serve", "--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve said {line:?}: {e}"));
        let port = v["listening"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Server { child, port }
    }

    /// Stop the daemon with SIGTERM and wait for it; returns its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        signal(&self.child, "TERM");
        let status = self.child.wait().unwrap();
        status.code()
    }

    /// Kill the daemon with SIGKILL (no clean-up at all) and wait for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send `SIG<name>` to a child process.
pub fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} failed");
}

/// Run without `--json`: (exit code, stdout, stderr).
pub fn human(p: &Peer, args: &[&str]) -> (i32, String, String) {
    let out = p.cmd().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Poll `check` every 50 ms until it holds or `secs` pass; true if it held.
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    check()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two peers that know each other; `b` serves.
pub fn pair() -> (Peer, Peer, Server) {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let server = b.serve();
    b.add(&a, 7474);
    a.add(&b, server.port);
    (a, b, server)
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sum of a counter over the peers of a sync's JSON.
pub fn counter(json: &Value, name: &str) -> u64 {
    json["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["counters"][name].as_u64().unwrap_or(0))
        .sum()
}

/// Number of files below `dir` (recursively).
pub fn count_files(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += count_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

/// Chunk files staged in a peer's chunk store (received, not yet applied).
pub fn staged_chunks(peer: &Peer) -> u64 {
    let dir = peer.path(".botsync/store/staging");
    if dir.exists() { count_files(&dir) } else { 0 }
}

/// Peers with running daemons that all know each other (syncing on their own if `auto`).
pub fn mesh(names: &[&str], auto: bool) -> Vec<(Peer, Server)> {
    let peers: Vec<(Peer, Server)> = names
        .iter()
        .map(|n| {
            let p = Peer::new(n);
            let s = p.serve();
            (p, s)
        })
        .collect();
    for (p, _) in &peers {
        for (q, s) in &peers {
            if p.name != q.name {
                p.add(q, s.port);
            }
        }
    }
    if auto {
        for (p, _) in &peers {
            p.ok(&["auto", "on"]);
        }
    }
    peers
}

/// Run `args` with `--json` as `agent` (with `AI_IDENTITY=claude`, `MACHINE_ID=NAME-box`); must
/// succeed.
pub fn as_agent(p: &Peer, agent: &str, args: &[&str]) -> Value {
    let out = p
        .cmd()
        .env("BOTSYNC_AGENT", agent)
        .env("AI_IDENTITY", "claude")
        .env("MACHINE_ID", format!("{}-box", p.name))
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} as {agent} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
