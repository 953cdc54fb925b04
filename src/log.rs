//! What relayguard writes to its own log about clients: text the client chose, escaped.
//!
//! Addresses, logins and host names come from the SMTP client; a CR or LF inside them
//! must not start a forged line in the log. Every such field is logged through [`Escaped`].

use std::fmt;

/// Displays text with control characters escaped (`\r`, `\n`, `\t`, `\u{1b}`, ...) and a
/// backslash doubled, so one field is always one unambiguous piece of one line.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        if !text.chars().any(|c| c.is_control() || c == '\\') {
            return f.write_str(text);
        }
        for c in text.chars() {
            if c.is_control() || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

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
    }
}
