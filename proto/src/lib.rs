//! botsync's wire: identities, pinned mutual TLS, the QUIC endpoint, framed messages and the
//! session state machine.
//!
//! No file-system code lives here: a session drives a workspace through the [`replica::Replica`]
//! trait, which the CLI implements over the engine's workspace (and proto's tests over a
//! workspace in a temporary directory whose index is in memory).
//!
//! ```
//! use botsync_proto::codec::{decode, encode};
//! use botsync_proto::messages::Message;
//!
//! let bytes = encode(&Message::Goodbye).unwrap();
//! assert_eq!(decode(&bytes).unwrap(), Message::Goodbye);
//! ```

pub mod budget;
pub mod close;
pub mod codec;
pub mod coordination;
pub mod endpoint;
pub mod frame;
pub mod identity;
pub mod limits;
pub mod messages;
pub mod replica;
pub mod session;
#[cfg(test)]
mod testing;
pub mod tls;
