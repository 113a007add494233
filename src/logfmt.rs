//! The human log format's field formatter, which escapes control characters.
//!
//! Values from the network (Call-IDs, user names, addresses of record, reasons, header
//! text) reach log lines as event and span fields. Written raw, a CR or LF in one of
//! them (a folded Call-ID is enough) would end the line and forge another one that a
//! reader or fail2ban takes for sipwake's own, and a NUL or an escape sequence would
//! garble a terminal. Escaping once here, for every field of every event and span
//! (the message included), means no call site can forget it. The JSON format needs
//! nothing: JSON strings escape control characters already.

use std::fmt;

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;

/// Formats fields as [`DefaultFields`] does, then writes every control character
/// (CR, LF, NUL, tab, ESC, DEL, C1) escaped: `\r`, `\n`, `\0`, `\t`, `\x1b`, ….
#[derive(Debug, Default)]
pub struct EscapedFields {
    inner: DefaultFields,
}

impl EscapedFields {
    /// The formatter.
    pub fn new() -> EscapedFields {
        EscapedFields::default()
    }
}

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut raw = String::new();
        self.inner.format_fields(Writer::new(&mut raw), fields)?;
        write_escaped(&mut writer, &raw)
    }
}

/// Writes `s` with its control characters escaped.
pub fn write_escaped(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let mut rest = s;
    while let Some(i) = rest.find(char::is_control) {
        out.write_str(&rest[..i])?;
        let c = rest[i..].chars().next().unwrap_or('\0');
        match c {
            '\r' => out.write_str("\\r")?,
            '\n' => out.write_str("\\n")?,
            '\t' => out.write_str("\\t")?,
            '\0' => out.write_str("\\0")?,
            c if u32::from(c) < 0x80 => write!(out, "\\x{:02x}", u32::from(c))?,
            c => write!(out, "\\u{{{:x}}}", u32::from(c))?,
        }
        rest = &rest[i + c.len_utf8()..];
    }
    out.write_str(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_escaped(&mut out, s).unwrap();
        out
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escaped("plain é ✓"), "plain é ✓");
        assert_eq!(
            escaped("a\r\n 2026 ERROR sipwake::forged: x"),
            "a\\r\\n 2026 ERROR sipwake::forged: x"
        );
        assert_eq!(
            escaped("\0\t\u{1b}[31m\u{7f}\u{85}"),
            "\\0\\t\\x1b[31m\\x7f\\u{85}"
        );
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn every_field_of_an_event_is_escaped() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::fmt::MakeWriter;

        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Buf {
            type Writer = Buf;
            fn make_writer(&'a self) -> Buf {
                self.clone()
            }
        }
        let buf = Buf::default();
        let sub = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields::new())
            .finish();
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("request", call_id = %"c\r\nFORGED span");
            let _g = span.enter();
            tracing::warn!(user = %"u\nFORGED field", "hello {}", "m\rFORGED message");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("c\\r\\nFORGED span"), "{text}");
        assert!(text.contains("u\\nFORGED field"), "{text}");
        assert!(text.contains("m\\rFORGED message"), "{text}");
    }
}
