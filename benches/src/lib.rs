//! Shared helpers for botsync benchmarks.
