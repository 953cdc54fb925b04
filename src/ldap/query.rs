//! Query filters: ldap_table's `%s %u %d %1..%9 %%` expansion of a lookup key into a search
//! filter, every value escaped per RFC 4515. Pure.

/// Why a key cannot be put into a filter: it is refused, never searched for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot be looked up safely: it contains a control character")]
pub struct Unsafe;

/// Checks a filter template: every `%` starts a known expansion and parentheses balance.
pub fn check_template(template: &str) -> Result<(), String> {
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('%' | 's' | 'u' | 'd' | 'S' | 'U' | 'D' | '1'..='9') => {}
                Some(other) => {
                    return Err(format!(
                        "`%{other}` is not an expansion (use %s, %u, %d, %1..%9 or %%)"
                    ));
                }
                None => return Err("ends with a lone `%`".into()),
            }
        }
    }
    let mut depth = 0i32;
    for c in template.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 || !template.trim_start().starts_with('(') {
        return Err(format!("`{template}` is not a parenthesised LDAP filter"));
    }
    Ok(())
}

/// Escapes an assertion value per RFC 4515: `*`, `(`, `)`, `\`, NUL, and every byte that is
/// not printable ASCII, as `\XX`; the result is plain ASCII.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for &b in value.as_bytes() {
        if matches!(b, b'*' | b'(' | b')' | b'\\') || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\{b:02x}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Expands `template` for lookup key `key` as Postfix does. `Ok(None)`: Postfix would not
/// run this query (`%u` of `@domain`, `%d` of a key without a domain, `%3` of a two-label
/// domain). A key with a control character (NUL included) is refused.
pub fn expand(template: &str, key: &str) -> Result<Option<String>, Unsafe> {
    if key.chars().any(char::is_control) {
        return Err(Unsafe);
    }
    let (local, domain) = match key.rsplit_once('@') {
        Some((local, domain)) => (Some(local), Some(domain).filter(|d| !d.is_empty())),
        None => (None, None),
    };
    let mut out = String::with_capacity(template.len() + key.len() * 2);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            return Ok(None);
        };
        let value = match spec.to_ascii_lowercase() {
            '%' => {
                out.push('%');
                continue;
            }
            's' => key,
            'u' => match local {
                Some("") => return Ok(None),
                Some(local) => local,
                None => key,
            },
            'd' => match domain {
                Some(domain) => domain,
                None => return Ok(None),
            },
            n @ '1'..='9' => {
                let index = n as usize - '1' as usize;
                match domain.and_then(|d| d.rsplit('.').nth(index)) {
                    Some(label) => label,
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        out.push_str(&escape(value));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTER: &str = "(|(mail=%s)(mailAlternateAddress=%s))";

    #[test]
    fn expansions_as_postfix_documents_them() {
        assert_eq!(
            expand(
                "(&(uid=%u)(dc=%d)(c=%1)(o=%2)(x=%%))",
                "alice@iaik.tugraz.at"
            )
            .unwrap(),
            Some("(&(uid=alice)(dc=iaik.tugraz.at)(c=at)(o=tugraz)(x=%))".into())
        );
        assert_eq!(
            expand("(uid=%u)", "alice").unwrap(),
            Some("(uid=alice)".into())
        );
        assert_eq!(expand("(dc=%d)", "alice").unwrap(), None);
        assert_eq!(expand("(uid=%u)", "@tugraz.at").unwrap(), None);
        assert_eq!(expand("(o=%4)", "a@tugraz.at").unwrap(), None);
        assert_eq!(
            expand(FILTER, "@tugraz.at").unwrap(),
            Some("(|(mail=@tugraz.at)(mailAlternateAddress=@tugraz.at))".into())
        );
    }

    #[test]
    fn metacharacters_never_reach_the_filter() {
        for (key, expected) in [
            ("*@tugraz.at", "(mail=\\2a@tugraz.at)"),
            ("a*", "(mail=a\\2a)"),
            ("x)(uid=*", "(mail=x\\29\\28uid=\\2a)"),
            ("\\2a", "(mail=\\5c2a)"),
            ("caf\u{e9}@tugraz.at", "(mail=caf\\c3\\a9@tugraz.at)"),
            ("\u{fffd}@tugraz.at", "(mail=\\ef\\bf\\bd@tugraz.at)"),
        ] {
            assert_eq!(expand("(mail=%s)", key).unwrap().unwrap(), expected);
        }
        assert_eq!(expand("(mail=%s)", "a\0b@tugraz.at"), Err(Unsafe));
        assert_eq!(expand("(mail=%s)", "a\r\n@tugraz.at"), Err(Unsafe));
    }

    #[test]
    fn templates_are_checked() {
        assert!(check_template(FILTER).is_ok());
        assert!(check_template("(mail=%x)").unwrap_err().contains("`%x`"));
        assert!(check_template("(mail=%s").is_err());
        assert!(check_template("mail=%s").is_err());
        assert!(check_template("(mail=%").is_err());
    }
}
