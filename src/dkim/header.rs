//! Relaxed header canonicalization (RFC 6376 section 3.4.2), by hand: mail-auth 0.13's
//! canonicalizer treats CR, LF and FF as white space and drops them, so a signed `Subject:
//! a\rb` failed at every verifier.
//!
//! The RFC: lower-case the name; unfold (a line break followed by white space is removed);
//! turn each run of WSP (SP, HTAB) into one SP; delete WSP at the end of the value and
//! around the colon. Every other byte stays: CR, LF, VT, FF, NUL, 8-bit, UTF-8.
//!
//! One place where verifiers part ways: dkimpy removes any ASCII white space (CR, LF, VT,
//! FF too) at either end of a value, the RFC only WSP. A value that ends or begins with
//! such a byte, once the WSP around it is gone, cannot be signed so that both verify:
//! [`ambiguous_end`] finds it, and the relay refuses the message rather than sign it.

use mail_auth::common::headers::Writer;

/// SP or HTAB.
fn wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// How many bytes at `i` are WSP (1) or a fold's line break (CRLF: 2, a milter's LF before
/// WSP: 1); 0 for any other byte.
fn special(value: &[u8], i: usize) -> usize {
    match value[i] {
        b' ' | b'\t' => 1,
        b'\r' if value.get(i + 1) == Some(&b'\n') => 2,
        b'\n' if value.get(i + 1).is_some_and(|&b| wsp(b)) => 1,
        _ => 0,
    }
}

/// Writes `name:value` in relaxed canonical form, without the line end. `value` is the
/// field as the MTA passed it (folds as CRLF or, from a milter, LF, followed by WSP). A CR
/// right before an LF fold reads as part of a CRLF fold; Postfix strips such a CR before a
/// milter sees the header, as it does the one before the message's own line ends.
pub fn relaxed(name: &[u8], value: &[u8], out: &mut impl Writer) {
    let name = name.trim_ascii();
    let mut lower = [0u8; 64];
    if name.len() <= lower.len() {
        for (l, b) in lower.iter_mut().zip(name) {
            *l = b.to_ascii_lowercase();
        }
        out.write(&lower[..name.len()]);
    } else {
        out.write(&name.to_ascii_lowercase());
    }
    out.write(b":");
    // Whether a WSP run (or a fold) is pending, and whether anything was written yet.
    let mut space = false;
    let mut written = false;
    let mut i = 0;
    while i < value.len() {
        let skip = special(value, i);
        if skip == 0 {
            if space && written {
                out.write(b" ");
            }
            space = false;
            // Copy the run of ordinary bytes at once.
            let start = i;
            while i < value.len() && special(value, i) == 0 {
                i += 1;
            }
            out.write(&value[start..i]);
            written = true;
            continue;
        }
        // A CRLF is removed without being white space itself; WSP after it is.
        if value[i] != b'\r' && value[i] != b'\n' {
            space = true;
        }
        i += skip;
    }
}

/// The first byte of `value` or its last, once folds and WSP are set aside, when it is one
/// that dkimpy strips and the RFC keeps (CR, LF, VT, FF): such a field cannot be signed so
/// that every verifier agrees.
pub fn ambiguous_end(value: &[u8]) -> Option<u8> {
    let mut unfolded = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\r' if value.get(i + 1) == Some(&b'\n') => i += 2,
            b'\n' if value.get(i + 1).is_some_and(|&b| wsp(b)) => i += 1,
            b => {
                unfolded.push(b);
                i += 1;
            }
        }
    }
    let trimmed = {
        let start = unfolded.iter().position(|&b| !wsp(b));
        let end = unfolded.iter().rposition(|&b| !wsp(b));
        match (start, end) {
            (Some(s), Some(e)) => &unfolded[s..=e],
            _ => return None,
        }
    };
    let stripped_by_dkimpy = |b: u8| matches!(b, b'\r' | b'\n' | 0x0b | 0x0c);
    [trimmed[0], trimmed[trimmed.len() - 1]]
        .into_iter()
        .find(|&b| stripped_by_dkimpy(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        relaxed(name.as_bytes(), value, &mut out);
        out
    }

    #[test]
    fn white_space_runs_folds_and_ends() {
        assert_eq!(canon("Subject", b"  a \t b\t "), b"subject:a b");
        assert_eq!(canon("SUBJECT ", b"a\r\n\tb"), b"subject:a b");
        assert_eq!(canon("Subject", b"a\n b"), b"subject:a b", "milter fold");
        assert_eq!(canon("Subject", b"a\r\n \r\n b"), b"subject:a b");
        assert_eq!(canon("Subject", b""), b"subject:");
        assert_eq!(canon("Subject", b" \t "), b"subject:");
        assert_eq!(canon("Subject", b"\r\n\tx"), b"subject:x");
    }

    #[test]
    fn every_other_byte_stays_where_it_is() {
        // Inside a value: kept, with the WSP around it collapsed, never turned into space.
        for b in [b'\r', b'\n', 0x0b, 0x0c, 0x00, 0x01, 0x7f, 0x80, 0xff] {
            assert_eq!(
                canon("s", &[b'a', b, b'b']),
                [b"s:a".as_slice(), &[b], b"b"].concat()
            );
            if b != b'\n' {
                assert_eq!(
                    canon("s", &[b'a', b' ', b, b' ', b'b']),
                    [b"s:a ".as_slice(), &[b], b" b"].concat(),
                    "{b:#04x} between spaces"
                );
            }
        }
        // A line break followed by WSP is a fold, from the wire (CRLF) or a milter (LF).
        assert_eq!(canon("s", b"a \n b"), b"s:a b");
        assert_eq!(canon("s", b"a\r b"), b"s:a\r b", "a bare CR is no fold");
        assert_eq!(
            canon("s", "Grüße  aus\tGraz".as_bytes()),
            "s:Grüße aus Graz".as_bytes()
        );
        // At the ends the RFC removes only WSP.
        assert_eq!(canon("s", b"\x0ca \x0c "), b"s:\x0ca \x0c");
        assert_eq!(canon("s", b" \x00"), b"s:\x00");
    }

    #[test]
    fn every_byte_class_before_inside_and_after_a_value() {
        // (class, bytes, white space?, stripped by dkimpy at an end?)
        let classes: &[(&str, &[u8], bool, bool)] = &[
            ("SP", b" ", true, false),
            ("HTAB", b"\t", true, false),
            ("CR", b"\r", false, true),
            ("LF", b"\n", false, true),
            ("FF", b"\x0c", false, true),
            ("VT", b"\x0b", false, true),
            ("NUL", b"\x00", false, false),
            ("8-bit", b"\xe4", false, false),
            ("UTF-8", "ü".as_bytes(), false, false),
        ];
        for &(class, c, white, ambiguous) in classes {
            let before = [c, b"a"].concat();
            let inside = [b"a", c, b"b"].concat();
            let after = [b"a", c].concat();
            let expect = |kept: Vec<u8>, dropped: &[u8]| {
                [b"s:".as_slice(), if white { dropped } else { &kept }].concat()
            };
            assert_eq!(
                canon("s", &before),
                expect(before.clone(), b"a"),
                "{class} before"
            );
            assert_eq!(
                canon("s", &inside),
                expect(inside.clone(), b"a b"),
                "{class} inside"
            );
            assert_eq!(
                canon("s", &after),
                expect(after.clone(), b"a"),
                "{class} after"
            );
            let end = (!white && ambiguous).then_some(c[0]);
            assert_eq!(ambiguous_end(&before), end, "{class} before");
            assert_eq!(ambiguous_end(&inside), None, "{class} inside");
            assert_eq!(ambiguous_end(&after), end, "{class} after");
        }
    }

    #[test]
    fn ends_that_dkimpy_strips_are_found() {
        assert_eq!(ambiguous_end(b"a\rb"), None);
        assert_eq!(ambiguous_end(b"a \x0c b"), None);
        assert_eq!(ambiguous_end(b"a\r\n\tb"), None);
        assert_eq!(ambiguous_end(b" \t"), None);
        assert_eq!(ambiguous_end(b"a\x0c"), Some(0x0c));
        assert_eq!(ambiguous_end(b"a\x0b \t"), Some(0x0b));
        assert_eq!(ambiguous_end(b"\ra"), Some(b'\r'));
        assert_eq!(ambiguous_end(b" \x0c\n\ta"), Some(0x0c));
        assert_eq!(ambiguous_end(b"a\x00"), None, "dkimpy keeps NUL");
    }
}
