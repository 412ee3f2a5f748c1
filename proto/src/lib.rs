pub mod close;
pub mod identity;
pub mod tls;
