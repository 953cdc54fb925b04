//! What a mail reader shows beside the address: the lexer for a mailbox's display name and
//! comments, and the rules that keep every reader showing the same, address-free text.
//!
//! Readers disagree on text that RFC 5322 and RFC 2047 leave invalid or unclear (an `@` in
//! a phrase, quotes inside comments, encoded-words inside quotes or glued to other words,
//! charsets few readers know). Such text is refused rather than interpreted, and what is left
//! must not show an address other than the real one once white space, comments and quotes
//! are gone, as a reader that glues the pieces together would show it.

use super::address::Address;
use super::mailbox::Ambiguity;

/// One word of a display name: an atom or the content of a quoted string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The text, quoted-pairs resolved.
    pub text: String,
    /// Whether it was a quoted string.
    pub quoted: bool,
    /// Whether white space (or the start of the value) comes before it.
    pub space_before: bool,
    /// Whether white space, the angle address or the end of the value comes after it.
    pub space_after: bool,
}

/// The top-level tokens of a mailbox header value.
#[derive(Debug, Default)]
pub struct Lexed {
    /// The display name's words in order (for a bare address: the address itself).
    pub words: Vec<Word>,
    /// Each comment's text as written (nested parentheses included).
    pub comments: Vec<String>,
    /// The text inside `<...>`, when there is one.
    pub angle: Option<String>,
}

/// Characters that end an atom.
const SPECIALS: &str = "()\"<>,;:\\[]";

impl Lexed {
    /// Splits an unfolded header value into words, comments and the angle address; refuses
    /// what has no single reading (lists, groups, routes, stray brackets, unterminated parts).
    pub fn lex(value: &str) -> Result<Self, Ambiguity> {
        let mut lexed = Lexed::default();
        let mut chars = value.chars().peekable();
        // White space (or the start) since the last token, and the word that was it.
        let mut spaced = true;
        let mut previous_word: Option<usize> = None;
        while let Some(c) = chars.next() {
            if c == ' ' || c == '\t' {
                spaced = true;
                continue;
            }
            if let Some(i) = previous_word.take() {
                lexed.words[i].space_after = spaced || c == '<';
            }
            match c {
                '(' => lexed.comments.push(comment(&mut chars)?),
                '"' => {
                    if lexed.angle.is_some() {
                        return Err(Ambiguity::Unparseable("text after the address"));
                    }
                    let mut text = String::new();
                    loop {
                        match chars.next() {
                            None => {
                                return Err(Ambiguity::Unparseable("unterminated quoted string"));
                            }
                            Some('\\') => text.extend(chars.next()),
                            Some('"') => break,
                            Some(c) => text.push(c),
                        }
                    }
                    previous_word = Some(lexed.words.len());
                    lexed.words.push(Word {
                        text,
                        quoted: true,
                        space_before: spaced,
                        space_after: true,
                    });
                }
                '<' => {
                    if lexed.angle.is_some() {
                        return Err(Ambiguity::MailboxList);
                    }
                    lexed.angle = Some(angle(&mut chars)?);
                }
                '>' => return Err(Ambiguity::Unparseable("stray angle bracket")),
                ',' => return Err(Ambiguity::MailboxList),
                ':' | ';' => return Err(Ambiguity::Group),
                '\\' => return Err(Ambiguity::Unparseable("backslash outside a quoted string")),
                '[' | ']' => return Err(Ambiguity::Unparseable("domain literal")),
                c => {
                    if lexed.angle.is_some() {
                        return Err(Ambiguity::Unparseable("text after the address"));
                    }
                    let mut text = String::from(c);
                    while let Some(&n) = chars.peek() {
                        if n == ' ' || n == '\t' || SPECIALS.contains(n) {
                            break;
                        }
                        text.push(n);
                        chars.next();
                    }
                    previous_word = Some(lexed.words.len());
                    lexed.words.push(Word {
                        text,
                        quoted: false,
                        space_before: spaced,
                        space_after: true,
                    });
                }
            }
            spaced = false;
        }
        Ok(lexed)
    }

    /// Whether any word was a quoted string.
    pub fn quoted(&self) -> bool {
        self.words.iter().any(|w| w.quoted)
    }

    /// The display name as a reader shows it: the words joined by single spaces.
    pub fn display_name(&self) -> String {
        let words: Vec<&str> = self.words.iter().map(|w| w.text.as_str()).collect();
        words.join(" ")
    }
}

/// A comment's text up to its closing parenthesis (the opening one is consumed).
fn comment(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, Ambiguity> {
    let mut depth = 1;
    let mut text = String::new();
    loop {
        match chars.next() {
            None => return Err(Ambiguity::Unparseable("unterminated comment")),
            Some('\\') => {
                text.push('\\');
                text.extend(chars.next());
            }
            Some('(') => {
                depth += 1;
                text.push('(');
            }
            Some(')') => {
                depth -= 1;
                if depth == 0 {
                    return Ok(text);
                }
                text.push(')');
            }
            Some(c) => text.push(c),
        }
    }
}

/// The text of an angle address up to `>` (the `<` is consumed).
fn angle(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, Ambiguity> {
    let mut inner = String::new();
    loop {
        match chars.next() {
            None => return Err(Ambiguity::Unparseable("unterminated angle bracket")),
            Some('>') => break,
            Some('<') => return Err(Ambiguity::Unparseable("nested angle bracket")),
            Some('(') => return Err(Ambiguity::Unparseable("comment inside the address")),
            Some(':') if inner.trim_start().starts_with('@') => {
                return Err(Ambiguity::SourceRoute);
            }
            Some(c) => inner.push(c),
        }
    }
    if inner.trim_start().starts_with('@') {
        return Err(Ambiguity::SourceRoute);
    }
    Ok(inner)
}

/// Spacing that only some readers treat as spacing: any white space but SP and HTAB, and
/// characters drawn as nothing. Python splits words at U+00A0 and U+3000, RFC 5322 does not.
fn unusual_space(c: char) -> bool {
    (c.is_whitespace() && c != ' ' && c != '\t') || invisible(c)
}

/// Characters inside a comment that readers treat differently: an address sign, a quote
/// (Thunderbird starts a quoted string there), a domain-literal bracket, a quoted-pair, and
/// the start of an encoded-word (decoded by some readers, not by others).
pub fn comment_rules(comments: &[String]) -> Result<(), Ambiguity> {
    for text in comments {
        let found = text.chars().find_map(|c| match c {
            '@' | '\u{FF20}' | '\u{FE6B}' => Some("an @"),
            '"' => Some("a quote"),
            '[' | ']' => Some("a square bracket"),
            '\\' => Some("a backslash"),
            c if unusual_space(c) => Some("a non-ASCII space or invisible character"),
            _ => None,
        });
        let found = found.or_else(|| text.contains("=?").then_some("an encoded-word"));
        if let Some(what) = found {
            return Err(Ambiguity::CommentSpecial(what));
        }
    }
    Ok(())
}

/// The display name's words: no `@` outside quotes (not valid in a phrase, and readers split
/// an address out of it), encoded-words only as whole words of their own in a charset every
/// reader decodes, and no address but the real one once the pieces are glued together.
pub fn name_rules(words: &[Word], real: &str) -> Result<(), Ambiguity> {
    for word in words {
        if !word.quoted && word.text.contains(['@', '\u{FF20}', '\u{FE6B}']) {
            return Err(Ambiguity::DisplayNameAt);
        }
        if !word.quoted && word.text.contains(unusual_space) {
            return Err(Ambiguity::UnusualSpace);
        }
        if word.text.contains("=?") {
            if word.quoted || !word.space_before || !word.space_after {
                return Err(Ambiguity::MisplacedEncodedWord);
            }
            encoded_word(&word.text)?;
        }
    }
    let glued: String = words.iter().map(|w| w.text.as_str()).collect();
    match address_like(&collapse(&glued), real) {
        Some(other) => Err(Ambiguity::DisplayNameAddress(other)),
        None => Ok(()),
    }
}

/// Text a reader shows (a decoded display name): no encoded-word left undecoded, no control
/// characters, and no address but the real one once spacing is gone.
pub fn shown_rules(text: &str, real: &str) -> Result<(), Ambiguity> {
    if text.contains("=?") {
        return Err(Ambiguity::MisplacedEncodedWord);
    }
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Ambiguity::ControlCharacter);
    }
    match address_like(&collapse(text), real) {
        Some(other) => Err(Ambiguity::DisplayNameAddress(other)),
        None => Ok(()),
    }
}

/// The charsets an encoded-word may use: the ones every reader in the test panel decodes
/// the same way for the characters that matter here.
const CHARSETS: &[&str] = &[
    "utf-8",
    "us-ascii",
    "iso-8859-1",
    "iso-8859-2",
    "iso-8859-3",
    "iso-8859-4",
    "iso-8859-5",
    "iso-8859-6",
    "iso-8859-7",
    "iso-8859-8",
    "iso-8859-9",
    "iso-8859-10",
    "iso-8859-13",
    "iso-8859-14",
    "iso-8859-15",
    "iso-8859-16",
    "windows-1250",
    "windows-1251",
    "windows-1252",
    "windows-1253",
    "windows-1254",
    "windows-1255",
    "windows-1256",
    "windows-1257",
    "windows-1258",
];

/// Checks one RFC 2047 encoded-word (`=?charset?B|Q?text?=`) that stands as a whole word.
fn encoded_word(word: &str) -> Result<(), Ambiguity> {
    let malformed = Ambiguity::MalformedEncodedWord;
    let inner = word
        .strip_prefix("=?")
        .and_then(|w| w.strip_suffix("?="))
        .ok_or(Ambiguity::MisplacedEncodedWord)?;
    let mut parts = inner.splitn(3, '?');
    let (Some(charset), Some(encoding), Some(text)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    let charset = charset.to_ascii_lowercase();
    if !CHARSETS.contains(&charset.as_str()) {
        let shown: String = charset.chars().take(40).collect();
        return Err(Ambiguity::EncodedWordCharset(shown));
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic() && b != b'?') {
        return Err(malformed);
    }
    let valid = match encoding {
        "Q" | "q" => {
            let bytes = text.as_bytes();
            bytes.iter().enumerate().all(|(i, &b)| {
                b != b'='
                    || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                        && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            })
        }
        "B" | "b" => {
            let body = text.trim_end_matches('=');
            text.len() % 4 == 0
                && text.len() - body.len() <= 2
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        }
        _ => false,
    };
    if valid { Ok(()) } else { Err(malformed) }
}

/// The text with every kind of spacing a reader may show as nothing removed (white space,
/// zero-width and direction marks, soft hyphens) and the full-width and ideographic forms of
/// ASCII (`＠`, `．`, `。`, full-width letters) mapped to ASCII.
pub fn collapse(text: &str) -> String {
    text.chars()
        .filter(|&c| !c.is_whitespace() && !invisible(c))
        .map(|c| match c {
            '\u{FE6B}' => '@',
            '\u{3002}' | '\u{FF61}' => '.',
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            c => c,
        })
        .collect()
}

/// Characters a reader draws as nothing (zero-width and direction marks, soft hyphens,
/// fillers, variation selectors, tags).
pub fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// The first address-like form (`local@domain.tld`) in collapsed text that is not `real`
/// (canonical form).
pub fn address_like(collapsed: &str, real: &str) -> Option<String> {
    let chars: Vec<char> = collapsed.chars().collect();
    for (at, _) in chars.iter().enumerate().filter(|(_, c)| **c == '@') {
        let local_start = chars[..at]
            .iter()
            .rposition(|&c| c == '@' || SPECIALS.contains(c))
            .map_or(0, |p| p + 1);
        let local: String = chars[local_start..at].iter().collect();
        let domain: String = chars[at + 1..]
            .iter()
            .take_while(|&&c| c.is_alphanumeric() || c == '-' || c == '.' || c == '_')
            .collect();
        // A reader stops the domain where a label is empty (`tugraz.at..at`).
        let domain = domain
            .split("..")
            .next()
            .unwrap_or("")
            .trim_end_matches('.');
        let labels: Vec<&str> = domain.split('.').collect();
        let local = local.trim_start_matches('.');
        if local.is_empty() || labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
            continue;
        }
        let candidate = format!("{local}@{domain}");
        let canonical = Address::parse_addr_spec(&candidate)
            .map(|a| a.canonical())
            .unwrap_or_else(|_| candidate.to_lowercase());
        if canonical != real {
            return Some(candidate);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(value: &str) -> Vec<Word> {
        Lexed::lex(value).unwrap().words
    }

    #[test]
    fn words_know_their_spacing() {
        let w = words("=?utf-8?q?a?=\"b\" c (x) <a@b.at>");
        assert_eq!(
            w.iter()
                .map(|w| (w.text.as_str(), w.quoted, w.space_before, w.space_after))
                .collect::<Vec<_>>(),
            [
                ("=?utf-8?q?a?=", false, true, false),
                ("b", true, false, true),
                ("c", false, true, true),
            ]
        );
        let w = words("Anna<a@b.at>");
        assert!(w[0].space_after, "the angle address ends a word");
    }

    #[test]
    fn collapsing_removes_what_a_reader_does_not_draw() {
        assert_eq!(
            collapse("r e\u{200B}c\ttor \u{FF20} tugraz\u{3002}at"),
            "rector@tugraz.at"
        );
        assert_eq!(
            collapse("\u{FF52}\u{FF45}\u{FF43}\u{FF54}\u{FF4F}\u{FF52}\u{FE6B}x.at"),
            "rector@x.at"
        );
    }

    #[test]
    fn address_like_forms_need_a_dotted_domain() {
        let real = "mallory@tugraz.at";
        assert_eq!(
            address_like("rector@tugraz.at", real),
            Some("rector@tugraz.at".into())
        );
        assert_eq!(
            address_like("Rector(rector@tugraz.at)", real),
            Some("rector@tugraz.at".into())
        );
        assert_eq!(
            address_like("rector.@tugraz.at.", real),
            Some("rector.@tugraz.at".into())
        );
        assert_eq!(address_like("Mallory@TUGraz.AT", real), None);
        assert_eq!(address_like("AnnaMüller@TUGraz", real), None);
        assert_eq!(address_like("@tugraz.at", real), None);
        assert_eq!(address_like("a@", real), None);
    }

    #[test]
    fn comments_with_reader_specific_characters_are_refused() {
        for text in ["\"", "a@b", "x\u{FF20}y", "[1]", "a\\)b", "=?utf-8?q?x?="] {
            assert!(
                matches!(
                    comment_rules(&[text.to_string()]),
                    Err(Ambiguity::CommentSpecial(_))
                ),
                "{text}"
            );
        }
        comment_rules(&["Cron Daemon".into(), "TU Graz (IAIK)".into()]).unwrap();
    }

    #[test]
    fn encoded_words_must_be_whole_known_and_well_formed() {
        encoded_word("=?UTF-8?Q?J=C3=BCrgen?=").unwrap();
        encoded_word("=?iso-8859-1?b?SvxyZ2Vu?=").unwrap();
        assert_eq!(
            encoded_word("=?cp037?q?x?="),
            Err(Ambiguity::EncodedWordCharset("cp037".into()))
        );
        assert_eq!(
            encoded_word("=?utf-7?q?x?="),
            Err(Ambiguity::EncodedWordCharset("utf-7".into()))
        );
        for bad in [
            "=?utf-8?x?abc?=",
            "=?utf-8?q?=4?=",
            "=?utf-8?b?abc?=",
            "=?utf-8?b?a===?=",
            "=?utf-8?q??=",
            "=?utf-8?q?a?b?=",
        ] {
            assert_eq!(
                encoded_word(bad),
                Err(Ambiguity::MalformedEncodedWord),
                "{bad}"
            );
        }
    }
}
