//! The FTP protocol surface: the control-channel codec (bytes → lines), the
//! command parser (line → [`Command`]) and replies ([`Reply`]). All pure.

pub mod codec;
pub mod command;
pub mod reply;

pub use command::{Command, EpsvArg, Password, TransferType};
pub use reply::Reply;
