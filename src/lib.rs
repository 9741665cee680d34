//! ftpgate: an FTP gateway (RFC 959 and extensions) onto pluggable storage.
//!
//! # Layout
//! The flow of one command reads like the protocol:
//! - [`protocol::codec`]: control-channel bytes → lines (length limit, Telnet IAC).
//! - [`protocol::command`]: line → typed [`protocol::Command`] (pure parser).
//! - [`session`]: per-connection state (login, cwd, TYPE, REST, RNFR), no sockets.
//! - [`connection`]: the control loop: login gate, dispatch, replies, ABOR/STAT
//!   during a transfer, idle timeout.
//! - [`liveness`]: whether the client of an ending upload is still there (a
//!   killed client's upload is never committed).
//! - [`handlers`]: one module per verb family (login, navigation, files, data
//!   set-up, transfers, information).
//! - [`datachan`]: PASV/EPSV listeners and PORT/EPRT connections, RFC 2577 checks.
//! - [`listing`]: LIST/NLST/MLSD/MLST formatters.
//! - [`sendfile`]: zero-copy binary RETR of local files over plain data connections.
//! - [`errors`]: the one mapping of storage errors to reply codes.
//! - [`checksum`]: HASH/XSHA256/XSHA1/XMD5/XCRC digests and the upload SHA-256.
//! - [`auth`]: users, argon2/bcrypt password hashes, permissions; [`bans`]:
//!   per-IP bans after repeated failed logins.
//! - [`tls`], [`control`]: FTPS (RFC 4217) with rustls, the control channel's
//!   plain/TLS streams and the `AUTH TLS` upgrade.
//! - [`config`]: figment layering and validation.
//! - [`proxy`]: PROXY protocol v1/v2 headers from a load balancer.
//! - [`server`]: listeners, session limits, graceful shutdown, users reload.
//! - [`health`]: background backend checks behind `/readyz` and `ftpgate_backend_up`.
//! - [`metrics`], [`http`]: Prometheus metrics and the `/healthz`, `/readyz`,
//!   `/metrics` endpoint; [`process`]: CPU, memory and descriptors of the process.
//!
//! Storage is reached only through `ftpgate_storage::StorageBackend` with
//! `ftpgate_storage::VPath` paths (crates under `backends/`).

#![warn(missing_docs)]

pub mod auth;
pub mod bans;
pub mod checksum;
pub mod config;
pub mod connection;
pub mod control;
pub mod datachan;
pub mod errors;
pub mod handlers;
pub mod health;
pub mod http;
pub mod listing;
pub mod liveness;
pub mod login_cache;
pub mod metrics;
pub mod process;
pub mod protocol;
pub mod proxy;
pub mod resources;
pub mod resume;
pub mod sendfile;
pub mod server;
pub mod session;
pub mod tls;
pub mod webhooks;
