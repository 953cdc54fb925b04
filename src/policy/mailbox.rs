//! Header mailboxes (From, Sender): strict parsing that refuses every ambiguous form.
//!
//! A header value is accepted only when a conservative RFC 5322 mailbox lexer and
//! mail-parser agree on one address, and its display name and comments read the same in
//! every mail reader ([`super::display`]). The refusal classes follow "Composition Kills"
//! (Chen et al., USENIX Security 2020) and a review with real readers (Python's `email`,
//! Thunderbird): multiple or disguised From headers, groups, lists, source routes,
//! encoded-words and quoted local parts, display names and comments that carry or spell out
//! another address, and raw control characters.

use super::address::{Address, AddressError};
use super::display::{Lexed, comment_rules, name_rules, shown_rules};
use mail_parser::MessageParser;
use std::fmt;
use std::sync::OnceLock;

/// Why a header's sender could not be determined unambiguously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ambiguity {
    /// The header has no mailbox at all.
    Empty,
    /// More than one header of this kind, in any letter case.
    Multiple,
    /// A header name such as `From :` with white space before the colon.
    NameWhitespace,
    /// A `From:`/`Sender:` line hidden as a folded continuation of another header.
    FoldedHeader,
    /// More than one mailbox in the header.
    MailboxList,
    /// RFC 5322 group syntax (`name: a@b;`).
    Group,
    /// `<@relay:user@domain>`.
    SourceRoute,
    /// An encoded-word where the address should be.
    EncodedWordAddress,
    /// `"..."@domain`.
    QuotedLocalPart,
    /// The display name or a comment holds an address other than the real one.
    DisplayNameAddress(String),
    /// An `@` in the display name outside quotes.
    DisplayNameAt,
    /// A comment holds a character readers treat differently (`@`, `"`, `[`, `\`, `=?`).
    CommentSpecial(&'static str),
    /// An encoded-word where some readers decode it and others do not (inside quotes, glued
    /// to another word, left undecoded).
    MisplacedEncodedWord,
    /// An encoded-word in a charset not every reader decodes.
    EncodedWordCharset(String),
    /// An encoded-word that does not follow RFC 2047.
    MalformedEncodedWord,
    /// White space other than SP and HTAB, or an invisible character, outside quotes.
    UnusualSpace,
    /// A NUL byte.
    Nul,
    /// A CR or LF that is not part of header folding.
    BareLineBreak,
    /// Another control character.
    ControlCharacter,
    /// 8-bit bytes that are not UTF-8.
    InvalidUtf8,
    /// Not a mailbox by the strict grammar.
    Unparseable(&'static str),
    /// The address itself is invalid.
    InvalidAddress(AddressError),
    /// The strict lexer and mail-parser read different addresses.
    ParsersDisagree,
}

impl Ambiguity {
    /// A stable, documented code for logs and audit records.
    pub fn code(&self) -> &'static str {
        match self {
            Ambiguity::Empty => "empty",
            Ambiguity::Multiple => "multiple_headers",
            Ambiguity::NameWhitespace => "header_name_whitespace",
            Ambiguity::FoldedHeader => "folded_header",
            Ambiguity::MailboxList => "mailbox_list",
            Ambiguity::Group => "group_syntax",
            Ambiguity::SourceRoute => "source_route",
            Ambiguity::EncodedWordAddress => "encoded_word_address",
            Ambiguity::QuotedLocalPart => "quoted_local_part",
            Ambiguity::DisplayNameAddress(_) => "display_name_address",
            Ambiguity::DisplayNameAt => "display_name_at",
            Ambiguity::CommentSpecial(_) => "comment_special",
            Ambiguity::MisplacedEncodedWord => "misplaced_encoded_word",
            Ambiguity::EncodedWordCharset(_) => "encoded_word_charset",
            Ambiguity::MalformedEncodedWord => "malformed_encoded_word",
            Ambiguity::UnusualSpace => "unusual_space",
            Ambiguity::Nul => "nul",
            Ambiguity::BareLineBreak => "bare_line_break",
            Ambiguity::ControlCharacter => "control_character",
            Ambiguity::InvalidUtf8 => "invalid_utf8",
            Ambiguity::Unparseable(_) => "unparseable",
            Ambiguity::InvalidAddress(_) => "invalid_address",
            Ambiguity::ParsersDisagree => "parsers_disagree",
        }
    }
}

impl fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ambiguity::Empty => f.write_str("holds no address"),
            Ambiguity::Multiple => f.write_str("appears more than once"),
            Ambiguity::NameWhitespace => f.write_str("has white space in its field name"),
            Ambiguity::FoldedHeader => f.write_str("is hidden in a folded continuation line"),
            Ambiguity::MailboxList => f.write_str("holds more than one mailbox"),
            Ambiguity::Group => f.write_str("uses group syntax"),
            Ambiguity::SourceRoute => f.write_str("uses a source route"),
            Ambiguity::EncodedWordAddress => {
                f.write_str("has an encoded-word where the address should be")
            }
            Ambiguity::QuotedLocalPart => f.write_str("has a quoted local part"),
            Ambiguity::DisplayNameAddress(a) => write!(
                f,
                "has a display name that contains an address ({a}); remove the address from the name"
            ),
            Ambiguity::DisplayNameAt => f.write_str(
                "has an @ outside quotes in its display name; write the name without an address",
            ),
            Ambiguity::CommentSpecial(what) => write!(
                f,
                "has {what} inside a comment, which mail readers read differently; remove the comment"
            ),
            Ambiguity::MisplacedEncodedWord => f.write_str(
                "has an encoded-word (=?...?=) inside quotes, a comment or another word, which some mail readers decode and others do not; encode the whole name as separate words",
            ),
            Ambiguity::EncodedWordCharset(charset) => write!(
                f,
                "has an encoded-word in charset {charset}, which not every mail reader decodes; use UTF-8"
            ),
            Ambiguity::MalformedEncodedWord => {
                f.write_str("has a malformed encoded-word (RFC 2047) in its display name")
            }
            Ambiguity::UnusualSpace => f.write_str(
                "has a non-ASCII space or an invisible character outside quotes, which mail readers split differently; use plain spaces",
            ),
            Ambiguity::Nul => f.write_str("contains a NUL byte"),
            Ambiguity::BareLineBreak => f.write_str("contains a bare CR or LF"),
            Ambiguity::ControlCharacter => f.write_str("contains a control character"),
            Ambiguity::InvalidUtf8 => f.write_str("contains 8-bit bytes that are not UTF-8"),
            Ambiguity::Unparseable(why) => write!(f, "cannot be parsed ({why})"),
            Ambiguity::InvalidAddress(e) => write!(f, "holds an invalid address ({e})"),
            Ambiguity::ParsersDisagree => f.write_str("is read differently by different parsers"),
        }
    }
}

/// Removes header folding; refuses NUL, bare CR/LF, other controls and invalid UTF-8.
pub fn unfold(raw: &[u8]) -> Result<String, Ambiguity> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            0 => return Err(Ambiguity::Nul),
            b'\r' | b'\n' => {
                let next = if b == b'\r' && raw.get(i + 1) == Some(&b'\n') {
                    i + 2
                } else if b == b'\n' {
                    i + 1
                } else {
                    return Err(Ambiguity::BareLineBreak);
                };
                if !matches!(raw.get(next), Some(b' ' | b'\t')) {
                    return Err(Ambiguity::BareLineBreak);
                }
                i = next;
                continue;
            }
            b'\t' => {}
            0x01..=0x1f | 0x7f => return Err(Ambiguity::ControlCharacter),
            _ => {}
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Ambiguity::InvalidUtf8)
}

/// Parses one unfolded header value as exactly one mailbox.
pub fn parse_mailbox(value: &str) -> Result<Address, Ambiguity> {
    let lexed = Lexed::lex(value)?;
    comment_rules(&lexed.comments)?;
    let addr_text = match &lexed.angle {
        Some(inner) => {
            let inner = inner.trim_matches([' ', '\t']);
            if inner.contains([' ', '\t']) {
                return Err(Ambiguity::Unparseable("white space inside the address"));
            }
            inner.to_string()
        }
        None => {
            if lexed.quoted() {
                return Err(Ambiguity::QuotedLocalPart);
            }
            match lexed.words.as_slice() {
                [] => return Err(Ambiguity::Empty),
                [one] => one.text.clone(),
                _ => {
                    return Err(Ambiguity::Unparseable(
                        "several words without angle brackets",
                    ));
                }
            }
        }
    };
    let address = Address::parse_addr_spec(&addr_text).map_err(|e| match e {
        AddressError::Empty => Ambiguity::Empty,
        AddressError::SourceRoute => Ambiguity::SourceRoute,
        AddressError::QuotedLocalPart => Ambiguity::QuotedLocalPart,
        AddressError::EncodedWord => Ambiguity::EncodedWordAddress,
        other => Ambiguity::InvalidAddress(other),
    })?;
    let real = address.canonical();
    if lexed.angle.is_some() {
        name_rules(&lexed.words, &real)?;
    }
    cross_check(value, &addr_text, &real)?;
    Ok(address)
}

/// The second opinion: mail-parser must read the same single address, and the display name
/// it decodes (encoded-words included) must pass the same rules as text a reader shows.
fn cross_check(value: &str, addr_text: &str, real: &str) -> Result<(), Ambiguity> {
    let raw = format!("From: {value}\r\n\r\n");
    let message = MessageParser::default().parse_headers(raw.as_bytes());
    let Some(mail_parser::Address::List(list)) = message.as_ref().and_then(|m| m.from()) else {
        return Err(Ambiguity::ParsersDisagree);
    };
    let [addr] = list.as_slice() else {
        return Err(Ambiguity::ParsersDisagree);
    };
    if addr.address.as_deref().map(str::trim) != Some(addr_text) {
        return Err(Ambiguity::ParsersDisagree);
    }
    match addr.name.as_deref() {
        Some(name) => shown_rules(name, real),
        None => Ok(()),
    }
}

/// The From and Sender headers of one message, gathered as the MTA passes them; each is
/// parsed once, when first asked for.
#[derive(Debug, Default, Clone)]
pub struct HeaderSet {
    from: Vec<Vec<u8>>,
    sender: Vec<Vec<u8>>,
    anomaly: Option<(&'static str, Ambiguity)>,
    from_parsed: OnceLock<Result<Option<Address>, Ambiguity>>,
    sender_parsed: OnceLock<Result<Option<Address>, Ambiguity>>,
}

impl HeaderSet {
    /// Records one header field (name without colon, value as received).
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        self.from_parsed = OnceLock::new();
        self.sender_parsed = OnceLock::new();
        let trimmed = name.trim_ascii();
        for (field, list) in [("From", &mut self.from), ("Sender", &mut self.sender)] {
            if trimmed.eq_ignore_ascii_case(field.as_bytes()) {
                if trimmed.len() != name.len() {
                    self.anomaly
                        .get_or_insert((field, Ambiguity::NameWhitespace));
                }
                list.push(value.to_vec());
            }
        }
        if let Some(field) = folded_sender_field(value) {
            self.anomaly.get_or_insert((field, Ambiguity::FoldedHeader));
        }
    }

    /// Replaces the value of the From or Sender header (a rewritten sender).
    pub fn replace(&mut self, name: &[u8], value: &[u8]) {
        self.from_parsed = OnceLock::new();
        self.sender_parsed = OnceLock::new();
        if name.eq_ignore_ascii_case(b"From") {
            self.from = vec![value.to_vec()];
        } else if name.eq_ignore_ascii_case(b"Sender") {
            self.sender = vec![value.to_vec()];
        }
    }

    /// The single From mailbox; `Ok(None)` when there is no From header.
    pub fn from(&self) -> Result<Option<Address>, Ambiguity> {
        self.from_parsed
            .get_or_init(|| self.mailbox("From", &self.from))
            .clone()
    }

    /// The single Sender mailbox; `Ok(None)` when there is no Sender header.
    pub fn sender(&self) -> Result<Option<Address>, Ambiguity> {
        self.sender_parsed
            .get_or_init(|| self.mailbox("Sender", &self.sender))
            .clone()
    }

    fn mailbox(&self, field: &str, values: &[Vec<u8>]) -> Result<Option<Address>, Ambiguity> {
        if let Some((f, a)) = &self.anomaly
            && *f == field
        {
            return Err(a.clone());
        }
        match values {
            [] => Ok(None),
            [one] => parse_mailbox(&unfold(one)?).map(Some),
            _ => Err(Ambiguity::Multiple),
        }
    }

    /// The display name of the single From mailbox (or the comment of a bare address, as
    /// cron writes it), when it is plain printable ASCII (no quotes, backslashes or
    /// encoded-words): what can be carried into a rewritten From as one quoted string.
    pub fn from_display_name(&self) -> Option<String> {
        let [one] = self.from.as_slice() else {
            return None;
        };
        let lexed = Lexed::lex(&unfold(one).ok()?).ok()?;
        // `Name <addr>`, or the old `addr (Name)` that cron writes.
        let name = match lexed.angle {
            Some(_) => lexed.display_name(),
            None => lexed.comments.join(" ").trim().to_string(),
        };
        let plain = !name.is_empty()
            && name.len() <= 64
            && !name.contains("=?")
            && !name.contains(['(', ')'])
            && name
                .bytes()
                .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\');
        plain.then_some(name)
    }

    /// The From value as received (first one), for logs.
    pub fn raw_from(&self) -> Option<String> {
        self.from
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Detects a continuation line that starts like a From or Sender header.
fn folded_sender_field(value: &[u8]) -> Option<&'static str> {
    value
        .split(|&b| b == b'\n')
        .skip(1)
        .map(|line| line.trim_ascii_start())
        .find_map(|line| {
            let lower = line.to_ascii_lowercase();
            let name_end = lower.iter().position(|&b| b == b':')?;
            match lower[..name_end].trim_ascii() {
                b"from" => Some("From"),
                b"sender" => Some("Sender"),
                _ => None,
            }
        })
}
