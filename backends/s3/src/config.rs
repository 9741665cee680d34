//! [`S3Config`]: what an operator writes under `[storage]` for `kind = "s3"`, with
//! documented defaults and a `validate()` step whose messages name the key.

use std::fmt;

use ftpgate_storage::{ErrorKind, StorageError};
use serde::Deserialize;

/// S3's smallest allowed part (except the last one of an upload).
pub const MIN_PART_SIZE_MIB: u64 = 5;
/// S3's largest allowed part.
pub const MAX_PART_SIZE_MIB: u64 = 5 * 1024;

fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_part_size_mib() -> u64 {
    8
}
fn default_max_parts_in_flight() -> usize {
    4
}
fn default_read_parallelism() -> usize {
    8
}
fn default_read_chunk_mib() -> u64 {
    8
}
fn default_max_retries() -> usize {
    3
}
fn default_retry_timeout_secs() -> u64 {
    20
}
fn default_list_cache_secs() -> u64 {
    2
}
fn default_response_timeout_secs() -> u64 {
    30
}
fn default_stall_timeout_secs() -> u64 {
    30
}
fn default_abort_incomplete_uploads_after_secs() -> u64 {
    DEFAULT_ABORT_INCOMPLETE_UPLOADS_AFTER_SECS
}

/// The default of `abort_incomplete_uploads_after_secs` (24 hours).
pub const DEFAULT_ABORT_INCOMPLETE_UPLOADS_AFTER_SECS: u64 = 24 * 3600;
/// The largest accepted `response_timeout_secs` and `stall_timeout_secs` (10 minutes).
pub const MAX_REQUEST_TIMEOUT_SECS: u64 = 600;

/// The largest accepted `max_retries`.
pub const MAX_RETRIES_LIMIT: usize = 20;
/// The largest accepted `retry_timeout_secs` (10 minutes).
pub const MAX_RETRY_TIMEOUT_SECS: u64 = 600;
/// The largest accepted `list_cache_secs` (1 minute).
pub const MAX_LIST_CACHE_SECS: u64 = 60;
/// The largest accepted `read_parallelism` and `max_parts_in_flight`.
pub const MAX_PARALLELISM: usize = 64;
/// The largest accepted `read_chunk_mib`.
pub const MAX_READ_CHUNK_MIB: u64 = 1024;

/// A secret string whose `Debug` output is redacted, so configs can be logged.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; only for handing it to the signer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// Configuration of the S3 backend. Unknown keys are rejected.
///
/// Only `bucket` is required; every other field has the default named in its doc.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket that holds the tree. Required.
    pub bucket: String,
    /// Key prefix under which the FTP root lives (`"ftp/site1"`); leading and trailing
    /// slashes are ignored. Default: none, the root is the bucket's root. Lets several
    /// gateways or users share one bucket without seeing each other's keys.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Region used for signing (and for the AWS endpoint when `endpoint` is unset).
    /// Default: `"us-east-1"`, which MinIO, Ceph and moto accept.
    #[serde(default = "default_region")]
    pub region: String,
    /// A custom endpoint URL for S3-compatible servers (MinIO, Ceph RGW, R2, moto),
    /// e.g. `"http://127.0.0.1:9000"`. Default: none, the AWS endpoint of `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Use path-style URLs (`https://host/bucket/key`) instead of virtual-hosted ones
    /// (`https://bucket.host/key`). Most self-hosted servers need `true`. Default: `false`,
    /// as the AWS SDKs do (AWS is retiring path style).
    #[serde(default)]
    pub force_path_style: bool,
    /// Allow a plain `http://` endpoint. Default: `false`, so a typo cannot send
    /// credentials and data unencrypted.
    #[serde(default)]
    pub allow_http: bool,
    /// Static access key id. Default: none; credentials then come from the standard AWS
    /// chain (environment, shared profile, web identity/IRSA, ECS, IMDS).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Static secret key, required together with `access_key_id`. Default: none.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Static session token for temporary static keys. Default: none.
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// Size of each multipart part in MiB, 5 to 5120; also the largest file uploaded
    /// with a single PUT. Default: 8. Parts of one upload double in size every 900
    /// parts so an upload of unknown length can reach S3's 5 TiB limit.
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u64,
    /// At most how many parts of one upload are sent concurrently, 1 to 64. Default: 4.
    /// An upload starts with 2 (or this, if lower) and adds one each time the client
    /// had to wait for a free slot (S3 is the slower side), up to this. An upload
    /// buffers at most `(max_parts_in_flight + 1) × part size` bytes (40 MiB by
    /// default).
    #[serde(default = "default_max_parts_in_flight")]
    pub max_parts_in_flight: usize,
    /// How many ranged GETs of one download (RETR) run at once, 1 to 64: the one being
    /// sent plus the next ones ahead. 1 = one streaming GET per RETR. Default: 8. Each
    /// GET holds at most 4 MiB the client has not taken (then it waits), so a download
    /// holds at most `read_parallelism × min(read_chunk_mib, 4)` MiB + 1 MiB (33 MiB by
    /// default). Objects of at most one chunk (from the REST offset) are always read
    /// with one GET.
    #[serde(default = "default_read_parallelism")]
    pub read_parallelism: usize,
    /// The size in MiB of each ranged GET of a download, 1 to 1024: one request per
    /// this many MiB. Default: 8 (as boto3's downloads).
    #[serde(default = "default_read_chunk_mib")]
    pub read_chunk_mib: u64,
    /// How many times one S3 request is retried after a transient failure (connection
    /// refused or reset, timeout, 5xx, throttling), 0 to 20. Default: 3. Retries back off
    /// exponentially from 100 ms.
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// How long, in seconds, one S3 request keeps being retried, 1 to 600. Default: 20.
    /// No retry starts after this time, so a failing request gives up after at most about
    /// 1.25 × this plus one attempt (connects time out after 10 s); the FTP client then
    /// gets a transient (4xx) reply instead of waiting. It does not limit a transfer
    /// that is making progress.
    #[serde(default = "default_retry_timeout_secs")]
    pub retry_timeout_secs: u64,
    /// How long, in seconds, a complete listing of a directory of up to 1,000 entries
    /// is reused, 0 to 60; 0 turns the cache off. Default: 2. Writes made through this
    /// gateway process update the kept listing at once; writes by other replicas or
    /// other S3 clients show after at most this long. It saves the S3 LIST that
    /// rclone's listing after every upload and STOR's directory-name check cost.
    #[serde(default = "default_list_cache_secs")]
    pub list_cache_secs: u64,
    /// How long, in seconds, S3 may take to send a response's headers once the request
    /// (with its body) was sent, 1 to 600. Default: 30. A request that gets no answer
    /// (S3 frozen) fails with a timeout and is retried under `max_retries` and
    /// `retry_timeout_secs`, so an FTP command ends with 451 within about
    /// `retry_timeout_secs` plus this. AWS answers a long CopyObject (a rename of a
    /// multi-GiB file) with early headers; a server that answers only when the copy is
    /// done needs a larger value.
    #[serde(default = "default_response_timeout_secs")]
    pub response_timeout_secs: u64,
    /// How long, in seconds, a request or response body may make no progress at all
    /// while the gateway waits for it, 1 to 600. Default: 30. Only waiting time
    /// counts: a transfer that moves slowly (a slow FTP client reading a multi-GiB
    /// file) is never cut.
    #[serde(default = "default_stall_timeout_secs")]
    pub stall_timeout_secs: u64,
    /// Incomplete multipart uploads under the prefix that are older than this many
    /// seconds are aborted at start and then periodically (a gateway process killed
    /// mid-upload cannot abort its own). 0 turns it off. Default: 86400 (24 hours).
    /// Must exceed the longest upload any gateway sharing the prefix runs. Pending
    /// resumable uploads (`resume_window_secs`) are left to their own expiry.
    #[serde(default = "default_abort_incomplete_uploads_after_secs")]
    pub abort_incomplete_uploads_after_secs: u64,
    /// How long, in seconds, an interrupted upload stays a pending resumable upload
    /// (ftpgate sets it from `storage.resume_window_secs`); 0 = resuming off. Default:
    /// 86400. The clean-up of incomplete multipart uploads never aborts a pending
    /// upload whose marker is younger than this.
    #[serde(default = "default_resume_window_secs")]
    pub resume_window_secs: u64,
}

fn default_resume_window_secs() -> u64 {
    86_400
}

impl S3Config {
    /// A config for `bucket` with every other field at its default.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: None,
            region: default_region(),
            endpoint: None,
            force_path_style: false,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            part_size_mib: default_part_size_mib(),
            max_parts_in_flight: default_max_parts_in_flight(),
            read_parallelism: default_read_parallelism(),
            read_chunk_mib: default_read_chunk_mib(),
            max_retries: default_max_retries(),
            retry_timeout_secs: default_retry_timeout_secs(),
            list_cache_secs: default_list_cache_secs(),
            response_timeout_secs: default_response_timeout_secs(),
            stall_timeout_secs: default_stall_timeout_secs(),
            abort_incomplete_uploads_after_secs: default_abort_incomplete_uploads_after_secs(),
            resume_window_secs: default_resume_window_secs(),
        }
    }

    /// Checks the values that serde cannot; the message names the offending key.
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |msg: String| Err(StorageError::new(ErrorKind::InvalidInput, msg));
        if self.bucket.trim().is_empty() {
            return bad("s3.bucket: must not be empty".into());
        }
        if self.bucket.contains('/') {
            return bad(format!(
                "s3.bucket: {:?} contains a slash; put key prefixes in s3.prefix",
                self.bucket
            ));
        }
        if self.region.trim().is_empty() {
            return bad("s3.region: must not be empty".into());
        }
        if let Some(endpoint) = &self.endpoint {
            if endpoint.starts_with("http://") {
                if !self.allow_http {
                    return bad(format!(
                        "s3.endpoint: {endpoint:?} is plain http; set s3.allow_http = true to allow it"
                    ));
                }
            } else if !endpoint.starts_with("https://") {
                return bad(format!(
                    "s3.endpoint: {endpoint:?} must start with http:// or https://"
                ));
            }
        }
        if !(MIN_PART_SIZE_MIB..=MAX_PART_SIZE_MIB).contains(&self.part_size_mib) {
            return bad(format!(
                "s3.part_size_mib: {} is outside S3's part size limits ({MIN_PART_SIZE_MIB} to {MAX_PART_SIZE_MIB})",
                self.part_size_mib
            ));
        }
        if !(1..=MAX_PARALLELISM).contains(&self.max_parts_in_flight) {
            return bad(format!(
                "s3.max_parts_in_flight: {} must be between 1 and {MAX_PARALLELISM}",
                self.max_parts_in_flight
            ));
        }
        if !(1..=MAX_PARALLELISM).contains(&self.read_parallelism) {
            return bad(format!(
                "s3.read_parallelism: {} must be between 1 and {MAX_PARALLELISM}",
                self.read_parallelism
            ));
        }
        if !(1..=MAX_READ_CHUNK_MIB).contains(&self.read_chunk_mib) {
            return bad(format!(
                "s3.read_chunk_mib: {} must be between 1 and {MAX_READ_CHUNK_MIB}",
                self.read_chunk_mib
            ));
        }
        if self.max_retries > MAX_RETRIES_LIMIT {
            return bad(format!(
                "s3.max_retries: {} must be between 0 and {MAX_RETRIES_LIMIT}",
                self.max_retries
            ));
        }
        if !(1..=MAX_RETRY_TIMEOUT_SECS).contains(&self.retry_timeout_secs) {
            return bad(format!(
                "s3.retry_timeout_secs: {} must be between 1 and {MAX_RETRY_TIMEOUT_SECS}",
                self.retry_timeout_secs
            ));
        }
        if self.list_cache_secs > MAX_LIST_CACHE_SECS {
            return bad(format!(
                "s3.list_cache_secs: {} must be between 0 and {MAX_LIST_CACHE_SECS}",
                self.list_cache_secs
            ));
        }
        for (key, value) in [
            ("response_timeout_secs", self.response_timeout_secs),
            ("stall_timeout_secs", self.stall_timeout_secs),
        ] {
            if !(1..=MAX_REQUEST_TIMEOUT_SECS).contains(&value) {
                return bad(format!(
                    "s3.{key}: {value} must be between 1 and {MAX_REQUEST_TIMEOUT_SECS}"
                ));
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                return bad("s3.secret_access_key: required with s3.access_key_id".into())
            }
            (None, Some(_)) => {
                return bad("s3.access_key_id: required with s3.secret_access_key".into())
            }
            _ => {}
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return bad("s3.session_token: only valid with s3.access_key_id".into());
        }
        Ok(())
    }

    /// The endpoint for messages: the configured one, or the AWS one of the region.
    pub fn endpoint_description(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<S3Config, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let cfg = parse(r#"{"bucket": "b"}"#).unwrap();
        assert_eq!(cfg, S3Config::new("b"));
        assert_eq!(cfg.region, "us-east-1");
        assert_eq!(cfg.part_size_mib, 8);
        assert_eq!(cfg.max_parts_in_flight, 4);
        assert_eq!((cfg.read_parallelism, cfg.read_chunk_mib), (8, 8));
        assert_eq!(cfg.max_retries, 3);
        assert_eq!(cfg.retry_timeout_secs, 20);
        assert_eq!(cfg.list_cache_secs, 2);
        assert_eq!(
            (cfg.response_timeout_secs, cfg.stall_timeout_secs),
            (30, 30)
        );
        assert_eq!(cfg.abort_incomplete_uploads_after_secs, 86_400);
        assert!(!cfg.force_path_style && !cfg.allow_http);
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_field_rejected() {
        let err = parse(r#"{"bucket": "b", "regoin": "x"}"#).unwrap_err();
        assert!(err.contains("regoin"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut cfg = S3Config::new("b");
        cfg.endpoint = Some("http://127.0.0.1:9000".into());
        let err = cfg.validate().unwrap_err();
        assert!(err.message().contains("s3.allow_http"), "{err}");
        cfg.allow_http = true;
        cfg.validate().unwrap();
        cfg.part_size_mib = 4;
        assert!(cfg
            .validate()
            .unwrap_err()
            .message()
            .contains("s3.part_size_mib"));
        cfg.part_size_mib = 5;
        cfg.access_key_id = Some("k".into());
        assert!(cfg
            .validate()
            .unwrap_err()
            .message()
            .contains("s3.secret_access_key"));
    }

    #[test]
    fn retry_settings_are_validated() {
        let cfg = parse(r#"{"bucket": "b", "max_retries": 0, "retry_timeout_secs": 600}"#).unwrap();
        assert_eq!((cfg.max_retries, cfg.retry_timeout_secs), (0, 600));
        cfg.validate().unwrap();
        let mut cfg = S3Config::new("b");
        cfg.max_retries = 21;
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains("s3.max_retries"), "{err}");
        cfg.max_retries = 20;
        cfg.validate().unwrap();
        for secs in [0, 601] {
            cfg.retry_timeout_secs = secs;
            let err = cfg.validate().unwrap_err();
            assert!(err.message().contains("s3.retry_timeout_secs"), "{err}");
        }
        assert!(parse(r#"{"bucket": "b", "max_retries": -1}"#).is_err());
        cfg.retry_timeout_secs = 20;
        cfg.list_cache_secs = 61;
        let err = cfg.validate().unwrap_err();
        assert!(err.message().contains("s3.list_cache_secs"), "{err}");
        cfg.list_cache_secs = 0;
        cfg.validate().unwrap();
        for secs in [0, 601] {
            let mut c = cfg.clone();
            c.response_timeout_secs = secs;
            let err = c.validate().unwrap_err();
            assert!(err.message().contains("s3.response_timeout_secs"), "{err}");
            let mut c = cfg.clone();
            c.stall_timeout_secs = secs;
            let err = c.validate().unwrap_err();
            assert!(err.message().contains("s3.stall_timeout_secs"), "{err}");
        }
        let cfg = parse(r#"{"bucket": "b", "abort_incomplete_uploads_after_secs": 0}"#).unwrap();
        assert_eq!(cfg.abort_incomplete_uploads_after_secs, 0);
        cfg.validate().unwrap();
    }

    #[test]
    fn read_settings_are_validated() {
        let cfg =
            parse(r#"{"bucket": "b", "read_parallelism": 1, "read_chunk_mib": 1024}"#).unwrap();
        cfg.validate().unwrap();
        for (par, chunk, key) in [
            (0, 8, "s3.read_parallelism"),
            (65, 8, "s3.read_parallelism"),
            (4, 0, "s3.read_chunk_mib"),
            (4, 1025, "s3.read_chunk_mib"),
        ] {
            let mut c = S3Config::new("b");
            (c.read_parallelism, c.read_chunk_mib) = (par, chunk);
            let err = c.validate().unwrap_err();
            assert!(err.message().contains(key), "{err}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let mut cfg = S3Config::new("b");
        cfg.access_key_id = Some("AKIA".into());
        cfg.secret_access_key = Some("hunter2".into());
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
