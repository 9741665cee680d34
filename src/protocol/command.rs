//! The command parser: one control line → one typed [`Command`] (pure, no I/O).
//!
//! RFC 959 §5.3: a command is a verb of up to four letters (case-insensitive),
//! optionally followed by a single space and an argument. Unknown verbs become
//! [`Command::Unknown`] (answered 502); a known verb with a bad argument becomes
//! [`Command::Invalid`] (answered 501 or 504).

use crate::protocol::code;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// RFC 959 §3.1.1 data types, with the forms legacy devices send (`type i`,
/// `TYPE L 8`, `TYPE A N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferType {
    /// `A` (optionally with format `N`): ASCII.
    Ascii,
    /// `I` or `L 8`: image, byte for byte.
    Image,
}

/// The argument of `EPSV` (RFC 2428 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsvArg {
    /// Plain `EPSV`: any protocol.
    Any,
    /// `EPSV 1` / `EPSV 2`: a network protocol number.
    Protocol(u8),
    /// `EPSV ALL`: from now on only EPSV is accepted for data connections.
    All,
}

/// A password: its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A parsed control-channel command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name` (RFC 959 §4.1.1).
    User(String),
    /// `PASS secret`.
    Pass(Password),
    /// `ACCT info` (accepted, not needed).
    Acct,
    /// `QUIT`.
    Quit,
    /// `REIN`: back to the state right after connecting.
    Rein,
    /// `NOOP`.
    Noop,
    /// `SYST` (answered `215 UNIX Type: L8`).
    Syst,
    /// `FEAT` (RFC 2389 §3).
    Feat,
    /// `OPTS command args` (RFC 2389 §4).
    Opts(String),
    /// `HELP [verb]`.
    Help(Option<String>),
    /// `STAT [path]`.
    Stat(Option<String>),
    /// `ALLO n` (accepted, storage needs no reservation).
    Allo,
    /// `TYPE`.
    Type(TransferType),
    /// `MODE S` (only stream mode is offered).
    Mode(char),
    /// `STRU F` (only file structure is offered).
    Stru(char),
    /// `PWD` / `XPWD`.
    Pwd,
    /// `CWD` / `XCWD path`.
    Cwd(String),
    /// `CDUP` / `XCUP`.
    Cdup,
    /// `MKD` / `XMKD path`.
    Mkd(String),
    /// `RMD` / `XRMD path`.
    Rmd(String),
    /// `DELE path`.
    Dele(String),
    /// `RNFR path`.
    Rnfr(String),
    /// `RNTO path`.
    Rnto(String),
    /// `LIST [-flags] [path]`.
    List(Option<String>),
    /// `NLST [path]`.
    Nlst(Option<String>),
    /// `MLSD [path]` (RFC 3659 §7).
    Mlsd(Option<String>),
    /// `MLST [path]` (RFC 3659 §7).
    Mlst(Option<String>),
    /// `SIZE path` (RFC 3659 §4).
    Size(String),
    /// `MDTM path` (RFC 3659 §3).
    Mdtm(String),
    /// `MFMT YYYYMMDDHHMMSS path` (draft-somers-ftp-mfxx).
    Mfmt {
        /// Seconds since the Unix epoch, UTC.
        time: i64,
        /// The file.
        path: String,
    },
    /// `RETR path`.
    Retr(String),
    /// `STOR path`.
    Stor(String),
    /// `STOU [name]` (RFC 1123 §4.1.2.9).
    Stou(Option<String>),
    /// `APPE path`.
    Appe(String),
    /// `REST n` (RFC 3659 §5, stream mode restart marker).
    Rest(u64),
    /// `ABOR`.
    Abor,
    /// `PASV`.
    Pasv,
    /// `EPSV [1|2|ALL]` (RFC 2428 §3).
    Epsv(EpsvArg),
    /// `PORT h1,h2,h3,h4,p1,p2`.
    Port(SocketAddr),
    /// `EPRT |proto|addr|port|` (RFC 2428 §2).
    Eprt(SocketAddr),
    /// `AUTH mechanism` (RFC 4217 §4), mechanism upper-cased.
    Auth(String),
    /// `PBSZ n` (RFC 4217 §8; must be 0 for TLS).
    Pbsz(u64),
    /// `PROT C|S|E|P` (RFC 4217 §9), upper-cased.
    Prot(char),
    /// `CCC` (RFC 4217 §6): back to a clear control channel.
    Ccc,
    /// `SITE subcommand`.
    Site(String),
    /// `HASH path` (draft-bryan-ftpext-hash-02 §3): the digest of the algorithm
    /// selected with `OPTS HASH`.
    Hash(String),
    /// `XSHA256`/`XSHA1`/`XMD5`/`XCRC path`: the legacy one-algorithm digest commands
    /// (no RFC; ProFTPD's mod_digest and Serv-U answer `250 <hex>`).
    XHash {
        /// The algorithm the verb names.
        algorithm: crate::checksum::Algorithm,
        /// The file.
        path: String,
    },
    /// `AUTH`, `PBSZ`, `PROT`, `CCC`, … known but not offered here.
    NotImplemented(String),
    /// A known verb with an argument it cannot take.
    Invalid {
        /// The verb, upper-case.
        verb: String,
        /// Why.
        reason: &'static str,
        /// 501 (syntax) or 504 (parameter not implemented).
        code: u16,
    },
    /// An unknown verb (502).
    Unknown(String),
    /// An empty line.
    Empty,
}

impl Command {
    /// The verb for logs and metrics (never includes arguments, so never secrets).
    pub fn verb(&self) -> &str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Acct => "ACCT",
            Command::Quit => "QUIT",
            Command::Rein => "REIN",
            Command::Noop => "NOOP",
            Command::Syst => "SYST",
            Command::Feat => "FEAT",
            Command::Opts(_) => "OPTS",
            Command::Help(_) => "HELP",
            Command::Stat(_) => "STAT",
            Command::Allo => "ALLO",
            Command::Type(_) => "TYPE",
            Command::Mode(_) => "MODE",
            Command::Stru(_) => "STRU",
            Command::Pwd => "PWD",
            Command::Cwd(_) => "CWD",
            Command::Cdup => "CDUP",
            Command::Mkd(_) => "MKD",
            Command::Rmd(_) => "RMD",
            Command::Dele(_) => "DELE",
            Command::Rnfr(_) => "RNFR",
            Command::Rnto(_) => "RNTO",
            Command::List(_) => "LIST",
            Command::Nlst(_) => "NLST",
            Command::Mlsd(_) => "MLSD",
            Command::Mlst(_) => "MLST",
            Command::Size(_) => "SIZE",
            Command::Mdtm(_) => "MDTM",
            Command::Mfmt { .. } => "MFMT",
            Command::Retr(_) => "RETR",
            Command::Stor(_) => "STOR",
            Command::Stou(_) => "STOU",
            Command::Appe(_) => "APPE",
            Command::Rest(_) => "REST",
            Command::Abor => "ABOR",
            Command::Pasv => "PASV",
            Command::Epsv(_) => "EPSV",
            Command::Port(_) => "PORT",
            Command::Eprt(_) => "EPRT",
            Command::Site(_) => "SITE",
            Command::Auth(_) => "AUTH",
            Command::Pbsz(_) => "PBSZ",
            Command::Prot(_) => "PROT",
            Command::Ccc => "CCC",
            Command::Hash(_) => "HASH",
            Command::XHash { algorithm, .. } => algorithm.legacy_verb(),
            Command::NotImplemented(v) | Command::Invalid { verb: v, .. } => v,
            Command::Unknown(_) => "UNKNOWN",
            Command::Empty => "",
        }
    }
}

/// Verbs listed by `HELP` (RFC 959 §4.1.3).
pub const VERBS: &[&str] = &[
    "ABOR", "ACCT", "ALLO", "APPE", "CDUP", "CWD", "DELE", "EPRT", "EPSV", "FEAT", "HASH", "HELP",
    "LIST", "MDTM", "MFMT", "MKD", "MLSD", "MLST", "MODE", "NLST", "NOOP", "OPTS", "PASS", "PASV",
    "PORT", "PWD", "QUIT", "REIN", "REST", "RETR", "RMD", "RNFR", "RNTO", "SITE", "SIZE", "STAT",
    "STOR", "STOU", "STRU", "SYST", "TYPE", "USER", "XCRC", "XCUP", "XCWD", "XMD5", "XMKD", "XPWD",
    "XRMD", "XSHA1", "XSHA256",
];

fn invalid(verb: &str, reason: &'static str) -> Command {
    Command::Invalid {
        verb: verb.to_owned(),
        reason,
        code: code::ARGUMENT_SYNTAX_ERROR,
    }
}

fn not_impl_param(verb: &str, reason: &'static str) -> Command {
    Command::Invalid {
        verb: verb.to_owned(),
        reason,
        code: code::NOT_IMPLEMENTED_FOR_PARAMETER,
    }
}

/// Parses one control line (without its CRLF).
pub fn parse(line: &str) -> Command {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim_start();
    if trimmed.is_empty() {
        return Command::Empty;
    }
    let (verb_raw, arg_raw) = match trimmed.find(' ') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let verb = verb_raw.to_ascii_uppercase();
    // Path arguments keep inner and trailing spaces (names may have them); only
    // the single separator space is consumed. Other arguments are trimmed.
    let path_arg = arg_raw;
    let arg = arg_raw.trim();
    let opt = |s: &str| -> Option<String> {
        if s.is_empty() {
            None
        } else {
            Some(s.to_owned())
        }
    };
    let need_path = |ctor: fn(String) -> Command| -> Command {
        if path_arg.trim().is_empty() {
            invalid(&verb, "a path argument is required")
        } else {
            ctor(path_arg.to_owned())
        }
    };
    match verb.as_str() {
        "USER" => {
            if arg.is_empty() {
                invalid(&verb, "a user name is required")
            } else {
                Command::User(arg.to_owned())
            }
        }
        "PASS" => Command::Pass(Password(path_arg.to_owned())),
        "ACCT" => Command::Acct,
        "QUIT" => Command::Quit,
        "REIN" => Command::Rein,
        "NOOP" => Command::Noop,
        "SYST" => Command::Syst,
        "FEAT" => Command::Feat,
        "OPTS" => {
            if arg.is_empty() {
                invalid(&verb, "OPTS needs a command name")
            } else {
                Command::Opts(arg.to_owned())
            }
        }
        "HELP" => Command::Help(opt(arg)),
        "STAT" => Command::Stat(opt(path_arg.trim_start()).filter(|s| !s.trim().is_empty())),
        "ALLO" => Command::Allo,
        "TYPE" => parse_type(arg),
        "MODE" => parse_single_letter(&verb, arg, 'S', Command::Mode),
        "STRU" => parse_single_letter(&verb, arg, 'F', Command::Stru),
        "PWD" | "XPWD" => Command::Pwd,
        "CWD" | "XCWD" => need_path(Command::Cwd),
        "CDUP" | "XCUP" => Command::Cdup,
        "MKD" | "XMKD" => need_path(Command::Mkd),
        "RMD" | "XRMD" => need_path(Command::Rmd),
        "DELE" => need_path(Command::Dele),
        "RNFR" => need_path(Command::Rnfr),
        "RNTO" => need_path(Command::Rnto),
        "LIST" => Command::List(strip_ls_flags(path_arg)),
        "NLST" => Command::Nlst(strip_ls_flags(path_arg)),
        "MLSD" => Command::Mlsd(opt(path_arg)),
        "MLST" => Command::Mlst(opt(path_arg)),
        "SIZE" => need_path(Command::Size),
        "MDTM" => need_path(Command::Mdtm),
        "MFMT" => parse_mfmt(path_arg),
        "RETR" => need_path(Command::Retr),
        "STOR" => need_path(Command::Stor),
        "STOU" => Command::Stou(opt(path_arg)),
        "APPE" => need_path(Command::Appe),
        "REST" => match arg.parse::<u64>() {
            Ok(n) => Command::Rest(n),
            Err(_) => invalid(&verb, "REST needs a byte offset"),
        },
        "ABOR" => Command::Abor,
        "PASV" => Command::Pasv,
        "EPSV" => match arg.to_ascii_uppercase().as_str() {
            "" => Command::Epsv(EpsvArg::Any),
            "ALL" => Command::Epsv(EpsvArg::All),
            "1" => Command::Epsv(EpsvArg::Protocol(1)),
            "2" => Command::Epsv(EpsvArg::Protocol(2)),
            _ => Command::Invalid {
                verb,
                reason: "network protocol not supported, use (1,2)",
                code: code::PROTOCOL_NOT_SUPPORTED,
            },
        },
        "PORT" => match parse_port(arg) {
            Some(a) => Command::Port(a),
            None => invalid(&verb, "PORT needs h1,h2,h3,h4,p1,p2"),
        },
        "EPRT" => match parse_eprt(arg) {
            Ok(a) => Command::Eprt(a),
            Err(c) => c,
        },
        "SITE" => Command::Site(arg.to_owned()),
        "HASH" => need_path(Command::Hash),
        "XSHA256" | "XSHA1" | "XMD5" | "XCRC" => {
            let algorithm = crate::checksum::Algorithm::from_legacy_verb(&verb)
                .unwrap_or(crate::checksum::Algorithm::Sha256);
            if path_arg.trim().is_empty() {
                invalid(&verb, "a path argument is required")
            } else {
                Command::XHash {
                    algorithm,
                    path: legacy_hash_path(path_arg),
                }
            }
        }
        "AUTH" => match arg.to_ascii_uppercase().as_str() {
            "" => invalid(&verb, "AUTH needs a mechanism (TLS)"),
            m => Command::Auth(m.to_owned()),
        },
        "PBSZ" => match arg.parse::<u64>() {
            Ok(n) => Command::Pbsz(n),
            Err(_) => invalid(&verb, "PBSZ needs a number (0)"),
        },
        "PROT" => match arg.to_ascii_uppercase().as_str() {
            l @ ("C" | "S" | "E" | "P") => Command::Prot(l.chars().next().unwrap_or('C')),
            _ => Command::Invalid {
                verb,
                reason: "PROT level must be C, S, E or P",
                code: code::NOT_IMPLEMENTED_FOR_PARAMETER,
            },
        },
        "CCC" => Command::Ccc,
        "ADAT" | "MIC" | "CONF" | "ENC" | "SMNT" | "REIN2" => Command::NotImplemented(verb),
        _ => Command::Unknown(verb),
    }
}

/// True for an HTTP request line (`GET / HTTP/1.1`, `CONNECT host:443
/// HTTP/1.1` …): something that is not an FTP client is talking to the FTP port.
pub fn looks_like_http(line: &str) -> bool {
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    version.starts_with("HTTP/")
        && matches!(
            method,
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "OPTIONS" | "CONNECT" | "PATCH" | "TRACE"
        )
}

/// `TYPE A`, `TYPE A N`, `TYPE I`, `TYPE L 8` (RFC 959 §4.1.2), case-insensitive.
fn parse_type(arg: &str) -> Command {
    let up = arg.to_ascii_uppercase();
    let parts: Vec<&str> = up.split_whitespace().collect();
    match parts.as_slice() {
        ["A"] | ["A", "N"] => Command::Type(TransferType::Ascii),
        ["I"] | ["L", "8"] | ["L8"] => Command::Type(TransferType::Image),
        ["A", _] | ["E"] | ["E", _] | ["L", _] => not_impl_param("TYPE", "type not implemented"),
        _ => invalid("TYPE", "unrecognised TYPE"),
    }
}

fn parse_single_letter(verb: &str, arg: &str, only: char, ctor: fn(char) -> Command) -> Command {
    let mut chars = arg.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.to_ascii_uppercase() == only => ctor(only),
        (Some(c), None) if c.is_ascii_alphabetic() => {
            not_impl_param(verb, "only one form is implemented")
        }
        _ => invalid(verb, "a single letter is required"),
    }
}

/// `LIST -la dir` → `Some("dir")`; `LIST -a` → `None`. Flags (`-` followed by
/// letters) are what `ls`-minded clients such as curlftpfs send; they never
/// change the output format.
fn strip_ls_flags(arg: &str) -> Option<String> {
    let mut rest = arg;
    loop {
        let t = rest.trim_start();
        if let Some(after) = t.strip_prefix('-') {
            let end = after.find(' ').unwrap_or(after.len());
            let flags = &after[..end];
            if !flags.is_empty() && flags.chars().all(|c| c.is_ascii_alphabetic()) {
                rest = &after[end..];
                continue;
            }
        }
        break;
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let rest = if rest.trim().is_empty() { "" } else { rest };
    if rest.is_empty() {
        None
    } else {
        Some(rest.to_owned())
    }
}

fn parse_mfmt(arg: &str) -> Command {
    let Some((ts, path)) = arg.split_once(' ') else {
        return invalid("MFMT", "MFMT needs YYYYMMDDHHMMSS and a path");
    };
    match parse_timeval(ts) {
        Some(time) if !path.trim().is_empty() => Command::Mfmt {
            time,
            path: path.to_owned(),
        },
        _ => invalid("MFMT", "MFMT needs YYYYMMDDHHMMSS and a path"),
    }
}

/// The path of a legacy digest command. Some clients add a byte range after the name
/// (`XMD5 "name" 0 100`, `XCRC name 0 100`); ranges are not supported, so a quoted name
/// is unquoted and everything else is the name.
fn legacy_hash_path(arg: &str) -> String {
    let t = arg.trim_start();
    if let Some(rest) = t.strip_prefix('"') {
        if let Some((name, _)) = rest.split_once('"') {
            return name.to_owned();
        }
    }
    arg.to_owned()
}

/// Parses an RFC 3659 §2.3 time-val (`YYYYMMDDHHMMSS[.sss]`, UTC) into Unix seconds.
pub fn parse_timeval(s: &str) -> Option<i64> {
    let main = s.split('.').next()?;
    if main.len() != 14 || !main.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |a: usize, b: usize| main[a..b].parse::<u32>().ok();
    let date = chrono::NaiveDate::from_ymd_opt(n(0, 4)? as i32, n(4, 6)?, n(6, 8)?)?;
    let t = date.and_hms_opt(n(8, 10)?, n(10, 12)?, n(12, 14)?)?;
    Some(t.and_utc().timestamp())
}

/// `PORT h1,h2,h3,h4,p1,p2` (RFC 959 §4.1.2).
fn parse_port(arg: &str) -> Option<SocketAddr> {
    let nums: Vec<u8> = arg
        .split(',')
        .map(|p| p.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .ok()?;
    if nums.len() != 6 {
        return None;
    }
    let ip = Ipv4Addr::new(nums[0], nums[1], nums[2], nums[3]);
    let port = u16::from(nums[4]) << 8 | u16::from(nums[5]);
    Some(SocketAddr::new(IpAddr::V4(ip), port))
}

/// `EPRT |1|132.235.1.2|6275|` or `|2|::1|5282|` (RFC 2428 §2); the first
/// character is the delimiter.
fn parse_eprt(arg: &str) -> Result<SocketAddr, Command> {
    let bad = || invalid("EPRT", "EPRT needs |proto|address|port|");
    let mut chars = arg.chars();
    let delim = chars.next().ok_or_else(bad)?;
    if !(33..=126).contains(&(delim as u32)) {
        return Err(bad());
    }
    let parts: Vec<&str> = arg.split(delim).collect();
    if parts.len() != 5 || !parts[0].is_empty() || !parts[4].is_empty() {
        return Err(bad());
    }
    let ip: IpAddr = parts[2].parse().map_err(|_| bad())?;
    let port: u16 = parts[3].parse().map_err(|_| bad())?;
    match (parts[1], ip) {
        ("1", IpAddr::V4(_)) | ("2", IpAddr::V6(_)) => Ok(SocketAddr::new(ip, port)),
        ("1", _) | ("2", _) => Err(bad()),
        _ => Err(Command::Invalid {
            verb: "EPRT".into(),
            reason: "network protocol not supported, use (1,2)",
            code: code::PROTOCOL_NOT_SUPPORTED,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_case_insensitive() {
        assert_eq!(parse("user bob"), Command::User("bob".into()));
        assert_eq!(parse("Quit"), Command::Quit);
        assert_eq!(parse("xpwd"), Command::Pwd);
        assert_eq!(parse("XCUP"), Command::Cdup);
        assert_eq!(parse("xmkd d"), Command::Mkd("d".into()));
        assert_eq!(parse("XRMD d"), Command::Rmd("d".into()));
        assert_eq!(parse("XCWD d"), Command::Cwd("d".into()));
    }

    #[test]
    fn empty_and_unknown() {
        assert_eq!(parse(""), Command::Empty);
        assert_eq!(parse("   "), Command::Empty);
        assert_eq!(parse("FOO bar"), Command::Unknown("FOO".into()));
        assert!(looks_like_http("GET / HTTP/1.1"));
        assert!(looks_like_http("CONNECT example.com:443 HTTP/1.1"));
        assert!(looks_like_http("POST /x HTTP/1.0"));
        assert!(!looks_like_http("GET file.txt"));
        assert!(!looks_like_http("RETR GET HTTP/1.1"));
        assert!(!looks_like_http("USER HTTP/1.1"));
        assert_eq!(parse("auth tls"), Command::Auth("TLS".into()));
        assert_eq!(parse("PBSZ 0"), Command::Pbsz(0));
        assert_eq!(parse("prot p"), Command::Prot('P'));
        assert!(matches!(
            parse("PROT X"),
            Command::Invalid { code: 504, .. }
        ));
        assert!(matches!(parse("AUTH"), Command::Invalid { .. }));
        assert_eq!(parse("CCC"), Command::Ccc);
    }

    #[test]
    fn password_is_redacted_and_kept_verbatim() {
        let c = parse("PASS  sp ace ");
        assert_eq!(c, Command::Pass(Password(" sp ace ".into())));
        assert!(!format!("{c:?}").contains("sp ace"));
        assert_eq!(parse("PASS"), Command::Pass(Password(String::new())));
    }

    #[test]
    fn type_forms() {
        for (s, t) in [
            ("TYPE I", TransferType::Image),
            ("type i", TransferType::Image),
            ("TYPE L 8", TransferType::Image),
            ("TYPE A", TransferType::Ascii),
            ("TYPE A N", TransferType::Ascii),
            ("type a n", TransferType::Ascii),
        ] {
            assert_eq!(parse(s), Command::Type(t), "{s}");
        }
        assert!(matches!(
            parse("TYPE E"),
            Command::Invalid { code: 504, .. }
        ));
        assert!(matches!(
            parse("TYPE A T"),
            Command::Invalid { code: 504, .. }
        ));
        assert!(matches!(
            parse("TYPE L 7"),
            Command::Invalid { code: 504, .. }
        ));
        assert!(matches!(
            parse("TYPE X"),
            Command::Invalid { code: 501, .. }
        ));
        assert!(matches!(parse("TYPE"), Command::Invalid { code: 501, .. }));
    }

    #[test]
    fn mode_stru() {
        assert_eq!(parse("MODE S"), Command::Mode('S'));
        assert_eq!(parse("mode s"), Command::Mode('S'));
        assert!(matches!(
            parse("MODE B"),
            Command::Invalid { code: 504, .. }
        ));
        assert_eq!(parse("STRU F"), Command::Stru('F'));
        assert!(matches!(
            parse("STRU R"),
            Command::Invalid { code: 504, .. }
        ));
        assert!(matches!(parse("STRU"), Command::Invalid { code: 501, .. }));
    }

    #[test]
    fn paths_keep_spaces() {
        assert_eq!(
            parse("STOR my file.txt"),
            Command::Stor("my file.txt".into())
        );
        assert_eq!(parse("RETR  lead"), Command::Retr(" lead".into()));
        assert_eq!(parse("DELE trail "), Command::Dele("trail ".into()));
        assert!(matches!(parse("RETR"), Command::Invalid { code: 501, .. }));
        assert!(matches!(parse("CWD "), Command::Invalid { code: 501, .. }));
    }

    #[test]
    fn list_flags() {
        assert_eq!(parse("LIST"), Command::List(None));
        assert_eq!(parse("LIST -a"), Command::List(None));
        assert_eq!(parse("LIST -la dir"), Command::List(Some("dir".into())));
        assert_eq!(
            parse("LIST -l -a my dir"),
            Command::List(Some("my dir".into()))
        );
        assert_eq!(parse("NLST sub"), Command::Nlst(Some("sub".into())));
        assert_eq!(parse("LIST -"), Command::List(Some("-".into())));
    }

    #[test]
    fn rest_and_size() {
        assert_eq!(parse("REST 100"), Command::Rest(100));
        assert!(matches!(parse("REST -1"), Command::Invalid { .. }));
        assert!(matches!(parse("REST x"), Command::Invalid { .. }));
        assert_eq!(parse("SIZE a"), Command::Size("a".into()));
    }

    #[test]
    fn port_forms() {
        assert_eq!(
            parse("PORT 127,0,0,1,4,1"),
            Command::Port("127.0.0.1:1025".parse().unwrap())
        );
        assert!(matches!(parse("PORT 127,0,0,1,4"), Command::Invalid { .. }));
        assert!(matches!(
            parse("PORT 127,0,0,1,4,256"),
            Command::Invalid { .. }
        ));
        assert!(matches!(parse("PORT"), Command::Invalid { .. }));
    }

    #[test]
    fn eprt_forms() {
        assert_eq!(
            parse("EPRT |1|127.0.0.1|6275|"),
            Command::Eprt("127.0.0.1:6275".parse().unwrap())
        );
        assert_eq!(
            parse("EPRT |2|::1|5282|"),
            Command::Eprt("[::1]:5282".parse().unwrap())
        );
        assert_eq!(
            parse("EPRT !1!10.0.0.1!21!"),
            Command::Eprt("10.0.0.1:21".parse().unwrap())
        );
        assert!(matches!(
            parse("EPRT |3|::1|5282|"),
            Command::Invalid { code: 522, .. }
        ));
        assert!(matches!(
            parse("EPRT |1|::1|5282|"),
            Command::Invalid { code: 501, .. }
        ));
        assert!(matches!(
            parse("EPRT |1|1.2.3.4|99999|"),
            Command::Invalid { code: 501, .. }
        ));
        assert!(matches!(
            parse("EPRT garbage"),
            Command::Invalid { code: 501, .. }
        ));
    }

    #[test]
    fn epsv_forms() {
        assert_eq!(parse("EPSV"), Command::Epsv(EpsvArg::Any));
        assert_eq!(parse("epsv all"), Command::Epsv(EpsvArg::All));
        assert_eq!(parse("EPSV 2"), Command::Epsv(EpsvArg::Protocol(2)));
        assert!(matches!(
            parse("EPSV 3"),
            Command::Invalid { code: 522, .. }
        ));
    }

    #[test]
    fn mfmt_and_timeval() {
        assert_eq!(
            parse("MFMT 20200102030405 a b.txt"),
            Command::Mfmt {
                time: 1577934245,
                path: "a b.txt".into()
            }
        );
        assert!(matches!(parse("MFMT 2020 x"), Command::Invalid { .. }));
        assert!(matches!(
            parse("MFMT 20201302030405 x"),
            Command::Invalid { .. }
        ));
        assert!(matches!(
            parse("MFMT 20200102030405"),
            Command::Invalid { .. }
        ));
        assert_eq!(parse_timeval("19700101000000.123"), Some(0));
    }

    #[test]
    fn stou_stat_help_opts() {
        assert_eq!(parse("STOU"), Command::Stou(None));
        assert_eq!(parse("STOU scan"), Command::Stou(Some("scan".into())));
        assert_eq!(parse("STAT"), Command::Stat(None));
        assert_eq!(parse("STAT dir"), Command::Stat(Some("dir".into())));
        assert_eq!(parse("HELP"), Command::Help(None));
        assert_eq!(parse("OPTS UTF8 ON"), Command::Opts("UTF8 ON".into()));
        assert!(matches!(parse("OPTS"), Command::Invalid { .. }));
        assert_eq!(
            parse("SITE CHMOD 644 x"),
            Command::Site("CHMOD 644 x".into())
        );
        assert_eq!(parse("ALLO 100"), Command::Allo);
        assert_eq!(parse("ABOR"), Command::Abor);
    }

    #[test]
    fn verb_never_leaks_arguments() {
        assert_eq!(parse("PASS secret").verb(), "PASS");
        assert_eq!(parse("RETR /x").verb(), "RETR");
    }
}
