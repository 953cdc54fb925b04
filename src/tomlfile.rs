//! TOML files whose errors name the file, the line and the key: `relayguard.toml` and
//! `selectors.toml` both read through here.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// An error in a TOML file, with its place.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown or duplicate key, or a wrong type.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{}:{line}: key `{key}`: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The dotted key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads a whole file as text.
pub fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Where errors in one file's text point: builds [`FileError::Invalid`] from a span.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its text.
    pub text: &'a str,
}

impl Place<'_> {
    /// An invalid value at `span` of key `key`.
    pub fn invalid(&self, span: std::ops::Range<usize>, key: &str, reason: String) -> FileError {
        FileError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
            key: key.to_string(),
            reason,
        }
    }

    /// A number within its documented range, or an error naming the key and the range.
    pub fn number(
        &self,
        value: &Option<Spanned<u64>>,
        key: &str,
        range: RangeInclusive<u64>,
    ) -> Result<Option<u64>, FileError> {
        match value {
            Some(v) if !range.contains(v.get_ref()) => Err(self.invalid(
                v.span(),
                key,
                format!(
                    "{} is out of range: {}..={}",
                    v.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
            Some(v) => Ok(Some(*v.get_ref())),
            None => Ok(None),
        }
    }

    /// One of a setting's allowed values (the first is the default), or an error naming
    /// the choices.
    pub fn choose<T: Copy>(
        &self,
        value: Option<&Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
    ) -> Result<T, FileError> {
        let Some(value) = value else {
            return Ok(options[0].1);
        };
        options
            .iter()
            .find(|(name, _)| *name == value.get_ref())
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.invalid(
                    value.span(),
                    key,
                    format!("`{}` is not one of {}", value.get_ref(), names.join(", ")),
                )
            })
    }
}

/// Deserialises TOML text; a syntax error, unknown key or wrong type names file and line.
pub fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, FileError> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        let message = match e.span() {
            Some(span) if e.message().trim() == "duplicate key" => duplicate(text, span),
            _ => e
                .message()
                .trim()
                .replace("expected u64", "expected a whole number")
                .replace("expected i64", "expected a whole number"),
        };
        // A wrong type points at a value: name the key it belongs to.
        if let Some(key) = e.span().and_then(|span| key_at(text, span.start))
            && message.starts_with("invalid")
        {
            return FileError::Invalid {
                path: path.to_path_buf(),
                line,
                key,
                reason: message,
            };
        }
        FileError::Syntax {
            path: path.to_path_buf(),
            line,
            message,
        }
    })
}

/// The dotted key whose value starts at `offset` (`max_connections = -1` under
/// `[milter]`: `milter.max_connections`), when the value stands on its key's line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let before = &text[line_start..offset.min(text.len())];
    let (key, _) = before.split_once('=')?;
    let key = key.trim().trim_matches(['"', '\'']);
    if key.is_empty() || key.starts_with('[') || key.contains(['{', ',']) {
        return None;
    }
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[').then(|| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
        })
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// Names a duplicate key or table the TOML parser found at `span`, with its table and the
/// line where it first appeared.
fn duplicate(text: &str, span: std::ops::Range<usize>) -> String {
    let name = text
        .get(span.clone())
        .unwrap_or("")
        .trim_matches(['"', '\'']);
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let is_table = text[line_start..span.start].trim_start().starts_with('[');
    fn header(line: &str) -> Option<&str> {
        let l = line.trim();
        (l.starts_with('[') && !l.starts_with("[[")).then(|| l.trim_matches(['[', ']']).trim())
    }
    let lines: Vec<&str> = text[..line_start].lines().collect();
    if is_table {
        let first = lines.iter().position(|l| header(l) == Some(name));
        return match first {
            Some(i) => format!("duplicate table `[{name}]` (first at line {})", i + 1),
            None => format!("duplicate table `[{name}]`"),
        };
    }
    // The table the duplicate sits in, and the first line of the same key in that table.
    let table_start = lines.iter().rposition(|l| header(l).is_some());
    let table = table_start.and_then(|i| header(lines[i]));
    let from = table_start.map_or(0, |i| i + 1);
    let first = lines[from..].iter().position(|l| {
        l.trim_start()
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
    });
    let place = match table {
        Some(t) => format!(" in `[{t}]`"),
        None => String::new(),
    };
    match first {
        Some(i) => format!(
            "duplicate key `{name}`{place} (first at line {})",
            from + i + 1
        ),
        None => format!("duplicate key `{name}`{place}"),
    }
}

/// Turns a byte offset into a 1-based line number.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}
