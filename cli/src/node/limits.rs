//! The `limits` of `.botsync/config.json` over the protocol's defaults: what the daemon lets
//! its peers make it hold (`Limits`) and the deadlines both sides of a session keep
//! (`Deadlines`). docs/PROTOCOL.md, "Resource bounds and deadlines".

use std::time::Duration;

use anyhow::{Result, bail};
use botsync_engine::config::ServeLimits;
use botsync_proto::budget::{Deadlines, Limits};

/// The configured limits, unset ones at their defaults. A per-peer count above its total is
/// refused with the line that says which.
pub fn limits(config: &ServeLimits) -> Result<Limits> {
    let d = Limits::DEFAULT;
    let count = |v: Option<u32>, default: usize| v.map_or(default, |v| v as usize);
    let limits = Limits {
        connections: count(config.connections, d.connections),
        connections_per_peer: count(config.connections_per_peer, d.connections_per_peer),
        sessions: count(config.sessions, d.sessions),
        requests: count(config.requests, d.requests),
        requests_per_peer: count(config.requests_per_peer, d.requests_per_peer),
        deadlines: deadlines(config),
    };
    for (per_peer, total, names) in [
        (
            limits.connections_per_peer,
            limits.connections,
            ("connections_per_peer", "connections"),
        ),
        (
            limits.requests_per_peer,
            limits.requests,
            ("requests_per_peer", "requests"),
        ),
    ] {
        if per_peer > total {
            bail!(
                "limits.{} ({per_peer}) is above limits.{} ({total}) in .botsync/config.json; lower the first or raise the second",
                names.0,
                names.1
            );
        }
    }
    Ok(limits)
}

/// The configured deadlines, unset ones at their defaults.
pub fn deadlines(config: &ServeLimits) -> Deadlines {
    let d = Deadlines::DEFAULT;
    let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
    let (summary, request) = (
        secs(config.summary_secs, d.summary),
        secs(config.request_secs, d.request),
    );
    Deadlines {
        hello: secs(config.hello_secs, d.hello),
        summary,
        request,
        chunk_batch: secs(config.chunk_batch_secs, d.chunk_batch),
        write: secs(config.write_secs, d.write),
        // A mesh shares its config: peers whose deadlines were shortened hear from a busy
        // peer four times within them.
        keep_alive: d.keep_alive.min(summary / 4).min(request / 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_is_the_protocol_default() {
        let l = limits(&ServeLimits::default()).unwrap();
        assert_eq!(l.connections, Limits::DEFAULT.connections);
        assert_eq!(l.deadlines.summary, Deadlines::DEFAULT.summary);
        assert_eq!(l.deadlines.keep_alive, Deadlines::DEFAULT.keep_alive);
    }

    #[test]
    fn a_short_request_deadline_shortens_the_keep_alive_within_it() {
        let d = deadlines(&ServeLimits {
            request_secs: Some(40),
            ..ServeLimits::default()
        });
        assert_eq!(d.keep_alive, Duration::from_secs(10));
    }

    #[test]
    fn configured_values_replace_the_defaults_one_by_one() {
        let l = limits(&ServeLimits {
            connections: Some(64),
            chunk_batch_secs: Some(90),
            ..ServeLimits::default()
        })
        .unwrap();
        assert_eq!(l.connections, 64);
        assert_eq!(l.sessions, Limits::DEFAULT.sessions);
        assert_eq!(l.deadlines.chunk_batch, Duration::from_secs(90));
        assert_eq!(l.deadlines.write, Deadlines::DEFAULT.write);
    }

    #[test]
    fn a_per_peer_count_above_its_total_is_refused() {
        let err = limits(&ServeLimits {
            requests: Some(4),
            ..ServeLimits::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("limits.requests_per_peer (8) is above limits.requests (4)"),
            "{err}"
        );
    }
}
