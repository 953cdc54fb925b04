//! A selector's DNS record against its private key: the DKIM key record (RFC 6376 3.6.1,
//! RFC 8463) parsed from the TXT strings and compared with the public half of the key.
//! Pure: the caller does the lookup.

use super::schedule::Algorithm;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use std::fmt;

/// What DNS says about a selector, as far as signing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsState {
    /// The record is there and carries this key: receivers can verify.
    Published,
    /// No record (NXDOMAIN, or no TXT record at the name).
    Missing,
    /// A record that does not carry this key (or one receivers would not use).
    Mismatch(String),
    /// The record is there with an empty `p=`: the key is revoked.
    Revoked,
}

impl DnsState {
    /// The short name used in metrics and status output.
    pub fn name(&self) -> &'static str {
        match self {
            DnsState::Published => "published",
            DnsState::Missing => "missing",
            DnsState::Mismatch(_) => "mismatch",
            DnsState::Revoked => "revoked",
        }
    }
}

impl fmt::Display for DnsState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsState::Mismatch(why) => write!(f, "mismatch ({why})"),
            other => f.write_str(other.name()),
        }
    }
}

/// The DNS name of a selector's key record.
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

/// Judges the TXT records found at a selector's name (each record's strings already
/// joined) against the key: `public_key` as `p=` carries it (SubjectPublicKeyInfo for RSA,
/// the 32 raw bytes for Ed25519). `None` records means the name has no TXT record.
pub fn judge(records: Option<&[String]>, algorithm: Algorithm, public_key: &[u8]) -> DnsState {
    let records = match records {
        None | Some([]) => return DnsState::Missing,
        Some(records) => records,
    };
    let keys: Vec<&String> = records
        .iter()
        .filter(|r| !r.trim_start().starts_with("v=") || is_dkim1(r))
        .collect();
    let [record] = keys.as_slice() else {
        return DnsState::Mismatch(format!(
            "{} key records at the name; receivers pick one at random",
            keys.len()
        ));
    };
    let tags = match tags(record) {
        Ok(tags) => tags,
        Err(why) => return DnsState::Mismatch(why),
    };
    let tag = |name: &str| {
        tags.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(v) = tag("v")
        && v != "DKIM1"
    {
        return DnsState::Mismatch(format!("v={v}, not DKIM1"));
    }
    let wanted = match algorithm {
        Algorithm::RsaSha256 => "rsa",
        Algorithm::Ed25519Sha256 => "ed25519",
    };
    let k = tag("k").unwrap_or("rsa");
    if k != wanted {
        return DnsState::Mismatch(format!("k={k}, the key is {wanted}"));
    }
    if let Some(h) = tag("h")
        && !h.split(':').any(|h| h.trim() == "sha256")
    {
        return DnsState::Mismatch(format!("h={h} does not allow sha256"));
    }
    if let Some(s) = tag("s")
        && !s.split(':').any(|s| matches!(s.trim(), "*" | "email"))
    {
        return DnsState::Mismatch(format!("s={s} excludes email"));
    }
    if let Some(t) = tag("t")
        && t.split(':').any(|f| f.trim() == "y")
    {
        return DnsState::Mismatch(
            "t=y: the domain is testing DKIM, receivers may ignore its signatures".into(),
        );
    }
    let Some(p) = tag("p") else {
        return DnsState::Mismatch("no p= tag".into());
    };
    if p.is_empty() {
        return DnsState::Revoked;
    }
    let Ok(published) = base64::engine::general_purpose::STANDARD.decode(p) else {
        return DnsState::Mismatch("p= is not base64".into());
    };
    let same = match algorithm {
        Algorithm::Ed25519Sha256 => published == public_key,
        Algorithm::RsaSha256 => match (rsa_key(&published), rsa_key(public_key)) {
            (Some(a), Some(b)) => a.n() == b.n() && a.e() == b.e(),
            (None, _) => return DnsState::Mismatch("p= is not an RSA public key".into()),
            (_, None) => false,
        },
    };
    if same {
        DnsState::Published
    } else {
        DnsState::Mismatch("p= is another key".into())
    }
}

fn is_dkim1(record: &str) -> bool {
    record
        .trim_start()
        .strip_prefix("v=")
        .is_some_and(|rest| rest.trim_start().starts_with("DKIM1"))
}

/// An RSA public key in either encoding `p=` is seen with: SubjectPublicKeyInfo (RFC 6376)
/// or a bare RSAPublicKey.
fn rsa_key(der: &[u8]) -> Option<rsa::RsaPublicKey> {
    rsa::RsaPublicKey::from_public_key_der(der)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(der))
        .ok()
}

/// The tag list (RFC 6376 3.2): `tag=value` separated by `;`, white space around both
/// ignored and removed inside `p=`; a duplicate tag makes the record invalid.
fn tags(record: &str) -> Result<Vec<(String, String)>, String> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for part in record.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not tag=value"))?;
        let name = name.trim().to_string();
        let value: String = if name == "p" {
            value.chars().filter(|c| !c.is_whitespace()).collect()
        } else {
            value.trim().to_string()
        };
        if tags.iter().any(|(n, _)| *n == name) {
            return Err(format!("tag {name} appears twice"));
        }
        tags.push((name, value));
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: [u8; 32] = [7; 32];

    fn ed_record(p: &[u8]) -> String {
        format!(
            "v=DKIM1; k=ed25519; p={}",
            base64::engine::general_purpose::STANDARD.encode(p)
        )
    }

    fn judge_ed(records: &[&str]) -> DnsState {
        let records: Vec<String> = records.iter().map(|s| s.to_string()).collect();
        judge(Some(&records), Algorithm::Ed25519Sha256, &ED)
    }

    #[test]
    fn states_of_an_ed25519_record() {
        assert_eq!(
            judge(None, Algorithm::Ed25519Sha256, &ED),
            DnsState::Missing
        );
        assert_eq!(judge_ed(&[&ed_record(&ED)]), DnsState::Published);
        assert_eq!(
            judge_ed(&[
                " v = DKIM1 ;k=ed25519;  p = B wcH BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc= ;"
            ]),
            DnsState::Published,
            "white space around tags and inside p= is ignored"
        );
        assert_eq!(judge_ed(&["v=DKIM1; k=ed25519; p="]), DnsState::Revoked);
        assert_eq!(
            judge_ed(&[&ed_record(&[8; 32])]),
            DnsState::Mismatch("p= is another key".into())
        );
        assert!(
            matches!(judge_ed(&["v=DKIM1; p=AAAA"]), DnsState::Mismatch(w) if w.contains("k=rsa"))
        );
        assert!(
            matches!(judge_ed(&[&format!("{}; t=y", ed_record(&ED))]), DnsState::Mismatch(w) if w.starts_with("t=y"))
        );
        assert!(
            matches!(judge_ed(&[&format!("{}; s=tlsrpt", ed_record(&ED))]), DnsState::Mismatch(w) if w.contains("excludes email"))
        );
        assert!(
            matches!(judge_ed(&[&ed_record(&ED), &ed_record(&ED)]), DnsState::Mismatch(w) if w.starts_with("2 key records"))
        );
        assert_eq!(
            judge_ed(&["google-site-verification=x", &ed_record(&ED)]),
            DnsState::Mismatch("2 key records at the name; receivers pick one at random".into()),
            "a TXT without v= counts: receivers cannot tell"
        );
        assert!(
            matches!(judge_ed(&["v=DKIM1; k=ed25519; k=rsa; p=AA"]), DnsState::Mismatch(w) if w.contains("twice"))
        );
        assert!(
            matches!(judge_ed(&["v=spf1 -all"]), DnsState::Mismatch(w) if w.starts_with("0 key records"))
        );
    }

    #[test]
    fn rsa_keys_compare_by_modulus_and_exponent_in_either_encoding() {
        use rsa::pkcs1::EncodeRsaPublicKey;
        use rsa::pkcs8::EncodePublicKey;
        let mut rng = rand_core::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 1024)
            .unwrap()
            .to_public_key();
        let other = rsa::RsaPrivateKey::new(&mut rng, 1024)
            .unwrap()
            .to_public_key();
        let spki = key.to_public_key_der().unwrap().as_bytes().to_vec();
        let pkcs1 = key.to_pkcs1_der().unwrap().as_bytes().to_vec();
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let rec = |d: &[u8]| vec![format!("v=DKIM1; k=rsa; p={}", b64(d))];
        assert_eq!(
            judge(Some(&rec(&spki)), Algorithm::RsaSha256, &spki),
            DnsState::Published
        );
        assert_eq!(
            judge(Some(&rec(&pkcs1)), Algorithm::RsaSha256, &spki),
            DnsState::Published
        );
        let other = other.to_public_key_der().unwrap().as_bytes().to_vec();
        assert_eq!(
            judge(Some(&rec(&other)), Algorithm::RsaSha256, &spki),
            DnsState::Mismatch("p= is another key".into())
        );
        assert_eq!(
            judge(
                Some(&["v=DKIM1; p=bm90IGEga2V5".to_string()]),
                Algorithm::RsaSha256,
                &spki
            ),
            DnsState::Mismatch("p= is not an RSA public key".into())
        );
    }
}
