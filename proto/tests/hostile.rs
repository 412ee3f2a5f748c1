//! Regression tests for what the hostile peer of issue 10 found: a scripted peer speaks to a
//! real listener over QUIC on 127.0.0.1, frame by frame, and each test pins one finding.
//!
//! [`harness`] holds the listener and the scripted peer; each other module one finding.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "hostile/amplification.rs"]
mod amplification;
mod common;
#[path = "hostile/conformance.rs"]
mod conformance;
#[path = "hostile/dead_peer.rs"]
mod dead_peer;
#[path = "hostile/harness.rs"]
mod harness;
#[path = "hostile/names.rs"]
mod names;
#[path = "hostile/permissions.rs"]
mod permissions;
#[path = "hostile/resources.rs"]
mod resources;
#[path = "hostile/versions.rs"]
mod versions;
