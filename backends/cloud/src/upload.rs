//! [`CloudUpload`]: one PUT for small files, else object_store's [`WriteMultipart`]
//! (GCS XML multipart upload, Azure blocks) with a bounded number of parts in flight.
//!
//! Data is gathered until one part is full; `complete` before that is one PUT
//! (conditional for `CreateNew`). Past it a multipart upload starts and every write
//! first waits until at most `max_parts_in_flight` parts are sending, so one upload
//! holds at most `(max_parts_in_flight + 1) × part size` of data. Nothing is visible
//! before the multipart upload completes; `abort`, any failure and `Drop` abort it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, PutMode, PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};

use ftpgate_backend_s3::shared::map_error;
use ftpgate_storage::{EntryKind, ErrorKind, Metadata, Result, StorageError, Upload, VPath};

use crate::backend::{Inner, SHA256_METADATA};

/// An upload to one key. See the module documentation.
pub(crate) struct CloudUpload {
    inner: Arc<Inner>,
    path: VPath,
    location: Path,
    /// STOU: the single PUT is conditional; a multipart upload checks just before
    /// completing.
    create_new: bool,
    attributes: Attributes,
    /// The first part, until it is full.
    buf: Vec<Bytes>,
    buf_len: usize,
    total: u64,
    writer: Option<WriteMultipart>,
    /// A write failed and the upload was aborted.
    failed: bool,
}

impl CloudUpload {
    pub(crate) fn new(inner: Arc<Inner>, path: VPath, location: Path, create_new: bool) -> Self {
        Self {
            inner,
            path,
            location,
            create_new,
            attributes: Attributes::new(),
            buf: Vec::new(),
            buf_len: 0,
            total: 0,
            writer: None,
            failed: false,
        }
    }

    fn context(&self, what: &str) -> String {
        format!("upload {}{what}", self.path)
    }

    async fn write_inner(&mut self, data: Bytes) -> Result<()> {
        if self.failed {
            return Err(StorageError::new(
                ErrorKind::Other,
                self.context(": an earlier write failed; the upload was aborted"),
            ));
        }
        self.total += data.len() as u64;
        let limit = self.inner.max_parts * self.inner.part_size as u64;
        if self.total > limit {
            return Err(StorageError::new(
                ErrorKind::InsufficientStorage,
                self.context(&format!(
                    ": beyond {limit} bytes ({} parts of part_size_mib), the service's object limit",
                    self.inner.max_parts
                )),
            ));
        }
        if let Some(writer) = self.writer.as_mut() {
            writer
                .wait_for_capacity(self.inner.max_parts_in_flight)
                .await
                .map_err(|e| map_error(format_args!("upload {} (part)", self.path), e))?;
            writer.put(data);
            return Ok(());
        }
        self.buf_len += data.len();
        self.buf.push(data);
        if self.buf_len < self.inner.part_size {
            return Ok(());
        }
        let options = PutMultipartOptions {
            attributes: self.attributes.clone(),
            ..Default::default()
        };
        let upload = self
            .inner
            .store
            .put_multipart_opts(&self.location, options)
            .await
            .map_err(|e| map_error(format_args!("upload {} (start)", self.path), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.inner.part_size);
        self.buf_len = 0;
        for chunk in std::mem::take(&mut self.buf) {
            writer.put(chunk);
        }
        self.writer = Some(writer);
        Ok(())
    }

    async fn finish(&mut self) -> Result<Metadata> {
        // The parent may have been removed meanwhile.
        self.inner.require_parent(&self.path, "upload").await?;
        match self.writer.take() {
            None => {
                let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
                let options = PutOptions {
                    mode: if self.create_new {
                        PutMode::Create
                    } else {
                        PutMode::Overwrite
                    },
                    attributes: self.attributes.clone(),
                    ..Default::default()
                };
                self.inner
                    .store
                    .put_opts(&self.location, payload, options)
                    .await
                    .map_err(|e| map_error(format_args!("upload {}", self.path), e))?;
            }
            Some(writer) => {
                if self.create_new && self.inner.file(&self.path, "upload").await?.is_some() {
                    // Racy: a file created between this check and the completion is
                    // replaced.
                    let _ = writer.abort().await;
                    return Err(StorageError::new(
                        ErrorKind::AlreadyExists,
                        self.context(": file exists"),
                    ));
                }
                // `finish` aborts the multipart upload itself when it fails.
                writer
                    .finish()
                    .await
                    .map_err(|e| map_error(format_args!("upload {} (complete)", self.path), e))?;
            }
        }
        Ok(Metadata {
            kind: EntryKind::File,
            size: self.total,
            modified: Some(std::time::SystemTime::now()),
            unique: None,
        })
    }

    async fn abort_now(&mut self) -> Result<()> {
        self.buf.clear();
        self.buf_len = 0;
        if let Some(writer) = self.writer.take() {
            writer
                .abort()
                .await
                .map_err(|e| map_error(format_args!("upload {} (abort)", self.path), e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Upload for CloudUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let result = self.write_inner(data).await;
        if result.is_err() && !self.failed {
            self.failed = true;
            let _ = self.abort_now().await;
        }
        result
    }

    async fn complete(mut self: Box<Self>) -> Result<Metadata> {
        if self.failed {
            return Err(StorageError::new(
                ErrorKind::Other,
                self.context(": an earlier write failed; the upload was aborted"),
            ));
        }
        let result = self.finish().await;
        if result.is_err() {
            let _ = self.abort_now().await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.abort_now().await
    }

    /// Kept as `sha256` metadata when the upload is one PUT (a multipart upload has
    /// already sent its metadata when the digest is known).
    fn set_sha256(&mut self, digest: [u8; 32]) {
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.attributes
            .insert(Attribute::Metadata(SHA256_METADATA.into()), hex.into());
    }
}

impl Drop for CloudUpload {
    /// A dropped upload (client gone, task cancelled) is aborted from a spawned task:
    /// object_store does not abort on drop.
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = writer.abort().await;
                });
            }
        }
    }
}
