//! [`CloudBackend`]: the [`StorageBackend`] implementation over any object_store client
//! that can list page by page (Google Cloud Storage, Azure Blob).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::list::{PaginatedListOptions, PaginatedListResult, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, GetRange,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    StaticCredentialProvider,
};

use ftpgate_backend_s3::shared::{map_error, Connector, Keys, Transport};
use ftpgate_backend_s3::{CONNECT_TIMEOUT, MAX_BACKOFF, POOL_IDLE_TIMEOUT};
use ftpgate_storage::{
    ByteStream, Capabilities, DirEntry, EntryKind, EntryStream, ErrorKind, Metadata, Result,
    StorageBackend, StorageError, Upload, VPath, WriteMode,
};

use crate::config::{AzureConfig, GcsConfig, Tuning, EMULATOR_ACCOUNT_KEY, EMULATOR_ENDPOINT};
use crate::upload::CloudUpload;

/// GCS's limit on the parts of one XML multipart upload.
pub const GCS_MAX_PARTS: u64 = 10_000;
/// Azure's limit on the committed blocks of one block blob.
pub const AZURE_MAX_BLOCKS: u64 = 50_000;
/// The metadata key Azure tools (Storage Explorer, blobfuse, azcopy) mark folder
/// blobs with.
pub const AZURE_FOLDER_METADATA: &str = "hdi_isfolder";
/// The metadata key holding an upload's SHA-256 (hex).
pub const SHA256_METADATA: &str = "sha256";
/// HEAD requests at once while a listing tells Azure folder blobs from empty files.
const LISTING_HEADS_IN_FLIGHT: usize = 8;

/// How a service marks an empty directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Markers {
    /// A zero-byte object `dir/` (GCS console, S3 convention).
    Slash,
    /// A zero-byte blob `dir` with metadata `hdi_isfolder=true` (Azure's convention:
    /// object_store cannot address a blob name ending in `/`).
    FolderBlob,
}

/// What differs between the services once the client is built.
struct Service {
    kind: &'static str,
    markers: Markers,
    max_parts: u64,
}

/// The FTP tree stored in a GCS bucket or an Azure container. Cheap to clone.
#[derive(Clone)]
pub struct CloudBackend {
    pub(crate) inner: Arc<Inner>,
}

/// State shared by the backend and its uploads.
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ObjectStore>,
    lister: Arc<dyn PaginatedListStore>,
    pub(crate) keys: Keys,
    markers: Markers,
    kind: &'static str,
    /// `gcs bucket "b" at URL` for messages.
    place: String,
    pub(crate) part_size: usize,
    pub(crate) max_parts_in_flight: usize,
    /// The service's part (block) count limit.
    pub(crate) max_parts: u64,
}

impl fmt::Debug for CloudBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudBackend")
            .field("place", &self.inner.place)
            .field("prefix", &self.inner.keys.root_prefix())
            .finish_non_exhaustive()
    }
}

/// The transport (response and stall timeouts, no whole-request timeout), the client
/// options and the retry policy shared by both services.
fn client_parts(
    tuning: &Tuning,
    allow_http: bool,
) -> Result<(ClientOptions, Connector, RetryConfig)> {
    let client = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout_disabled()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_pool_idle_timeout(POOL_IDLE_TIMEOUT);
    let transport = Transport::new(
        allow_http,
        CONNECT_TIMEOUT,
        POOL_IDLE_TIMEOUT,
        Duration::from_secs(tuning.response_timeout_secs),
        Duration::from_secs(tuning.stall_timeout_secs),
    )
    .map_err(|e| StorageError::new(ErrorKind::InvalidInput, format!("HTTP client: {e}")))?;
    let retry_timeout = Duration::from_secs(tuning.retry_timeout_secs);
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: MAX_BACKOFF.min(retry_timeout / 4),
            base: 2.0,
        },
        max_retries: tuning.max_retries,
        retry_timeout,
    };
    Ok((client, Connector(Arc::new(transport)), retry))
}

fn part_size(tuning: &Tuning, key: &str) -> Result<usize> {
    usize::try_from(tuning.part_size_mib * 1024 * 1024).map_err(|_| {
        StorageError::new(
            ErrorKind::InvalidInput,
            format!("{key}.part_size_mib: too large for this platform"),
        )
    })
}

fn build_error(place: &str, e: object_store::Error) -> StorageError {
    StorageError::new(
        ErrorKind::InvalidInput,
        format!("cannot configure {place}: {e}"),
    )
    .with_source(e)
}

impl CloudBackend {
    /// A Google Cloud Storage backend from `cfg` (validated first). No request is
    /// sent: call [`check`](StorageBackend::check) to verify the bucket is reachable.
    pub fn gcs(cfg: GcsConfig) -> Result<Self> {
        cfg.validate()?;
        let (client, connector, retry) = client_parts(&cfg.tuning, cfg.allow_http)?;
        let endpoint = cfg
            .endpoint
            .as_deref()
            .map(|e| e.trim_end_matches('/').to_owned());
        let place = format!(
            "gcs bucket {:?} at {}",
            cfg.bucket,
            endpoint
                .as_deref()
                .unwrap_or("https://storage.googleapis.com")
        );
        let mut builder = GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_client_options(client)
            .with_http_connector(connector)
            .with_retry(retry);
        if let Some(e) = &endpoint {
            builder = builder.with_base_url(e);
        }
        if let Some(file) = &cfg.service_account_file {
            builder = builder.with_service_account_path(file.display().to_string());
        }
        if cfg.anonymous {
            // Some requests (uploads) ask the provider even when unsigned: an empty
            // static token keeps them off the metadata server.
            builder = builder.with_skip_signature(true).with_credentials(Arc::new(
                StaticCredentialProvider::new(GcpCredential {
                    bearer: String::new(),
                }),
            ));
        }
        let store = Arc::new(builder.build().map_err(|e| build_error(&place, e))?);
        let service = Service {
            kind: "gcs",
            markers: Markers::Slash,
            max_parts: GCS_MAX_PARTS,
        };
        Self::assemble(store, service, place, cfg.prefix.as_deref(), &cfg.tuning)
    }

    /// An Azure Blob Storage backend from `cfg` (validated first). No request is
    /// sent: call [`check`](StorageBackend::check) to verify the container is
    /// reachable.
    pub fn azure(cfg: AzureConfig) -> Result<Self> {
        cfg.validate()?;
        let account = cfg.account_name().unwrap_or_default().to_owned();
        let allow_http = cfg.allow_http || cfg.use_emulator;
        let (client, connector, retry) = client_parts(&cfg.tuning, allow_http)?;
        // Azurite is addressed path-style (`{endpoint}/{account}/{container}`), as
        // object_store's own emulator mode does, but at the configured URL (its
        // emulator mode reads the URL only from the environment).
        let endpoint = match (&cfg.endpoint, cfg.use_emulator) {
            (Some(e), true) => Some(format!("{}/{account}", e.trim_end_matches('/'))),
            (None, true) => Some(format!("{EMULATOR_ENDPOINT}/{account}")),
            (e, false) => e.as_deref().map(|e| e.trim_end_matches('/').to_owned()),
        };
        let place = format!(
            "azure container {:?} at {}",
            cfg.container,
            endpoint
                .clone()
                .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"))
        );
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_account(&account)
            .with_container_name(&cfg.container)
            .with_use_emulator(false)
            .with_client_options(client)
            .with_http_connector(connector)
            .with_retry(retry);
        if let Some(e) = endpoint {
            builder = builder.with_endpoint(e);
        }
        match (&cfg.access_key, cfg.use_emulator) {
            (Some(key), _) => builder = builder.with_access_key(key.expose()),
            (None, true) => builder = builder.with_access_key(EMULATOR_ACCOUNT_KEY),
            (None, false) => {}
        }
        let store = Arc::new(builder.build().map_err(|e| build_error(&place, e))?);
        let service = Service {
            kind: "azure",
            markers: Markers::FolderBlob,
            max_parts: AZURE_MAX_BLOCKS,
        };
        Self::assemble(store, service, place, cfg.prefix.as_deref(), &cfg.tuning)
    }

    /// The backend over a built client of `service`.
    fn assemble<S: ObjectStore + PaginatedListStore>(
        store: Arc<S>,
        service: Service,
        place: String,
        prefix: Option<&str>,
        tuning: &Tuning,
    ) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                lister: store,
                keys: Keys::new(prefix)?,
                markers: service.markers,
                kind: service.kind,
                place,
                part_size: part_size(tuning, service.kind)?,
                max_parts_in_flight: tuning.max_parts_in_flight,
                max_parts: service.max_parts,
            }),
        })
    }

    /// The largest object one upload can write: the part limit × the part size.
    pub fn max_object_size(&self) -> u64 {
        self.inner.max_parts * self.inner.part_size as u64
    }
}

/// What lies at a path: a file, a directory (marker or keys below), or both.
#[derive(Default)]
pub(crate) struct Probe {
    /// The file's object and metadata.
    file: Option<(ObjectMeta, Attributes)>,
    /// The directory's time (marker, else first key below), when it is one.
    dir: Option<SystemTime>,
    /// The directory's marker exists (rmdir deletes it).
    marker: bool,
}

impl Probe {
    /// `Ok` for a directory; else `NotADirectory` (a file is there) or `NotFound`.
    fn dir_or_error(&self, path: &VPath, op: &str) -> Result<()> {
        match (&self.dir, &self.file) {
            (Some(_), _) => Ok(()),
            (None, Some(_)) => Err(StorageError::new(
                ErrorKind::NotADirectory,
                format!("{op} {path}: not a directory"),
            )),
            (None, None) => Err(StorageError::not_found(format_args!("{op} {path}"))),
        }
    }
}

fn file_meta(meta: &ObjectMeta) -> Metadata {
    Metadata {
        kind: EntryKind::File,
        size: meta.size,
        modified: Some(meta.last_modified.into()),
        unique: None,
    }
}

fn dir_meta(time: SystemTime) -> Metadata {
    Metadata {
        kind: EntryKind::Dir,
        size: 0,
        modified: Some(time),
        unique: None,
    }
}

fn is_folder(attributes: &Attributes) -> bool {
    attributes
        .get(&Attribute::Metadata(AZURE_FOLDER_METADATA.into()))
        .is_some_and(|v| v.as_ref().eq_ignore_ascii_case("true"))
}

fn hex_digest(value: &AttributeValue) -> Option<[u8; 32]> {
    let s = value.as_ref().as_bytes();
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

impl Inner {
    /// One HEAD: the object and its user metadata, or `None`.
    async fn head(
        &self,
        location: &Path,
        op: &str,
        path: &VPath,
    ) -> Result<Option<(ObjectMeta, Attributes)>> {
        let options = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(location, options).await {
            Ok(r) => Ok(Some((r.meta, r.attributes))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_error(format_args!("{op} {path}"), e)),
        }
    }

    /// One page of a listing under the raw key `prefix`.
    pub(crate) async fn page(
        &self,
        prefix: &str,
        delimited: bool,
        max_keys: Option<usize>,
        page_token: Option<String>,
    ) -> Result<PaginatedListResult> {
        let options = PaginatedListOptions {
            delimiter: delimited.then_some(std::borrow::Cow::Borrowed("/")),
            max_keys,
            page_token,
            ..Default::default()
        };
        let prefix_arg = (!prefix.is_empty()).then_some(prefix);
        self.lister
            .list_paginated(prefix_arg, options)
            .await
            .map_err(|e| map_error(format_args!("list of key prefix {prefix:?}"), e))
    }

    /// The first key strictly below the directory `path` (not its own marker).
    async fn first_below(&self, path: &VPath) -> Result<Option<SystemTime>> {
        let own = self.keys.object(path)?;
        let prefix = self.keys.dir_prefix(path)?;
        let page = self.page(&prefix, false, Some(2), None).await?;
        Ok(page
            .result
            .objects
            .iter()
            .find(|m| m.location != own)
            .map(system_time_of))
    }

    /// What is at `path`: file, directory, or nothing (two or three requests at once).
    pub(crate) async fn probe(&self, path: &VPath, op: &str) -> Result<Probe> {
        if path.is_root() {
            return Ok(Probe {
                file: None,
                dir: Some(SystemTime::now()),
                marker: false,
            });
        }
        let object = self.keys.object(path)?;
        let marker = async {
            match self.markers {
                Markers::Slash => self.head(&self.keys.marker(path)?, op, path).await,
                Markers::FolderBlob => Ok(None),
            }
        };
        let (file, marker, below) =
            futures::join!(self.head(&object, op, path), marker, self.first_below(path));
        let mut probe = Probe::default();
        match file? {
            Some((meta, attrs)) if self.markers == Markers::FolderBlob && is_folder(&attrs) => {
                probe.dir = Some(system_time_of(&meta));
                probe.marker = true;
            }
            other => probe.file = other,
        }
        if let Some((meta, _)) = marker? {
            probe.dir = Some(system_time_of(&meta));
            probe.marker = true;
        }
        if probe.dir.is_none() {
            probe.dir = below?;
        }
        Ok(probe)
    }

    /// `Ok` when `dir` is an existing directory, else `NotFound` or `NotADirectory`.
    pub(crate) async fn require_dir(&self, dir: &VPath, op: &str) -> Result<()> {
        self.probe(dir, op).await?.dir_or_error(dir, op)
    }

    /// [`require_dir`](Self::require_dir) on the parent of `path`.
    pub(crate) async fn require_parent(&self, path: &VPath, op: &str) -> Result<()> {
        match path.parent() {
            Some(parent) if !parent.is_root() => self.require_dir(&parent, op).await,
            _ => Ok(()),
        }
    }

    /// The file at `path` (a folder blob is not one), or `None`.
    pub(crate) async fn file(
        &self,
        path: &VPath,
        op: &str,
    ) -> Result<Option<(ObjectMeta, Attributes)>> {
        if path.is_root() {
            return Ok(None);
        }
        let object = self.keys.object(path)?;
        Ok(self
            .head(&object, op, path)
            .await?
            .filter(|(_, a)| !(self.markers == Markers::FolderBlob && is_folder(a))))
    }

    /// `IsADirectory` when `path` is a directory, else `NotFound`.
    async fn missing_file(&self, path: &VPath, op: &str) -> StorageError {
        match self.probe(path, op).await {
            Ok(p) if p.dir.is_some() => StorageError::new(
                ErrorKind::IsADirectory,
                format!("{op} {path}: is a directory"),
            ),
            Ok(_) => StorageError::not_found(format_args!("{op} {path}")),
            Err(e) => e,
        }
    }

    /// Whether the zero-byte object `meta` is an Azure folder blob (one HEAD).
    async fn is_folder_blob(&self, meta: &ObjectMeta) -> bool {
        let options = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(&meta.location, options).await {
            Ok(r) => is_folder(&r.attributes),
            Err(e) => {
                tracing::debug!(key = %meta.location, error = %e, "listing: no HEAD");
                false
            }
        }
    }

    /// Turns one page into entries: files (Azure folder blobs become directories),
    /// then common prefixes; directories already seen are not repeated.
    async fn page_entries(
        self: &Arc<Self>,
        prefix: &str,
        page: PaginatedListResult,
        listed_at: SystemTime,
        seen_dirs: &mut HashSet<String>,
    ) -> Vec<DirEntry> {
        let prefixes: Vec<String> = page
            .result
            .common_prefixes
            .iter()
            .filter_map(|p| Keys::entry_name(prefix, &format!("{p}/")).map(str::to_owned))
            .collect();
        let files: Vec<(String, ObjectMeta)> = page
            .result
            .objects
            .into_iter()
            .filter_map(|m| {
                let name = Keys::entry_name(prefix, m.location.as_ref())?.to_owned();
                Some((name, m))
            })
            .collect();
        let folder_checks: Vec<bool> = if self.markers == Markers::FolderBlob {
            let checks: Vec<_> = files
                .iter()
                .map(|(name, m)| {
                    let (inner, m) = (Arc::clone(self), m.clone());
                    let known = prefixes.contains(name);
                    async move { m.size == 0 && (known || inner.is_folder_blob(&m).await) }
                })
                .collect();
            stream::iter(checks)
                .buffered(LISTING_HEADS_IN_FLIGHT)
                .collect()
                .await
        } else {
            vec![false; files.len()]
        };
        let mut out = Vec::with_capacity(files.len() + prefixes.len());
        for ((name, meta), folder) in files.into_iter().zip(folder_checks) {
            if !folder {
                out.push(DirEntry {
                    name,
                    meta: file_meta(&meta),
                });
            } else if seen_dirs.insert(name.clone()) {
                out.push(DirEntry {
                    name,
                    meta: dir_meta(system_time_of(&meta)),
                });
            }
        }
        for name in prefixes {
            if seen_dirs.insert(name.clone()) {
                out.push(DirEntry {
                    name,
                    meta: dir_meta(listed_at),
                });
            }
        }
        out
    }
}

fn system_time_of(meta: &ObjectMeta) -> SystemTime {
    meta.last_modified.into()
}

/// Where a streaming listing is between pages.
struct ListState {
    inner: Arc<Inner>,
    prefix: String,
    token: Option<String>,
    done: bool,
    listed_at: SystemTime,
    seen_dirs: HashSet<String>,
}

#[async_trait]
impl StorageBackend for CloudBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind
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

    /// Lists one key under the prefix; the error names the bucket or container.
    async fn check(&self) -> Result<()> {
        let inner = &self.inner;
        match inner
            .page(inner.keys.root_prefix(), false, Some(1), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::new(
                ErrorKind::NotFound,
                format!("{} does not exist", inner.place),
            )),
            Err(e) => {
                // One line: error documents quoted in the message span several.
                let text = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                Err(StorageError::new(
                    e.kind(),
                    format!("{} is not reachable: {text}", inner.place),
                ))
            }
        }
    }

    async fn stat(&self, path: &VPath) -> Result<Metadata> {
        let probe = self.inner.probe(path, "stat").await?;
        if let Some((meta, _)) = &probe.file {
            return Ok(file_meta(meta));
        }
        match probe.dir {
            Some(t) => Ok(dir_meta(t)),
            None => Err(StorageError::not_found(path)),
        }
    }

    async fn list(&self, dir: &VPath) -> Result<EntryStream> {
        let inner = Arc::clone(&self.inner);
        if !dir.is_root() {
            inner.probe(dir, "list").await?.dir_or_error(dir, "list")?;
        }
        let state = ListState {
            prefix: inner.keys.dir_prefix(dir)?,
            inner,
            token: None,
            done: false,
            listed_at: SystemTime::now(),
            seen_dirs: HashSet::new(),
        };
        let pages = stream::try_unfold(state, |mut st| async move {
            if st.done {
                return Ok::<_, StorageError>(None);
            }
            let page = st
                .inner
                .page(&st.prefix, true, None, st.token.take())
                .await?;
            st.token = page.page_token.clone();
            st.done = st.token.is_none();
            let mut seen = std::mem::take(&mut st.seen_dirs);
            let entries = st
                .inner
                .page_entries(&st.prefix, page, st.listed_at, &mut seen)
                .await;
            st.seen_dirs = seen;
            Ok(Some((entries, st)))
        });
        Ok(pages
            .map_ok(|entries| stream::iter(entries.into_iter().map(Ok)))
            .try_flatten()
            .boxed())
    }

    /// The root and other directories are `IsADirectory` (through `missing_file`).
    async fn read(&self, path: &VPath, offset: u64) -> Result<ByteStream> {
        let inner = &self.inner;
        let Some((meta, _)) = inner.file(path, "read").await? else {
            return Err(inner.missing_file(path, "read").await);
        };
        match offset.cmp(&meta.size) {
            std::cmp::Ordering::Greater => {
                let size = meta.size;
                let msg = format!("read {path}: offset {offset} is beyond the size {size}");
                return Err(StorageError::new(ErrorKind::InvalidInput, msg));
            }
            // A range starting at the size is 416 on both services.
            std::cmp::Ordering::Equal => return Ok(stream::empty().boxed()),
            std::cmp::Ordering::Less => {}
        }
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..Default::default()
        };
        let result = inner
            .store
            .get_opts(&meta.location, options)
            .await
            .map_err(|e| map_error(format_args!("read {path}"), e))?;
        // The size was checked on this version: a replacement in between must not be
        // read from the old offset.
        if result.meta.e_tag.is_some() && result.meta.e_tag != meta.e_tag {
            return Err(StorageError::new(
                ErrorKind::Transient,
                format!("read {path}: the file changed while it was opened"),
            ));
        }
        let context = format!("read {path}");
        Ok(result
            .into_stream()
            .map_err(move |e| map_error(&context, e))
            .boxed())
    }

    async fn create(&self, path: &VPath, mode: WriteMode) -> Result<Box<dyn Upload>> {
        let refused = match mode {
            WriteMode::Append => Some("objects cannot be appended to"),
            WriteMode::Offset(_) => Some("objects cannot be written at an offset (REST + STOR)"),
            WriteMode::Truncate | WriteMode::CreateNew => None,
        };
        if let Some(why) = refused {
            return Err(StorageError::unsupported(format!(
                "upload to {path}: {} {why}",
                self.inner.kind
            )));
        }
        // The root is a directory: the probe below says so.
        let inner = &self.inner;
        let (parent, probe) = futures::join!(
            inner.require_parent(path, "create"),
            inner.probe(path, "create")
        );
        parent?;
        let probe = probe?;
        if probe.dir.is_some() {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                format!("create {path}: is a directory"),
            ));
        }
        let location = inner.keys.object(path)?;
        let create_new = mode == WriteMode::CreateNew;
        if create_new && probe.file.is_some() {
            return Err(StorageError::new(
                ErrorKind::AlreadyExists,
                format!("create {path}: file exists"),
            ));
        }
        Ok(Box::new(CloudUpload::new(
            Arc::clone(inner),
            path.clone(),
            location,
            create_new,
        )))
    }

    /// The root and other directories are `IsADirectory` (through `missing_file`).
    async fn delete(&self, path: &VPath) -> Result<()> {
        let inner = &self.inner;
        // Deletes are idempotent on both services: check first so a missing file is
        // NotFound.
        let Some((meta, _)) = inner.file(path, "delete").await? else {
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
        let (parent, probe) = futures::join!(
            inner.require_parent(path, "mkdir"),
            inner.probe(path, "mkdir")
        );
        parent?;
        let probe = probe?;
        if probe.dir.is_some() || probe.file.is_some() {
            return Err(StorageError::new(
                ErrorKind::AlreadyExists,
                format!("mkdir {path}: already exists"),
            ));
        }
        let (location, attributes) = match inner.markers {
            Markers::Slash => (inner.keys.marker(path)?, Attributes::new()),
            Markers::FolderBlob => {
                let mut a = Attributes::new();
                a.insert(
                    Attribute::Metadata(AZURE_FOLDER_METADATA.into()),
                    "true".into(),
                );
                (inner.keys.object(path)?, a)
            }
        };
        let options = PutOptions {
            mode: PutMode::Create,
            attributes,
            ..Default::default()
        };
        inner
            .store
            .put_opts(&location, PutPayload::new(), options)
            .await
            .map_err(|e| map_error(format_args!("mkdir {path}"), e))?;
        Ok(())
    }

    async fn rmdir(&self, path: &VPath) -> Result<()> {
        if path.is_root() {
            return Err(StorageError::root_refused("remove"));
        }
        let inner = &self.inner;
        let probe = inner.probe(path, "rmdir").await?;
        probe.dir_or_error(path, "rmdir")?;
        if inner.first_below(path).await?.is_some() {
            return Err(StorageError::new(
                ErrorKind::DirectoryNotEmpty,
                format!("rmdir {path}: directory not empty"),
            ));
        }
        if probe.marker {
            let marker = match inner.markers {
                Markers::Slash => inner.keys.marker(path)?,
                Markers::FolderBlob => inner.keys.object(path)?,
            };
            inner
                .store
                .delete(&marker)
                .await
                .map_err(|e| map_error(format_args!("rmdir {path}"), e))?;
        }
        Ok(())
    }

    async fn rename(&self, from: &VPath, to: &VPath) -> Result<()> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::root_refused("rename"));
        }
        let inner = &self.inner;
        let kind = inner.kind;
        let probe = inner.probe(from, "rename").await?;
        let Some((meta, _)) = probe.file else {
            return Err(match probe.dir {
                Some(_) => StorageError::unsupported(format!(
                    "rename {from}: renaming directories is not supported on {kind}"
                )),
                None => StorageError::not_found(format_args!("rename {from}")),
            });
        };
        if from == to {
            return Ok(());
        }
        let target = inner.keys.object(to)?;
        let (parent, target_probe) = futures::join!(
            inner.require_parent(to, "rename"),
            inner.probe(to, "rename")
        );
        parent?;
        if target_probe?.dir.is_some() {
            return Err(StorageError::new(
                ErrorKind::IsADirectory,
                format!("rename {from} to {to}: the target is a directory"),
            ));
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
            "set modification time of {path}: {} keeps its own times",
            self.inner.kind
        )))
    }

    /// One HEAD: the `sha256` metadata stored by a single-request upload.
    async fn stored_sha256(&self, path: &VPath) -> Result<Option<([u8; 32], u64)>> {
        if path.is_root() {
            return Ok(None);
        }
        Ok(self.inner.file(path, "hash").await?.and_then(|(m, a)| {
            a.get(&Attribute::Metadata(SHA256_METADATA.into()))
                .and_then(hex_digest)
                .map(|d| (d, m.size))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_folders() {
        let hex = "00ff".repeat(16);
        let d = hex_digest(&AttributeValue::from(hex)).unwrap();
        assert_eq!((d[0], d[1], d[31]), (0x00, 0xff, 0xff));
        assert!(hex_digest(&AttributeValue::from("xyz")).is_none());
        assert!(hex_digest(&AttributeValue::from("g".repeat(64))).is_none());
        let mut a = Attributes::new();
        assert!(!is_folder(&a));
        a.insert(
            Attribute::Metadata(AZURE_FOLDER_METADATA.into()),
            "True".into(),
        );
        assert!(is_folder(&a));
    }
}
