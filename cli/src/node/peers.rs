//! `.botsync/peers.json`: the peers this workspace syncs with.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use botsync_engine::PeerId;
use serde::{Deserialize, Serialize};

use crate::exit::UsageError;

/// The default UDP port of `botsync serve`.
pub const DEFAULT_PORT: u16 = 7474;

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Local name of the peer (`mac-mini`).
    pub name: String,
    /// Host name or address (a Tailscale IP or MagicDNS name).
    pub host: String,
    /// UDP port of its `botsync serve`.
    pub port: u16,
    /// Its pinned id, in copy-safe form.
    #[serde(with = "peer_id_text")]
    pub id: PeerId,
}

impl Peer {
    /// Resolve `host:port` to a socket address.
    pub fn resolve(&self) -> Result<SocketAddr> {
        let mut addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| {
                format!(
                    "cannot resolve peer {} host {:?}; check `botsync peers`",
                    self.name, self.host
                )
            })?;
        addrs.next().with_context(|| {
            format!(
                "peer {} host {:?} resolves to no address",
                self.name, self.host
            )
        })
    }
}

/// The peers file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peers {
    /// Configured peers, in the order they were added.
    pub peers: Vec<Peer>,
}

impl Peers {
    /// The file's location in a workspace.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("peers.json")
    }

    /// Load the peers file (a missing file means no peers).
    pub fn load(state_dir: &Path) -> Result<Peers> {
        let path = Peers::path(state_dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Peers::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text).map_err(|e| {
            UsageError::new(format!(
                "{} line {} column {}: {}; fix it there by hand, or run `botsync peers --reset` to keep it as a backup and start an empty list (then `botsync add` each peer again)",
                path.display(),
                e.line(),
                e.column(),
                message_without_position(&e)
            ))
            .into()
        })
    }

    /// Keep the peers file (readable or not) as `peers.json.bak` and start an empty list;
    /// returns the backup's path, or `None` if there was no file.
    pub fn reset(state_dir: &Path) -> Result<Option<PathBuf>> {
        let path = Peers::path(state_dir);
        if !path.exists() {
            return Ok(None);
        }
        let first = state_dir.join("peers.json.bak");
        let backup = if first.exists() {
            (1..)
                .map(|n| state_dir.join(format!("peers.json.bak.{n}")))
                .find(|p| !p.exists())
                .unwrap_or(first)
        } else {
            first
        };
        fs::rename(&path, &backup)
            .with_context(|| format!("keeping {} as {}", path.display(), backup.display()))?;
        Peers::default().save(state_dir)?;
        Ok(Some(backup))
    }

    /// Save atomically (temp file + rename).
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = Peers::path(state_dir);
        let tmp = state_dir.join("tmp").join("peers.json.new");
        if let Some(dir) = tmp.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut f = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// Find a peer by name.
    pub fn find(&self, name: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// The peers a verb acts on: the named one, or all.
    pub fn select(&self, name: Option<&str>) -> Result<Vec<Peer>> {
        match name {
            Some(n) => match self.find(n) {
                Some(p) => Ok(vec![p.clone()]),
                None => Err(UsageError::new(format!(
                    "no peer named {n:?}; `botsync peers` lists them, `botsync add` adds one"
                ))
                .into()),
            },
            None if self.peers.is_empty() => Err(UsageError::new(
                "no peers configured; add one with `botsync add NAME HOST[:PORT] --id PEER_ID`",
            )
            .into()),
            None => Ok(self.peers.clone()),
        }
    }

    /// Add a peer; names and ids must be unique.
    pub fn add(&mut self, peer: Peer) -> Result<()> {
        if self.find(&peer.name).is_some() {
            bail!(UsageError::new(format!(
                "a peer named {:?} already exists; `botsync remove {}` first",
                peer.name, peer.name
            )));
        }
        if let Some(other) = self.peers.iter().find(|p| p.id == peer.id) {
            bail!(UsageError::new(format!(
                "peer id {} is already configured as {:?}",
                peer.id, other.name
            )));
        }
        self.peers.push(peer);
        Ok(())
    }

    /// Remove a peer by name.
    pub fn remove(&mut self, name: &str) -> Result<Peer> {
        let Some(i) = self.peers.iter().position(|p| p.name == name) else {
            bail!(UsageError::new(format!(
                "no peer named {name:?}; `botsync peers` lists them"
            )));
        };
        Ok(self.peers.remove(i))
    }
}

/// serde_json's message without its " at line L column C" tail (the caller says where).
fn message_without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Split `HOST[:PORT]` (IPv6 in brackets: `[::1]:7474`).
pub fn parse_host_port(s: &str) -> Result<(String, u16)> {
    let bad = || {
        UsageError::new(format!(
            "{s:?} is not HOST[:PORT] (a host name, an IPv4 address, or [IPv6]:PORT; port 1-65535)"
        ))
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad().into());
        }
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad().into()),
        };
        (host.to_owned(), port)
    } else {
        match s.rsplit_once(':') {
            // Two or more colons: only a bare IPv6 address (its port is the default).
            Some((h, _)) if h.contains(':') => {
                if s.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(bad().into());
                }
                (s.to_owned(), DEFAULT_PORT)
            }
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
            None => (s.to_owned(), DEFAULT_PORT),
        }
    };
    if port == 0 || !(host.contains(':') || is_host_name(&host)) {
        return Err(bad().into());
    }
    Ok((host, port))
}

/// A DNS name or an IPv4 address: dot-separated labels of letters, digits, '-' and '_'.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

mod peer_id_text {
    use botsync_engine::PeerId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &PeerId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_copy_safe())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("a.b").unwrap(),
            ("a.b".into(), DEFAULT_PORT)
        );
        assert_eq!(
            parse_host_port("1.2.3.4:99").unwrap(),
            ("1.2.3.4".into(), 99)
        );
        assert_eq!(parse_host_port("[::1]:5").unwrap(), ("::1".into(), 5));
        assert_eq!(
            parse_host_port("::1").unwrap(),
            ("::1".into(), DEFAULT_PORT)
        );
        assert!(parse_host_port("h:x").is_err());
        assert!(parse_host_port("").is_err());
        // Found by a new user: all accepted before.
        assert!(parse_host_port(":7474").is_err(), "empty host");
        assert!(parse_host_port("a:b:c").is_err(), "not an IPv6 address");
        assert!(parse_host_port("127.0.0.1:0").is_err(), "port 0");
        assert!(parse_host_port("[]:5").is_err());
        assert!(parse_host_port("[::1]:0").is_err());
        assert!(parse_host_port("bad host").is_err());
        assert!(parse_host_port("a..b").is_err());
        assert_eq!(
            parse_host_port("mac-mini.tail1234.ts.net:7475").unwrap(),
            ("mac-mini.tail1234.ts.net".into(), 7475)
        );
    }

    #[test]
    fn names_and_ids_are_unique() {
        let id = PeerId([7; 32]);
        let p = Peer {
            name: "a".into(),
            host: "h".into(),
            port: 1,
            id,
        };
        let mut peers = Peers::default();
        peers.add(p.clone()).unwrap();
        assert!(peers.add(p.clone()).is_err());
        assert!(
            peers
                .add(Peer {
                    name: "b".into(),
                    ..p
                })
                .is_err()
        );
        assert!(peers.select(Some("zz")).is_err());
        assert_eq!(peers.remove("a").unwrap().id, id);
    }
}
