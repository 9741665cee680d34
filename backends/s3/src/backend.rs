//! [`S3Backend`]: the [`StorageBackend`] implementation over object_store's S3 client.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use object_store::list::{PaginatedListOptions, PaginatedListResult, PaginatedListStore};
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMode, PutOptions, PutPayload, RetryConfig, StaticCredentialProvider,
};

use ftpgate_storage::{
    ByteStream, Capabilities, DirEntry, EntryKind, EntryStream, ErrorKind, Metadata, Result,
    StorageBackend, StorageError, Upload, VPath, WriteMode,
};

use crate::config::S3Config;
use crate::credentials::CachingAwsChain;
use crate::errors::map_error;
use crate::keys::Keys;
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
    /// Largest object renamed with one server-side CopyObject; larger ones are
    /// streamed through the gateway into a multipart upload.
    copy_limit: u64,
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
            // The default 30 s whole-request timeout cuts long transfers to slow clients.
            .with_timeout_disabled()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_pool_idle_timeout(POOL_IDLE_TIMEOUT);
        let retry = retry_config(&cfg);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(!cfg.force_path_style)
            .with_client_options(client)
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
                copy_limit: MAX_COPY_SIZE,
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
    /// listing one key under the prefix. The error names the bucket and endpoint.
    pub async fn check(&self) -> Result<()> {
        let inner = &self.inner;
        let prefix = inner.keys.root_prefix().to_owned();
        inner
            .page(&prefix, None, Some(1), false)
            .await
            .map_err(|e| {
                StorageError::new(
                    e.kind(),
                    format!(
                        "s3: bucket {:?} at {} is not reachable: {e}",
                        inner.bucket, inner.endpoint
                    ),
                )
                .with_source(e)
            })?;
        Ok(())
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

fn file_meta(meta: &ObjectMeta) -> Metadata {
    Metadata {
        kind: EntryKind::File,
        size: meta.size,
        modified: Some(system_time(meta.last_modified)),
        unique: None,
    }
}

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
    /// One page of a listing under the raw key `prefix` (`""` for the bucket root),
    /// grouped by `/` when `delimited`. `about` names the path in errors.
    pub(crate) async fn page(
        &self,
        prefix: &str,
        page_token: Option<String>,
        max_keys: Option<usize>,
        delimited: bool,
    ) -> Result<PaginatedListResult> {
        let opts = PaginatedListOptions {
            delimiter: delimited.then_some("/".into()),
            max_keys,
            page_token,
            ..Default::default()
        };
        let raw_prefix = (!prefix.is_empty()).then_some(prefix);
        self.store
            .list_paginated(raw_prefix, opts)
            .await
            .map_err(|e| map_error(format_args!("list of key prefix {prefix:?}"), e))
    }

    /// The object of a file, or `None` when there is none.
    pub(crate) async fn head(&self, path: &VPath) -> Result<Option<ObjectMeta>> {
        let location = self.keys.object(path)?;
        match self.store.head(&location).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_error(format_args!("stat {path}"), e)),
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
        Ok(page
            .result
            .objects
            .first()
            .map(|m| Some(system_time(m.last_modified))))
    }

    /// What `path` is, or `None` when nothing is there. A key that is both a file and a
    /// prefix (possible only through other S3 clients) counts as a file.
    pub(crate) async fn stat(&self, path: &VPath) -> Result<Option<Metadata>> {
        if path.is_root() {
            return Ok(Some(dir_meta(None)));
        }
        let (file, dir) = futures::join!(self.head(path), self.probe_dir(path));
        if let Some(meta) = file? {
            return Ok(Some(file_meta(&meta)));
        }
        Ok(dir?.map(|time| dir_meta(Some(time.unwrap_or_else(SystemTime::now)))))
    }

    /// `Ok` when `dir` is an existing directory, else `NotFound` or `NotADirectory`.
    pub(crate) async fn require_dir(&self, dir: &VPath, op: &str) -> Result<()> {
        if self.probe_dir(dir).await?.is_some() {
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
fn page_entries(
    prefix: &str,
    page: object_store::ListResult,
    listed_at: SystemTime,
) -> Vec<DirEntry> {
    let mut out = Vec::with_capacity(page.objects.len() + page.common_prefixes.len());
    for meta in &page.objects {
        if let Some(name) = Keys::entry_name(prefix, meta.location.as_ref()) {
            out.push(DirEntry {
                name: name.to_owned(),
                meta: file_meta(meta),
            });
        }
    }
    for dir in &page.common_prefixes {
        if let Some(name) = Keys::entry_name(prefix, dir.as_ref()) {
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
    first: Option<PaginatedListResult>,
    token: Option<String>,
    done: bool,
    listed_at: SystemTime,
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
            set_modified: false,
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
        let first = inner.page(&prefix, None, None, true).await?;
        if !dir.is_root()
            && first.result.objects.is_empty()
            && first.result.common_prefixes.is_empty()
            && first.page_token.is_none()
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
        let state = ListState {
            inner,
            prefix,
            first: Some(first),
            token: None,
            done: false,
            listed_at: SystemTime::now(),
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
            st.token = page.page_token;
            st.done = st.token.is_none();
            let entries = page_entries(&st.prefix, page.result, st.listed_at);
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
            .map_err(|e| match e {
                object_store::Error::Precondition { .. } => StorageError::new(
                    ErrorKind::Transient,
                    format!("read {path}: the file changed while it was opened"),
                )
                .with_source(e),
                e => map_error(format_args!("read {path}"), e),
            })?;
        let context = format!("read {path}");
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
            inner.probe_dir(path),
            async {
                if create_new {
                    inner.head(path).await
                } else {
                    Ok(None)
                }
            }
        );
        parent?;
        if dir?.is_some() {
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
        Ok(Box::new(S3Upload::new(
            Arc::clone(inner),
            path.clone(),
            location,
            create_new,
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
        inner
            .store
            .delete(&meta.location)
            .await
            .map_err(|e| map_error(format_args!("delete {path}"), e))
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
        let objects = &page.result.objects;
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
        inner
            .store
            .delete(&marker)
            .await
            .map_err(|e| map_error(format_args!("rmdir {path}"), e))
    }

    async fn rename(&self, from: &VPath, to: &VPath) -> Result<()> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::root_refused("rename"));
        }
        let inner = &self.inner;
        let Some(meta) = inner.head(from).await? else {
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
        let (parent, dir) = futures::join!(inner.require_parent(to, "rename"), inner.probe_dir(to));
        parent?;
        if dir?.is_some() {
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
        inner
            .store
            .delete(&meta.location)
            .await
            .map_err(|e| map_error(format_args!("rename {from} to {to} (delete source)"), e))
    }

    async fn set_modified(&self, path: &VPath, _time: SystemTime) -> Result<()> {
        Err(StorageError::unsupported(format!(
            "set modification time of {path}: S3 objects keep their upload time"
        )))
    }
}

/// Used by uploads for the stat after a commit.
pub(crate) fn uploaded_meta(size: u64) -> Metadata {
    Metadata {
        kind: EntryKind::File,
        size,
        modified: Some(SystemTime::now()),
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
