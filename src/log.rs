//! relayguard's own log: one event is one line, and what a client chose (addresses, logins,
//! host names) can never pass for structure.
//!
//! [`Logfmt`] formats every field by logfmt rules: a value that is not a bare token (white
//! space, `=`, `"`, a control, a line or paragraph separator, or empty) is quoted, with `\`,
//! `"` and every such character escaped; the message itself has its controls escaped, so a
//! multi-line error stays on its event's line. [`Escaped`] escapes text shown elsewhere (a
//! reply, a report).

use std::fmt::{self, Write};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Displays text with control characters (and the Unicode line and paragraph separators)
/// escaped (`\r`, `\n`, `\t`, `\u{1b}`, ...) and a backslash doubled, so one field is always
/// one unambiguous piece of one line.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

/// Characters that must never reach a log line or a report as themselves.
fn unsafe_char(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        if !text.chars().any(|c| unsafe_char(c) || c == '\\') {
            return f.write_str(text);
        }
        for c in text.chars() {
            if unsafe_char(c) || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// A logfmt value: bare when it is a plain token, else quoted with everything escaped.
pub fn logfmt_value(value: &str, out: &mut impl Write) -> fmt::Result {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '=' || c == '"' || c == '\\' || unsafe_char(c));
    if bare {
        return out.write_str(value);
    }
    out.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            c if unsafe_char(c) => write!(out, "{}", c.escape_default())?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// The event and span fields of relayguard's log, by logfmt rules.
#[derive(Debug, Default, Clone, Copy)]
pub struct Logfmt;

impl<'w> FormatFields<'w> for Logfmt {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer: &mut writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl Visitor<'_, '_> {
    fn field(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}{}", Escaped(value))
        } else {
            write!(self.writer, "{separator}{}=", field.name())
                .and_then(|()| logfmt_value(value, self.writer))
        };
    }
}

impl Visit for Visitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &str) -> String {
        let mut out = String::new();
        logfmt_value(v, &mut out).unwrap();
        out
    }

    #[test]
    fn control_characters_cannot_start_a_line() {
        assert_eq!(
            Escaped("a\r\nINFO forged\u{1b}[2J\\").to_string(),
            "a\\r\\nINFO forged\\u{1b}[2J\\\\"
        );
        assert_eq!(
            Escaped("Jürgen <j@tugraz.at>").to_string(),
            "Jürgen <j@tugraz.at>"
        );
        assert_eq!(
            Escaped("a\u{2028}b\u{2029}").to_string(),
            "a\\u{2028}b\\u{2029}"
        );
    }

    #[test]
    fn values_that_are_not_bare_tokens_are_quoted() {
        assert_eq!(value("alice"), "alice");
        assert_eq!(value("<alice@tugraz.at>"), "<alice@tugraz.at>");
        assert_eq!(value(""), "\"\"");
        assert_eq!(
            value("<\"a verdict=\\\"accept\\\" reason=ok login=admin\"@tugraz.at>"),
            "\"<\\\"a verdict=\\\\\\\"accept\\\\\\\" reason=ok login=admin\\\"@tugraz.at>\""
        );
        assert_eq!(value("two words"), "\"two words\"");
        assert_eq!(value("a\nb"), "\"a\\nb\"");
        assert_eq!(value("a\u{2028}b"), "\"a\\u{2028}b\"");
        assert_eq!(value("k=v"), "\"k=v\"");
    }
}
