//! [`S3Upload`]: a buffered upload that becomes one PUT or a bounded multipart upload.
//!
//! Data is gathered into a part (zero-copy `Bytes` slices). If `complete` comes before
//! the first part is full, the object is written with one PUT. Otherwise each full part
//! is sent by its own task while later data is buffered, with at most
//! `max_parts_in_flight` parts uploading: a writer waits for a slot before it hands over
//! another part, so an upload holds at most `(max_parts_in_flight + 1) × part size`
//! bytes. Parts double in size every [`PARTS_PER_DOUBLING`] parts (up to 5 GiB), so an
//! upload of unknown length can reach S3's 5 TiB object limit within 10,000 parts.
//!
//! Nothing is visible before CompleteMultipartUpload. `abort`, a failed `complete`, a
//! failed part and `Drop` all abort the multipart upload (object_store does not abort
//! on drop); `Drop` does it from a spawned task.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    Attributes, MultipartUpload, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
};
use tokio::task::JoinSet;

use ftpgate_storage::{ErrorKind, Metadata, Result, StorageError, Upload, VPath};

use crate::backend::{uploaded_meta, Inner};
use crate::errors::map_error;
use crate::meta;

/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's limit on the number of parts of one upload.
pub const MAX_PARTS: usize = 10_000;
/// The part size doubles after this many parts: with the smallest base (5 MiB) the
/// 10,000 parts then hold ~9 TiB, beyond S3's 5 TiB object limit (every 1,000 parts
/// would stop at 4.9 TiB).
pub const PARTS_PER_DOUBLING: usize = 900;

/// The size of part number `index` (0-based) for a configured base size.
pub(crate) fn part_size_for(base: usize, index: usize) -> usize {
    let doublings = u32::try_from(index / PARTS_PER_DOUBLING)
        .unwrap_or(u32::MAX)
        .min(32);
    let size = (base as u64).saturating_mul(1u64 << doublings);
    usize::try_from(size.min(MAX_PART_SIZE)).unwrap_or(usize::MAX)
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
    buf: Vec<Bytes>,
    buf_len: usize,
    /// Size of the part being filled.
    part_size: usize,
    parts_sent: usize,
    total: u64,
    /// Set once the first part is full; taken when completed or aborted.
    multipart: Option<Box<dyn MultipartUpload>>,
    in_flight: JoinSet<object_store::Result<()>>,
    /// Set when a write failed and the upload was aborted: later calls must not
    /// commit what is left.
    failed: bool,
    /// Keeps the clean-up of incomplete uploads away from this one while it runs.
    _active: Option<crate::meta::ActiveGuard>,
}

impl S3Upload {
    pub(crate) fn new(inner: Arc<Inner>, path: VPath, location: Path, mode: PutMode) -> Self {
        let part_size = inner.part_size;
        Self {
            inner,
            path,
            location,
            mode,
            attributes: Attributes::new(),
            buf: Vec::new(),
            buf_len: 0,
            part_size,
            parts_sent: 0,
            total: 0,
            multipart: None,
            in_flight: JoinSet::new(),
            failed: false,
            _active: None,
        }
    }

    /// Metadata to store with the object.
    pub(crate) fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    fn take_buffer(&mut self) -> PutPayload {
        self.buf_len = 0;
        std::mem::take(&mut self.buf).into_iter().collect()
    }

    /// Waits for one part in flight; its error is the upload's.
    async fn join_one(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(map_error(format_args!("upload {} (part)", self.path), e)),
            Some(Err(e)) => Err(StorageError::new(
                ErrorKind::Other,
                format!("upload {}: part task failed: {e}", self.path),
            )),
        }
    }

    /// Hands the buffered part to a task, starting the multipart upload first if needed
    /// and waiting for a free slot.
    async fn send_part(&mut self) -> Result<()> {
        if self.parts_sent >= MAX_PARTS {
            return Err(StorageError::new(
                ErrorKind::InsufficientStorage,
                format!(
                    "upload {}: more than {MAX_PARTS} parts, beyond S3's object size limit",
                    self.path
                ),
            ));
        }
        while self.in_flight.len() >= self.inner.max_parts_in_flight {
            self.join_one().await?;
        }
        if self.multipart.is_none() {
            let upload = self
                .inner
                .store
                .put_multipart_opts(
                    &self.location,
                    PutMultipartOptions {
                        attributes: self.attributes.clone(),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| map_error(format_args!("upload {} (start)", self.path), e))?;
            self.multipart = Some(upload);
            self._active = Some(self.inner.active_uploads.start(self.location.as_ref()));
        }
        let payload = self.take_buffer();
        if let Some(upload) = self.multipart.as_mut() {
            self.in_flight.spawn(upload.put_part(payload));
        }
        self.parts_sent += 1;
        self.part_size = part_size_for(self.inner.part_size, self.parts_sent);
        Ok(())
    }

    async fn write_inner(&mut self, mut data: Bytes) -> Result<()> {
        self.total += data.len() as u64;
        while !data.is_empty() {
            let room = self.part_size - self.buf_len;
            let chunk = if data.len() > room {
                data.split_to(room)
            } else {
                std::mem::take(&mut data)
            };
            self.buf_len += chunk.len();
            self.buf.push(chunk);
            if self.buf_len >= self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<Metadata> {
        let Some(_) = self.multipart else {
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
        if let Some(upload) = self.multipart.as_mut() {
            let put = upload
                .complete()
                .await
                .map_err(|e| map_error(format_args!("upload {} (complete)", self.path), e))?;
            self.inner.written.remember(
                self.location.as_ref(),
                put.e_tag.as_deref(),
                &self.attributes,
            );
        }
        self.multipart = None;
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

    /// Stops the parts in flight and aborts the multipart upload, if any.
    async fn abort_now(&mut self) -> Result<()> {
        self.in_flight.shutdown().await;
        self.buf.clear();
        self.buf_len = 0;
        if let Some(mut upload) = self.multipart.take() {
            upload
                .abort()
                .await
                .map_err(|e| map_error(format_args!("abort upload {}", self.path), e))?;
        }
        Ok(())
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
        if self.multipart.is_none() {
            self.attributes
                .insert(meta::key(meta::SHA256), meta::hex(&digest).into());
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        let Some(mut upload) = self.multipart.take() else {
            return;
        };
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let path = self.path.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    in_flight.shutdown().await;
                    match upload.abort().await {
                        Ok(()) => tracing::debug!(%path, "dropped upload aborted"),
                        Err(e) => {
                            tracing::warn!(%path, error = %e, "abort of a dropped upload failed")
                        }
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
