//! Listing formatters: LIST (Unix `ls -l`, what FIELD.md's legacy clients parse),
//! NLST (names only, RFC 959 §4.1.3) and the MLSD/MLST facts of RFC 3659 §7.
//! Pure functions; the data channel writes what they return.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use ftpgate_storage::{DirEntry, EntryKind, Metadata};

use crate::auth::{Permission, User};

/// Which MLST facts are reported (RFC 3659 §7.8, set by `OPTS MLST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// `type`
    pub kind: bool,
    /// `size`
    pub size: bool,
    /// `modify`
    pub modify: bool,
    /// `perm`
    pub perm: bool,
    /// `unique`
    pub unique: bool,
}

impl Default for Facts {
    fn default() -> Self {
        Self {
            kind: true,
            size: true,
            modify: true,
            perm: true,
            unique: true,
        }
    }
}

impl Facts {
    /// Parses `OPTS MLST type;size;` — unknown facts are ignored (RFC 3659 §7.9).
    pub fn parse(list: &str) -> Self {
        let mut f = Facts {
            kind: false,
            size: false,
            modify: false,
            perm: false,
            unique: false,
        };
        for fact in list.split(';').map(|s| s.trim().to_ascii_lowercase()) {
            match fact.as_str() {
                "type" => f.kind = true,
                "size" => f.size = true,
                "modify" => f.modify = true,
                "perm" => f.perm = true,
                "unique" => f.unique = true,
                _ => {}
            }
        }
        f
    }

    /// The fact list for FEAT and the `OPTS MLST` reply: `type*;size*;…`.
    pub fn feat_string(&self) -> String {
        let mark = |on: bool| if on { "*" } else { "" };
        format!(
            "type{};size{};modify{};perm{};unique{};",
            mark(self.kind),
            mark(self.size),
            mark(self.modify),
            mark(self.perm),
            mark(self.unique)
        )
    }

    /// The selected fact names for the `200 MLST OPTS` reply.
    pub fn selected(&self) -> String {
        let mut s = String::new();
        for (on, name) in [
            (self.kind, "type"),
            (self.size, "size"),
            (self.modify, "modify"),
            (self.perm, "perm"),
            (self.unique, "unique"),
        ] {
            if on {
                s.push_str(name);
                s.push(';');
            }
        }
        s
    }
}

/// True when a name can be sent in a listing line (no CR/LF that would forge lines).
pub fn name_is_listable(name: &str) -> bool {
    !name.contains(['\r', '\n'])
}

/// A time as UTC without panicking: chrono's `From<SystemTime>` panics beyond its
/// range (year ±262,143), and a storage can hold any time (another S3 client's
/// `x-amz-meta-mtime`, a file's mtime on a 64-bit file system). Clamped to the
/// range; the S3 backend already ignores times after year 9999.
fn utc(t: SystemTime) -> DateTime<Utc> {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => (
            i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
            0,
        ),
    };
    DateTime::from_timestamp(secs, nanos).unwrap_or(if secs < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// RFC 3659 §2.3 time-val `YYYYMMDDHHMMSS` in UTC.
pub fn time_val(t: SystemTime) -> String {
    let dt = utc(t);
    dt.format("%Y%m%d%H%M%S").to_string()
}

/// A time for listings; a missing one is reported as "now" rather than 1970
/// (FileZilla hides entries with zero timestamps).
fn effective_time(meta: &Metadata, now: SystemTime) -> SystemTime {
    match meta.modified {
        Some(t) if t > UNIX_EPOCH => t,
        _ => now,
    }
}

/// One `ls -l` line (without CRLF): `-rw-r--r-- 1 ftp ftp 1234 Jan 02 03:04 name`.
/// Entries from the last ~six months show the time, older (or future) ones the year.
pub fn list_line(entry: &DirEntry, now: SystemTime) -> String {
    let (mode, size) = match entry.meta.kind {
        EntryKind::Dir => ("drwxr-xr-x", 0),
        EntryKind::File => ("-rw-r--r--", entry.meta.size),
    };
    let t = effective_time(&entry.meta, now);
    let dt = utc(t);
    let six_months = Duration::from_secs(182 * 24 * 3600);
    let recent = t <= now + Duration::from_secs(3600)
        && now
            .duration_since(t)
            .map(|d| d < six_months)
            .unwrap_or(true);
    let date = if recent {
        dt.format("%b %d %H:%M").to_string()
    } else {
        dt.format("%b %d  %Y").to_string()
    };
    format!("{mode} 1 ftp ftp {size:>12} {date} {}", entry.name)
}

/// RFC 3659 §7.5.5 `perm` fact for `meta`, from the user's permissions.
pub fn perm_fact(meta: &Metadata, user: &User, append: bool) -> String {
    let mut p = String::new();
    match meta.kind {
        EntryKind::File => {
            if user.may(Permission::Write) && append {
                p.push('a');
            }
            if user.may(Permission::Delete) {
                p.push('d');
            }
            if user.may(Permission::Rename) {
                p.push('f');
            }
            if user.may(Permission::Read) {
                p.push('r');
            }
            if user.may(Permission::Write) {
                p.push('w');
            }
        }
        EntryKind::Dir => {
            if user.may(Permission::Write) {
                p.push('c');
            }
            if user.may(Permission::Delete) {
                p.push_str("dp");
            }
            p.push('e');
            if user.may(Permission::Rename) {
                p.push('f');
            }
            if user.may(Permission::List) {
                p.push('l');
            }
            if user.may(Permission::Mkdir) {
                p.push('m');
            }
        }
    }
    p
}

/// RFC 3659 §7.2 entry: `fact=value;…; name` (the caller adds CRLF, and for MLST
/// the leading space).
pub fn mlsx_line(name: &str, meta: &Metadata, facts: Facts, perm: &str, now: SystemTime) -> String {
    let mut s = String::new();
    if facts.kind {
        s.push_str(if meta.is_dir() {
            "type=dir;"
        } else {
            "type=file;"
        });
    }
    if facts.size && meta.is_file() {
        s.push_str(&format!("size={};", meta.size));
    }
    if facts.modify {
        s.push_str(&format!("modify={};", time_val(effective_time(meta, now))));
    }
    if facts.perm {
        s.push_str(&format!("perm={perm};"));
    }
    if facts.unique {
        if let Some(u) = &meta.unique {
            s.push_str(&format!("unique={u};"));
        }
    }
    s.push(' ');
    s.push_str(name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn times_out_of_chrono_range_do_not_panic() {
        let far = UNIX_EPOCH + Duration::from_secs(99_999_999_999_999);
        assert!(time_val(far).starts_with('+') || time_val(far).len() >= 14);
        let entry = DirEntry {
            name: "f".into(),
            meta: Metadata {
                kind: EntryKind::File,
                size: 1,
                modified: Some(far),
                unique: None,
            },
        };
        assert!(list_line(&entry, SystemTime::now()).ends_with(" f"));
        assert_eq!(
            time_val(UNIX_EPOCH + Duration::from_secs(1)),
            "19700101000001"
        );
    }

    fn entry(name: &str, kind: EntryKind, size: u64, secs: u64) -> DirEntry {
        DirEntry {
            name: name.into(),
            meta: Metadata {
                kind,
                size,
                modified: Some(UNIX_EPOCH + Duration::from_secs(secs)),
                unique: None,
            },
        }
    }

    #[test]
    fn ls_recent_and_old() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14
        let recent = entry("a b.txt", EntryKind::File, 1234, 1_699_000_000);
        assert_eq!(
            list_line(&recent, now),
            "-rw-r--r-- 1 ftp ftp         1234 Nov 03 08:26 a b.txt"
        );
        let old = entry("old", EntryKind::Dir, 99, 1_500_000_000);
        assert_eq!(
            list_line(&old, now),
            "drwxr-xr-x 1 ftp ftp            0 Jul 14  2017 old"
        );
    }

    #[test]
    fn missing_time_is_not_epoch() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut d = entry("d", EntryKind::Dir, 0, 0);
        d.meta.modified = None;
        let line = mlsx_line("d", &d.meta, Facts::default(), "el", now);
        assert!(line.contains("modify=20231114"), "{line}");
        assert!(!list_line(&d, now).contains("1970"));
    }

    #[test]
    fn mlsx_facts() {
        let now = UNIX_EPOCH;
        let mut f = entry("f.bin", EntryKind::File, 5, 1_577_934_245);
        f.meta.unique = Some("801g2a".into());
        assert_eq!(
            mlsx_line("f.bin", &f.meta, Facts::default(), "rw", now),
            "type=file;size=5;modify=20200102030405;perm=rw;unique=801g2a; f.bin"
        );
        let only = Facts::parse("type;SIZE;bogus");
        assert_eq!(only.selected(), "type;size;");
        assert_eq!(
            mlsx_line("f.bin", &f.meta, only, "rw", now),
            "type=file;size=5; f.bin"
        );
        assert_eq!(only.feat_string(), "type*;size*;modify;perm;unique;");
    }

    #[test]
    fn perms() {
        let u = User {
            permissions: HashSet::from([Permission::Write]),
            ..User::from_config(&crate::config::UserConfig::new("u", "")).expect("a valid entry")
        };
        let f = entry("f", EntryKind::File, 0, 1);
        assert_eq!(perm_fact(&f.meta, &u, true), "aw");
        let d = entry("d", EntryKind::Dir, 0, 1);
        assert_eq!(perm_fact(&d.meta, &u, true), "ce");
    }

    #[test]
    fn listable_names() {
        assert!(name_is_listable("a b#%"));
        assert!(!name_is_listable("a\r\n226 forged"));
    }
}
