//! FTP replies (RFC 959 §4.2): a three-digit code and one or more text lines.
//!
//! A multi-line reply is written as `123-first line`, continuation lines, and a
//! last line `123 text` (RFC 959 §4.2.1). Continuation lines that start with a
//! digit are indented by one space so clients never mistake them for the end.

use std::fmt;

/// Reply codes by their RFC 959 §4.2.2 meaning (and the extensions that add
/// codes), so that handlers name what they answer instead of writing numbers.
pub mod code {
    /// 110: Restart marker reply (RFC 959 §4.2.2).
    pub const RESTART_MARKER: u16 = 110;
    /// 120: Service ready in nnn minutes.
    pub const SERVICE_READY_IN: u16 = 120;
    /// 125: Data connection already open; transfer starting.
    pub const DATA_ALREADY_OPEN: u16 = 125;
    /// 150: File status okay; about to open data connection.
    pub const OPENING_DATA: u16 = 150;
    /// 200: Command okay.
    pub const COMMAND_OK: u16 = 200;
    /// 202: Command not implemented, superfluous at this site.
    pub const SUPERFLUOUS: u16 = 202;
    /// 211: System status, or system help reply.
    pub const SYSTEM_STATUS: u16 = 211;
    /// 212: Directory status.
    pub const DIRECTORY_STATUS: u16 = 212;
    /// 213: File status (also SIZE and MDTM, RFC 3659).
    pub const FILE_STATUS: u16 = 213;
    /// 214: Help message.
    pub const HELP: u16 = 214;
    /// 215: NAME system type.
    pub const SYSTEM_TYPE: u16 = 215;
    /// 220: Service ready for new user.
    pub const SERVICE_READY: u16 = 220;
    /// 221: Service closing control connection.
    pub const CLOSING_CONTROL: u16 = 221;
    /// 225: Data connection open; no transfer in progress.
    pub const DATA_OPEN: u16 = 225;
    /// 226: Closing data connection; requested file action successful.
    pub const CLOSING_DATA: u16 = 226;
    /// 227: Entering Passive Mode (h1,h2,h3,h4,p1,p2).
    pub const ENTERING_PASSIVE: u16 = 227;
    /// 229: Entering Extended Passive Mode (RFC 2428 §3).
    pub const ENTERING_EXTENDED_PASSIVE: u16 = 229;
    /// 230: User logged in, proceed.
    pub const LOGGED_IN: u16 = 230;
    /// 234: Security data exchange complete: AUTH accepted (RFC 2228 §4, RFC 4217).
    pub const SECURITY_EXCHANGE_OK: u16 = 234;
    /// 250: Requested file action okay, completed.
    pub const FILE_ACTION_OK: u16 = 250;
    /// 257: "PATHNAME" created (also the PWD reply).
    pub const PATH_CREATED: u16 = 257;
    /// 331: User name okay, need password.
    pub const NEED_PASSWORD: u16 = 331;
    /// 332: Need account for login.
    pub const NEED_ACCOUNT: u16 = 332;
    /// 350: Requested file action pending further information (RNFR, REST).
    pub const PENDING_FURTHER_INFO: u16 = 350;
    /// 421: Service not available, closing control connection.
    pub const SERVICE_NOT_AVAILABLE: u16 = 421;
    /// 425: Can't open data connection.
    pub const CANT_OPEN_DATA: u16 = 425;
    /// 426: Connection closed; transfer aborted.
    pub const TRANSFER_ABORTED: u16 = 426;
    /// 450: Requested file action not taken: file unavailable (e.g. busy).
    pub const FILE_BUSY: u16 = 450;
    /// 451: Requested action aborted: local error in processing.
    pub const LOCAL_ERROR: u16 = 451;
    /// 452: Requested action not taken: insufficient storage space in system.
    pub const INSUFFICIENT_STORAGE: u16 = 452;
    /// 500: Syntax error, command unrecognized (also: line too long).
    pub const SYNTAX_ERROR: u16 = 500;
    /// 501: Syntax error in parameters or arguments.
    pub const ARGUMENT_SYNTAX_ERROR: u16 = 501;
    /// 502: Command not implemented.
    pub const NOT_IMPLEMENTED: u16 = 502;
    /// 503: Bad sequence of commands.
    pub const BAD_SEQUENCE: u16 = 503;
    /// 504: Command not implemented for that parameter.
    pub const NOT_IMPLEMENTED_FOR_PARAMETER: u16 = 504;
    /// 521: Data connection cannot be opened with this PROT setting (RFC 4217 §9).
    pub const PROT_REQUIRED: u16 = 521;
    /// 522: Network protocol not supported (RFC 2428 §2, EPRT).
    pub const PROTOCOL_NOT_SUPPORTED: u16 = 522;
    /// 530: Not logged in.
    pub const NOT_LOGGED_IN: u16 = 530;
    /// 532: Need account for storing files.
    pub const NEED_ACCOUNT_FOR_STORING: u16 = 532;
    /// 534: Request denied for policy reasons (RFC 2228 §5).
    pub const POLICY_REFUSED: u16 = 534;
    /// 536: Requested PROT level not supported by mechanism (RFC 2228 §5).
    pub const PROT_NOT_SUPPORTED: u16 = 536;
    /// 550: Requested action not taken: file unavailable (not found, no access).
    pub const FILE_UNAVAILABLE: u16 = 550;
    /// 551: Requested action aborted: page type unknown.
    pub const PAGE_TYPE_UNKNOWN: u16 = 551;
    /// 552: Requested file action aborted: exceeded storage allocation.
    pub const EXCEEDED_STORAGE: u16 = 552;
    /// 553: Requested action not taken: file name not allowed.
    pub const NAME_NOT_ALLOWED: u16 = 553;
    /// 554: Requested action not taken: invalid REST parameter (RFC 3659 §5.5);
    /// also any argument the storage rejects.
    pub const INVALID_PARAMETER: u16 = 554;
}

/// One reply to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The text lines; at least one. More than one makes a multi-line reply.
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply: `first` on the `code-` line, `middle` as continuation
    /// lines, `last` on the closing `code ` line.
    pub fn multi(
        code: u16,
        first: impl Into<String>,
        middle: Vec<String>,
        last: impl Into<String>,
    ) -> Self {
        let mut lines = Vec::with_capacity(middle.len() + 2);
        lines.push(first.into());
        lines.extend(middle);
        lines.push(last.into());
        Self { code, lines }
    }

    /// True for 1xx preliminary replies.
    pub fn is_preliminary(&self) -> bool {
        self.code < 200
    }

    /// The reply class digit (1..=5).
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// Serialises the reply with CRLF line ends. CR and LF inside text are
    /// replaced so a reply can never be split by a name (RFC 959 §4.2).
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            let clean = sanitize(line);
            if n == 1 {
                out.push_str(&format!("{} {}\r\n", self.code, clean));
            } else if i == 0 {
                out.push_str(&format!("{}-{}\r\n", self.code, clean));
            } else if i == n - 1 {
                out.push_str(&format!("{} {}\r\n", self.code, clean));
            } else if clean.starts_with(|c: char| c.is_ascii_digit()) || clean.is_empty() {
                out.push(' ');
                out.push_str(&clean);
                out.push_str("\r\n");
            } else {
                out.push_str(&clean);
                out.push_str("\r\n");
            }
        }
        out
    }
}

fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        std::borrow::Cow::Owned(s.replace(['\r', '\n'], " "))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_wire())
    }
}

/// Quotes a path for a 257 reply (RFC 959 Appendix II): embedded `"` doubled.
pub fn quote_path(p: &str) -> String {
    format!("\"{}\"", p.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line() {
        assert_eq!(Reply::new(200, "ok").to_wire(), "200 ok\r\n");
    }

    #[test]
    fn multi_line_form() {
        let r = Reply::multi(
            211,
            "Features:",
            vec![" MDTM".into(), "123 digit".into()],
            "End",
        );
        assert_eq!(
            r.to_wire(),
            "211-Features:\r\n MDTM\r\n 123 digit\r\n211 End\r\n"
        );
    }

    #[test]
    fn crlf_in_text_never_splits() {
        assert_eq!(
            Reply::new(550, "a\r\n200 forged").to_wire(),
            "550 a  200 forged\r\n"
        );
    }

    #[test]
    fn quotes_doubled() {
        assert_eq!(quote_path("/a\"b"), "\"/a\"\"b\"");
    }
}
