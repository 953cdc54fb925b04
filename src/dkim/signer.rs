//! The loaded key set (one immutable snapshot per reload) and the per-message streaming signer.

use super::body::BodyHash;
use super::keys::{self, KeyError, LoadedKey};
use super::record::DnsState;
use super::schedule::{Algorithm, Schedule, Selector};
use crate::policy::domains::ProtectedDomains;
use mail_auth::common::crypto::{DkimKey, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable, Writer};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done, Signature};
use std::sync::Arc;

/// Headers signed where present, every instance (mode `present`): rspamd's list, Resent-*
/// left out (a forwarder's business, never checked here), List-Archive added (RFC 2369's
/// set). A header a message lacks is not named in `h=`, so a list or a later hop may add it.
pub const DEFAULT_HEADERS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-owner",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-archive",
    "openpgp",
    "autocrypt",
];

/// Headers signed once more than present (mode `oversign`), so that no copy can be added
/// after signing, above or instead of a missing one: what a reader shows as the author,
/// the subject and the addressees. Sender is here (rspamd signs it only where present):
/// it is checked for ownership like From, and Outlook shows it ("on behalf of").
pub const DEFAULT_OVERSIGNED: &[&str] = &["from", "sender", "reply-to", "subject", "to", "cc"];

/// How a header name is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMode {
    /// Every instance present.
    Present,
    /// Every instance present, and one more: `h=` names it even when absent.
    Oversign,
}

impl SigningConfig {
    /// Every signed header name with its mode, in configuration order (lower case).
    pub fn modes(&self) -> Vec<(String, HeaderMode)> {
        let mut out: Vec<(String, HeaderMode)> = Vec::new();
        for name in self.headers.iter().chain(&self.oversign) {
            if out.iter().all(|(n, _)| n != name) {
                let mode = if self.oversign.contains(name) {
                    HeaderMode::Oversign
                } else {
                    HeaderMode::Present
                };
                out.push((name.clone(), mode));
            }
        }
        out
    }
}

/// What to do with a message that should be signed but has no valid active key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutKey {
    /// `451 4.3.0`: the MTA retries later (default).
    Tempfail,
    /// Accept it unsigned (logged).
    AcceptUnsigned,
}

/// Signing settings from `[dkim]` in relayguard.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningConfig {
    /// Headers signed where present (lower case).
    pub headers: Vec<String>,
    /// Headers signed where present and once more (lower case; signed whether or not
    /// `headers` names them too).
    pub oversign: Vec<String>,
    /// `x=` as seconds after signing; `None` for no expiry.
    pub expiry: Option<u64>,
    /// From-domain subtrees that sign with their own `d=`, longest match first.
    pub signing_domains: Vec<(String, String)>,
    /// What happens without a key.
    pub without_key: WithoutKey,
    /// Whether key files must be private (mode 0600 or stricter).
    pub require_safe_keys: bool,
    /// Whether a selector signs only once DNS serves its key (and the previous one keeps
    /// signing until then).
    pub require_dns: bool,
}

/// One usable selector: its schedule entry, public key and ready signer.
pub struct SignerEntry {
    /// The schedule entry.
    pub selector: Selector,
    /// RSA bits, if RSA.
    pub bits: Option<usize>,
    /// The DNS TXT record value for this key.
    pub dns_record: String,
    /// The public key as `p=` carries it.
    pub public_key: Vec<u8>,
    /// The first 16 hex digits of SHA-256 over the public key: which key a host has.
    pub fingerprint: String,
    /// Key and signature template (its `h=` is kept apart in `headers`, so that cloning
    /// the template per message copies no header list).
    signer: DkimSigner<DkimKey, Done>,
    /// The header names to sign, each once (lower case).
    headers: Vec<String>,
    /// Those of them signed once more than present.
    oversign: Vec<String>,
}

impl std::fmt::Debug for SignerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerEntry")
            .field("domain", &self.selector.domain)
            .field("selector", &self.selector.name)
            .field("algorithm", &self.selector.algorithm)
            .finish()
    }
}

/// All keys of one schedule, validated together; swapped as a whole on reload.
#[derive(Debug)]
pub struct KeySet {
    /// The schedule.
    pub schedule: Schedule,
    /// Settings.
    pub config: SigningConfig,
    entries: Vec<Arc<SignerEntry>>,
}

impl KeySet {
    /// Loads every key the schedule still needs at `now` (retired selectors are skipped)
    /// from its file. Any problem refuses the whole set, so a bad file never replaces a
    /// good set.
    pub fn load(
        schedule: Schedule,
        config: SigningConfig,
        now: i64,
    ) -> Result<Self, Vec<KeyError>> {
        let require_safe = config.require_safe_keys;
        Self::build(schedule, config, now, |selector| {
            keys::load(&selector.key, selector.algorithm, require_safe)
        })
    }

    /// As [`KeySet::load`], with the keys from `load` (tests hand keys in from memory).
    pub fn build(
        schedule: Schedule,
        config: SigningConfig,
        now: i64,
        mut load: impl FnMut(&Selector) -> Result<LoadedKey, KeyError>,
    ) -> Result<Self, Vec<KeyError>> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for selector in schedule.selectors.iter().filter(|s| !s.is_retired(now)) {
            match load(selector) {
                Ok(key) => entries.push(Arc::new(Self::entry(selector.clone(), key, &config))),
                Err(e) => errors.push(e),
            }
        }
        // When activation waits for DNS, the newest retired selector of each domain and
        // algorithm may have to sign on past its retire_at: load it if its key is still there.
        if config.require_dns {
            for selector in Self::last_retired(&schedule, now) {
                match load(selector) {
                    Ok(key) => entries.push(Arc::new(Self::entry(selector.clone(), key, &config))),
                    Err(e) => tracing::debug!(error = %e, "retired key not loaded"),
                }
            }
        }
        if errors.is_empty() {
            Ok(KeySet {
                schedule,
                config,
                entries,
            })
        } else {
            Err(errors)
        }
    }

    /// The newest retired selector of each domain and algorithm.
    fn last_retired(schedule: &Schedule, now: i64) -> Vec<&Selector> {
        let mut newest: Vec<&Selector> = Vec::new();
        for s in schedule.selectors.iter().filter(|s| s.is_retired(now)) {
            match newest
                .iter_mut()
                .find(|n| n.domain == s.domain && n.algorithm == s.algorithm)
            {
                Some(n) if n.active_from < s.active_from => *n = s,
                Some(_) => {}
                None => newest.push(s),
            }
        }
        newest
    }

    fn entry(selector: Selector, key: LoadedKey, config: &SigningConfig) -> SignerEntry {
        let modes = config.modes();
        let headers = modes.iter().map(|(name, _)| name.clone());
        let oversign = modes
            .iter()
            .filter(|(_, mode)| *mode == HeaderMode::Oversign)
            .map(|(name, _)| name.clone())
            .collect();
        let mut signer = DkimSigner::from_key(key.key)
            .domain(selector.domain.clone())
            .selector(selector.name.clone())
            .headers(headers)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        if let Some(x) = config.expiry {
            signer = signer.expiration(x);
        }
        let headers = std::mem::take(&mut signer.template.h);
        let digest = ring::digest::digest(&ring::digest::SHA256, &key.public_key);
        let fingerprint: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        SignerEntry {
            fingerprint,
            dns_record: format!(
                "v=DKIM1; k={}; p={}",
                key.algorithm.key_type(),
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &key.public_key)
            ),
            public_key: key.public_key,
            bits: key.bits,
            selector,
            signer,
            headers,
            oversign,
        }
    }

    /// The `d=` for a From domain (normalised): the longest configured subtree, else the
    /// protected apex covering it (relaxed DMARC alignment); `None` when not protected.
    pub fn signing_domain(
        &self,
        from_domain: &str,
        protected: &ProtectedDomains,
    ) -> Option<String> {
        let under = |root: &str| from_domain == root || from_domain.ends_with(&format!(".{root}"));
        self.config
            .signing_domains
            .iter()
            .filter(|(root, _)| under(root))
            .max_by_key(|(root, _)| root.len())
            .map(|(_, d)| d.clone())
            .or_else(|| protected.apex_of(from_domain).map(str::to_string))
    }

    /// The loaded selectors the schedule makes active for `domain` at `now`, one per
    /// algorithm (whatever DNS says).
    pub fn active(&self, domain: &str, now: i64) -> Vec<Arc<SignerEntry>> {
        self.schedule
            .active_all(domain, now)
            .into_iter()
            .filter_map(|s| self.entries.iter().find(|e| e.selector == *s).cloned())
            .collect()
    }

    /// The selectors that sign for `domain` at `now`, one per algorithm. Without
    /// `require_dns` those the schedule makes active. With it, per algorithm the newest
    /// selector due (`active_from <= now`) whose record `dns` says is published; the
    /// schedule's own choice waits (noted) until then, and a retired one signs on (noted)
    /// when nothing newer is published, because unsigned mail is worse.
    pub fn signers(
        &self,
        domain: &str,
        now: i64,
        dns: &dyn Fn(&SignerEntry) -> Option<DnsState>,
    ) -> Signers {
        if !self.config.require_dns {
            return Signers {
                entries: self.active(domain, now),
                notes: Vec::new(),
            };
        }
        let mut signers = Signers::default();
        for algorithm in [Algorithm::RsaSha256, Algorithm::Ed25519Sha256] {
            let mut due: Vec<&Arc<SignerEntry>> = self
                .entries
                .iter()
                .filter(|e| {
                    let s = &e.selector;
                    s.domain == domain && s.algorithm == algorithm && s.active_from <= now
                })
                .collect();
            due.sort_by_key(|e| std::cmp::Reverse((e.selector.active_from, e.selector.line)));
            let scheduled = due.iter().find(|e| !e.selector.is_retired(now));
            let chosen = due.iter().find(|e| dns(e) == Some(DnsState::Published));
            if let Some(scheduled) = scheduled
                && chosen.is_none_or(|c| !Arc::ptr_eq(c, scheduled))
            {
                signers.notes.push(Note::Waiting {
                    selector: scheduled.selector.name.clone(),
                    state: dns(scheduled),
                });
            }
            if let Some(chosen) = chosen {
                if chosen.selector.is_retired(now) {
                    signers.notes.push(Note::PastRetire {
                        selector: chosen.selector.name.clone(),
                    });
                }
                signers.entries.push((*chosen).clone());
            }
        }
        signers
    }

    /// Every loaded (not retired) selector.
    pub fn entries(&self) -> &[Arc<SignerEntry>] {
        &self.entries
    }
}

/// The selectors that sign for a domain, and why the schedule's choice does not, if so.
#[derive(Debug, Default)]
pub struct Signers {
    /// One per algorithm.
    pub entries: Vec<Arc<SignerEntry>>,
    /// What the operator should know.
    pub notes: Vec<Note>,
}

/// Why the schedule's choice is not what signs (activation waits for DNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The schedule's selector is not signing: its record is not (yet) published.
    Waiting {
        /// Its name.
        selector: String,
        /// What DNS said last (`None`: nothing yet).
        state: Option<DnsState>,
    },
    /// This retired selector signs on: nothing newer is published.
    PastRetire {
        /// Its name.
        selector: String,
    },
}

impl SignerEntry {
    /// The key's identity for DNS observations: domain, selector and fingerprint.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.selector.domain, self.selector.name, self.fingerprint
        )
    }
}

/// Whether and how a message is signed.
#[derive(Debug)]
pub enum SigningPlan {
    /// Sign with these selectors.
    Sign(Vec<Arc<SignerEntry>>),
    /// Should be signed for this `d=`, but no valid key is active.
    NoKey(String),
    /// Not signed, and why.
    Unsigned(&'static str),
}

impl KeySet {
    /// Decides the signatures for a message whose From domain (normalised) is given.
    pub fn plan(
        &self,
        from_domain: Option<&str>,
        protected: &ProtectedDomains,
        now: i64,
        dns: &dyn Fn(&SignerEntry) -> Option<DnsState>,
    ) -> SigningPlan {
        let Some(from_domain) = from_domain else {
            return SigningPlan::Unsigned("no From domain");
        };
        let Some(d) = self.signing_domain(from_domain, protected) else {
            return SigningPlan::Unsigned("From outside the protected domains");
        };
        let active = self.signers(&d, now, dns).entries;
        if active.is_empty() {
            SigningPlan::NoKey(d)
        } else {
            SigningPlan::Sign(active)
        }
    }
}

/// A signature made for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeSignature {
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// `a=`.
    pub algorithm: Algorithm,
    /// The DKIM-Signature header value, folded with `\r\n\t`.
    pub value: String,
}

/// A header field as the MTA passed it: name, and value without the leading space.
pub type Field = (Box<[u8]>, Box<[u8]>);

/// Signs one message as it streams past: the header fields are kept, the body is hashed
/// chunk by chunk (once for all signatures), so memory does not grow with the body.
pub struct MessageSigner {
    entries: Vec<Arc<SignerEntry>>,
    fields: Vec<Field>,
    body: BodyHash,
}

impl MessageSigner {
    /// Starts signing a message with these header fields, in order, with the given selectors
    /// (one signature each).
    pub fn new(entries: Vec<Arc<SignerEntry>>, fields: Vec<Field>) -> Self {
        MessageSigner {
            entries,
            fields,
            body: BodyHash::new(),
        }
    }

    /// The first field a signature would cover that cannot be signed so that every verifier
    /// agrees (see [`super::header::ambiguous_end`]): its name and the byte.
    pub fn unsignable(&self) -> Option<(String, u8)> {
        self.fields.iter().find_map(|(name, value)| {
            let signed = self.entries.iter().any(|e| {
                e.headers
                    .iter()
                    .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
            });
            let byte = signed.then(|| super::header::ambiguous_end(value))??;
            Some((String::from_utf8_lossy(name).into_owned(), byte))
        })
    }

    /// A body chunk (CRLF line ends, as the milter protocol carries it).
    pub fn body(&mut self, chunk: &[u8]) {
        self.body.update(chunk);
    }

    /// Finishes every signature, with `t=` set to `now` (Unix seconds).
    pub fn finish(self, now: u64) -> Result<Vec<MadeSignature>, mail_auth::Error> {
        let body_hash = self.body.finish();
        self.entries
            .iter()
            .map(|entry| {
                let signature = sign(entry, &self.fields, body_hash.as_ref(), now)?;
                Ok(MadeSignature {
                    domain: entry.selector.domain.clone(),
                    selector: entry.selector.name.clone(),
                    algorithm: entry.selector.algorithm,
                    value: header_value(&signature.to_header()),
                })
            })
            .collect()
    }
}

/// One signature over the fields its `h=` list names: every instance of a signed name,
/// bottom-up, then each oversigned name once more, which names an instance that does not
/// exist and so forbids adding one (RFC 6376 sections 5.4.2 and 8.15).
fn sign(
    entry: &SignerEntry,
    fields: &[Field],
    body_hash: &[u8],
    now: u64,
) -> Result<Signature, mail_auth::Error> {
    let template = &entry.signer.template;
    let mut signed = Vec::with_capacity(entry.headers.len());
    let mut names = Vec::with_capacity(entry.headers.len() + entry.oversign.len());
    for (name, value) in fields {
        if entry
            .headers
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        {
            signed.push((&name[..], &value[..]));
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    if signed.is_empty() {
        return Err(mail_auth::Error::NoHeadersFound);
    }
    names.reverse();
    names.extend(entry.oversign.iter().cloned());
    let mut signature = template.clone();
    signature.bh = body_hash.to_vec();
    signature.t = now;
    signature.x = if template.x > 0 { now + template.x } else { 0 };
    signature.h = names;
    signature.b = entry.signer.key.sign(Signed {
        fields: &signed,
        signature: &signature,
    })?;
    Ok(signature)
}

/// What a DKIM signature signs: the signed header fields, bottom-up, in relaxed canonical
/// form, then its own header with an empty `b=`.
struct Signed<'a> {
    fields: &'a [(&'a [u8], &'a [u8])],
    signature: &'a Signature,
}

impl Writable for Signed<'_> {
    fn write(self, writer: &mut impl Writer) {
        for &(name, value) in self.fields.iter().rev() {
            super::header::relaxed(name, value, writer);
            writer.write(b"\r\n");
        }
        self.signature.write(writer, false);
    }
}

/// Turns mail-auth's `DKIM-Signature: ...\r\n` into a header value, removing the folding
/// mail-auth puts between the `b=` value and the final `;` when the base64 ends exactly at
/// the wrap column (dkimpy rejects that form).
fn header_value(header: &str) -> String {
    let value = header.strip_prefix("DKIM-Signature: ").unwrap_or(header);
    let value = value.strip_suffix("\r\n").unwrap_or(value);
    let trimmed = value
        .strip_suffix(';')
        .unwrap_or(value)
        .trim_end_matches(['\r', '\n', '\t', ' ']);
    format!("{trimmed};")
}

#[cfg(test)]
mod tests {
    use super::header_value;

    #[test]
    fn folding_before_the_final_semicolon_is_removed() {
        assert_eq!(
            header_value("DKIM-Signature: v=1; b=abc==\r\n\t;\r\n"),
            "v=1; b=abc==;"
        );
        assert_eq!(
            header_value("DKIM-Signature: v=1;\r\n\tb=abc;\r\n"),
            "v=1;\r\n\tb=abc;"
        );
    }
}
