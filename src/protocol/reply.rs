//! FTP replies (RFC 959 §4.2): a three-digit code and one or more text lines.
//!
//! A multi-line reply is written as `123-first line`, continuation lines, and a
//! last line `123 text` (RFC 959 §4.2.1). Continuation lines that start with a
//! digit are indented by one space so clients never mistake them for the end.

use std::fmt;

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
