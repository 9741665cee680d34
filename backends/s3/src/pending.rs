//! Pending (interrupted, resumable) uploads on S3 (issue 12 §2).
//!
//! A cut upload keeps its open multipart upload and its completed parts. What a
//! resume needs is kept in the bucket, so every replica on the same bucket and
//! prefix finds it: a small JSON *marker* object
//! `{prefix}.ftpgate-tmp-pending/<16 hex of SHA-256(owner)>/<40 hex of
//! SHA-256(owner NUL path)>` holding the object key, the upload id, each completed
//! part's ETag and size, the durable byte count (whole parts only: S3 cannot keep
//! part of a part), the SHA-256 state after the last part (see `sha`), and whether a
//! session has taken it up. Its LastModified is when it was last suspended (or
//! taken): the resume window counts from there. The name `.ftpgate-tmp-pending` at
//! the root is hidden from listings and refused as an FTP path.
//!
//! Taking a pending upload up rewrites its marker with `taken` set, conditional on
//! the ETag just read (`If-Match`), so two sessions, on one replica or two, cannot
//! both continue it: the second finds it gone. Completing removes the marker;
//! suspending again rewrites it with the new parts.
//!
//! A plain STOR must not pay a request to learn that there is nothing to discard:
//! [`Index`] remembers the marker names seen by the last full listing (the sweep
//! lists them every `min(window / 4, 60 s)`) and by this process's own changes, and
//! answers `may_have_pending` from it. A pending upload another replica kept since
//! that listing is then not discarded by a plain STOR here; the newer complete file
//! supersedes it (SIZE reports the file, a later REST discards it) and it expires
//! with the window.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use ftpgate_storage::{ErrorKind, PendingKey, Result, StorageError};
use object_store::path::Path;
use object_store::{
    GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::Inner;
use crate::errors::map_error;
use crate::meta::hex;

/// The directory (under the prefix) that holds the markers; hidden from listings and
/// refused as an FTP path.
pub(crate) const PENDING_DIR: &str = ".ftpgate-tmp-pending";

/// One completed part of a pending upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MarkerPart {
    /// The ETag UploadPart answered (CompleteMultipartUpload names parts by it).
    pub(crate) etag: String,
    /// Its size.
    pub(crate) size: u64,
}

/// The state of one pending upload, as kept in its marker object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// Format version (1).
    pub(crate) v: u32,
    /// The FTP user.
    pub(crate) owner: String,
    /// The target path.
    pub(crate) path: String,
    /// The target object key.
    pub(crate) key: String,
    /// The multipart upload.
    pub(crate) upload_id: String,
    /// Completed parts, in order (part numbers 1..).
    pub(crate) parts: Vec<MarkerPart>,
    /// Durable bytes: the sum of the parts' sizes.
    pub(crate) size: u64,
    /// SHA-256 state words after `size` bytes, when the upload was hashed.
    #[serde(default)]
    pub(crate) sha256: Option<[u32; 8]>,
    /// When the multipart upload was started (Unix seconds).
    pub(crate) created: u64,
    /// A session is continuing it (not pending, not to be discarded by others).
    #[serde(default)]
    pub(crate) taken: bool,
}

/// A marker as read: content, ETag and LastModified.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) marker: Marker,
    pub(crate) e_tag: Option<String>,
    pub(crate) modified: SystemTime,
}

/// Seconds since the epoch, now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn owner_hash(owner: &str) -> String {
    hex(&Sha256::digest(owner.as_bytes())[..8])
}

/// The key prefix of `owner`'s markers (of every owner for `None`).
pub(crate) fn markers_prefix(root: &str, owner: Option<&str>) -> String {
    match owner {
        Some(o) => format!("{root}{PENDING_DIR}/{}/", owner_hash(o)),
        None => format!("{root}{PENDING_DIR}/"),
    }
}

/// The marker key of the pending upload `key`.
pub(crate) fn marker_key(root: &str, key: &PendingKey) -> String {
    let mut h = Sha256::new();
    h.update(key.owner.as_bytes());
    h.update([0u8]);
    h.update(key.path.to_string().as_bytes());
    format!(
        "{}{}",
        markers_prefix(root, Some(&key.owner)),
        hex(&h.finalize()[..20])
    )
}

fn location(mkey: &str) -> Result<Path> {
    Path::parse(mkey).map_err(|e| {
        StorageError::new(ErrorKind::Other, format!("pending marker {mkey}: {e}")).with_source(e)
    })
}

/// `NotFound` for a pending upload that is gone (or taken by another session).
pub(crate) fn gone(key: &PendingKey) -> StorageError {
    StorageError::new(
        ErrorKind::NotFound,
        format!("{}: no pending upload to resume", key.path),
    )
}

/// What this process knows about which markers exist, and marker contents by ETag.
#[derive(Default)]
pub(crate) struct Index {
    state: Mutex<IndexState>,
}

#[derive(Default)]
struct IndexState {
    /// Marker keys seen by the last full listing plus own changes; `None` before.
    known: Option<HashSet<String>>,
    /// Marker contents by key, with the ETag they were read at.
    bodies: HashMap<String, (String, Marker)>,
}

impl Index {
    /// False only when the marker `mkey` is known not to exist.
    pub(crate) fn may_have(&self, mkey: &str) -> bool {
        self.state
            .lock()
            .map_or(true, |s| s.known.as_ref().is_none_or(|k| k.contains(mkey)))
    }

    /// Whether a full listing was seen.
    pub(crate) fn listed(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.known.is_some())
    }

    fn set(&self, mkey: &str, present: bool) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(k) = s.known.as_mut() {
                if present {
                    k.insert(mkey.to_owned());
                } else {
                    k.remove(mkey);
                }
            }
            if !present {
                s.bodies.remove(mkey);
            }
        }
    }

    fn replace(&self, all: HashSet<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.bodies.retain(|k, _| all.contains(k));
            s.known = Some(all);
        }
    }

    fn cached(&self, mkey: &str, e_tag: &str) -> Option<Marker> {
        let s = self.state.lock().ok()?;
        s.bodies
            .get(mkey)
            .filter(|(t, _)| t == e_tag)
            .map(|(_, m)| m.clone())
    }

    fn cache(&self, mkey: &str, e_tag: Option<&str>, marker: &Marker) {
        if let (Ok(mut s), Some(t)) = (self.state.lock(), e_tag) {
            s.bodies
                .insert(mkey.to_owned(), (t.to_owned(), marker.clone()));
        }
    }
}

/// Marker requests.
impl Inner {
    /// The marker key of `key` under this backend's prefix.
    pub(crate) fn marker_key(&self, key: &PendingKey) -> String {
        marker_key(self.keys.root_prefix(), key)
    }

    /// Reads the marker `mkey` (one GET); `None` when there is none or it is unreadable.
    pub(crate) async fn read_marker(&self, mkey: &str) -> Result<Option<Found>> {
        let loc = location(mkey)?;
        let got = match self.store.get_opts(&loc, GetOptions::default()).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                self.pending.set(mkey, false);
                return Ok(None);
            }
            Err(e) => return Err(map_error(format_args!("read pending marker {mkey}"), e)),
        };
        let e_tag = got.meta.e_tag.clone();
        let modified = SystemTime::from(got.meta.last_modified);
        let body = got
            .bytes()
            .await
            .map_err(|e| map_error(format_args!("read pending marker {mkey}"), e))?;
        match serde_json::from_slice::<Marker>(&body) {
            Ok(marker) => {
                self.pending.set(mkey, true);
                self.pending.cache(mkey, e_tag.as_deref(), &marker);
                Ok(Some(Found {
                    marker,
                    e_tag,
                    modified,
                }))
            }
            Err(e) => {
                tracing::warn!(marker = mkey, error = %e, "unreadable pending-upload marker ignored");
                Ok(None)
            }
        }
    }

    /// Writes the marker `mkey`: unconditionally, or only if its ETag is still
    /// `if_match` (`NotFound` when it changed: another session took it). Returns the
    /// new ETag.
    pub(crate) async fn write_marker(
        &self,
        mkey: &str,
        marker: &Marker,
        if_match: Option<&str>,
    ) -> Result<Option<String>> {
        let loc = location(mkey)?;
        let body = serde_json::to_vec(marker).map_err(|e| {
            StorageError::new(ErrorKind::Other, format!("pending marker {mkey}: {e}"))
        })?;
        let mode = match if_match {
            Some(t) => PutMode::Update(UpdateVersion {
                e_tag: Some(t.to_owned()),
                version: None,
            }),
            None => PutMode::Overwrite,
        };
        let options = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&loc, PutPayload::from(body), options)
            .await
        {
            Ok(put) => {
                self.pending.set(mkey, true);
                self.pending.cache(mkey, put.e_tag.as_deref(), marker);
                Ok(put.e_tag)
            }
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. }) => Err(StorageError::new(
                ErrorKind::NotFound,
                format!("pending upload {}: taken by another session", marker.path),
            )),
            Err(e) => Err(map_error(format_args!("write pending marker {mkey}"), e)),
        }
    }

    /// Deletes the marker `mkey`.
    pub(crate) async fn delete_marker(&self, mkey: &str) -> Result<()> {
        let loc = location(mkey)?;
        self.pending.set(mkey, false);
        self.store
            .delete(&loc)
            .await
            .map_err(|e| map_error(format_args!("delete pending marker {mkey}"), e))
    }

    /// Aborts the multipart upload of `marker` (AbortMultipartUpload; gone is fine).
    /// Only for the key its path maps to under this prefix: a marker written by
    /// someone else cannot make the gateway abort other uploads in the bucket.
    pub(crate) async fn abort_marked(&self, marker: &Marker) -> Result<()> {
        let own = ftpgate_storage::VPath::parse(&marker.path)
            .ok()
            .and_then(|p| self.keys.object(&p).ok())
            .is_some_and(|k| k.as_ref() == marker.key);
        if !own {
            tracing::warn!(key = %marker.key, path = %marker.path, "pending-upload marker names a foreign key: its upload is left alone");
            return Ok(());
        }
        self.requests
            .abort_upload(&marker.key, &marker.upload_id)
            .await
            .map_err(|e| {
                crate::requests::storage_error(&format!("abort pending upload {}", marker.path), e)
            })
    }

    /// Every readable marker of `owner` (all for `None`) with its content (read only
    /// when its ETag changed since it was last read) and LastModified. A full listing
    /// (`None`) refreshes [`Index`].
    pub(crate) async fn markers(&self, owner: Option<&str>) -> Result<Vec<(ObjectMeta, Marker)>> {
        let prefix = markers_prefix(self.keys.root_prefix(), owner);
        let mut metas = Vec::new();
        let mut token = None;
        loop {
            let page = self.page(&prefix, token.take(), None, false).await?;
            metas.extend(page.objects);
            match page.token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        if owner.is_none() {
            self.pending
                .replace(metas.iter().map(|m| m.location.to_string()).collect());
        }
        let mut out = Vec::with_capacity(metas.len());
        for meta in metas {
            let mkey = meta.location.to_string();
            let cached = meta
                .e_tag
                .as_deref()
                .and_then(|t| self.pending.cached(&mkey, t));
            let marker = match cached {
                Some(m) => Some(m),
                None => self.read_marker(&mkey).await?.map(|f| f.marker),
            };
            // Gone since the listing, or unreadable (logged): skipped.
            if let Some(m) = marker {
                out.push((meta, m));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftpgate_storage::VPath;

    fn key(o: &str, p: &str) -> PendingKey {
        PendingKey {
            owner: o.to_owned(),
            path: VPath::parse(p).expect("valid path"),
        }
    }

    #[test]
    fn marker_keys_separate_owners_and_paths() {
        let a = marker_key("ftp/", &key("alice", "/x/big.bin"));
        assert!(a.starts_with(&markers_prefix("ftp/", Some("alice"))));
        assert!(a.starts_with("ftp/.ftpgate-tmp-pending/"));
        assert_eq!(a, marker_key("ftp/", &key("alice", "/x/big.bin")));
        assert_ne!(a, marker_key("ftp/", &key("bob", "/x/big.bin")));
        assert_ne!(a, marker_key("ftp/", &key("alice", "/x/big.bin2")));
        assert!(Path::parse(&a).is_ok());
    }

    #[test]
    fn markers_round_trip_as_json() {
        let m = Marker {
            v: 1,
            owner: "alice".into(),
            path: "/a b.bin".into(),
            key: "ftp/a b.bin".into(),
            upload_id: "u-1".into(),
            parts: vec![MarkerPart {
                etag: "\"e1\"".into(),
                size: 5 << 20,
            }],
            size: 5 << 20,
            sha256: Some([1, 2, 3, 4, 5, 6, 7, u32::MAX]),
            created: 1_700_000_000,
            taken: false,
        };
        let text = serde_json::to_string(&m).expect("serialize");
        assert_eq!(serde_json::from_str::<Marker>(&text).expect("parse"), m);
    }

    #[test]
    fn the_index_answers_absence_only_after_a_listing() {
        let i = Index::default();
        assert!(i.may_have("m1"), "unknown before the first listing");
        i.replace(HashSet::from(["m1".to_owned()]));
        assert!(i.may_have("m1"));
        assert!(!i.may_have("m2"));
        i.set("m2", true);
        assert!(i.may_have("m2"));
        i.set("m1", false);
        assert!(!i.may_have("m1"));
    }
}
