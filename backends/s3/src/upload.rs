//! [`S3Upload`]: a buffered upload that becomes one PUT or a bounded multipart upload.
//!
//! Data is gathered into a part (one contiguous buffer of the part size). If `complete` comes before
//! the first part is full, the object is written with one PUT. Otherwise each full part
//! is sent by its own task while later data is buffered, with at most
//! `max_parts_in_flight` parts uploading: a writer waits for a slot before it hands over
//! another part, so an upload holds at most `(max_parts_in_flight + 1) × part size`
//! bytes. An upload starts with [`INITIAL_PARTS_IN_FLIGHT`] slots and adds one each
//! time the writer finds them all busy (the client outruns S3), up to that bound; a
//! client slower than S3 keeps the smaller footprint. Parts double in size every
//! [`PARTS_PER_DOUBLING`] parts (up to 5 GiB), so an upload of unknown length can
//! reach S3's 5 TiB object limit within 10,000 parts.
//!
//! Nothing is visible before CompleteMultipartUpload. `abort`, a failed `complete`, a
//! failed part and `Drop` all abort the multipart upload (object_store does not abort
//! on drop); `Drop` does it from a spawned task.
//!
//! The upload id and every part's ETag are kept (object_store's `MultipartStore`,
//! the same requests as its `put_multipart`), so an interrupted upload can be
//! *suspended* instead: its completed parts stay in the open multipart upload and a
//! marker object records them (see `pending`); [`S3Upload::resumed`] continues it on
//! any replica. When asked ([`Upload::hash_sha256`]) the upload hashes its content
//! itself and notes the SHA-256 state after each part, so a suspended upload keeps the
//! state at its durable end and a resumed one finishes the digest without reading.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{Attributes, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload};
use tokio::task::JoinSet;

use ftpgate_storage::{ErrorKind, Metadata, PendingKey, Result, StorageError, Upload, VPath};

use crate::backend::{uploaded_meta, Inner};
use crate::errors::map_error;
use crate::meta;
use crate::pending::{self, Marker, MarkerPart};
use crate::sha::Sha256Stream;

/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's limit on the number of parts of one upload.
pub const MAX_PARTS: usize = 10_000;
/// The part size doubles after this many parts: with the smallest base (5 MiB) the
/// 10,000 parts then hold ~9 TiB, beyond S3's 5 TiB object limit (every 1,000 parts
/// would stop at 4.9 TiB).
pub const PARTS_PER_DOUBLING: usize = 900;

/// Parts in flight when an upload starts (or `max_parts_in_flight`, if lower).
pub(crate) const INITIAL_PARTS_IN_FLIGHT: usize = 2;

/// The next number of parts in flight after the writer found all `slots` busy: one
/// more, never above `max`.
pub(crate) fn grow_slots(slots: usize, max: usize) -> usize {
    (slots + 1).min(max.max(1))
}

/// The size of part number `index` (0-based) for a configured base size.
pub(crate) fn part_size_for(base: usize, index: usize) -> usize {
    let doublings = u32::try_from(index / PARTS_PER_DOUBLING)
        .unwrap_or(u32::MAX)
        .min(32);
    let size = (base as u64).saturating_mul(1u64 << doublings);
    usize::try_from(size.min(MAX_PART_SIZE)).unwrap_or(usize::MAX)
}

/// One part handed over: its size, its ETag once uploaded, and the SHA-256 state
/// after it (when hashing).
struct Part {
    size: u64,
    id: Option<PartId>,
    state: Option<[u32; 8]>,
}

/// The pending upload a resumed upload continues: its marker, removed when the upload
/// completes or is discarded.
struct Resumed {
    marker_key: String,
    owner: String,
}

/// An upload to one key. See the module documentation.
pub(crate) struct S3Upload {
    inner: Arc<Inner>,
    path: VPath,
    location: Path,
    /// Overwrite, Create (STOU: `If-None-Match: *`) or Update (MFMT rewrite:
    /// `If-Match`); only a single PUT can be conditional.
    mode: PutMode,
    /// User metadata written with the object (`sha256`, `mtime`).
    attributes: Attributes,
    /// The part being filled.
    /// One contiguous allocation of the part size (above glibc's mmap threshold, so
    /// it goes back to the system when the part is sent instead of fragmenting the
    /// heap as the 1 MiB receive chunks did: the memory bound holds for RSS).
    buf: BytesMut,
    buf_len: usize,
    /// Size of the part being filled.
    part_size: usize,
    /// Content bytes so far (a resumed upload's kept bytes included).
    total: u64,
    /// Set once the first part is full (or from a resumed upload).
    upload_id: Option<String>,
    /// When the multipart upload started (Unix seconds).
    created: u64,
    /// Every part handed over, by index.
    parts: Vec<Part>,
    /// Each part's task gives its buffer back once S3 has it (`None` if still shared).
    in_flight: JoinSet<(usize, object_store::Result<PartId>, Option<BytesMut>)>,
    /// A sent part's buffer, reused for the next part: its pages are already
    /// faulted in. Taken when a part starts, so the bound is unchanged.
    spare: Option<BytesMut>,
    /// How many parts may be in flight now: starts at [`INITIAL_PARTS_IN_FLIGHT`],
    /// grows to `max_parts_in_flight` while the client outruns S3.
    slots: usize,
    /// Set when a write failed and the upload was aborted: later calls must not
    /// commit what is left.
    failed: bool,
    /// The content's SHA-256 so far, when asked for ([`Upload::hash_sha256`]).
    hasher: Option<Sha256Stream>,
    /// Bytes a resuming client resends before the kept count (`REST n` below it, as
    /// wput does): they are the kept bytes, and dropped.
    skip: u64,
    resumed: Option<Resumed>,
    /// Keeps the clean-up of incomplete uploads away from this one while it runs.
    _active: Option<crate::meta::ActiveGuard>,
}

impl S3Upload {
    pub(crate) fn new(inner: Arc<Inner>, path: VPath, location: Path, mode: PutMode) -> Self {
        let part_size = inner.part_size;
        let inner_max = inner.max_parts_in_flight;
        Self {
            inner,
            path,
            location,
            mode,
            attributes: Attributes::new(),
            buf: BytesMut::new(),
            buf_len: 0,
            part_size,
            total: 0,
            upload_id: None,
            created: 0,
            parts: Vec::new(),
            in_flight: JoinSet::new(),
            spare: None,
            slots: INITIAL_PARTS_IN_FLIGHT.min(inner_max),
            failed: false,
            hasher: None,
            skip: 0,
            resumed: None,
            _active: None,
        }
    }

    /// Continues the pending upload `marker` (already taken, see `pending`), whose
    /// marker is `marker_key`: its parts are kept, and the first `skip` bytes written
    /// (resent kept bytes) are dropped.
    pub(crate) fn resumed(
        inner: Arc<Inner>,
        path: VPath,
        location: Path,
        marker: &Marker,
        marker_key: String,
        skip: u64,
    ) -> Self {
        let mut up = Self::new(inner, path, location, PutMode::Overwrite);
        let last = marker.parts.len().saturating_sub(1);
        up.parts = marker
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| Part {
                size: p.size,
                id: Some(PartId {
                    content_id: p.etag.clone(),
                }),
                state: if i == last { marker.sha256 } else { None },
            })
            .collect();
        up.part_size = part_size_for(up.inner.part_size, up.parts.len());
        up.total = marker.size;
        up.upload_id = Some(marker.upload_id.clone());
        up.created = marker.created;
        up.hasher = marker
            .sha256
            .map(|s| Sha256Stream::from_state(s, marker.size));
        up.skip = skip;
        up.resumed = Some(Resumed {
            marker_key,
            owner: marker.owner.clone(),
        });
        up._active = Some(up.inner.active_uploads.start(up.location.as_ref()));
        up
    }

    /// Metadata to store with the object.
    pub(crate) fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    fn take_buffer(&mut self) -> PutPayload {
        self.buf_len = 0;
        PutPayload::from(std::mem::take(&mut self.buf).freeze())
    }

    /// Waits for one part in flight; its error is the upload's.
    async fn join_one(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            None => Ok(()),
            Some(Ok((idx, Ok(id), back))) => {
                if let Some(p) = self.parts.get_mut(idx) {
                    p.id = Some(id);
                }
                if let Some(mut b) = back.filter(|b| b.capacity() >= self.part_size) {
                    b.clear();
                    self.spare = Some(b);
                }
                Ok(())
            }
            Some(Ok((_, Err(e), _))) => {
                Err(map_error(format_args!("upload {} (part)", self.path), e))
            }
            Some(Err(e)) => Err(StorageError::new(
                ErrorKind::Other,
                format!("upload {}: part task failed: {e}", self.path),
            )),
        }
    }

    /// Hands the buffered part to a task, starting the multipart upload first if needed
    /// and waiting for a free slot.
    async fn send_part(&mut self) -> Result<()> {
        if self.parts.len() >= MAX_PARTS {
            return Err(StorageError::new(
                ErrorKind::InsufficientStorage,
                format!(
                    "upload {}: more than {MAX_PARTS} parts, beyond S3's object size limit",
                    self.path
                ),
            ));
        }
        if self.in_flight.len() >= self.slots {
            // The client is faster than S3: one more part in flight, up to the bound.
            self.slots = grow_slots(self.slots, self.inner.max_parts_in_flight);
        }
        while self.in_flight.len() >= self.slots {
            self.join_one().await?;
        }
        let id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self
                    .inner
                    .store
                    .create_multipart_opts(
                        &self.location,
                        PutMultipartOptions {
                            attributes: self.attributes.clone(),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| map_error(format_args!("upload {} (start)", self.path), e))?;
                self.upload_id = Some(id.clone());
                self.created = pending::now_secs();
                self._active = Some(self.inner.active_uploads.start(self.location.as_ref()));
                id
            }
        };
        let size = self.buf_len as u64;
        self.buf_len = 0;
        let payload = std::mem::take(&mut self.buf).freeze();
        let idx = self.parts.len();
        self.parts.push(Part {
            size,
            id: None,
            state: self.hasher.as_ref().and_then(Sha256Stream::snapshot),
        });
        let store = self.inner.store.clone();
        let location = self.location.clone();
        self.in_flight.spawn(async move {
            let r = store
                .put_part(&location, &id, idx, PutPayload::from(payload.clone()))
                .await;
            (idx, r, payload.try_into_mut().ok())
        });
        self.part_size = part_size_for(self.inner.part_size, self.parts.len());
        Ok(())
    }

    async fn write_inner(&mut self, mut data: Bytes) -> Result<()> {
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(data.len());
            data.advance(n);
            self.skip -= n as u64;
        }
        self.total += data.len() as u64;
        while !data.is_empty() {
            let room = self.part_size - self.buf_len;
            let chunk = if data.len() > room {
                data.split_to(room)
            } else {
                std::mem::take(&mut data)
            };
            if let Some(h) = self.hasher.as_mut() {
                h.update(&chunk);
            }
            if self.buf.capacity() == 0 {
                self.buf = self
                    .spare
                    .take()
                    .filter(|b| b.capacity() >= self.part_size)
                    .unwrap_or_else(|| BytesMut::with_capacity(self.part_size));
            }
            self.buf_len += chunk.len();
            self.buf.extend_from_slice(&chunk);
            if self.buf_len >= self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    /// Removes the marker of the pending upload this one continued, if any.
    async fn drop_marker(&mut self) {
        if let Some(r) = self.resumed.take() {
            if let Err(e) = self.inner.delete_marker(&r.marker_key).await {
                tracing::warn!(path = %self.path, error = %e, "cannot remove a pending-upload marker");
            }
        }
    }

    async fn finish(&mut self) -> Result<Metadata> {
        let Some(id) = self.upload_id.clone() else {
            // Small file: one PUT, conditional for CreateNew (If-None-Match: *).
            // The parent is checked again: it may have been removed meanwhile.
            self.inner.require_parent(&self.path, "upload").await?;
            let payload = self.take_buffer();
            let options = PutOptions {
                mode: self.mode.clone(),
                attributes: self.attributes.clone(),
                ..Default::default()
            };
            let put = self
                .inner
                .store
                .put_opts(&self.location, payload, options)
                .await
                .map_err(|e| map_error(format_args!("upload {}", self.path), e))?;
            self.inner.written.remember(
                self.location.as_ref(),
                put.e_tag.as_deref(),
                &self.attributes,
            );
            return Ok(uploaded_meta(self.total, meta::mtime_of(&self.attributes)));
        };
        if self.buf_len > 0 {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        self.inner.require_parent(&self.path, "upload").await?;
        let create_new = matches!(self.mode, PutMode::Create);
        if create_new && self.inner.head(&self.path).await?.is_some() {
            // Racy: a file created between this check and the completion is replaced.
            return Err(StorageError::new(
                ErrorKind::AlreadyExists,
                format!("upload {}: file exists", self.path),
            ));
        }
        let ids = self
            .parts
            .iter()
            .map(|p| p.id.clone())
            .collect::<Option<Vec<PartId>>>()
            .ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Other,
                    format!("upload {}: a part has no ETag", self.path),
                )
            })?;
        let put = self
            .inner
            .store
            .complete_multipart(&self.location, &id, ids)
            .await
            .map_err(|e| map_error(format_args!("upload {} (complete)", self.path), e))?;
        self.inner.written.remember(
            self.location.as_ref(),
            put.e_tag.as_deref(),
            &self.attributes,
        );
        self.upload_id = None;
        self.drop_marker().await;
        Ok(uploaded_meta(self.total, meta::mtime_of(&self.attributes)))
    }

    fn failed_error(&self) -> StorageError {
        StorageError::new(
            ErrorKind::Other,
            format!(
                "upload {}: an earlier write failed; the upload was aborted",
                self.path
            ),
        )
    }

    /// Stops the parts in flight and aborts the multipart upload, if any (and removes
    /// the marker of a resumed one).
    async fn abort_now(&mut self) -> Result<()> {
        self.in_flight.shutdown().await;
        self.buf = BytesMut::new();
        self.buf_len = 0;
        let aborted = match self.upload_id.take() {
            Some(id) => self
                .inner
                .requests
                .abort_upload(self.location.as_ref(), &id)
                .await
                .map_err(|e| {
                    crate::requests::storage_error(&format!("abort upload {}", self.path), e)
                }),
            None => Ok(()),
        };
        self.drop_marker().await;
        aborted
    }

    /// Keeps the completed parts as the pending upload `key` (see `pending`): waits
    /// for the parts in flight, then writes the marker. `None` when nothing is durable
    /// (no complete part), after aborting.
    async fn suspend_inner(&mut self, key: &PendingKey) -> Result<Option<u64>> {
        let Some(id) = self.upload_id.clone() else {
            return Ok(None);
        };
        // Parts already sending become durable; a failed one ends the kept run.
        while !self.in_flight.is_empty() {
            if let Err(e) = self.join_one().await {
                tracing::info!(path = %self.path, error = %e, "a part of a suspended upload failed");
            }
        }
        let kept = self.parts.iter().take_while(|p| p.id.is_some()).count();
        let size: u64 = self.parts[..kept].iter().map(|p| p.size).sum();
        if kept == 0 || !matches!(self.mode, PutMode::Overwrite) {
            return Ok(None);
        }
        let marker = Marker {
            v: 1,
            owner: key.owner.clone(),
            path: key.path.to_string(),
            key: self.location.to_string(),
            upload_id: id.clone(),
            parts: self.parts[..kept]
                .iter()
                .map(|p| MarkerPart {
                    etag: p
                        .id
                        .as_ref()
                        .map(|i| i.content_id.clone())
                        .unwrap_or_default(),
                    size: p.size,
                })
                .collect(),
            size,
            sha256: if self.hasher.is_some() {
                self.parts[kept - 1].state
            } else {
                None
            },
            created: self.created,
            taken: false,
        };
        let mkey = self.inner.marker_key(key);
        // An older pending upload of this key (kept by another replica since this
        // one last listed markers) is replaced: its multipart upload is aborted.
        if self.resumed.is_none() {
            if let Ok(Some(old)) = self.inner.read_marker(&mkey).await {
                if old.marker.upload_id != id {
                    let _ = self.inner.abort_marked(&old.marker).await;
                }
            }
        }
        self.inner.write_marker(&mkey, &marker, None).await?;
        // Kept: neither aborted nor unmarked from here on.
        self.upload_id = None;
        self.resumed = None;
        Ok(Some(size))
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.failed {
            return Err(self.failed_error());
        }
        let res = self.write_inner(data).await;
        if res.is_err() {
            self.failed = true;
            if let Err(e) = self.abort_now().await {
                tracing::warn!(path = %self.path, error = %e, "abort after a failed part");
            }
        }
        res
    }

    async fn complete(mut self: Box<Self>) -> Result<Metadata> {
        if self.failed {
            return Err(self.failed_error());
        }
        let res = self.finish().await;
        match &res {
            Ok(meta) => self.inner.listings.put(&self.path, meta.clone()),
            // The PUT may have landed or not: S3 tells the next listing.
            Err(_) => self.inner.listings.forget_parent(&self.path),
        }
        if res.is_err() {
            if let Err(e) = self.abort_now().await {
                tracing::warn!(path = %self.path, error = %e, "abort after a failed complete");
            }
        }
        res
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.abort_now().await
    }

    /// Kept as `x-amz-meta-sha256` by a single PUT. A multipart upload has sent its
    /// metadata with CreateMultipartUpload, before the digest was known: `HASH` then
    /// reads the object.
    fn set_sha256(&mut self, digest: [u8; 32]) {
        if self.upload_id.is_none() && self.parts.is_empty() {
            self.attributes
                .insert(meta::key(meta::SHA256), meta::hex(&digest).into());
        }
    }

    /// Hashes here, so a suspended upload keeps the hash state of its durable bytes;
    /// a resumed upload does when its pending upload was hashed.
    fn hash_sha256(&mut self) -> bool {
        if self.hasher.is_none() && self.resumed.is_none() && self.total == 0 {
            self.hasher = Some(Sha256Stream::new());
        }
        self.hasher.is_some()
    }

    fn sha256(&mut self) -> Option<[u8; 32]> {
        self.hasher
            .as_ref()
            .filter(|h| h.len() == self.total)
            .map(Sha256Stream::finish)
    }

    async fn suspend(mut self: Box<Self>, key: &PendingKey) -> Result<Option<u64>> {
        if self.failed {
            return Ok(None);
        }
        match self.suspend_inner(key).await {
            Ok(Some(kept)) => Ok(Some(kept)),
            Ok(None) => {
                tracing::info!(path = %self.path, "interrupted upload discarded: no complete part to keep");
                self.abort_now().await.map(|()| None)
            }
            Err(e) => {
                if let Err(e) = self.abort_now().await {
                    tracing::warn!(path = %self.path, error = %e, "abort after a failed suspend");
                }
                Err(e)
            }
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        let upload_id = self.upload_id.take();
        let resumed = self.resumed.take();
        if upload_id.is_none() && resumed.is_none() {
            return;
        }
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let path = self.path.clone();
        let location = self.location.to_string();
        let inner = Arc::clone(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    in_flight.shutdown().await;
                    if let Some(id) = upload_id {
                        match inner.requests.abort_upload(&location, &id).await {
                            Ok(()) => tracing::debug!(%path, "dropped upload aborted"),
                            Err(e) => {
                                tracing::warn!(%path, error = %e, "abort of a dropped upload failed")
                            }
                        }
                    }
                    if let Some(r) = resumed {
                        tracing::debug!(%path, owner = %r.owner, "dropped resumed upload: marker removed");
                        let _ = inner.delete_marker(&r.marker_key).await;
                    }
                });
            }
            Err(_) => tracing::warn!(
                %path,
                "upload dropped outside a tokio runtime: its multipart upload stays pending"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_in_flight_grow_to_the_bound() {
        let mut slots = INITIAL_PARTS_IN_FLIGHT.min(4);
        let mut seen = vec![slots];
        for _ in 0..5 {
            slots = grow_slots(slots, 4);
            seen.push(slots);
        }
        assert_eq!(seen, [2, 3, 4, 4, 4, 4]);
        assert_eq!(grow_slots(INITIAL_PARTS_IN_FLIGHT.min(1), 1), 1);
    }

    #[test]
    fn part_sizes_reach_5_tib() {
        const MIB: usize = 1024 * 1024;
        assert_eq!(part_size_for(8 * MIB, 0), 8 * MIB);
        assert_eq!(part_size_for(8 * MIB, 899), 8 * MIB);
        assert_eq!(part_size_for(8 * MIB, 900), 16 * MIB);
        assert_eq!(part_size_for(8 * MIB, 8999) as u64, 4 * 1024 * MIB as u64);
        assert_eq!(part_size_for(8 * MIB, 9999) as u64, MAX_PART_SIZE);
        assert_eq!(part_size_for(1024 * MIB, 3000) as u64, MAX_PART_SIZE);
        for base_mib in [5, 8] {
            let total: u64 = (0..MAX_PARTS)
                .map(|i| part_size_for(base_mib * MIB, i) as u64)
                .sum();
            // 5 MiB parts reach 4.99 TiB, 8 MiB parts 7.99 TiB.
            assert!(
                total >= 5 * (1u64 << 40) * 99 / 100,
                "{base_mib} MiB: {total}"
            );
        }
    }
}
