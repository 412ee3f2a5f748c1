pub mod codec;
pub mod frame;
pub mod limits;
pub mod messages;
