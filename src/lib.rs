//! ftpgate: an FTP gateway (RFC 959 and extensions) onto pluggable storage.
//!
//! # Layout
//! The flow of one command reads like the protocol:
//! - [`protocol::codec`]: control-channel bytes → lines (length limit, Telnet IAC).
//! - [`protocol::command`]: line → typed [`protocol::Command`] (pure parser).
//! - [`session`]: per-connection state (login, cwd, TYPE, REST, RNFR), no sockets.
//! - [`protocol::core`]: the control connection's decisions as a pure state machine
//!   (command queue behind a transfer, ABOR/STAT during it, login/idle/data
//!   timers, rate limit, shutdown), unit-tested without sockets or sleeps.
//! - [`connection`]: the thin shell around it: reads lines, runs commands through
//!   the login gate and dispatch, performs the core's actions with tokio.
//! - [`liveness`]: whether the client of an ending upload is still there (a
//!   killed client's upload is never committed).
//! - [`handlers`]: one module per verb family (login, navigation, files, data
//!   set-up, transfers, information); `handlers::tests` runs them in-process
//!   over the memory backend.
//! - [`state`]: what every session shares, built from the configuration without
//!   binding sockets (`state::Shared::build`): backends (the one user → backend
//!   mapping, resolved once per login into a `state::UserContext`), data plane,
//!   limits, lifecycle, session counts.
//! - [`datachan`]: PASV/EPSV listeners and PORT/EPRT connections, RFC 2577 checks.
//! - [`listing`]: LIST/NLST/MLSD/MLST formatters.
//! - [`sendfile`]: zero-copy binary RETR of local files over plain data connections.
//! - [`errors`]: the one mapping of storage errors to reply codes.
//! - [`checksum`]: HASH/XSHA256/XSHA1/XMD5/XCRC digests and the upload SHA-256.
//! - [`auth`]: users, argon2/bcrypt password hashes, permissions; [`bans`]:
//!   per-IP bans after repeated failed logins; [`auth_hook`]: users from an
//!   external HTTP endpoint; [`login_cache`]: successful logins remembered.
//! - [`tls`], [`control`]: FTPS (RFC 4217) with rustls, the control channel's
//!   plain/TLS streams and the `AUTH TLS` upgrade.
//! - [`config`]: figment layering and validation.
//! - [`proxy`]: PROXY protocol v1/v2 headers from a load balancer.
//! - [`server`]: listeners, session limits, graceful shutdown, users reload; it
//!   depends on [`state`], which never depends on it.
//! - [`limits`]: per-user session caps and bandwidth buckets; [`quota`]: per-user
//!   storage quotas, counted by a wrapper around each backend.
//! - [`health`]: background backend checks behind `/readyz` and `ftpgate_backend_up`.
//! - [`metrics`], [`http`]: Prometheus metrics and the `/healthz`, `/readyz`,
//!   `/metrics` endpoint; [`process`]: CPU, memory and descriptors of the process;
//!   [`resources`]: open-files limit and returning freed memory.
//! - [`resume`]: interrupted uploads kept as pending ones and continued by REST/APPE;
//!   [`webhooks`]: signed events after uploads and other changes.
//!
//! The path of one command, file by file: bytes → [`protocol::codec::LineReader`]
//! (a line) → [`protocol::command::parse`] (a [`protocol::Command`]) →
//! [`protocol::core::ControlCore::input`] (run now, queue, or answer during a
//! transfer) → `connection::run_command` (login gate) → [`handlers::dispatch`] →
//! the verb's handler (e.g. `handlers::files`) → `ftpgate_storage::StorageBackend` →
//! on error [`errors::storage_reply`] → [`protocol::Reply::to_wire`] on the control
//! connection.
//!
//! Storage is reached only through `ftpgate_storage::StorageBackend` with
//! `ftpgate_storage::VPath` paths (crates under `backends/`).

#![warn(missing_docs)]

pub mod auth;
pub(crate) mod auth_hook;
pub(crate) mod bans;
pub(crate) mod checksum;
pub mod config;
pub(crate) mod connection;
pub(crate) mod control;
pub(crate) mod datachan;
pub(crate) mod errors;
pub(crate) mod handlers;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod limits;
pub(crate) mod listing;
pub(crate) mod liveness;
pub(crate) mod login_cache;
pub mod metrics;
pub(crate) mod process;
pub mod protocol;
pub(crate) mod proxy;
pub(crate) mod quota;
pub mod resources;
pub(crate) mod resume;
pub(crate) mod sendfile;
pub mod server;
pub(crate) mod session;
pub(crate) mod state;
pub(crate) mod tls;
pub(crate) mod webhooks;

#[cfg(test)]
pub(crate) mod testing;
