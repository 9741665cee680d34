//! The FTP protocol surface: the control-channel codec (bytes → lines), the
//! command parser (line → [`Command`]), replies ([`Reply`]) and the control
//! connection's state machine ([`core`]). All pure.

pub mod codec;
pub mod command;
pub mod core;
pub mod reply;

pub use command::{Command, EpsvArg, Password, TransferType};
pub use reply::{code, Reply};
