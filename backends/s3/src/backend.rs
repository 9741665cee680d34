//! [`S3Backend`]: the [`StorageBackend`] implementation over object_store's S3 client.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use object_store::{
    Attributes, BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, StaticCredentialProvider,
    UpdateVersion,
};

use ftpgate_storage::{
    ByteStream, Capabilities, DirEntry, EntryKind, EntryStream, ErrorKind, Metadata, PendingKey,
    PendingUpload, PendingUsage, Result, Resumed, StorageBackend, StorageError, Upload, VPath,
    WriteMode,
};

use crate::config::S3Config;
use crate::credentials::CachingAwsChain;
use crate::errors::map_error;
use crate::http::{Connector, Shared, Transport};
use crate::keys::Keys;
use crate::listing::{self, Join, ListingCache};
use crate::meta::{self, DirCache, MetaCache, WrittenCache};
use crate::requests::{self, CopyError, Page, Requests, Retry};
use crate::upload::S3Upload;

/// S3's limit for one CopyObject request, and so for [`StorageBackend::rename`].
pub const MAX_COPY_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// How long establishing a TCP (and TLS) connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest pause between two retries of one request.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// object_store's retry policy from `max_retries` and `retry_timeout_secs`.
///
/// object_store checks the timeout only before it sleeps, so the last backoff can run
/// past it: the backoff is capped at a quarter of the timeout (and [`MAX_BACKOFF`]) to
/// keep that overshoot small.
fn retry_config(cfg: &S3Config) -> RetryConfig {
    let retry_timeout = Duration::from_secs(cfg.retry_timeout_secs);
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: MAX_BACKOFF.min(retry_timeout / 4),
            base: 2.0,
        },
        max_retries: cfg.max_retries,
        retry_timeout,
    }
}

/// The FTP tree stored in an S3 bucket. Cheap to clone; clones share the client.
///
/// See the crate documentation for the key mapping, the directory markers and limits.
#[derive(Clone)]
pub struct S3Backend {
    pub(crate) inner: Arc<Inner>,
}

/// The state shared by the backend, its listings and its uploads.
pub(crate) struct Inner {
    pub(crate) store: AmazonS3,
    pub(crate) keys: Keys,
    bucket: String,
    endpoint: String,
    pub(crate) part_size: usize,
    pub(crate) max_parts_in_flight: usize,
    /// `read_parallelism`: ranged GETs of one download at once (see `ranged`).
    pub(crate) read_parallelism: usize,
    /// `read_chunk_mib` in bytes: the size of each ranged GET.
    pub(crate) read_chunk: u64,
    /// Largest object renamed with one server-side CopyObject; larger ones are
    /// streamed through the gateway into a multipart upload.
    copy_limit: u64,
    /// Stored `mtime`s per object version, so listings HEAD each object once.
    pub(crate) meta_cache: MetaCache,
    /// Directories recently seen to exist, so uploads skip the parent check.
    pub(crate) dirs: DirCache,
    /// Typed requests object_store cannot send (listings that skip hostile keys,
    /// MFMT's metadata copy, multipart clean-up), on the same transport.
    pub(crate) requests: Requests,
    /// Incomplete multipart uploads older than this are aborted; zero: never.
    abort_uploads_after: Duration,
    /// Set once the clean-up task runs.
    cleanup_started: std::sync::atomic::AtomicBool,
    /// Keys with a multipart upload of this process in progress (never cleaned up).
    pub(crate) active_uploads: Arc<meta::ActiveUploads>,
    /// ETag and metadata of objects this gateway just wrote (MFMT skips its HEAD).
    pub(crate) written: WrittenCache,
    /// Recent complete listings of small directories, updated by own writes.
    pub(crate) listings: ListingCache,
    /// Which pending-upload markers exist, as far as this process knows.
    pub(crate) pending: crate::pending::Index,
    /// `resume_window_secs`: pending uploads younger than this are never cleaned up
    /// as incomplete multipart uploads; zero: resuming is off.
    resume_window: Duration,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.inner.bucket)
            .field("endpoint", &self.inner.endpoint)
            .field("prefix", &self.inner.keys.root_prefix())
            .finish_non_exhaustive()
    }
}

/// The URL of the bucket itself, as object_store addresses it.
fn bucket_url(cfg: &S3Config) -> String {
    match (builder_endpoint(cfg), cfg.force_path_style) {
        (Some(e), true) => format!("{e}/{}", cfg.bucket),
        (Some(e), false) => e,
        (None, true) => format!("https://s3.{}.amazonaws.com/{}", cfg.region, cfg.bucket),
        (None, false) => format!("https://{}.s3.{}.amazonaws.com", cfg.bucket, cfg.region),
    }
}

/// The endpoint to hand object_store: with virtual-hosted style it must already name
/// the bucket (`https://bucket.host`).
fn builder_endpoint(cfg: &S3Config) -> Option<String> {
    let endpoint = cfg.endpoint.as_deref()?.trim_end_matches('/');
    if cfg.force_path_style {
        return Some(endpoint.to_owned());
    }
    match endpoint.split_once("://") {
        Some((scheme, host)) => Some(format!("{scheme}://{}.{host}", cfg.bucket)),
        None => Some(endpoint.to_owned()),
    }
}

impl S3Backend {
    /// Builds the client from `cfg` (validated first). Without static keys the AWS
    /// default credential chain is set up here; no request is sent — call
    /// [`check`](Self::check) to verify the bucket is reachable.
    pub async fn new(cfg: S3Config) -> Result<Self> {
        cfg.validate()?;
        let keys = Keys::new(cfg.prefix.as_deref())?;
        let client = ClientOptions::new()
            // Set here, not on the builder: with_client_options replaces the builder's.
            .with_allow_http(cfg.allow_http)
            // The default 30 s whole-request timeout cuts long transfers to slow clients;
            // the transport bounds waiting instead (see `http`).
            .with_timeout_disabled()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_pool_idle_timeout(POOL_IDLE_TIMEOUT);
        let transport = Transport::new(
            cfg.allow_http,
            CONNECT_TIMEOUT,
            POOL_IDLE_TIMEOUT,
            Duration::from_secs(cfg.response_timeout_secs),
            Duration::from_secs(cfg.stall_timeout_secs),
        )
        .map_err(|e| StorageError::new(ErrorKind::InvalidInput, format!("s3: HTTP client: {e}")))?;
        let transport = Arc::new(transport);
        let retry = retry_config(&cfg);
        let typed_retry = Retry {
            max_retries: retry.max_retries,
            retry_timeout: retry.retry_timeout,
            init_backoff: retry.backoff.init_backoff,
            max_backoff: retry.backoff.max_backoff,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(!cfg.force_path_style)
            .with_client_options(client)
            .with_http_connector(Connector(Arc::clone(&transport)))
            .with_retry(retry);
        if let Some(endpoint) = builder_endpoint(&cfg) {
            builder = builder.with_endpoint(endpoint);
        }
        builder = match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(key_id), Some(secret)) => {
                builder.with_credentials(Arc::new(StaticCredentialProvider::new(AwsCredential {
                    key_id: key_id.clone(),
                    secret_key: secret.expose().to_owned(),
                    token: cfg.session_token.as_ref().map(|t| t.expose().to_owned()),
                })))
            }
            _ => builder
                .with_credentials(Arc::new(CachingAwsChain::default_chain(&cfg.region).await)),
        };
        let endpoint = cfg.endpoint_description();
        let store = builder.build().map_err(|e| {
            StorageError::new(
                ErrorKind::InvalidInput,
                format!(
                    "s3: cannot configure bucket {} at {endpoint}: {e}",
                    cfg.bucket
                ),
            )
            .with_source(e)
        })?;
        let requests = Requests::new(
            object_store::client::HttpClient::new(Shared(transport)),
            bucket_url(&cfg),
            cfg.bucket.clone(),
            cfg.region.clone(),
            store.credentials().clone(),
            typed_retry,
        );
        let part_size = usize::try_from(cfg.part_size_mib * 1024 * 1024).map_err(|_| {
            StorageError::new(
                ErrorKind::InvalidInput,
                "s3.part_size_mib: too large for this platform",
            )
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                keys,
                bucket: cfg.bucket,
                endpoint,
                part_size,
                max_parts_in_flight: cfg.max_parts_in_flight,
                read_parallelism: cfg.read_parallelism,
                read_chunk: cfg.read_chunk_mib * 1024 * 1024,
                copy_limit: MAX_COPY_SIZE,
                meta_cache: MetaCache::default(),
                dirs: DirCache::default(),
                requests,
                abort_uploads_after: Duration::from_secs(cfg.abort_incomplete_uploads_after_secs),
                cleanup_started: std::sync::atomic::AtomicBool::new(false),
                active_uploads: Arc::default(),
                written: WrittenCache::default(),
                listings: ListingCache::new(Duration::from_secs(cfg.list_cache_secs)),
                pending: crate::pending::Index::default(),
                resume_window: Duration::from_secs(cfg.resume_window_secs),
            }),
        })
    }

    /// Lowers the server-side copy limit so tests can exercise the streamed
    /// rename of objects above it without 5 GiB objects.
    #[doc(hidden)]
    pub fn with_copy_limit(mut self, limit: u64) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.copy_limit = limit;
        }
        self
    }

    /// Rename of an object above the CopyObject limit: read it through the
    /// gateway into a multipart upload of the target (committed only when complete),
    /// then delete the source.
    async fn rename_by_streaming(&self, from: &VPath, to: &VPath) -> Result<()> {
        let mut stream = self.read(from, 0).await?;
        let mut upload = self.create(to, WriteMode::Truncate).await?;
        while let Some(chunk) = stream.next().await {
            let written = match chunk {
                Ok(c) => upload.write(c).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        upload.complete().await?;
        self.delete(from).await
    }

    /// Verifies that the bucket is reachable with the configured credentials by
    /// listing one key under the prefix; the first success starts the clean-up of
    /// incomplete multipart uploads. The error is one line that names the bucket
    /// and endpoint: `bucket "x" does not exist at <endpoint>` for a missing bucket
    /// (S3's `NoSuchBucket`, read as a typed code), else what failed.
    pub async fn check(&self) -> Result<()> {
        let inner = &self.inner;
        let prefix = inner.keys.root_prefix();
        let Err(e) = inner.requests.list(prefix, false, Some(1), None).await else {
            self.start_upload_cleanup();
            // Learn which pending uploads exist before the first STOR (see
            // `may_have_pending`); one LIST, once.
            if !inner.resume_window.is_zero() && !inner.pending.listed() {
                if let Err(e) = inner.markers(None).await {
                    tracing::warn!(bucket = %inner.bucket, error = %e, "cannot list pending uploads");
                }
            }
            return Ok(());
        };
        let (bucket, endpoint) = (&inner.bucket, &inner.endpoint);
        let kind = crate::errors::http_error_kind(&e);
        let missing = crate::errors::s3_status(&e).is_some_and(|s| s.code == "NoSuchBucket");
        let message = if missing {
            format!("bucket {bucket:?} does not exist at {endpoint}")
        } else {
            format!(
                "s3: bucket {bucket:?} at {endpoint} is not reachable: {}",
                requests::describe(&e)
            )
        };
        // No source: the message says it all, once.
        Err(StorageError::new(kind, message))
    }

    /// Aborts the incomplete multipart uploads under the prefix that are older than
    /// `abort_incomplete_uploads_after_secs` and that no upload of this process owns.
    /// Returns `false` when the server cannot list multipart uploads (s3s-fs): the
    /// clean-up is then skipped for good, with a log line saying why.
    async fn abort_stale_uploads(inner: &Inner) -> bool {
        let prefix = inner.keys.root_prefix();
        let uploads = match inner.requests.list_uploads(prefix).await {
            Ok(u) => u,
            Err(e) if crate::errors::http_error_kind(&e) == ErrorKind::Unsupported => {
                tracing::info!(
                    bucket = %inner.bucket,
                    reason = %requests::describe(&e),
                    "clean-up of incomplete multipart uploads skipped: the S3 server cannot list them"
                );
                return false;
            }
            Err(e) => {
                tracing::warn!(bucket = %inner.bucket, error = %requests::describe(&e), "listing incomplete multipart uploads failed");
                return true;
            }
        };
        let window =
            chrono::Duration::from_std(inner.abort_uploads_after).unwrap_or(chrono::Duration::MAX);
        let now = chrono::Utc::now();
        // Pending resumable uploads within the resume window are not orphans (listed
        // after the uploads: a marker written meanwhile is seen).
        let keep: std::collections::HashSet<String> = if inner.resume_window.is_zero()
            || !uploads.iter().any(|u| {
                u.initiated
                    .is_some_and(|t| now.signed_duration_since(t) > window)
            }) {
            Default::default()
        } else {
            match inner.markers(None).await {
                Ok(markers) => markers
                    .into_iter()
                    .filter(|(meta, _)| {
                        SystemTime::from(meta.last_modified) + inner.resume_window
                            > SystemTime::now()
                    })
                    .map(|(_, m)| m.upload_id)
                    .collect(),
                Err(e) => {
                    tracing::warn!(bucket = %inner.bucket, error = %e, "clean-up of incomplete multipart uploads skipped: pending uploads cannot be listed");
                    return true;
                }
            }
        };
        let mut aborted = 0usize;
        for u in uploads {
            let old = u
                .initiated
                .is_some_and(|t| now.signed_duration_since(t) > window);
            if !old || inner.active_uploads.contains(&u.key) || keep.contains(&u.upload_id) {
                continue;
            }
            match inner.requests.abort_upload(&u.key, &u.upload_id).await {
                Ok(()) => aborted += 1,
                Err(e) => {
                    tracing::warn!(key = %u.key, error = %requests::describe(&e), "abort of an incomplete multipart upload failed")
                }
            }
        }
        if aborted > 0 {
            tracing::info!(bucket = %inner.bucket, aborted, "aborted incomplete multipart uploads older than abort_incomplete_uploads_after_secs");
        }
        true
    }

    /// Starts the periodic clean-up of incomplete multipart uploads (once per backend):
    /// now, then every `abort_incomplete_uploads_after_secs` (at most hourly). The task
    /// ends when the backend is dropped.
    fn start_upload_cleanup(&self) {
        let inner = &self.inner;
        if inner.abort_uploads_after.is_zero()
            || inner
                .cleanup_started
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let period = inner
            .abort_uploads_after
            .clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let weak = Arc::downgrade(inner);
        runtime.spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                if !Self::abort_stale_uploads(&inner).await {
                    return;
                }
                drop(inner);
                tokio::time::sleep(period).await;
            }
        });
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }
}

/// Converts an S3 time, never yielding the Unix epoch (FileZilla hides such entries).
fn system_time(t: chrono::DateTime<chrono::Utc>) -> SystemTime {
    let st = SystemTime::from(t);
    if st <= UNIX_EPOCH + Duration::from_secs(86_400) {
        SystemTime::now()
    } else {
        st
    }
}

/// A file's metadata; `mtime` is the stored modification time (MFMT), which wins
/// over the object's LastModified.
fn file_meta(meta: &ObjectMeta, mtime: Option<SystemTime>) -> Metadata {
    Metadata {
        kind: EntryKind::File,
        size: meta.size,
        modified: Some(mtime.unwrap_or_else(|| system_time(meta.last_modified))),
        unique: None,
    }
}

/// Most HEAD requests a listing sends at once to read stored `mtime`s.
const LISTING_HEADS_IN_FLIGHT: usize = 16;

fn dir_meta(modified: Option<SystemTime>) -> Metadata {
    Metadata {
        kind: EntryKind::Dir,
        size: 0,
        modified,
        unique: None,
    }
}

/// Lookups shared by the trait methods and uploads.
impl Inner {
    /// MFMT as a server-side copy of `path` onto itself with `attributes` and `mtime`
    /// set to `time`, conditional on `e_tag`. Then the new version's ETag and
    /// LastModified go to the caches (the next MFMT needs no HEAD, a listing no HEAD
    /// for its time) and the kept listing of the parent gets the time.
    async fn copy_with_mtime(
        &self,
        path: &VPath,
        location: &object_store::path::Path,
        mut attributes: Attributes,
        e_tag: Option<&str>,
        time: SystemTime,
    ) -> std::result::Result<(), CopyError> {
        meta::set_mtime(&mut attributes, time);
        let done = self
            .requests
            .replace_metadata(location.as_ref(), &attributes, e_tag)
            .await?;
        self.written
            .remember(location.as_ref(), done.e_tag.as_deref(), &attributes);
        match (done.e_tag, done.last_modified) {
            (Some(e_tag), Some(last_modified)) => self.meta_cache.remember(
                &object_store::ObjectMeta {
                    location: location.clone(),
                    last_modified,
                    size: 0,
                    e_tag: Some(e_tag),
                    version: None,
                },
                &attributes,
            ),
            _ => self.meta_cache.forget(location.as_ref()),
        }
        self.listings.touched(path, time);
        Ok(())
    }

    /// One page of a listing under the raw key `prefix` (`""` for the bucket root),
    /// grouped by `/` when `delimited`. Keys the gateway cannot represent are
    /// skipped (and counted), never fatal.
    pub(crate) async fn page(
        &self,
        prefix: &str,
        page_token: Option<String>,
        max_keys: Option<usize>,
        delimited: bool,
    ) -> Result<Page> {
        self.requests
            .list(prefix, delimited, max_keys, page_token.as_deref())
            .await
            .map_err(|e| requests::storage_error(&format!("list of key prefix {prefix:?}"), e))
    }

    /// The object of a file, or `None` when there is none.
    pub(crate) async fn head(&self, path: &VPath) -> Result<Option<ObjectMeta>> {
        Ok(self.head_full(path).await?.map(|(meta, _)| meta))
    }

    /// The object of a file with its user metadata (one HEAD), or `None`.
    pub(crate) async fn head_full(&self, path: &VPath) -> Result<Option<(ObjectMeta, Attributes)>> {
        let location = self.keys.object(path)?;
        let options = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(&location, options).await {
            Ok(r) => {
                self.meta_cache.remember(&r.meta, &r.attributes);
                Ok(Some((r.meta, r.attributes)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_error(format_args!("stat {path}"), e)),
        }
    }

    /// The stored `mtime` of a listed object: from the cache for a version seen
    /// before, else from a HEAD (`None` when it has none or vanished meanwhile).
    async fn listed_mtime(&self, meta: &ObjectMeta) -> Option<SystemTime> {
        if let Some(known) = self.meta_cache.lookup(meta) {
            return known;
        }
        let options = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(&meta.location, options).await {
            Ok(r) => {
                self.meta_cache.remember(&r.meta, &r.attributes);
                meta::mtime_of(&r.attributes)
            }
            Err(e) => {
                tracing::debug!(key = %meta.location, error = %e, "listing: no HEAD");
                None
            }
        }
    }

    /// `Some(time)` when `path` is a directory: its marker exists or any key lies below
    /// it. The time is the marker's (it sorts first among the keys with its prefix),
    /// else the first child's; `None` for the root.
    pub(crate) async fn probe_dir(&self, path: &VPath) -> Result<Option<Option<SystemTime>>> {
        if path.is_root() {
            return Ok(Some(None));
        }
        let prefix = self.keys.dir_prefix(path)?;
        let page = self.page(&prefix, None, Some(1), false).await?;
        if page.objects.is_empty() && page.skipped > 0 {
            // Only keys the gateway cannot represent below it: still a directory.
            return Ok(Some(None));
        }
        Ok(page
            .objects
            .first()
            .map(|m| Some(system_time(m.last_modified))))
    }

    /// True when a directory `path` exists; answered from a kept listing of the
    /// parent when there is one (STOR's check that its name is not a directory).
    ///
    /// Unlike [`stat`](Self::stat), this may answer absence from a kept listing: it only
    /// decides whether an upload may proceed, and never reports "not there" to a
    /// client. If another client created the directory within the last
    /// `list_cache_secs`, the upload writes the object `name` next to the prefix
    /// `name/` — a state S3 allows and this backend already handles (`stat` reports
    /// the file, listings may show both); no key is overwritten or lost. Asking S3
    /// here would cost one LIST per uploaded file (rclone's small-file uploads).
    pub(crate) async fn is_dir(&self, path: &VPath) -> Result<bool> {
        if let Some(known) = self.listings.has_dir(path) {
            return Ok(known);
        }
        // Another session is listing the parent (rclone's transfers start a new
        // directory together): its result answers this too.
        if let Some(done) = path.parent().and_then(|p| self.listings.in_flight(&p)) {
            listing::fill_ended(done).await;
            if let Some(known) = self.listings.has_dir(path) {
                return Ok(known);
            }
        }
        Ok(self.probe_dir(path).await?.is_some())
    }

    /// What `path` is, or `None` when nothing is there. A key that is both a file and a
    /// prefix (possible only through other S3 clients) counts as a file.
    ///
    /// A kept listing of the parent may confirm presence, never decide absence: S3 is
    /// strongly consistent, so a name another client or replica just wrote must be
    /// found at once (CWD, SIZE, MDTM, MLST, STAT, RNFR). On a miss S3 is asked.
    pub(crate) async fn stat(&self, path: &VPath) -> Result<Option<Metadata>> {
        if path.is_root() {
            return Ok(Some(dir_meta(None)));
        }
        if let Some(Some(known)) = self.listings.lookup(path) {
            return Ok(Some(known));
        }
        let (file, dir) = futures::join!(self.head_full(path), self.probe_dir(path));
        if let Some((meta, attrs)) = file? {
            return Ok(Some(file_meta(&meta, meta::mtime_of(&attrs))));
        }
        Ok(dir?.map(|time| dir_meta(Some(time.unwrap_or_else(SystemTime::now)))))
    }

    /// `Ok` when `dir` is an existing directory, else `NotFound` or `NotADirectory`.
    pub(crate) async fn require_dir(&self, dir: &VPath, op: &str) -> Result<()> {
        let prefix = self.keys.dir_prefix(dir)?;
        if self.dirs.known(&prefix) {
            return Ok(());
        }
        if self.probe_dir(dir).await?.is_some() {
            self.dirs.remember(&prefix);
            return Ok(());
        }
        if self.head(dir).await?.is_some() {
            Err(StorageError::new(
                ErrorKind::NotADirectory,
                format!("{op}: {dir}: not a directory"),
            ))
        } else {
            Err(StorageError::new(
                ErrorKind::NotFound,
                format!("{op}: {dir}: no such directory"),
            ))
        }
    }

    /// [`require_dir`](Self::require_dir) on the parent of `path`.
    pub(crate) async fn require_parent(&self, path: &VPath, op: &str) -> Result<()> {
        match path.parent() {
            Some(parent) if !parent.is_root() => self.require_dir(&parent, op).await,
            _ => Ok(()),
        }
    }

    /// Error for an operation on a missing path: `IsADirectory` when it is a directory
    /// (for file-only operations), else `NotFound`.
    async fn missing_file(&self, path: &VPath, op: &str) -> StorageError {
        match self.probe_dir(path).await {
            Ok(Some(_)) => StorageError::new(
                ErrorKind::IsADirectory,
                format!("{op} {path}: is a directory"),
            ),
            Ok(None) => StorageError::not_found(format_args!("{op} {path}")),
            Err(e) => e,
        }
    }
}

/// Turns one listing page into entries, skipping the listed directory's own marker
/// and names that are not valid single segments.
///
/// With `stored_mtimes` each file's stored `mtime` is looked up (cache, else a HEAD,
/// [`LISTING_HEADS_IN_FLIGHT`] at once); without, files show their LastModified.
async fn page_entries(
    inner: &Arc<Inner>,
    prefix: &str,
    page: Page,
    listed_at: SystemTime,
    stored_mtimes: bool,
) -> Vec<DirEntry> {
    let mut out = Vec::with_capacity(page.objects.len() + page.prefixes.len());
    let root = prefix == inner.keys.root_prefix();
    let shown = |name: &str| !(root && name == crate::pending::PENDING_DIR);
    let files: Vec<(&str, &ObjectMeta)> = page
        .objects
        .iter()
        .filter_map(|m| Keys::entry_name(prefix, m.location.as_ref()).map(|n| (n, m)))
        .filter(|(n, _)| shown(n))
        .collect();
    let mtimes: Vec<Option<SystemTime>> = if stored_mtimes {
        let lookups: Vec<_> = files
            .iter()
            .map(|(_, m)| {
                let (inner, m) = (Arc::clone(inner), (*m).clone());
                async move { inner.listed_mtime(&m).await }
            })
            .collect();
        stream::iter(lookups)
            .buffered(LISTING_HEADS_IN_FLIGHT)
            .collect()
            .await
    } else {
        vec![None; files.len()]
    };
    for ((name, meta), mtime) in files.into_iter().zip(mtimes) {
        out.push(DirEntry {
            name: name.to_owned(),
            meta: file_meta(meta, mtime),
        });
    }
    for dir in &page.prefixes {
        if let Some(name) = Keys::entry_name(prefix, dir).filter(|n| shown(n)) {
            out.push(DirEntry {
                name: name.to_owned(),
                meta: dir_meta(Some(listed_at)),
            });
        }
    }
    out
}

/// Where a streaming listing is between pages.
struct ListState {
    inner: Arc<Inner>,
    prefix: String,
    first: Option<Page>,
    token: Option<String>,
    done: bool,
    listed_at: SystemTime,
    /// The directory fits in one page: files get their stored `mtime` (a HEAD each,
    /// cached). Larger directories show LastModified, so a listing of 100,000 keys
    /// stays one request per 1,000 keys.
    stored_mtimes: bool,
}

#[async_trait]
impl StorageBackend for S3Backend {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn check(&self) -> Result<()> {
        // The inherent method: one LIST of a single key under the prefix.
        S3Backend::check(self).await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            append: false,
            write_at_offset: false,
            rename_directories: false,
            atomic_rename: false,
            // A rewrite of the object with new `mtime` metadata.
            set_modified: true,
        }
    }

    async fn stat(&self, path: &VPath) -> Result<Metadata> {
        self.inner
            .stat(path)
            .await?
            .ok_or_else(|| StorageError::not_found(path))
    }

    async fn list(&self, dir: &VPath) -> Result<EntryStream> {
        let inner = Arc::clone(&self.inner);
        let prefix = inner.keys.dir_prefix(dir)?;
        // A kept listing, or lead the fetch, or wait once for another session's.
        let mut may_wait = true;
        let fill = loop {
            match inner.listings.join(dir, may_wait) {
                Join::Ready(entries) => {
                    return Ok(stream::iter(entries.into_iter().map(Ok)).boxed())
                }
                Join::Wait(done) => {
                    listing::fill_ended(done).await;
                    may_wait = false;
                }
                Join::Lead(fill) => break Some(fill),
                Join::Off => break None,
            }
        };
        let first = inner.page(&prefix, None, None, true).await?;
        if !dir.is_root()
            && first.objects.is_empty()
            && first.prefixes.is_empty()
            && first.skipped == 0
            && first.token.is_none()
        {
            return Err(if inner.head(dir).await?.is_some() {
                StorageError::new(
                    ErrorKind::NotADirectory,
                    format!("list {dir}: not a directory"),
                )
            } else {
                StorageError::not_found(format_args!("list {dir}"))
            });
        }
        if !dir.is_root() {
            inner.dirs.remember(&prefix);
        }
        let stored_mtimes = first.token.is_none();
        if stored_mtimes {
            // One page is the whole directory: keep it for the listing cache.
            let entries = page_entries(&inner, &prefix, first, SystemTime::now(), true).await;
            if let Some(fill) = fill {
                fill.finish(&entries);
            }
            return Ok(stream::iter(entries.into_iter().map(Ok)).boxed());
        }
        drop(fill);
        let state = ListState {
            inner,
            prefix,
            first: Some(first),
            token: None,
            done: false,
            listed_at: SystemTime::now(),
            stored_mtimes,
        };
        let pages = stream::try_unfold(state, |mut st| async move {
            let page = match st.first.take() {
                Some(page) => page,
                None if st.done => return Ok::<_, StorageError>(None),
                None => {
                    st.inner
                        .page(&st.prefix, st.token.take(), None, true)
                        .await?
                }
            };
            st.token = page.token.clone();
            st.done = st.token.is_none();
            let entries =
                page_entries(&st.inner, &st.prefix, page, st.listed_at, st.stored_mtimes).await;
            Ok(Some((entries, st)))
        });
        Ok(pages
            .map_ok(|entries| stream::iter(entries.into_iter().map(Ok)))
            .try_flatten()
            .boxed())
    }

    async fn read(&self, path: &VPath, offset: u64) -> Result<ByteStream> {
        if path.is_root() {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                "read /: is a directory",
            ));
        }
        let inner = &self.inner;
        let Some(meta) = inner.head(path).await? else {
            return Err(inner.missing_file(path, "read").await);
        };
        if offset > meta.size {
            return Err(StorageError::new(
                ErrorKind::InvalidInput,
                format!(
                    "read {path}: offset {offset} is beyond the size {}",
                    meta.size
                ),
            ));
        }
        if offset == meta.size {
            // S3 answers 416 for a range starting at the size.
            return Ok(stream::empty().boxed());
        }
        let context = format!("read {path}");
        if let Some(e_tag) = meta.e_tag.clone().filter(|_| {
            crate::ranged::is_parallel(meta.size - offset, inner.read_chunk, inner.read_parallelism)
        }) {
            // Ranged GETs of this version (If-Match) from the offset.
            return Ok(crate::ranged::stream(
                Arc::clone(inner),
                meta.location,
                context,
                e_tag,
                offset,
                meta.size,
                None,
            ));
        }
        let options = GetOptions {
            range: Some(GetRange::Offset(offset)),
            // The size was checked on this version; a replacement in between must not
            // be read from the old offset.
            if_match: meta.e_tag.clone(),
            ..Default::default()
        };
        let result = inner
            .store
            .get_opts(&meta.location, options)
            .await
            .map_err(|e| crate::ranged::changed_or(&context, e))?;
        Ok(result
            .into_stream()
            .map_err(move |e| map_error(&context, e))
            .boxed())
    }

    async fn create(&self, path: &VPath, mode: WriteMode) -> Result<Box<dyn Upload>> {
        match mode {
            WriteMode::Append => {
                return Err(StorageError::unsupported(format!(
                    "append to {path}: S3 objects cannot be appended to"
                )))
            }
            WriteMode::Offset(_) => {
                return Err(StorageError::unsupported(format!(
                    "restart of an upload to {path}: S3 objects cannot be written at an offset"
                )))
            }
            WriteMode::Truncate | WriteMode::CreateNew => {}
        }
        if path.is_root() {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                "create /: is a directory",
            ));
        }
        let inner = &self.inner;
        let location = inner.keys.object(path)?;
        let create_new = mode == WriteMode::CreateNew;
        let (parent, dir, existing) = futures::join!(
            inner.require_parent(path, "create"),
            inner.is_dir(path),
            async {
                if create_new {
                    inner.head(path).await
                } else {
                    Ok(None)
                }
            }
        );
        parent?;
        if dir? {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                format!("create {path}: is a directory"),
            ));
        }
        if existing?.is_some() {
            return Err(StorageError::new(
                ErrorKind::AlreadyExists,
                format!("create {path}: file exists"),
            ));
        }
        let mode = if create_new {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        Ok(Box::new(S3Upload::new(
            Arc::clone(inner),
            path.clone(),
            location,
            mode,
        )))
    }

    async fn delete(&self, path: &VPath) -> Result<()> {
        if path.is_root() {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                "delete /: is a directory",
            ));
        }
        let inner = &self.inner;
        // S3 deletes are idempotent: check first so a missing file is NotFound.
        let Some(meta) = inner.head(path).await? else {
            return Err(inner.missing_file(path, "delete").await);
        };
        inner.written.forget(meta.location.as_ref());
        inner
            .store
            .delete(&meta.location)
            .await
            .map_err(|e| map_error(format_args!("delete {path}"), e))?;
        inner.listings.vanished(path);
        Ok(())
    }

    async fn mkdir(&self, path: &VPath) -> Result<()> {
        if path.is_root() {
            return Err(StorageError::new(
                ErrorKind::AlreadyExists,
                "mkdir /: the root exists",
            ));
        }
        let inner = &self.inner;
        let marker = inner.keys.marker(path)?;
        let (parent, existing) =
            futures::join!(inner.require_parent(path, "mkdir"), inner.stat(path));
        parent?;
        if existing?.is_some() {
            return Err(StorageError::new(
                ErrorKind::AlreadyExists,
                format!("mkdir {path}: already exists"),
            ));
        }
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        inner
            .store
            .put_opts(&marker, PutPayload::new(), options)
            .await
            .map_err(|e| map_error(format_args!("mkdir {path}"), e))?;
        inner.dirs.remember(&inner.keys.dir_prefix(path)?);
        inner.listings.put(path, dir_meta(Some(SystemTime::now())));
        Ok(())
    }

    async fn rmdir(&self, path: &VPath) -> Result<()> {
        if path.is_root() {
            return Err(StorageError::root_refused("remove"));
        }
        let inner = &self.inner;
        let own = inner.keys.object(path)?;
        let prefix = inner.keys.dir_prefix(path)?;
        // The marker sorts first; a second key (or a first that is not the marker) is
        // an entry.
        let page = inner.page(&prefix, None, Some(2), false).await?;
        let objects = &page.objects;
        if page.skipped > 0 {
            // Keys other S3 clients wrote that FTP cannot show: not empty.
            return Err(StorageError::new(
                ErrorKind::DirectoryNotEmpty,
                format!("rmdir {path}: directory not empty (it holds keys FTP cannot show)"),
            ));
        }
        if objects.is_empty() {
            return Err(if inner.head(path).await?.is_some() {
                StorageError::new(
                    ErrorKind::NotADirectory,
                    format!("rmdir {path}: not a directory"),
                )
            } else {
                StorageError::not_found(format_args!("rmdir {path}"))
            });
        }
        if objects.iter().any(|m| m.location != own) {
            return Err(StorageError::new(
                ErrorKind::DirectoryNotEmpty,
                format!("rmdir {path}: directory not empty"),
            ));
        }
        let marker = inner.keys.marker(path)?;
        inner.dirs.forget_under(&prefix);
        inner
            .store
            .delete(&marker)
            .await
            .map_err(|e| map_error(format_args!("rmdir {path}"), e))?;
        // After the delete: also drops listings fetched while it ran.
        inner.listings.vanished(path);
        inner.listings.forget_under(path);
        Ok(())
    }

    async fn rename(&self, from: &VPath, to: &VPath) -> Result<()> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::root_refused("rename"));
        }
        let inner = &self.inner;
        let Some((meta, attributes)) = inner.head_full(from).await? else {
            return Err(match inner.probe_dir(from).await? {
                Some(_) => StorageError::unsupported(format!(
                    "rename {from}: renaming directories is not supported on S3"
                )),
                None => StorageError::not_found(format_args!("rename {from}")),
            });
        };
        if from == to {
            return Ok(());
        }
        let target = inner.keys.object(to)?;
        let (parent, dir) = futures::join!(inner.require_parent(to, "rename"), inner.is_dir(to));
        parent?;
        if dir? {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                format!("rename {from} to {to}: the target is a directory"),
            ));
        }
        if meta.size > inner.copy_limit {
            // CopyObject stops at 5 GiB and object_store has no UploadPartCopy.
            return self.rename_by_streaming(from, to).await;
        }
        inner
            .store
            .copy(&meta.location, &target)
            .await
            .map_err(|e| map_error(format_args!("rename {from} to {to} (copy)"), e))?;
        // The copy is a new object: a new LastModified unless `mtime` was stored.
        let renamed = Metadata {
            modified: meta::mtime_of(&attributes).or_else(|| Some(SystemTime::now())),
            ..file_meta(&meta, None)
        };
        inner.listings.put(to, renamed);
        inner.written.forget(meta.location.as_ref());
        let deleted = inner
            .store
            .delete(&meta.location)
            .await
            .map_err(|e| map_error(format_args!("rename {from} to {to} (delete source)"), e));
        match deleted {
            Ok(()) => inner.listings.vanished(from),
            Err(_) => inner.listings.forget_parent(from),
        }
        deleted
    }

    /// MFMT: S3 cannot change an object's LastModified, so the new time is stored as
    /// `mtime` metadata (the other metadata kept). Up to 5 GiB: a HEAD and one
    /// server-side CopyObject onto itself with replaced metadata, conditional on the
    /// ETag read (see `copy_meta`; object_store cannot send it). Above: one GET and
    /// one multipart PUT streamed through the gateway. A concurrent replacement wins
    /// either way (`Transient`).
    async fn set_modified(&self, path: &VPath, time: SystemTime) -> Result<()> {
        if path.is_root() {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                "set modification time of /: is a directory",
            ));
        }
        let inner = &self.inner;
        let location = inner.keys.object(path)?;
        let fetch = |head: bool| {
            let location = location.clone();
            async move {
                let options = GetOptions {
                    head,
                    ..Default::default()
                };
                match inner.store.get_opts(&location, options).await {
                    Ok(r) => Ok(r),
                    Err(object_store::Error::NotFound { .. }) => {
                        Err(inner.missing_file(path, "set modification time of").await)
                    }
                    Err(e) => Err(map_error(
                        format_args!("set modification time of {path}"),
                        e,
                    )),
                }
            }
        };
        // Just written by this gateway (rclone's MFMT after each upload): the ETag
        // and metadata are known, no HEAD. A 412 means it changed: ask S3 below.
        if let Some((tag, attributes)) = inner.written.get(location.as_ref()) {
            match inner
                .copy_with_mtime(path, &location, attributes, Some(&tag), time)
                .await
            {
                Ok(()) => return Ok(()),
                Err(CopyError::Changed) => {}
                Err(CopyError::Storage(e)) => return Err(e),
            }
        }
        // Up to the CopyObject limit: one HEAD and one server-side copy onto
        // itself with the new metadata, conditional on the ETag just read.
        let head = fetch(true).await?;
        if head.meta.size <= inner.copy_limit {
            let e_tag = head.meta.e_tag.as_deref();
            return match inner
                .copy_with_mtime(path, &location, head.attributes.clone(), e_tag, time)
                .await
            {
                Ok(()) => Ok(()),
                Err(CopyError::Changed) => Err(StorageError::new(
                    ErrorKind::Transient,
                    format!("set modification time of {path}: the file changed meanwhile"),
                )),
                Err(CopyError::Storage(e)) => Err(e),
            };
        }
        let got = fetch(false).await?;
        let mut attributes = got.attributes.clone();
        meta::set_mtime(&mut attributes, time);
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let mut upload = S3Upload::new(
            Arc::clone(inner),
            path.clone(),
            location,
            PutMode::Update(version),
        )
        .with_attributes(attributes);
        let context = format!("set modification time of {path}");
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let written = match chunk {
                Ok(c) => upload.write(c).await,
                Err(e) => Err(map_error(&context, e)),
            };
            if let Err(e) = written {
                let _ = Box::new(upload).abort().await;
                return Err(e);
            }
        }
        Box::new(upload).complete().await.map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                // PutMode::Update's precondition failed: replaced meanwhile.
                StorageError::new(
                    ErrorKind::Transient,
                    format!("{context}: the file changed meanwhile"),
                )
                .with_source(e)
            } else {
                e
            }
        })?;
        Ok(())
    }

    /// RETR in one request: a GET from `offset` returns the size and stored `mtime`
    /// with the body. Only when that fails (416 past the end, 404) is a second request
    /// needed to tell the cases apart. When more than one chunk (`read_chunk_mib`)
    /// follows the offset, that response serves the first chunk only and ranged GETs
    /// of the same version fetch the rest in parallel (see `ranged`).
    async fn open(&self, path: &VPath, offset: u64) -> Result<(Metadata, ByteStream)> {
        if path.is_root() {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                "read /: is a directory",
            ));
        }
        let inner = &self.inner;
        let location = inner.keys.object(path)?;
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..Default::default()
        };
        match inner.store.get_opts(&location, options).await {
            Ok(r) => {
                inner.meta_cache.remember(&r.meta, &r.attributes);
                let meta = file_meta(&r.meta, meta::mtime_of(&r.attributes));
                let context = format!("read {path}");
                let (size, e_tag) = (r.meta.size, r.meta.e_tag.clone());
                let parallel = e_tag.filter(|_| {
                    crate::ranged::is_parallel(
                        size.saturating_sub(offset),
                        inner.read_chunk,
                        inner.read_parallelism,
                    )
                });
                let ctx = context.clone();
                let body = r.into_stream().map_err(move |e| map_error(&ctx, e)).boxed();
                let stream = match parallel {
                    Some(e_tag) => crate::ranged::stream(
                        Arc::clone(inner),
                        location,
                        context,
                        e_tag,
                        offset,
                        size,
                        Some(body),
                    ),
                    None => body,
                };
                Ok((meta, stream))
            }
            Err(object_store::Error::NotFound { .. }) => {
                Err(inner.missing_file(path, "read").await)
            }
            // 416: the offset is at or past the end; `read` tells which.
            Err(e) if crate::errors::classify(&e) == ErrorKind::InvalidInput => {
                let meta = self.stat(path).await?;
                let stream = self.read(path, offset).await?;
                Ok((meta, stream))
            }
            Err(e) => Err(map_error(format_args!("read {path}"), e)),
        }
    }

    /// One GET of the marker (see `pending`); a taken one is not pending.
    async fn pending_upload(&self, key: &PendingKey) -> Result<Option<PendingUpload>> {
        let inner = &self.inner;
        let found = inner.read_marker(&inner.marker_key(key)).await?;
        Ok(found.filter(|f| !f.marker.taken).map(|f| PendingUpload {
            size: f.marker.size,
            modified: f.modified,
        }))
    }

    fn may_have_pending(&self, key: &PendingKey) -> bool {
        self.inner.pending.may_have(&self.inner.marker_key(key))
    }

    /// Reads the marker and takes it (rewritten with `taken`, conditional on its
    /// ETag); the upload continues the open multipart upload after its parts. An
    /// `offset` below the durable count drops that many resent bytes.
    async fn resume_upload(&self, key: &PendingKey, offset: u64) -> Result<Resumed> {
        let inner = &self.inner;
        let mkey = inner.marker_key(key);
        let Some(found) = inner.read_marker(&mkey).await? else {
            return Err(crate::pending::gone(key));
        };
        let mut marker = found.marker;
        if marker.taken || marker.path != key.path.to_string() || marker.owner != key.owner {
            return Err(crate::pending::gone(key));
        }
        if marker.size < offset {
            return Err(StorageError::new(
                ErrorKind::InvalidInput,
                format!(
                    "{}: the pending upload holds {} bytes, fewer than {offset}",
                    key.path, marker.size
                ),
            ));
        }
        let location = inner.keys.object(&key.path)?;
        if inner.is_dir(&key.path).await? {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                format!("{}: is a directory", key.path),
            ));
        }
        marker.taken = true;
        inner
            .write_marker(&mkey, &marker, found.e_tag.as_deref())
            .await?;
        let upload = S3Upload::resumed(
            Arc::clone(inner),
            key.path.clone(),
            location,
            &marker,
            mkey,
            marker.size - offset,
        );
        Ok(Resumed {
            upload: Box::new(upload),
            prefix: None,
        })
    }

    /// AbortMultipartUpload and removal of the marker; a taken one is left alone.
    async fn discard_pending(&self, key: &PendingKey) -> Result<bool> {
        let inner = &self.inner;
        let mkey = inner.marker_key(key);
        let Some(found) = inner.read_marker(&mkey).await? else {
            return Ok(false);
        };
        if found.marker.taken {
            return Ok(false);
        }
        inner.abort_marked(&found.marker).await?;
        inner.delete_marker(&mkey).await?;
        Ok(true)
    }

    /// One LIST of the markers (of `owner`); a marker is read only when new or changed.
    async fn pending_usage(&self, owner: Option<&str>) -> Result<PendingUsage> {
        let mut u = PendingUsage::default();
        for (_, m) in self.inner.markers(owner).await? {
            if !m.taken {
                u.count += 1;
                u.bytes += m.size;
            }
        }
        Ok(u)
    }

    /// Aborts the multipart upload and removes the marker of every pending upload
    /// suspended (or taken) before `before`, except one this process is continuing.
    async fn expire_pending(&self, before: SystemTime) -> Result<PendingUsage> {
        let inner = &self.inner;
        let mut u = PendingUsage::default();
        for (meta, m) in inner.markers(None).await? {
            if SystemTime::from(meta.last_modified) >= before
                || (m.taken && inner.active_uploads.contains(&m.key))
            {
                continue;
            }
            if let Err(e) = inner.abort_marked(&m).await {
                tracing::warn!(path = %m.path, error = %e, "cannot abort an expired pending upload");
                continue;
            }
            match inner.delete_marker(meta.location.as_ref()).await {
                Ok(()) => {
                    u.count += 1;
                    u.bytes += m.size;
                }
                Err(e) => {
                    tracing::warn!(path = %m.path, error = %e, "cannot remove an expired pending-upload marker")
                }
            }
        }
        Ok(u)
    }

    /// One HEAD: `x-amz-meta-sha256` and the size.
    async fn stored_sha256(&self, path: &VPath) -> Result<Option<([u8; 32], u64)>> {
        if path.is_root() {
            return Ok(None);
        }
        Ok(self
            .inner
            .head_full(path)
            .await?
            .and_then(|(m, attrs)| meta::sha256_of(&attrs).map(|d| (d, m.size))))
    }
}

/// Used by uploads for the stat after a commit.
pub(crate) fn uploaded_meta(size: u64, mtime: Option<SystemTime>) -> Metadata {
    Metadata {
        kind: EntryKind::File,
        size,
        modified: mtime.or_else(|| Some(SystemTime::now())),
        unique: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosted_endpoint_names_the_bucket() {
        let mut cfg = S3Config::new("bkt");
        cfg.endpoint = Some("https://minio.example:9000/".into());
        assert_eq!(
            builder_endpoint(&cfg).as_deref(),
            Some("https://bkt.minio.example:9000")
        );
        cfg.force_path_style = true;
        assert_eq!(
            builder_endpoint(&cfg).as_deref(),
            Some("https://minio.example:9000")
        );
        cfg.endpoint = None;
        assert_eq!(builder_endpoint(&cfg), None);
    }
}
