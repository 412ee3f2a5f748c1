pub mod close;
pub mod endpoint;
pub mod identity;
pub mod tls;
