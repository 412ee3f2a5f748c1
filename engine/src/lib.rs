//! botsync's engine: the pure, synchronous core of the sync.
//!
//! Paths, bytes, remote entries and `now` go in; manifests, plans and reports come out. The engine
//! owns chunking ([`chunk`]), content hashes ([`chunktree`]), the workspace Merkle tree
//! ([`merkle`]), version vectors ([`vector`]), the scanner ([`scan`]) with its selection rules
//! ([`rules`]), the sled index ([`store`]), the chunk store of past versions ([`chunkstore`]) and
//! atomic apply ([`apply`]). It has no network code and no async.
//!
//! ```
//! use botsync_engine::chunk::Chunker;
//! use botsync_engine::chunktree::content_hash;
//!
//! let chunks = Chunker::default().chunk_reader(&b"hello agents"[..]).unwrap();
//! assert_eq!(chunks.len(), 1);
//! let _id = content_hash(&chunks);
//! ```

pub mod apply;
pub mod authority;
pub mod chunk;
pub mod chunkstore;
pub mod chunktree;
pub mod config;
pub mod conflicts;
pub mod entry;
pub mod error;
pub mod feed;
pub mod guard;
pub mod hash;
pub mod layout;
pub mod locks;
pub mod merkle;
pub mod mesh;
pub mod path;
pub mod peer;
pub mod plan;
pub mod reconcile;
pub mod rules;
pub mod scan;
pub mod secrets;
pub mod skill;
pub mod state;
pub mod state_merge;
pub mod store;
pub mod vector;
pub mod workspace;

pub use chunk::{ChunkRef, Chunker, ChunkerParams};
pub use entry::{EntryKind, FileEntry, LocalEntry, Mode, StatSig};
pub use hash::Hash;
pub use path::RelPath;
pub use peer::{AgentLabel, Attribution, MachineName, PeerId};
pub use vector::{Causality, VersionVector};
