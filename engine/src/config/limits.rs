//! [`ServeLimits`]: the `limits` object of `.botsync/config.json`, what this peer lets its
//! peers make it hold (connections, sessions, request streams) and how long each phase of a
//! session may stall. Every field is optional: a missing one keeps the protocol's default
//! (docs/PROTOCOL.md, "Resource bounds and deadlines"), which the CLI fills in.
//!
//! ```
//! use botsync_engine::config::SyncConfig;
//!
//! let config: SyncConfig =
//!     serde_json::from_str(r#"{ "limits": { "connections": 64, "summary_secs": 1200 } }"#).unwrap();
//! assert_eq!(config.limits.connections, Some(64));
//! assert_eq!(config.limits.sessions, None);
//! ```

use serde::{Deserialize, Serialize};

/// Most connections, sessions or streams any one setting may allow.
pub const MAX_COUNT: u32 = 4096;

/// Longest deadline any one setting may give, in seconds (a day).
pub const MAX_DEADLINE_SECS: u64 = 86_400;

/// What this peer lets its peers make it hold, and for how long; `None` keeps the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeLimits {
    /// Connections served at once, all peers together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Connections served at once for one peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections_per_peer: Option<u32>,
    /// Sessions answered at once, all peers together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u32>,
    /// Chunk and chunk-tree request streams in service at once, all peers together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// Request streams in service at once for one peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_peer: Option<u32>,
    /// Seconds from a stream's opening to its first whole message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hello_secs: Option<u64>,
    /// Seconds from `Hello` to the initiator's `Summary` (its rescan runs in between).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_secs: Option<u64>,
    /// Seconds from one reply to the initiator's next request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_secs: Option<u64>,
    /// Seconds for a whole batch of chunks to arrive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_batch_secs: Option<u64>,
    /// Seconds for a peer to take one message we write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_secs: Option<u64>,
}

impl ServeLimits {
    /// True if nothing is set (the file then leaves `limits` out).
    pub fn is_default(&self) -> bool {
        *self == ServeLimits::default()
    }

    /// Check each value on its own; the problem is described for the user. (That a per-peer
    /// count is at most its total is checked where the defaults are known.)
    pub fn validate(&self) -> Result<(), String> {
        let counts = [
            ("connections", self.connections),
            ("connections_per_peer", self.connections_per_peer),
            ("sessions", self.sessions),
            ("requests", self.requests),
            ("requests_per_peer", self.requests_per_peer),
        ];
        for (name, value) in counts {
            if let Some(v) = value
                && !(1..=MAX_COUNT).contains(&v)
            {
                return Err(format!(
                    "limits.{name} is {v}, it must be between 1 and {MAX_COUNT}"
                ));
            }
        }
        let deadlines = [
            ("hello_secs", self.hello_secs),
            ("summary_secs", self.summary_secs),
            ("request_secs", self.request_secs),
            ("chunk_batch_secs", self.chunk_batch_secs),
            ("write_secs", self.write_secs),
        ];
        for (name, value) in deadlines {
            if let Some(v) = value
                && !(1..=MAX_DEADLINE_SECS).contains(&v)
            {
                return Err(format!(
                    "limits.{name} is {v}, it must be between 1 and {MAX_DEADLINE_SECS} seconds"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_set_is_valid_and_left_out_of_the_file() {
        assert!(ServeLimits::default().is_default());
        assert_eq!(ServeLimits::default().validate(), Ok(()));
        assert_eq!(
            serde_json::to_string(&ServeLimits::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn zero_or_huge_values_are_refused_by_name() {
        let zero = ServeLimits {
            sessions: Some(0),
            ..ServeLimits::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .contains("limits.sessions is 0")
        );
        let long = ServeLimits {
            write_secs: Some(MAX_DEADLINE_SECS + 1),
            ..ServeLimits::default()
        };
        assert!(long.validate().unwrap_err().contains("limits.write_secs"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_json::from_str::<ServeLimits>(r#"{"conections": 3}"#).is_err());
    }
}
