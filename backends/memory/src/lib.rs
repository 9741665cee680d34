//! An in-memory [`StorageBackend`]: a tree of real directories holding files as lists
//! of [`Bytes`] chunks, for tests, demos and ephemeral drop boxes.
//!
//! - A file keeps the chunks it was uploaded in; they are never joined into one buffer
//!   (that would copy the whole file again and double its memory while doing so).
//!   Reads yield the stored chunks from the requested offset, re-split to at most
//!   256 KiB, all zero-copy slices.
//! - Uploads buffer their chunks in the [`Upload`] object and commit atomically on
//!   `complete` (the `CreateNew` check happens at commit, under the lock).
//! - `Append` and `Offset(n)` take the kept prefix of the existing file when the upload
//!   is created (its chunks, the one straddling `n` sliced), so they behave like the
//!   local backend's copy without copying any bytes.
//! - Every capability is supported; renaming a directory moves its whole subtree.
//! - One `std::sync::Mutex` guards the tree; it is never held across an `.await`.
//!   Reads and listings work on snapshots (a file's content is a reference-counted
//!   chunk list, so taking one is a reference count).

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use ftpgate_storage::{
    ByteStream, Capabilities, DirEntry, EntryKind, EntryStream, ErrorKind, Metadata, Result,
    StorageBackend, StorageError, Upload, VPath, WriteMode,
};
use futures::stream::{self, StreamExt};

/// Size of the slices a read yields.
const READ_CHUNK: usize = 256 * 1024;

/// A storage backend that keeps everything in memory.
///
/// Cloning gives another handle onto the same tree.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

impl MemoryBackend {
    /// An empty backend: only `/` exists.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// Locks the tree; a panic elsewhere while holding it cannot leave the tree half-changed
/// (every mutation is a single insert or remove), so a poisoned lock is still usable.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

struct State {
    root: DirNode,
    /// Source of `unique` facts; never reused.
    next_id: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            root: DirNode::new(0, SystemTime::now()),
            next_id: 1,
        }
    }
}

enum Node {
    File(FileNode),
    Dir(DirNode),
}

struct FileNode {
    data: Content,
    modified: SystemTime,
    id: u64,
}

struct DirNode {
    children: BTreeMap<String, Node>,
    modified: SystemTime,
    id: u64,
}

/// A file's content: the chunks it was uploaded in, in order, never joined.
///
/// Cloning is a reference count, so reads and uploads take snapshots under the lock
/// in constant time.
#[derive(Clone)]
struct Content {
    /// No chunk is empty.
    chunks: Arc<[Bytes]>,
    /// The sum of the chunks' lengths.
    len: usize,
}

impl Default for Content {
    fn default() -> Self {
        Self::from_chunks(Vec::new())
    }
}

impl Content {
    /// Takes `chunks` as they are (empty ones are dropped); no byte is copied.
    fn from_chunks(mut chunks: Vec<Bytes>) -> Self {
        chunks.retain(|c| !c.is_empty());
        let len = chunks.iter().map(Bytes::len).sum();
        Self {
            chunks: chunks.into(),
            len,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The first `n` bytes (`n <= len`) as chunks, the one straddling `n` sliced.
    fn prefix(&self, n: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut left = n;
        for chunk in self.chunks.iter() {
            if left == 0 {
                break;
            }
            if chunk.len() <= left {
                out.push(chunk.clone());
                left -= chunk.len();
            } else {
                out.push(chunk.slice(..left));
                left = 0;
            }
        }
        out
    }

    /// Where byte `offset` (`<= len`) lies: the rest of the chunk holding it (empty at
    /// the end of the content) and the index of the chunk after that one.
    fn seek(&self, offset: usize) -> (Bytes, usize) {
        let mut start = 0;
        for (i, chunk) in self.chunks.iter().enumerate() {
            let end = start + chunk.len();
            if offset < end {
                return (chunk.slice(offset - start..), i + 1);
            }
            start = end;
        }
        (Bytes::new(), self.chunks.len())
    }

    /// The bytes from `offset` (`<= len`) to the end, in slices of at most
    /// [`READ_CHUNK`] that never span two stored chunks.
    fn stream_from(self, offset: usize) -> ByteStream {
        let (current, next) = self.seek(offset);
        stream::unfold(
            (self, current, next),
            |(content, mut current, mut next)| async move {
                while current.is_empty() {
                    current = content.chunks.get(next)?.clone();
                    next += 1;
                }
                let piece = current.split_to(current.len().min(READ_CHUNK));
                Some((Ok(piece), (content, current, next)))
            },
        )
        .boxed()
    }
}

impl DirNode {
    fn new(id: u64, modified: SystemTime) -> Self {
        Self {
            children: BTreeMap::new(),
            modified,
            id,
        }
    }
}

impl Node {
    fn meta(&self) -> Metadata {
        match self {
            Node::File(f) => Metadata {
                kind: EntryKind::File,
                size: f.data.len() as u64,
                modified: Some(f.modified),
                unique: Some(format!("mem{:x}", f.id)),
            },
            Node::Dir(d) => d.meta(),
        }
    }
}

impl DirNode {
    fn meta(&self) -> Metadata {
        Metadata {
            kind: EntryKind::Dir,
            size: 0,
            modified: Some(self.modified),
            unique: Some(format!("mem{:x}", self.id)),
        }
    }
}

impl State {
    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The directory at `path`: `NotFound` if a segment is missing, `NotADirectory` if
    /// one is a file.
    fn dir(&self, path: &VPath) -> Result<&DirNode> {
        let mut dir = &self.root;
        for seg in path.segments() {
            match dir.children.get(seg) {
                Some(Node::Dir(d)) => dir = d,
                Some(Node::File(_)) => return Err(not_a_dir(path)),
                None => return Err(StorageError::not_found(path)),
            }
        }
        Ok(dir)
    }

    fn dir_mut(&mut self, path: &VPath) -> Result<&mut DirNode> {
        let mut dir = &mut self.root;
        for seg in path.segments() {
            match dir.children.get_mut(seg) {
                Some(Node::Dir(d)) => dir = d,
                Some(Node::File(_)) => return Err(not_a_dir(path)),
                None => return Err(StorageError::not_found(path)),
            }
        }
        Ok(dir)
    }

    /// Metadata of any entry, the root included.
    fn meta(&self, path: &VPath) -> Result<Metadata> {
        match split(path) {
            None => Ok(self.root.meta()),
            Some((parent, name)) => self
                .dir(&parent)?
                .children
                .get(name)
                .map(Node::meta)
                .ok_or_else(|| StorageError::not_found(path)),
        }
    }

    /// The content of the file at `path`, `None` if it does not exist (its parent
    /// must); `IsADirectory` for a directory.
    fn file(&self, path: &VPath) -> Result<Option<Content>> {
        match self.child(path)? {
            _ if path.is_root() => Err(is_a_dir(path)),
            None => Ok(None),
            Some(Node::File(f)) => Ok(Some(f.data.clone())),
            Some(Node::Dir(_)) => Err(is_a_dir(path)),
        }
    }

    /// The entry at a non-root path, if it exists (its parent must).
    fn child(&self, path: &VPath) -> Result<Option<&Node>> {
        match split(path) {
            None => Ok(None),
            Some((parent, name)) => Ok(self.dir(&parent)?.children.get(name)),
        }
    }
}

/// `(parent, name)` of a non-root path.
fn split(path: &VPath) -> Option<(VPath, &str)> {
    Some((path.parent()?, path.file_name()?))
}

fn not_a_dir(path: &VPath) -> StorageError {
    StorageError::new(
        ErrorKind::NotADirectory,
        format!("{path}: a path segment is not a directory"),
    )
}

fn is_a_dir(path: &VPath) -> StorageError {
    StorageError::new(ErrorKind::IsADirectory, format!("{path}: is a directory"))
}

#[async_trait]
impl StorageBackend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn stat(&self, path: &VPath) -> Result<Metadata> {
        self.lock().meta(path)
    }

    async fn list(&self, dir: &VPath) -> Result<EntryStream> {
        let entries: Vec<Result<DirEntry>> = {
            let state = self.lock();
            state
                .dir(dir)?
                .children
                .iter()
                .map(|(name, node)| {
                    Ok(DirEntry {
                        name: name.clone(),
                        meta: node.meta(),
                    })
                })
                .collect()
        };
        Ok(stream::iter(entries).boxed())
    }

    async fn read(&self, path: &VPath, offset: u64) -> Result<ByteStream> {
        let data = match self.lock().file(path)? {
            Some(data) => data,
            None => return Err(StorageError::not_found(path)),
        };
        let start = usize::try_from(offset)
            .ok()
            .filter(|&o| o <= data.len())
            .ok_or_else(|| {
                StorageError::new(
                    ErrorKind::InvalidInput,
                    format!("{path}: offset {offset} is beyond the size {}", data.len()),
                )
            })?;
        Ok(data.stream_from(start))
    }

    async fn create(&self, path: &VPath, mode: WriteMode) -> Result<Box<dyn Upload>> {
        let prefix = {
            let existing = self.lock().file(path)?;
            match mode {
                WriteMode::Truncate => Vec::new(),
                WriteMode::CreateNew => {
                    if existing.is_some() {
                        return Err(already_exists(path));
                    }
                    Vec::new()
                }
                WriteMode::Append => existing
                    .map(|data| data.chunks.to_vec())
                    .unwrap_or_default(),
                WriteMode::Offset(n) => {
                    let data = existing.unwrap_or_default();
                    usize::try_from(n)
                        .ok()
                        .filter(|&n| n <= data.len())
                        .map(|n| data.prefix(n))
                        .ok_or_else(|| {
                            StorageError::new(
                                ErrorKind::InvalidInput,
                                format!("{path}: offset {n} is beyond the size {}", data.len()),
                            )
                        })?
                }
            }
        };
        Ok(Box::new(MemoryUpload {
            state: Arc::clone(&self.state),
            path: path.clone(),
            create_new: mode == WriteMode::CreateNew,
            chunks: prefix,
        }))
    }

    async fn delete(&self, path: &VPath) -> Result<()> {
        let Some((parent, name)) = split(path) else {
            return Err(is_a_dir(&VPath::root()));
        };
        let mut state = self.lock();
        let dir = state.dir_mut(&parent)?;
        match dir.children.get(name) {
            None => return Err(StorageError::not_found(path)),
            Some(Node::Dir(_)) => return Err(is_a_dir(path)),
            Some(Node::File(_)) => {}
        }
        dir.children.remove(name);
        dir.modified = SystemTime::now();
        Ok(())
    }

    async fn mkdir(&self, path: &VPath) -> Result<()> {
        let Some((parent, name)) = split(path) else {
            return Err(already_exists(path));
        };
        let mut state = self.lock();
        let id = state.alloc_id();
        let now = SystemTime::now();
        let dir = state.dir_mut(&parent)?;
        if dir.children.contains_key(name) {
            return Err(already_exists(path));
        }
        dir.children
            .insert(name.to_owned(), Node::Dir(DirNode::new(id, now)));
        dir.modified = now;
        Ok(())
    }

    async fn rmdir(&self, path: &VPath) -> Result<()> {
        let Some((parent, name)) = split(path) else {
            return Err(StorageError::root_refused("remove"));
        };
        let mut state = self.lock();
        let dir = state.dir_mut(&parent)?;
        match dir.children.get(name) {
            None => return Err(StorageError::not_found(path)),
            Some(Node::File(_)) => {
                return Err(StorageError::new(
                    ErrorKind::NotADirectory,
                    format!("{path}: not a directory"),
                ))
            }
            Some(Node::Dir(d)) if !d.children.is_empty() => {
                return Err(StorageError::new(
                    ErrorKind::DirectoryNotEmpty,
                    format!("{path}: directory not empty"),
                ))
            }
            Some(Node::Dir(_)) => {}
        }
        dir.children.remove(name);
        dir.modified = SystemTime::now();
        Ok(())
    }

    async fn rename(&self, from: &VPath, to: &VPath) -> Result<()> {
        let (Some((from_parent, from_name)), Some((to_parent, to_name))) = (split(from), split(to))
        else {
            return Err(StorageError::root_refused("rename"));
        };
        let mut state = self.lock();
        // Every check first, so a failure changes nothing.
        let source_is_dir = match state.child(from)? {
            None => return Err(StorageError::not_found(from)),
            Some(node) => matches!(node, Node::Dir(_)),
        };
        if from == to {
            return Ok(());
        }
        if source_is_dir && to.starts_with(from) {
            return Err(StorageError::new(
                ErrorKind::InvalidInput,
                format!("{from}: cannot move a directory into itself ({to})"),
            ));
        }
        match (source_is_dir, state.child(to)?) {
            (_, None) => {}
            (false, Some(Node::File(_))) => {}
            (false, Some(Node::Dir(_))) => return Err(is_a_dir(to)),
            (true, Some(Node::File(_))) => {
                return Err(StorageError::new(
                    ErrorKind::NotADirectory,
                    format!("{to}: not a directory"),
                ))
            }
            (true, Some(Node::Dir(d))) if !d.children.is_empty() => {
                return Err(StorageError::new(
                    ErrorKind::DirectoryNotEmpty,
                    format!("{to}: directory not empty"),
                ))
            }
            (true, Some(Node::Dir(_))) => {}
        }
        let now = SystemTime::now();
        let src_dir = state.dir_mut(&from_parent)?;
        let node = src_dir
            .children
            .remove(from_name)
            .ok_or_else(|| StorageError::not_found(from))?;
        src_dir.modified = now;
        match state.dir_mut(&to_parent) {
            Ok(dst_dir) => {
                dst_dir.children.insert(to_name.to_owned(), node);
                dst_dir.modified = now;
                Ok(())
            }
            Err(e) => {
                // Unreachable after the checks above; put the source back regardless.
                if let Ok(src_dir) = state.dir_mut(&from_parent) {
                    src_dir.children.insert(from_name.to_owned(), node);
                }
                Err(e)
            }
        }
    }

    async fn set_modified(&self, path: &VPath, time: SystemTime) -> Result<()> {
        let mut state = self.lock();
        match split(path) {
            None => state.root.modified = time,
            Some((parent, name)) => match state.dir_mut(&parent)?.children.get_mut(name) {
                None => return Err(StorageError::not_found(path)),
                Some(Node::File(f)) => f.modified = time,
                Some(Node::Dir(d)) => d.modified = time,
            },
        }
        Ok(())
    }
}

fn already_exists(path: &VPath) -> StorageError {
    StorageError::new(ErrorKind::AlreadyExists, format!("{path}: already exists"))
}

/// An upload into a [`MemoryBackend`]: chunks are kept here until `complete`.
struct MemoryUpload {
    state: Arc<Mutex<State>>,
    path: VPath,
    create_new: bool,
    /// The kept prefix (for `Append`/`Offset`) followed by the written chunks; none
    /// is empty.
    chunks: Vec<Bytes>,
}

#[async_trait]
impl Upload for MemoryUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if !data.is_empty() {
            self.chunks.push(data);
        }
        Ok(())
    }

    async fn complete(self: Box<Self>) -> Result<Metadata> {
        // Built before locking: turning the chunk list into a shared one allocates.
        let data = Content::from_chunks(self.chunks);
        let Some((parent, name)) = split(&self.path) else {
            return Err(is_a_dir(&VPath::root()));
        };
        let mut state = lock(&self.state);
        let id = state.alloc_id();
        let now = SystemTime::now();
        let dir = state.dir_mut(&parent)?;
        match dir.children.get(name) {
            Some(Node::Dir(_)) => return Err(is_a_dir(&self.path)),
            Some(Node::File(_)) if self.create_new => return Err(already_exists(&self.path)),
            _ => {}
        }
        let node = Node::File(FileNode {
            data,
            modified: now,
            id,
        });
        let meta = node.meta();
        dir.children.insert(name.to_owned(), node);
        dir.modified = now;
        Ok(meta)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
