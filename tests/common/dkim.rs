//! DKIM test support: fixture keys, a signing configuration, signing a raw message through
//! the milter, and verification by mail-auth and, independently, by dkimpy and OpenDKIM.

use indymilter_test::{EomAction, MacroStage, SocketInfo, Status, TestConnection};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

/// Copies a fixture key into `keys_dir` with mode 0600.
pub fn install_key(keys_dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(keys_dir).unwrap();
    let target = keys_dir.join(name);
    std::fs::copy(Path::new(FIXTURES).join(name), &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    target
}

/// One `[[selector]]` stanza.
pub fn selector(
    domain: &str,
    name: &str,
    algorithm: &str,
    key: &str,
    active_from: &str,
    retire_at: Option<&str>,
) -> String {
    let retire = retire_at
        .map(|r| format!("retire_at = {r}\n"))
        .unwrap_or_default();
    format!(
        "[[selector]]\ndomain = \"{domain}\"\nname = \"{name}\"\nalgorithm = \"{algorithm}\"\nkey = \"{key}\"\npublish = 2025-12-01T00:00:00Z\nactive_from = {active_from}\n{retire}\n"
    )
}

/// The standard signing setup in `dir`: tugraz.at with RSA and Ed25519 (dual signing),
/// tu-graz.ac.at with RSA. Returns the `[dkim]` section.
pub fn standard_setup(dir: &Path) -> String {
    let keys = dir.join("keys");
    for k in [
        "tugraz.at.rsa-a.pem",
        "tugraz.at.ed-a.pem",
        "tu-graz.ac.at.rsa-a.pem",
    ] {
        install_key(&keys, k);
    }
    let schedule = [
        selector(
            "tugraz.at",
            "rsa-a",
            "rsa-sha256",
            "tugraz.at.rsa-a.pem",
            "2026-01-01T00:00:00Z",
            None,
        ),
        selector(
            "tugraz.at",
            "ed-a",
            "ed25519-sha256",
            "tugraz.at.ed-a.pem",
            "2026-01-01T00:00:00Z",
            None,
        ),
        selector(
            "tu-graz.ac.at",
            "rsa-a",
            "rsa-sha256",
            "tu-graz.ac.at.rsa-a.pem",
            "2026-01-01T00:00:00Z",
            None,
        ),
    ]
    .concat();
    std::fs::write(dir.join("selectors.toml"), schedule).unwrap();
    "[dkim]\nselectors = \"selectors.toml\"\nkeys_dir = \"keys\"\n".to_string()
}

/// DNS records (`name. -> value`) for every fixture key, as `keys dns` prints them.
pub fn records() -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (domain, name, file, algorithm) in [
        (
            "tugraz.at",
            "rsa-a",
            "tugraz.at.rsa-a.pem",
            relayguard::dkim::schedule::Algorithm::RsaSha256,
        ),
        (
            "tugraz.at",
            "rsa-b",
            "tugraz.at.rsa-b.pem",
            relayguard::dkim::schedule::Algorithm::RsaSha256,
        ),
        (
            "tugraz.at",
            "ed-a",
            "tugraz.at.ed-a.pem",
            relayguard::dkim::schedule::Algorithm::Ed25519Sha256,
        ),
        (
            "tu-graz.ac.at",
            "rsa-a",
            "tu-graz.ac.at.rsa-a.pem",
            relayguard::dkim::schedule::Algorithm::RsaSha256,
        ),
    ] {
        let pem = std::fs::read(Path::new(FIXTURES).join(file)).unwrap();
        let key = relayguard::dkim::keys::parse(Path::new(file), &pem, algorithm).unwrap();
        map.insert(format!("{name}._domainkey.{domain}."), key.dns_record());
    }
    map
}

/// Sends a raw message through the milter as an authenticated owner; returns the final
/// status and the DKIM-Signature values inserted (with CRLF folding).
pub async fn sign(
    conn: &mut TestConnection,
    login: &str,
    mail_from: &str,
    raw: &[u8],
) -> (Status, Vec<String>) {
    conn.macros(MacroStage::Connect, [("{client_addr}", "203.0.113.7")])
        .await
        .unwrap();
    conn.connect(
        "client.example",
        SocketInfo::Inet("203.0.113.7:40000".parse().unwrap()),
    )
    .await
    .unwrap();
    sign_on(conn, login, mail_from, raw).await
}

/// As [`sign`], on an already connected session.
pub async fn sign_on(
    conn: &mut TestConnection,
    login: &str,
    mail_from: &str,
    raw: &[u8],
) -> (Status, Vec<String>) {
    conn.macros(MacroStage::Mail, [("{auth_authen}", login)])
        .await
        .unwrap();
    let status = conn.mail([mail_from]).await.unwrap();
    assert_eq!(status, Status::Continue, "MAIL");
    conn.macros(MacroStage::Rcpt, [("i", "4Q1")]).await.unwrap();
    assert_eq!(
        conn.rcpt(["<friend@example.org>"]).await.unwrap(),
        Status::Continue
    );
    let header_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(raw.len());
    for (name, value) in relayguard::explain::split_header_block(raw) {
        let status = conn
            .header(
                std::ffi::CString::new(name).unwrap(),
                std::ffi::CString::new(value).unwrap(),
            )
            .await
            .unwrap();
        assert!(
            matches!(status, Status::Continue | Status::Noreply),
            "header: {status:?}"
        );
    }
    let status = conn.eoh().await.unwrap();
    if !matches!(status, Status::Continue | Status::Noreply) {
        conn.abort().await.unwrap();
        return (status, vec![]);
    }
    for chunk in raw[header_end..].chunks(65535) {
        let status = conn.body(chunk.to_vec()).await.unwrap();
        assert!(
            matches!(status, Status::Continue | Status::Noreply),
            "body: {status:?}"
        );
    }
    let (actions, status) = conn.eom().await.unwrap();
    conn.abort().await.unwrap();
    let signatures = actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::InsertHeader { name, value, .. } if name.as_bytes() == b"DKIM-Signature" => {
                Some(value.to_string_lossy().replace('\n', "\r\n"))
            }
            _ => None,
        })
        .collect();
    (status, signatures)
}

/// The message as the recipient gets it: signatures on top of the original.
pub fn signed_message(signatures: &[String], raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in signatures {
        out.extend_from_slice(b"DKIM-Signature: ");
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(raw);
    out
}

struct TxtCache(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// The moment a verifier judges `t=` and `x=` at: always the clock the relay signed with, so
/// that no test result depends on the date the suite runs on.
#[derive(Debug, Clone, Copy)]
pub enum At {
    /// The real clock: the relay under test runs on it too.
    Now,
    /// A pinned Unix time (seconds): the relay's injected clock.
    Unix(i64),
}

impl At {
    /// The pinned time of a clock in Unix milliseconds, as the relay's `Clock` gives it.
    pub fn ms(ms: i64) -> Self {
        At::Unix(ms.div_euclid(1000))
    }
}

/// Verifies every signature with mail-auth, keys from `records` (no DNS is queried: the
/// resolver points at a closed loopback port and every name is cached), `t=` and `x=`
/// judged at `at`. mail-auth's `verify_dkim` reads the system clock, so a pinned `at` runs
/// the same steps through mail-auth's public pieces (its parser, body hashes, header
/// selection, canonicalization and key verification) with the expiry judged at `at`.
pub async fn verify_mail_auth(
    message: &[u8],
    records: &HashMap<String, String>,
    at: At,
) -> Result<usize, String> {
    match at {
        At::Now => verify_mail_auth_now(message, records).await,
        At::Unix(at) => verify_mail_auth_at(message, records, at),
    }
}

async fn verify_mail_auth_now(
    message: &[u8],
    records: &HashMap<String, String>,
) -> Result<usize, String> {
    use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    // Loopback only: every name is cached, so nothing should ever be sent.
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::udp(
        "127.0.0.1".parse().unwrap(),
    )]);
    let authenticator =
        MessageAuthenticator::new(config, ResolverOpts::default()).map_err(|e| e.to_string())?;
    let cache = TxtCache(Mutex::new(
        records
            .iter()
            .map(|(k, v)| {
                (
                    k.clone().into_boxed_str(),
                    Txt::DomainKey(Arc::new(
                        DomainKey::parse(v.as_bytes()).expect("record parses"),
                    )),
                )
            })
            .collect(),
    ));
    let parsed =
        AuthenticatedMessage::parse(message).ok_or("mail-auth cannot parse the message")?;
    let results = authenticator
        .verify_dkim(Parameters::new(&parsed).with_txt_cache(&cache))
        .await;
    if results.is_empty() {
        return Err("no signatures".into());
    }
    for r in &results {
        if *r.result() != DkimResult::Pass {
            return Err(format!("{:?}", r.result()));
        }
    }
    Ok(results.len())
}

/// mail-auth's verification steps (as in its `verify_dkim_`) with the clock given.
fn verify_mail_auth_at(
    message: &[u8],
    records: &HashMap<String, String>,
    at: i64,
) -> Result<usize, String> {
    use mail_auth::common::crypto::HashAlgorithm;
    use mail_auth::common::verify::VerifySignature;
    let parsed =
        AuthenticatedMessage::parse(message).ok_or("mail-auth cannot parse the message")?;
    if let Some(e) = parsed.errors.first() {
        return Err(format!("Neutral({:?})", e.header));
    }
    if parsed.dkim_headers.is_empty() {
        return Err("no signatures".into());
    }
    let at = u64::try_from(at).map_err(|_| "a time before 1970")?;
    for header in &parsed.dkim_headers {
        let signature = &header.header;
        if signature.t > at {
            return Err(format!("signed in the future: t={} at {at}", signature.t));
        }
        if !(signature.x == 0 || (signature.x > signature.t && signature.x > at)) {
            return Err("Neutral(Dkim(SignatureExpired))".into());
        }
        let hash = HashAlgorithm::from(signature.a);
        let body_hash = parsed
            .body_hashes
            .iter()
            .find(|(c, h, l, _)| *c == signature.cb && *h == hash && *l == signature.l)
            .map(|(.., bh)| bh)
            .ok_or("no body hash")?;
        if *body_hash != signature.bh {
            return Err("Neutral(Dkim(FailedBodyHashMatch))".into());
        }
        let record = records
            .get(&signature.domain_key())
            .ok_or_else(|| format!("no record for {}", signature.domain_key()))?;
        let key = DomainKey::parse(record.as_bytes()).map_err(|e| format!("{e:?}"))?;
        let unsigned = without_signature_value(header.value);
        let mut headers = parsed.signed_headers(&signature.h, header.name, &unsigned);
        key.p
            .verify(&mut headers, &signature.b, signature.ch, signature.a)
            .map_err(|e| format!("Fail({e:?})"))?;
    }
    Ok(parsed.dkim_headers.len())
}

/// A DKIM-Signature value with the value of its `b=` tag removed (RFC 6376 3.7), as
/// mail-auth strips it: the tag name and `=` stay, the value and the header's line end go.
fn without_signature_value(value: &[u8]) -> Vec<u8> {
    let value = value
        .strip_suffix(b"\r\n")
        .or_else(|| value.strip_suffix(b"\n"))
        .unwrap_or(value);
    let mut out = Vec::with_capacity(value.len());
    for segment in value.split_inclusive(|&b| b == b';') {
        let (tag, rest) = match segment.iter().position(|&b| b == b'=') {
            Some(eq) => segment.split_at(eq + 1),
            None => (segment, &[][..]),
        };
        let name = tag[..tag.len().saturating_sub(1)].trim_ascii();
        if name.eq_ignore_ascii_case(b"b") && tag.ends_with(b"=") {
            out.extend_from_slice(tag);
            if rest.ends_with(b";") {
                out.push(b';');
            }
        } else {
            out.extend_from_slice(segment);
        }
    }
    out
}

/// Verifies files with dkimpy, judging `t=` and `x=` at `at`; returns one line per file.
pub fn verify_dkimpy(
    files: &[PathBuf],
    records: &HashMap<String, String>,
    dir: &Path,
    at: At,
) -> Vec<String> {
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "dkimpy needs /usr/bin/python3 with python3-dkim and python3-nacl: run scripts/test, which installs them"
    );
    let record_file = dir.join("records.tsv");
    let text: String = records.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
    std::fs::write(&record_file, text).unwrap();
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dkim_verify.py"))
        .arg(&record_file)
        .args(files);
    if let At::Unix(at) = at {
        command.env("DKIM_VERIFY_AT", at.to_string());
    }
    let out = command.output().expect("run dkimpy");
    assert!(
        out.status.success(),
        "dkimpy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// OpenDKIM's verdict (`opendkim -t`, keys from [`records`]) on each message: true when
/// the signature it judges verified (`-t` reports one: the topmost, relayguard's RSA one;
/// dkimpy judges every signature).
pub fn verify_opendkim(files: &[PathBuf], dir: &Path) -> Vec<bool> {
    assert!(
        Path::new("/usr/sbin/opendkim").exists(),
        "OpenDKIM's verifier is missing: run scripts/test, which installs it"
    );
    let keys: String = records()
        .iter()
        .map(|(name, value)| format!("{} {value}\n", name.trim_end_matches('.')))
        .collect();
    std::fs::write(dir.join("opendkim-keys"), keys).unwrap();
    let conf = dir.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Mode v\nSyslog no\nTestPublicKeys {}\n",
            dir.join("opendkim-keys").display()
        ),
    )
    .unwrap();
    files
        .iter()
        .map(|file| {
            let out = Command::new("/usr/sbin/opendkim")
                .arg("-x")
                .arg(&conf)
                .arg("-t")
                .arg(file)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            text.contains("verification (s=") && text.contains(") succeeded")
        })
        .collect()
}
