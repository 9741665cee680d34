//! The Google Cloud Storage (`kind = "gcs"`) and Azure Blob Storage (`kind = "azure"`)
//! backends of ftpgate: one [`CloudBackend`] over object_store's clients for both.
//!
//! # Why one crate for two services
//! Everything but building the client is the same code: object_store gives both the
//! same `ObjectStore` and `PaginatedListStore` interfaces, so the backend is written
//! once against those traits. The service-neutral pieces of the S3 backend are reused
//! rather than copied (`ftpgate_backend_s3::shared`): its HTTP transport (response and
//! body-stall timeouts, no whole-request timeout), its error mapping by type, and its
//! verbatim key mapping. The S3 backend keeps its own S3-only requests.
//!
//! # Key mapping
//! As on S3: the file `/a/b c.txt` is the key `{prefix}a/b c.txt`, verbatim.
//!
//! # Directories
//! A directory exists when its marker exists or any key lies below it.
//! - GCS: the marker is the zero-byte object `dir/` (the Cloud Console's convention).
//! - Azure: object_store cannot address a blob name ending in `/`, so the marker is
//!   Azure's own convention: a zero-byte blob `dir` with metadata `hdi_isfolder=true`
//!   (what Storage Explorer, blobfuse and azcopy write and understand). Listings HEAD
//!   each zero-byte blob to tell folder blobs from empty files.
//!
//! Listings go page by page (`PaginatedListStore`, delimiter `/`): memory does not
//! grow with the directory. Keys that object_store cannot parse (`a//b`, `..`) written
//! by other tools fail the listing that meets them (the S3 backend skips them with its
//! own requests).
//!
//! # Uploads and memory
//! See `upload`: one PUT up to `part_size_mib` (default 8 MiB), else a multipart upload
//! (GCS XML multipart; Azure blocks, committed by Put Block List) holding at most
//! `(max_parts_in_flight + 1) × part size` (24 MiB by default). Nothing is visible
//! before completion. The part size is fixed, so one upload is limited to 10,000 parts
//! on GCS (78 GiB at 8 MiB) and 50,000 blocks on Azure (390 GiB at 8 MiB): raise
//! `part_size_mib` for larger files. Azure has no abort: uncommitted blocks are
//! discarded by the service after 7 days. GCS multipart uploads left by a killed
//! process need a bucket lifecycle rule (AbortIncompleteMultipartUpload).
//!
//! # Limits
//! No append, no writes at an offset, no directory rename, no MFMT
//! ([`Capabilities`](ftpgate_storage::Capabilities) says so: 502/504 answers). Rename
//! is a server-side copy then a delete (not atomic).
//!
//! # Client settings
//! As the S3 backend: a 10 s connect timeout, per-request response and stall timeouts
//! (`response_timeout_secs`, `stall_timeout_secs`), retries of transient failures
//! bounded by `max_retries` and `retry_timeout_secs`.

#![warn(missing_docs, unreachable_pub)]

mod backend;
mod config;
mod upload;

pub use backend::{
    CloudBackend, AZURE_FOLDER_METADATA, AZURE_MAX_BLOCKS, GCS_MAX_PARTS, SHA256_METADATA,
};
pub use config::{
    AzureConfig, GcsConfig, Tuning, EMULATOR_ACCOUNT, EMULATOR_ACCOUNT_KEY, EMULATOR_ENDPOINT,
};
