//! The S3 storage backend of ftpgate, built on `object_store` (S3 client, retries,
//! signing) and `aws-config` (the standard AWS credential chain).
//!
//! # Layout
//! - `config`: [`S3Config`], the operator's settings, with defaults and validation.
//! - `backend`: [`S3Backend`], the [`StorageBackend`](ftpgate_storage::StorageBackend)
//!   implementation (stat, list, read, mkdir, rmdir, delete, rename).
//! - `upload`: single PUT or bounded, growing multipart uploads; abort on drop.
//! - `ranged`: RETR of large objects as a bounded window of parallel ranged GETs.
//! - `keys`: virtual paths to S3 keys.
//! - `credentials`: the caching bridge from aws-config's chain to object_store.
//! - `errors`: object_store errors to [`ErrorKind`](ftpgate_storage::ErrorKind), by type
//!   (HTTP error kind, S3 status and error code), never by message text.
//! - `http`: the one HTTP transport under every request, with response and stall
//!   timeouts; error statuses become typed values.
//! - `pending`: interrupted uploads kept for resuming (open multipart upload plus a
//!   marker object in the bucket, so every replica finds them).
//! - `sha`: a SHA-256 whose state a pending upload keeps.
//! - `requests`: the typed requests object_store cannot send (listings that skip
//!   hostile keys, MFMT's CopyObject, ListMultipartUploads/AbortMultipartUpload), with
//!   object_store's retry policy.
//!
//! # Key mapping
//! The file `/a/b c.txt` is the key `{prefix}a/b c.txt`: the configured prefix (with one
//! trailing `/`, or nothing) followed by the path's segments joined by `/`, **verbatim**
//! — no percent-encoding, so other S3 clients see exactly the FTP names (`100%` is the
//! key `100%`, `a b #1 %+ü.txt` is that key). Keys go through
//! `object_store::path::Path::parse`, never `Path::from` (which would encode `%`, `#`…).
//! Names that `Path::parse` rejects (ASCII control characters) are
//! [`ErrorKind::InvalidName`](ftpgate_storage::ErrorKind::InvalidName).
//!
//! # Directories
//! A directory `/a` is the key prefix `{prefix}a/`. `mkdir` writes the zero-byte marker
//! object `{prefix}a/` (the S3 console convention) so empty directories exist. A directory
//! exists when its marker exists **or** any key lies below it (trees uploaded by other
//! tools have no markers). Listings use ListObjectsV2 with delimiter `/`, one page
//! (≤ 1,000 keys) at a time, merging files and common prefixes and never showing the
//! listed directory's own marker. `rmdir` refuses a non-empty directory and deletes the
//! marker; a directory without a marker disappears with its last file.
//!
//! object_store's `Path` cannot end in `/` (`Path::parse` strips it), but joining an
//! empty `PathPart` onto a parsed path yields the raw string `a/`, which the S3 client
//! sends as the key `a/` (see `keys::Keys::marker`); no raw HTTP request is needed.
//!
//! Directory times: `stat` reports the marker's LastModified (else the first key below
//! it); listings report the time of the listing for subdirectories, as a HEAD per
//! subdirectory would be too costly. Never the Unix epoch.
//!
//! # Metadata
//! `mtime` (MFMT, rclone's format) and `sha256` (the upload's digest) are user metadata
//! (`meta`). MFMT replaces them with a server-side CopyObject of the object onto itself
//! (conditional on its ETag, sent by `requests` since object_store cannot copy with
//! replaced metadata); above the 5 GiB CopyObject limit it rewrites the object (GET +
//! PUT). A stored `mtime` after year 9999 is ignored (LastModified is used). Listings read stored
//! times with a HEAD per file, cached per object version, in one-page directories only.
//!
//! # Uploads and memory
//! An upload buffers up to one part (`part_size_mib`, default 8 MiB). Completed before
//! the first part is full, it is one PUT. Otherwise it is a multipart upload with at most
//! `max_parts_in_flight` (default 4) parts sending concurrently (it starts with 2 and
//! adds one whenever the client outruns S3), so one upload holds at most
//! **(max_parts_in_flight + 1) × part size** of part data: 40 MiB by default (the
//! gateway adds its 1 MiB receive buffer and HTTP connection buffers, ~4 MiB per
//! concurrent upload measured, see BENCHMARKS.md). Part sizes double
//! every 900 parts (capped at 5 GiB) so an upload of unknown length can reach S3's
//! 5 TiB limit within 10,000 parts; the bound grows with them (48 MiB after ~7 GiB,
//! 96 MiB after ~21 GiB, …, 15 GiB for the last parts of a multi-TiB upload). Nothing is visible before CompleteMultipartUpload; abort,
//! errors and dropping the upload abort the multipart upload (a task spawned on drop).
//! A failed part aborts the whole upload and later writes and `complete` fail. Operators
//! should still add a bucket lifecycle rule that aborts incomplete multipart uploads: a
//! process killed mid-upload cannot abort, nor can an upload whose CreateMultipartUpload
//! request was cancelled before its id came back. The backend itself aborts incomplete
//! uploads under its prefix older than `abort_incomplete_uploads_after_secs` (default
//! 24 h) after its first successful [`S3Backend::check`] and then periodically, except
//! those of its own uploads in progress.
//!
//! # Downloads and memory
//! A RETR is one GET from its offset; when more than one chunk (`read_chunk_mib`,
//! default 8 MiB) follows the offset, that response serves the first chunk and
//! ranged GETs conditional on its ETag fetch the rest, `read_parallelism` (default 8)
//! at once, each holding at most 4 MiB the client has not taken (`ranged`): one
//! download holds at most **read_parallelism × min(read_chunk_mib, 4) MiB + 1 MiB**
//! (33 MiB by default).
//!
//! `CreateNew` (STOU) uses a conditional PUT (`If-None-Match: *`); for a multipart
//! upload the target is checked just before completion, which leaves a short race in
//! which a file created by someone else is replaced.
//!
//! # Limits
//! - No append, no writes at an offset, no directory rename
//!   ([`Capabilities`](ftpgate_storage::Capabilities) says so); such requests answer
//!   `Unsupported`.
//! - File rename is CopyObject then DeleteObject (not atomic). Above the CopyObject
//!   limit of 5 GiB ([`MAX_COPY_SIZE`]) the object is streamed through the gateway into
//!   a multipart upload of the target, then the source is deleted: correct, but it
//!   moves the bytes twice over the network.
//! - Keys written by other tools that FTP cannot represent (empty segments as in `a//b`,
//!   `.`/`..` segments, control characters, names that are not valid FTP segments such
//!   as ones containing `\`) are skipped in listings (logged at debug); a directory
//!   holding only such keys exists and is not empty (RMD refuses it).
//! - A name that is both a file and a key prefix (possible only through other clients)
//!   is reported as a file by `stat` and may be listed twice.
//!
//! # Client settings
//! No whole-request timeout (long transfers to slow FTP clients must not be cut), a
//! 10 s connect timeout, idle connections kept 60 s, and per request a response
//! timeout (`response_timeout_secs`) and a body stall timeout (`stall_timeout_secs`)
//! that count only time spent waiting for S3 (see `http`). A request that fails transiently
//! (connection refused or reset, timeout, 5xx, throttling) is retried with exponential
//! backoff from 100 ms, at most `max_retries` times (default 3) and not after
//! `retry_timeout_secs` (default 20 s; backoffs are capped at a quarter of it and at
//! 15 s), so an FTP command fails with a transient error well before the client gives
//! up, instead of hanging for minutes. The error is
//! [`ErrorKind::Transient`](ftpgate_storage::ErrorKind::Transient).

#![warn(missing_docs, unreachable_pub)]

mod backend;
mod config;
mod credentials;
mod errors;
mod http;
mod keys;
mod listing;
mod meta;
mod pending;
mod ranged;
mod requests;
mod sha;
mod upload;

pub use backend::{S3Backend, CONNECT_TIMEOUT, MAX_BACKOFF, MAX_COPY_SIZE, POOL_IDLE_TIMEOUT};
pub use config::{
    S3Config, Secret, DEFAULT_ABORT_INCOMPLETE_UPLOADS_AFTER_SECS, MAX_LIST_CACHE_SECS,
    MAX_PARALLELISM, MAX_PART_SIZE_MIB, MAX_READ_CHUNK_MIB, MAX_REQUEST_TIMEOUT_SECS,
    MAX_RETRIES_LIMIT, MAX_RETRY_TIMEOUT_SECS, MIN_PART_SIZE_MIB,
};
pub use credentials::{CachingAwsChain, NO_EXPIRY_TTL, REFRESH_BEFORE_EXPIRY};
pub use upload::{MAX_PARTS, MAX_PART_SIZE, PARTS_PER_DOUBLING};

/// The parts of this backend that do not depend on S3, for ftpgate's other
/// object-store backends (`ftpgate-backend-cloud`: Google Cloud Storage, Azure Blob):
/// the HTTP transport with its response and stall timeouts, the error mapping by type,
/// and the verbatim key mapping. Not a stable API.
#[doc(hidden)]
pub mod shared {
    pub use crate::errors::{classify, map_error};
    pub use crate::http::{Connector, Transport};
    pub use crate::keys::Keys;
}
