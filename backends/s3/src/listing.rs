//! [`ListingCache`]: listings of small directories kept for a few seconds and kept
//! current by this process's own writes.
//!
//! Tools that mount a bucket over FTP list a directory around every file they write
//! (rclone lists the parent after each upload to read back size and time) and STOR
//! must know that its name is not a directory. Without a cache each of those is an S3
//! LIST; with it a directory is listed about once per `list_cache_secs`.
//!
//! Rules that keep it correct:
//! - Only complete listings of one page (≤ 1,000 keys) are kept; larger directories
//!   always stream from S3.
//! - Every write this process makes (upload, delete, rename, MKD, RMD, MFMT) is applied
//!   to the cached listing of its directory, so a client never misses its own or
//!   another session's change on this gateway. A write that lands while a listing is
//!   being fetched is recorded and replayed onto that listing before it is kept, so a
//!   LIST response that predates the write cannot bring the old state back.
//! - Writes by anyone else (another replica, another S3 client) show in listings after
//!   at most the TTL. `list_cache_secs = 0` turns the cache off.
//! - A kept listing may confirm that a name exists ([`ListingCache::lookup`] finding
//!   it), never decide that it does not: `stat` asks S3 on a miss, so commands on a
//!   name another client just wrote succeed at once (S3 is strongly consistent).
//! - One fetch per directory at a time: sessions that want a listing being fetched
//!   wait for it ([`Join::Wait`]) instead of sending the same LIST (rclone's eight
//!   transfers list a new directory at the same moment).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ftpgate_storage::{DirEntry, EntryKind, Metadata, VPath};
use tokio::sync::watch;

use crate::meta::make_room;

/// How long a session waits for another session's fetch of the same listing before
/// it sends its own.
const FILL_WAIT: Duration = Duration::from_secs(30);

/// Most directories kept before expired ones are dropped (and, if still full, all).
const MAX_DIRS: usize = 10_000;

/// One change to a directory's entries.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// The entry `name` now exists with this metadata (a file or directory of the
    /// same name as another kind can coexist on S3).
    Put(String, Metadata),
    /// No file and no directory named `name` exists any more.
    Remove(String),
    /// The file `name` got a new modification time; an unknown name drops the listing.
    Touch(String, SystemTime),
    /// The listing can no longer be trusted (drop it).
    Forget,
}

/// The entries of one directory keyed by (name, is a directory).
type Entries = BTreeMap<(String, bool), Metadata>;

#[derive(Default)]
struct DirState {
    /// A complete listing and when its fetch began.
    ready: Option<(Instant, Entries)>,
    /// Fetches in flight, each with the changes made since it began.
    fills: Vec<(u64, Vec<Change>)>,
    /// Signalled whenever a fetch ends (kept or not); waiters subscribe.
    done: Option<watch::Sender<()>>,
}

impl DirState {
    fn subscribe(&mut self) -> watch::Receiver<()> {
        self.done
            .get_or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    /// Neither a listing nor a fetch: the state can go.
    fn idle(&self) -> bool {
        self.ready.is_none() && self.fills.is_empty()
    }

    fn fill_ended(&self) {
        if let Some(tx) = &self.done {
            tx.send_replace(());
        }
    }
}

/// Waits until the fetch `done` was subscribed to ends (or [`FILL_WAIT`] passes).
pub(crate) async fn fill_ended(mut done: watch::Receiver<()>) {
    let _ = tokio::time::timeout(FILL_WAIT, done.changed()).await;
}

/// What [`ListingCache::join`] found for a directory.
pub(crate) enum Join<'a> {
    /// A fresh listing is kept: these entries.
    Ready(Vec<DirEntry>),
    /// Fetch it and [`Fill::finish`] it.
    Lead(Fill<'a>),
    /// Another session is fetching it: wait with [`fill_ended`], then
    /// join again.
    Wait(watch::Receiver<()>),
    /// The cache is off: fetch without keeping.
    Off,
}

/// Applies `change` to `entries`; `false` when the result cannot be trusted.
fn apply(entries: &mut Entries, change: &Change) -> bool {
    match change {
        Change::Put(name, meta) => {
            entries.insert((name.clone(), meta.is_dir()), meta.clone());
            true
        }
        Change::Remove(name) => {
            entries.remove(&(name.clone(), false));
            entries.remove(&(name.clone(), true));
            // An S3 directory with no keys left does not exist; S3 says which.
            !entries.is_empty()
        }
        Change::Touch(name, time) => match entries.get_mut(&(name.clone(), false)) {
            Some(meta) => {
                meta.modified = Some(*time);
                true
            }
            None => false,
        },
        Change::Forget => false,
    }
}

/// The cache; see the module documentation.
pub(crate) struct ListingCache {
    ttl: Duration,
    dirs: Mutex<HashMap<String, DirState>>,
    next_fill: AtomicU64,
}

/// A listing being fetched; dropping it without [`Fill::finish`] discards it.
pub(crate) struct Fill<'a> {
    cache: &'a ListingCache,
    dir: String,
    id: u64,
    began: Instant,
}

fn dir_key(dir: &VPath) -> String {
    dir.as_relative()
}

impl ListingCache {
    /// A cache whose listings live `ttl`; zero disables it.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            dirs: Mutex::new(HashMap::new()),
            next_fill: AtomicU64::new(0),
        }
    }

    fn fresh(&self, began: Instant) -> bool {
        began.elapsed() < self.ttl
    }

    /// The entries of `dir` (sorted by name) when a fresh listing is kept.
    pub(crate) fn get(&self, dir: &VPath) -> Option<Vec<DirEntry>> {
        let dirs = self.dirs.lock().ok()?;
        let (began, entries) = dirs.get(&dir_key(dir))?.ready.as_ref()?;
        self.fresh(*began).then(|| {
            entries
                .iter()
                .map(|((name, _), meta)| DirEntry {
                    name: name.clone(),
                    meta: meta.clone(),
                })
                .collect()
        })
    }

    /// What a fresh listing of the parent says about `path`: `Some(None)` when it has
    /// no such entry, `Some(Some(meta))` when it has one (a file wins over a directory
    /// of the same name), `None` when no fresh listing is kept.
    pub(crate) fn lookup(&self, path: &VPath) -> Option<Option<Metadata>> {
        self.with_entries(path, |entries, name| {
            let file = entries.get(&(name.clone(), false));
            file.or_else(|| entries.get(&(name, true))).cloned()
        })
    }

    /// Whether a fresh listing of the parent has a directory named like `path`;
    /// `None` when no fresh listing is kept.
    pub(crate) fn has_dir(&self, path: &VPath) -> Option<bool> {
        self.with_entries(path, |entries, name| entries.contains_key(&(name, true)))
    }

    fn with_entries<T>(&self, path: &VPath, f: impl FnOnce(&Entries, String) -> T) -> Option<T> {
        let parent = path.parent()?;
        let name = path.file_name()?.to_owned();
        let dirs = self.dirs.lock().ok()?;
        let (began, entries) = dirs.get(&dir_key(&parent))?.ready.as_ref()?;
        self.fresh(*began).then(|| f(entries, name))
    }

    /// The kept listing of `dir`, or the role of a caller that needs one: lead a
    /// fetch, or (when `may_wait` and a fetch is in flight) wait for it.
    pub(crate) fn join(&self, dir: &VPath, may_wait: bool) -> Join<'_> {
        if self.ttl.is_zero() {
            return Join::Off;
        }
        if let Some(entries) = self.get(dir) {
            return Join::Ready(entries);
        }
        if may_wait {
            if let Some(rx) = self.in_flight(dir) {
                return Join::Wait(rx);
            }
        }
        match self.begin(dir) {
            Some(fill) => Join::Lead(fill),
            None => Join::Off,
        }
    }

    /// A receiver signalled when the fetch of `dir` in flight ends; `None` when none is.
    pub(crate) fn in_flight(&self, dir: &VPath) -> Option<watch::Receiver<()>> {
        let mut dirs = self.dirs.lock().ok()?;
        let state = dirs.get_mut(&dir_key(dir))?;
        (!state.fills.is_empty()).then(|| state.subscribe())
    }

    /// Starts fetching a listing of `dir`; `None` when the cache is off.
    pub(crate) fn begin(&self, dir: &VPath) -> Option<Fill<'_>> {
        if self.ttl.is_zero() {
            return None;
        }
        let id = self.next_fill.fetch_add(1, Ordering::Relaxed);
        let key = dir_key(dir);
        let mut dirs = self.dirs.lock().ok()?;
        make_room(&mut dirs, MAX_DIRS, |_, s| {
            !s.fills.is_empty() || s.ready.as_ref().is_some_and(|(t, _)| self.fresh(*t))
        });
        dirs.entry(key.clone())
            .or_default()
            .fills
            .push((id, Vec::new()));
        Some(Fill {
            cache: self,
            dir: key,
            id,
            began: Instant::now(),
        })
    }

    /// Records a change this process made in `dir`.
    pub(crate) fn change(&self, dir: &VPath, change: Change) {
        if self.ttl.is_zero() {
            return;
        }
        let key = dir_key(dir);
        let Ok(mut dirs) = self.dirs.lock() else {
            return;
        };
        let Some(state) = dirs.get_mut(&key) else {
            return;
        };
        if let Some((began, entries)) = state.ready.as_mut() {
            if !self.fresh(*began) || !apply(entries, &change) {
                state.ready = None;
            }
        }
        for (_, changes) in &mut state.fills {
            changes.push(change.clone());
        }
        if state.idle() {
            dirs.remove(&key);
        }
    }

    /// Records the change `make(name)` of `path` in its parent's listing; `false` for
    /// the root, which has no parent.
    fn change_in_parent(&self, path: &VPath, make: impl FnOnce(String) -> Change) -> bool {
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => {
                self.change(&parent, make(name.to_owned()));
                true
            }
            _ => false,
        }
    }

    /// [`Change::Put`] of `path` in its parent.
    pub(crate) fn put(&self, path: &VPath, meta: Metadata) {
        self.change_in_parent(path, |name| Change::Put(name, meta));
    }

    /// `path` is gone: removed from its parent's listing, and the grandparent's
    /// listing dropped (the parent may have vanished with its last key).
    pub(crate) fn vanished(&self, path: &VPath) {
        if self.change_in_parent(path, Change::Remove) {
            if let Some(parent) = path.parent() {
                self.forget_parent(&parent);
            }
        }
    }

    /// Drops the listing of `path`'s parent (a write whose outcome is unknown).
    pub(crate) fn forget_parent(&self, path: &VPath) {
        if let Some(parent) = path.parent() {
            self.change(&parent, Change::Forget);
        }
    }

    /// [`Change::Touch`] of `path` in its parent.
    pub(crate) fn touched(&self, path: &VPath, time: SystemTime) {
        self.change_in_parent(path, |name| Change::Touch(name, time));
    }

    /// Drops the listings of `dir` and of every directory below it (after RMD).
    pub(crate) fn forget_under(&self, dir: &VPath) {
        if self.ttl.is_zero() {
            return;
        }
        let key = dir_key(dir);
        let below = format!("{key}/");
        if let Ok(mut dirs) = self.dirs.lock() {
            for (k, state) in dirs.iter_mut() {
                if *k == key || k.starts_with(&below) || key.is_empty() {
                    state.ready = None;
                    for (_, changes) in &mut state.fills {
                        changes.push(Change::Forget);
                    }
                }
            }
            dirs.retain(|_, s| !s.idle());
        }
    }
}

impl Fill<'_> {
    /// Keeps the complete listing `entries`, with the changes made while it was
    /// fetched applied on top.
    pub(crate) fn finish(self, entries: &[DirEntry]) {
        let Ok(mut dirs) = self.cache.dirs.lock() else {
            return;
        };
        let Some(state) = dirs.get_mut(&self.dir) else {
            return;
        };
        let Some(pos) = state.fills.iter().position(|(id, _)| *id == self.id) else {
            return;
        };
        let (_, changes) = state.fills.swap_remove(pos);
        let mut map: Entries = entries
            .iter()
            .map(|e| {
                (
                    (e.name.clone(), e.meta.kind == EntryKind::Dir),
                    e.meta.clone(),
                )
            })
            .collect();
        let trusted = changes.iter().all(|c| apply(&mut map, c));
        // Never replace a newer kept listing with an older fetch.
        let newer = state
            .ready
            .as_ref()
            .is_some_and(|(began, _)| *began > self.began);
        if trusted && !newer {
            state.ready = Some((self.began, map));
        }
        state.fill_ended();
        // `Drop` below finds no fill and does nothing more.
    }
}

impl Drop for Fill<'_> {
    fn drop(&mut self) {
        let Ok(mut dirs) = self.cache.dirs.lock() else {
            return;
        };
        if let Some(state) = dirs.get_mut(&self.dir) {
            let before = state.fills.len();
            state.fills.retain(|(id, _)| *id != self.id);
            if state.fills.len() != before {
                state.fill_ended();
            }
            if state.idle() {
                dirs.remove(&self.dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> VPath {
        VPath::parse(s).unwrap()
    }

    fn file(size: u64) -> Metadata {
        Metadata {
            kind: EntryKind::File,
            size,
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000)),
            unique: None,
        }
    }

    fn dir() -> Metadata {
        Metadata {
            kind: EntryKind::Dir,
            size: 0,
            modified: Some(SystemTime::now()),
            unique: None,
        }
    }

    fn entry(name: &str, meta: Metadata) -> DirEntry {
        DirEntry {
            name: name.into(),
            meta,
        }
    }

    fn names(cache: &ListingCache, d: &str) -> Option<Vec<String>> {
        cache
            .get(&p(d))
            .map(|v| v.into_iter().map(|e| e.name).collect())
    }

    #[test]
    fn a_finished_listing_is_served_and_updated_by_own_writes() {
        let c = ListingCache::new(Duration::from_secs(60));
        assert!(c.get(&p("/d")).is_none());
        c.begin(&p("/d"))
            .unwrap()
            .finish(&[entry("b", file(1)), entry("sub", dir())]);
        assert_eq!(names(&c, "/d").unwrap(), ["b", "sub"]);
        c.put(&p("/d/a"), file(7));
        assert_eq!(names(&c, "/d").unwrap(), ["a", "b", "sub"]);
        assert_eq!(c.lookup(&p("/d/a")).unwrap().unwrap().size, 7);
        assert!(c.lookup(&p("/d/zzz")).unwrap().is_none());
        assert!(c.lookup(&p("/d/sub")).unwrap().unwrap().is_dir());
        assert_eq!(c.has_dir(&p("/d/sub")), Some(true));
        assert_eq!(c.has_dir(&p("/d/a")), Some(false));
        assert_eq!(c.has_dir(&p("/elsewhere/a")), None);
        // A file and a directory of one name (other S3 clients can make that).
        c.put(&p("/d/sub"), file(2));
        assert!(!c.lookup(&p("/d/sub")).unwrap().unwrap().is_dir());
        assert_eq!(c.has_dir(&p("/d/sub")), Some(true));
        c.vanished(&p("/d/sub"));
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        c.touched(&p("/d/a"), t);
        assert_eq!(c.lookup(&p("/d/a")).unwrap().unwrap().modified, Some(t));
        c.vanished(&p("/d/b"));
        assert_eq!(names(&c, "/d").unwrap(), ["a"]);
        // Touching a name the listing does not know drops it.
        c.touched(&p("/d/unknown"), t);
        assert!(c.get(&p("/d")).is_none());
        assert!(c.lookup(&p("/d/a")).is_none());
    }

    #[test]
    fn writes_during_a_fetch_are_replayed_onto_it() {
        let c = ListingCache::new(Duration::from_secs(60));
        let fill = c.begin(&p("/d")).unwrap();
        // Uploaded and deleted while the LIST was on its way; its response
        // predates both.
        c.put(&p("/d/new"), file(3));
        c.vanished(&p("/d/old"));
        fill.finish(&[entry("old", file(1)), entry("keep", file(2))]);
        assert_eq!(names(&c, "/d").unwrap(), ["keep", "new"]);
    }

    #[test]
    fn untrusted_or_abandoned_fetches_are_not_kept() {
        let c = ListingCache::new(Duration::from_secs(60));
        let fill = c.begin(&p("/d")).unwrap();
        c.forget_under(&p("/"));
        fill.finish(&[entry("x", file(1))]);
        assert!(c.get(&p("/d")).is_none());
        drop(c.begin(&p("/d")).unwrap());
        assert!(c.get(&p("/d")).is_none());
        assert!(c.dirs.lock().unwrap().is_empty(), "no state left behind");
        // The last entry removed: S3 decides whether the directory still exists.
        c.begin(&p("/e")).unwrap().finish(&[entry("only", file(1))]);
        c.vanished(&p("/e/only"));
        assert!(c.get(&p("/e")).is_none());
    }

    #[test]
    fn an_older_fetch_never_replaces_a_newer_listing() {
        let c = ListingCache::new(Duration::from_secs(60));
        let old = c.begin(&p("/d")).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        c.begin(&p("/d")).unwrap().finish(&[entry("new", file(1))]);
        old.finish(&[entry("old", file(1))]);
        assert_eq!(names(&c, "/d").unwrap(), ["new"]);
    }

    #[test]
    fn removing_a_directory_drops_every_listing_below_and_the_grandparent() {
        let c = ListingCache::new(Duration::from_secs(60));
        for d in ["/", "/a", "/a/b", "/a/b/c", "/ab"] {
            c.begin(&p(d)).unwrap().finish(&[entry("f", file(1))]);
        }
        c.forget_under(&p("/a/b"));
        assert!(c.get(&p("/a/b")).is_none());
        assert!(c.get(&p("/a/b/c")).is_none());
        assert!(c.get(&p("/a")).is_some());
        assert!(c.get(&p("/ab")).is_some(), "a sibling with the same prefix");
        c.vanished(&p("/a/f"));
        assert!(c.get(&p("/")).is_none(), "grandparent dropped");
    }

    #[test]
    fn one_fetch_at_a_time_others_wait_for_it() {
        let c = ListingCache::new(Duration::from_secs(60));
        let Join::Lead(fill) = c.join(&p("/d"), true) else {
            panic!("the first caller leads")
        };
        let Join::Wait(rx) = c.join(&p("/d"), true) else {
            panic!("the second waits")
        };
        let probe = c.in_flight(&p("/d")).expect("a fetch is in flight");
        assert!(!rx.has_changed().unwrap());
        fill.finish(&[entry("f", file(1))]);
        assert!(rx.has_changed().unwrap() && probe.has_changed().unwrap());
        assert!(matches!(c.join(&p("/d"), true), Join::Ready(e) if e.len() == 1));
        assert!(c.in_flight(&p("/d")).is_none());
        // A fetch that ends without a listing wakes its waiters too; a caller that
        // may not wait leads its own fetch.
        let Join::Lead(failed) = c.join(&p("/e"), true) else {
            panic!()
        };
        let Join::Wait(rx) = c.join(&p("/e"), true) else {
            panic!()
        };
        let second = c.join(&p("/e"), false);
        assert!(matches!(second, Join::Lead(_)));
        assert!(!rx.has_changed().unwrap());
        drop(failed);
        assert!(rx.has_changed().unwrap());
        drop(second);
        assert!(matches!(
            ListingCache::new(Duration::ZERO).join(&p("/e"), true),
            Join::Off
        ));
    }

    #[test]
    fn expired_and_disabled() {
        let c = ListingCache::new(Duration::from_millis(20));
        c.begin(&p("/d")).unwrap().finish(&[entry("f", file(1))]);
        assert!(c.get(&p("/d")).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.get(&p("/d")).is_none());
        assert!(c.lookup(&p("/d/f")).is_none());
        let off = ListingCache::new(Duration::ZERO);
        assert!(off.begin(&p("/d")).is_none());
        off.put(&p("/d/f"), file(1));
        assert!(off.get(&p("/d")).is_none());
    }
}
