//! Property-based fuzzing (proptest) of the three pieces that see hostile input
//! first: the command parser, the control-line codec and the virtual-path
//! normaliser.
//!
//! Each property runs `PROPTEST_CASES` cases (default per test below, chosen so
//! the file finishes in ~10–20 s in a debug build). A long run:
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz`.

use std::net::{Ipv4Addr, SocketAddr};

use bytes::BytesMut;
use ftpgate::protocol::codec::{line_from_bytes, LineEvent, LineReader, ReadSome};
use ftpgate::protocol::command::{parse, Command};
use ftpgate_storage::{validate_segment, VPath, MAX_PATH_LEN, MAX_SEGMENT_LEN};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// `PROPTEST_CASES` when set, else `default`. No failure files are written into
/// the source tree; a failure prints the minimal input instead.
fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        max_global_rejects: cases.max(1024),
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Command parser
// ---------------------------------------------------------------------------

const VERBS: &[&str] = &[
    "USER", "PASS", "ACCT", "QUIT", "REIN", "NOOP", "SYST", "FEAT", "OPTS", "HELP", "STAT", "ALLO",
    "TYPE", "MODE", "STRU", "PWD", "XPWD", "CWD", "XCWD", "CDUP", "XCUP", "MKD", "XMKD", "RMD",
    "XRMD", "DELE", "RNFR", "RNTO", "LIST", "NLST", "MLSD", "MLST", "SIZE", "MDTM", "MFMT", "RETR",
    "STOR", "STOU", "APPE", "REST", "ABOR", "PASV", "EPSV", "PORT", "EPRT", "SITE", "AUTH", "PBSZ",
    "PROT", "CCC", "ADAT", "MIC", "CONF", "ENC", "GET", "POST", "CONNECT",
];

/// A verb in random case (known, or random letters).
fn verb() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (prop::sample::select(VERBS), any::<u64>()).prop_map(|(v, bits)| {
            v.chars()
                .enumerate()
                .map(|(i, c)| {
                    if bits >> (i % 64) & 1 == 1 {
                        c.to_ascii_lowercase()
                    } else {
                        c
                    }
                })
                .collect()
        }),
        1 => "[A-Za-z]{0,6}",
    ]
}

/// Arguments full of the characters parsers trip over.
fn hostile_arg() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(" ".to_owned()),
        Just("  ".to_owned()),
        Just(",".to_owned()),
        Just("|".to_owned()),
        Just("||".to_owned()),
        Just("-".to_owned()),
        Just("-la".to_owned()),
        Just("..".to_owned()),
        Just("/".to_owned()),
        Just("\\".to_owned()),
        Just("\0".to_owned()),
        Just("\r".to_owned()),
        Just("\n".to_owned()),
        Just("\u{ff}".to_owned()),
        Just("\u{fffd}".to_owned()),
        Just("日本".to_owned()),
        "[0-9]{1,25}",
        "-?[0-9]{1,6}",
        "[0-9]{14}(\\.[0-9]{0,4})?",
        "[a-zA-Z]{1,4}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

/// The `Command` variant a path verb must produce.
type PathCtor = fn(String) -> Command;

/// A known verb that takes a path argument, and the constructor it must produce.
fn path_verb() -> impl Strategy<Value = (&'static str, PathCtor)> {
    let table: Vec<(&'static str, PathCtor)> = vec![
        ("CWD", Command::Cwd),
        ("XCWD", Command::Cwd),
        ("MKD", Command::Mkd),
        ("XMKD", Command::Mkd),
        ("RMD", Command::Rmd),
        ("XRMD", Command::Rmd),
        ("DELE", Command::Dele),
        ("RNFR", Command::Rnfr),
        ("RNTO", Command::Rnto),
        ("SIZE", Command::Size),
        ("MDTM", Command::Mdtm),
        ("RETR", Command::Retr),
        ("STOR", Command::Stor),
        ("APPE", Command::Appe),
    ];
    prop::sample::select(table)
}

fn random_case(s: &str, bits: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if bits >> (i % 64) & 1 == 1 {
                c.to_ascii_lowercase()
            } else {
                c
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(config(5_000))]

    /// Any string at all: no panic, and `verb()` never leaks an argument.
    #[test]
    fn parse_never_panics_on_any_string(line in any::<String>()) {
        let cmd = parse(&line);
        let _ = cmd.verb();
        let _ = format!("{cmd:?}");
    }

    /// Verb-shaped lines with hostile arguments: no panic, a password is never
    /// shown by `Debug`, and the verb is reported upper-case.
    #[test]
    fn parse_never_panics_on_verb_lines(v in verb(), sep in "[ \t]{0,2}", arg in hostile_arg()) {
        let line = format!("{v}{sep}{arg}");
        let cmd = parse(&line);
        let verb = cmd.verb().to_owned();
        prop_assert_eq!(verb.to_ascii_uppercase(), verb.clone());
        if let Command::Pass(_) = &cmd {
            let shown = format!("{:?}", cmd);
            let secret = arg.trim_end_matches(['\r', '\n']);
            if secret.len() > 3 && !"Password(<redacted>)".contains(secret) {
                prop_assert!(!shown.contains(secret), "{}", shown);
            }
        }
    }

    /// Path verbs keep their argument byte for byte (inner, leading and trailing
    /// spaces included), whatever the verb's case.
    #[test]
    fn path_verbs_round_trip(
        (v, ctor) in path_verb(),
        bits in any::<u64>(),
        arg in ("[^\r\n]{0,30}", "[^\r\n\\s]", "[^\r\n]{0,30}").prop_map(|(a, b, c)| a + &b + &c),
    ) {
        // Never all whitespace (that is "no argument", a 501).
        prop_assert!(!arg.trim().is_empty());
        let line = format!("{} {arg}", random_case(v, bits));
        prop_assert_eq!(parse(&line), ctor(arg.clone()));
        // The CRLF a socket line may still carry changes nothing.
        let with_crlf = format!("{line}\r\n");
        prop_assert_eq!(parse(&with_crlf), ctor(arg));
    }

    /// USER trims, PASS keeps the secret verbatim (spaces are legal in passwords).
    #[test]
    fn user_and_pass_round_trip(name in "[!-~]{1,40}", pw in "[^\r\n]{0,60}") {
        prop_assert_eq!(parse(&format!("USER {name}")), Command::User(name.clone()));
        prop_assert_eq!(parse(&format!("user  {name} ")), Command::User(name));
        match parse(&format!("PASS {pw}")) {
            Command::Pass(p) => prop_assert_eq!(p.0, pw),
            other => prop_assert!(false, "PASS parsed as {:?}", other),
        }
    }

    /// REST, PORT and EPRT round-trip every value they can carry.
    #[test]
    fn numeric_arguments_round_trip(n in any::<u64>(), ip in any::<[u8; 4]>(), port in any::<u16>()) {
        prop_assert_eq!(parse(&format!("REST {n}")), Command::Rest(n));
        let addr = SocketAddr::from((Ipv4Addr::from(ip), port));
        let port_line = format!(
            "PORT {},{},{},{},{},{}", ip[0], ip[1], ip[2], ip[3], port >> 8, port & 255
        );
        prop_assert_eq!(parse(&port_line), Command::Port(addr));
        let eprt = format!("EPRT |1|{}|{port}|", Ipv4Addr::from(ip));
        prop_assert_eq!(parse(&eprt), Command::Eprt(addr));
    }

    /// Out-of-range PORT numbers are refused, never wrapped into a valid address.
    #[test]
    fn port_out_of_range_is_invalid(a in 256u32..100_000, idx in 0usize..6) {
        let mut parts = ["127".to_owned(), "0".into(), "0".into(), "1".into(), "4".into(), "1".into()];
        parts[idx] = a.to_string();
        let line = format!("PORT {}", parts.join(","));
        let is_invalid = matches!(parse(&line), Command::Invalid { .. });
        prop_assert!(is_invalid, "{}", line);
    }
}

// ---------------------------------------------------------------------------
// Control-line codec
// ---------------------------------------------------------------------------

/// Feeds `chunks` one per read as the control socket does (room is made only once
/// bytes are there — an idle session holds no buffer — with the socket's 1 KiB
/// reserve; never more than the spare capacity) and records in [`STATS`] the
/// largest buffered length and capacity seen at any read.
struct Chunks {
    chunks: std::collections::VecDeque<Vec<u8>>,
}

thread_local! {
    /// (largest `buf.len()` at a read, largest `buf.capacity()` at a read).
    static STATS: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

impl ReadSome for Chunks {
    async fn read_some(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        STATS.with(|s| {
            let (l, c) = s.get();
            s.set((l.max(buf.len()), c.max(buf.capacity())));
        });
        loop {
            let Some(mut chunk) = self.chunks.pop_front() else {
                return Ok(0);
            };
            if chunk.is_empty() {
                continue;
            }
            // `ReadSome` sources make room themselves (see the socket's impl).
            buf.reserve(1024);
            STATS.with(|s| {
                let (l, c) = s.get();
                s.set((l, c.max(buf.capacity())));
            });
            let room = buf.capacity() - buf.len();
            if chunk.len() > room {
                let rest = chunk.split_off(room);
                self.chunks.push_front(rest);
            }
            buf.extend_from_slice(&chunk);
            return Ok(chunk.len());
        }
    }
}

/// The specification: complete lines only (a trailing partial line is dropped at
/// EOF); a line whose raw bytes before LF are longer than `max` is `TooLong`.
fn model(input: &[u8], max: usize) -> Vec<LineEvent> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
        let raw = &rest[..pos];
        out.push(if raw.len() > max {
            LineEvent::TooLong
        } else {
            LineEvent::Line(line_from_bytes(raw))
        });
        rest = &rest[pos + 1..];
    }
    out
}

fn byte_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        2 => Just(b"\r\n".to_vec()),
        2 => Just(b"\n".to_vec()),
        1 => Just(vec![255, 244, 255, 242]),
        1 => Just(vec![255, 255]),
        1 => Just(vec![255]),
        1 => Just(vec![255, 251]),
        1 => (1usize..3000, any::<u8>()).prop_map(|(n, b)| vec![if b == b'\n' { b'x' } else { b }; n]),
        1 => Just(b"NOOP\r\n".to_vec()),
        1 => Just("RETR ü日本\r\n".as_bytes().to_vec()),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// Splits `input` at the given cut points into read-sized chunks.
fn chunked(input: &[u8], cuts: &[usize]) -> std::collections::VecDeque<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| input[w[0]..w[1]].to_vec())
        .collect()
}

fn read_all(input: &[u8], cuts: &[usize], max: usize) -> Vec<LineEvent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut reader = LineReader::new(
            Chunks {
                chunks: chunked(input, cuts),
            },
            max,
        );
        let mut events = Vec::new();
        while let Some(ev) = reader.next_line().await.unwrap() {
            events.push(ev);
            assert!(events.len() <= input.len() + 1, "more lines than bytes");
        }
        events
    })
}

proptest! {
    #![proptest_config(config(1_000))]

    /// Arbitrary bytes in arbitrary read sizes: no panic, exactly the model's
    /// events, and never more than `max_line` bytes of an unfinished line buffered.
    #[test]
    fn codec_matches_model_and_bounds_buffer(
        input in byte_soup(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        max in prop_oneof![1usize..40, 40usize..600, Just(4096usize)],
    ) {
        STATS.with(|s| s.set((0, 0)));
        let events = read_all(&input, &cuts, max);
        prop_assert_eq!(&events, &model(&input, max));
        let (max_len, max_cap) = STATS.with(|s| s.get());
        prop_assert!(max_len <= max, "buffered {} bytes with max_line {}", max_len, max);
        // Capacity: the line limit plus one read's reserve, with slack for the
        // allocator's doubling; never proportional to the input.
        prop_assert!(
            max_cap <= 4 * (max + 2048),
            "buffer capacity {} with max_line {} (input {} bytes)", max_cap, max, input.len()
        );
        for ev in &events {
            if let LineEvent::Line(l) = ev {
                prop_assert!(l.chars().count() <= max);
                prop_assert!(!l.contains('\n'));
                prop_assert!(!l.ends_with('\r'));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Virtual paths
// ---------------------------------------------------------------------------

fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("..".to_owned()),
        2 => Just(".".to_owned()),
        2 => Just("".to_owned()),
        1 => Just("...".to_owned()),
        1 => Just("%2e%2e".to_owned()),
        1 => Just("..\\..".to_owned()),
        1 => Just("\\".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just("\r".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("~".to_owned()),
        1 => Just(" ".to_owned()),
        1 => Just(".ftpgate-tmp-x".to_owned()),
        3 => "[a-z]{1,8}",
        1 => "[^/]{1,12}",
        1 => (1usize..300).prop_map(|n| "n".repeat(n)),
    ]
}

fn hostile_path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(path_piece(), 0..16)).prop_map(|(abs, v)| {
        let p = v.join("/");
        if abs {
            format!("/{p}")
        } else {
            p
        }
    })
}

/// A normalised path built only from valid segments (a cwd or a home).
fn clean_path() -> impl Strategy<Value = VPath> {
    prop::collection::vec("[a-z0-9 ._-]{1,10}", 0..5).prop_map(|segs| {
        let mut p = VPath::root();
        for s in segs {
            if validate_segment(&s).is_ok() {
                p = p.child(&s).unwrap();
            }
        }
        p
    })
}

/// The specification of `resolve`: `..` clamps at the root.
fn model_resolve(cwd: &VPath, input: &str) -> Vec<String> {
    let mut segs: Vec<String> = if input.starts_with('/') {
        Vec::new()
    } else {
        cwd.segments().map(str::to_owned).collect()
    };
    for s in input.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s.to_owned()),
        }
    }
    segs
}

fn assert_clean(p: &VPath) -> Result<(), TestCaseError> {
    for s in p.segments() {
        prop_assert!(validate_segment(s).is_ok(), "bad segment {:?} in {}", s, p);
        prop_assert!(s != ".." && s != "." && !s.is_empty());
        prop_assert!(!s.contains(['/', '\0', '\r', '\n', '\\']), "{:?}", s);
        prop_assert!(s.len() <= MAX_SEGMENT_LEN);
    }
    let shown = p.to_string();
    prop_assert!(shown.starts_with('/'));
    prop_assert!(shown.len() <= MAX_PATH_LEN + 1, "{} bytes", shown.len());
    Ok(())
}

proptest! {
    #![proptest_config(config(5_000))]

    /// Any accepted path is clean and exactly the clamp-at-root model; refused
    /// paths are exactly those with NUL, CR, LF, backslash or an over-long part.
    #[test]
    fn resolve_stays_under_root(cwd in clean_path(), input in hostile_path()) {
        match cwd.resolve(&input) {
            Ok(p) => {
                assert_clean(&p)?;
                let model = model_resolve(&cwd, &input);
                let got: Vec<String> = p.segments().map(str::to_owned).collect();
                prop_assert_eq!(got, model);
                // Idempotent: the printed form parses to the same path.
                prop_assert_eq!(VPath::parse(&p.to_string()).unwrap(), p.clone());
                // Inside a home, the joined path stays under the home.
                let home = cwd.clone();
                let joined = home.join(&p);
                prop_assert!(joined.starts_with(&home));
                prop_assert_eq!(joined.strip_prefix(&home), Some(p.clone()));
                assert_clean(&joined)?;
            }
            Err(_) => {
                let bad_char = input.contains(['\0', '\r', '\n', '\\']);
                let too_long = input.len() > MAX_PATH_LEN
                    || input.split('/').any(|s| s.len() > MAX_SEGMENT_LEN)
                    || model_resolve(&cwd, &input).iter().map(|s| s.len() + 1).sum::<usize>() > MAX_PATH_LEN;
                prop_assert!(bad_char || too_long, "refused a harmless path {:?}", input);
            }
        }
        // `parse` is resolve from the root.
        match VPath::parse(&input) {
            Ok(p) => {
                assert_clean(&p)?;
                prop_assert_eq!(p.segments().map(str::to_owned).collect::<Vec<_>>(), model_resolve(&VPath::root(), &input));
            }
            Err(_) => prop_assert!(VPath::root().resolve(&input).is_err()),
        }
    }

    /// `child` accepts exactly one valid segment and nothing that could climb.
    #[test]
    fn child_accepts_only_one_clean_segment(base in clean_path(), name in prop_oneof![path_piece(), hostile_path(), any::<String>()]) {
        match base.child(&name) {
            Ok(p) => {
                assert_clean(&p)?;
                prop_assert_eq!(p.parent(), Some(base.clone()));
                prop_assert_eq!(p.file_name(), Some(name.as_str()));
                prop_assert!(p.starts_with(&base));
                prop_assert_eq!(p.depth(), base.depth() + 1);
            }
            Err(_) => prop_assert!(validate_segment(&name).is_err()),
        }
        prop_assert_eq!(base.child(&name).is_ok(), validate_segment(&name).is_ok());
    }
}
