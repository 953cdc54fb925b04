//! The audit log's hash chain: how a record is sealed (`seq`, `prev`), how a link is read
//! back, and the Ed25519 checkpoints that let a holder of the public key prove the chain.
//!
//! A sealed line is the record's JSON object with `,"seq":N,"prev":"HEX"}` as its last
//! members, where `prev` is the SHA-256 of the previous line's exact bytes (without its
//! newline) and `seq` counts lines in this file from 1. The first line of a rotated-in file
//! names the last line of the file before; the first line of a chain names [`GENESIS`].
//! Everything here is pure: no files, no clock.

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use std::fmt;

/// `prev` of the first record of a chain.
pub const GENESIS: Hash = Hash([0; 32]);

/// The SHA-256 of one line.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The hash of a line's exact bytes (without its newline).
    pub fn of(line: &[u8]) -> Hash {
        let digest = ring::digest::digest(&ring::digest::SHA256, line);
        let mut out = [0; 32];
        out.copy_from_slice(digest.as_ref());
        Hash(out)
    }

    /// Parses 64 lower-case hex digits.
    pub fn parse(hex: &[u8]) -> Option<Hash> {
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Hash(out))
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Where a chain stands: the last line written (its number in its file and its hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// `seq` of the last line (0: none in this file yet).
    pub seq: u64,
    /// Hash of the last line (or [`GENESIS`]).
    pub hash: Hash,
}

impl Link {
    /// A chain with no records yet.
    pub const START: Link = Link {
        seq: 0,
        hash: GENESIS,
    };

    /// Seals a serialised JSON object (`{…}`, no newline) as the next line of this file.
    /// `first_in_file` restarts the count at 1 (a new or rotated-in file). Returns the line
    /// and the link it makes.
    pub fn seal(&self, object: &[u8], first_in_file: bool) -> (Vec<u8>, Link) {
        debug_assert!(object.starts_with(b"{") && object.ends_with(b"}"));
        let seq = if first_in_file { 1 } else { self.seq + 1 };
        let mut line = Vec::with_capacity(object.len() + 96);
        line.extend_from_slice(&object[..object.len() - 1]);
        if object.len() > 2 {
            line.push(b',');
        }
        line.extend_from_slice(format!("\"seq\":{seq},\"prev\":\"{}\"}}", self.hash).as_bytes());
        let hash = Hash::of(&line);
        (line, Link { seq, hash })
    }
}

/// The chain members read back from a sealed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// The line's number in its file.
    pub seq: u64,
    /// The hash of the line before it.
    pub prev: Hash,
}

/// Reads `seq` and `prev` off the end of a line; `None` when the line is not sealed (cut
/// short, edited into another shape, or written before chaining).
pub fn read_seal(line: &[u8]) -> Option<Sealed> {
    const PREV: &[u8] = b",\"prev\":\"";
    let body = line.strip_suffix(b"\"}")?;
    let hex_start = body.len().checked_sub(64)?;
    let prev = Hash::parse(&body[hex_start..])?;
    let rest = body[..hex_start].strip_suffix(PREV)?;
    let digits = rest.len() - rest.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    let seq_digits = &rest[digits..];
    let rest = rest[..digits].strip_suffix(b"\"seq\":")?;
    if !(rest.ends_with(b",") || rest == b"{") || seq_digits.is_empty() || seq_digits.len() > 19 {
        return None;
    }
    let seq = std::str::from_utf8(seq_digits).ok()?.parse().ok()?;
    Some(Sealed { seq, prev })
}

/// The checkpoint member of a checkpoint line:
/// `{"checkpoint":{"time":…,"host":…,"key":…,"signature":…},"seq":…,"prev":…}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// When it was made (RFC 3339).
    pub time: String,
    /// The host that made it.
    pub host: String,
    /// [`key_id`] of the signing key.
    pub key: String,
    /// Ed25519 signature over [`signed_text`], base64.
    pub signature: String,
}

/// Line prefix of a checkpoint record.
pub const CHECKPOINT_PREFIX: &[u8] = b"{\"checkpoint\":";

/// What a checkpoint signs: the line's own place in the chain, so the signature covers every
/// line before it (through `prev`) and cannot be moved to another place.
pub fn signed_text(time: &str, host: &str, seq: u64, prev: &Hash) -> Vec<u8> {
    format!("relayguard audit checkpoint v1\n{time}\n{host}\n{seq}\n{prev}\n").into_bytes()
}

/// A short name of a public key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(public_key: &[u8]) -> String {
    Hash::of(public_key).to_string()[..16].to_string()
}

/// The checkpoint signing key (Ed25519, kept apart from the DKIM keys).
pub struct CheckpointKey {
    pair: Ed25519KeyPair,
    id: String,
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointKey({})", self.id)
    }
}

impl CheckpointKey {
    /// Reads a PKCS#8 PEM private key (`relayguard audit keygen`, or `openssl genpkey
    /// -algorithm ed25519`).
    pub fn from_pem(pem: &[u8]) -> Result<CheckpointKey, String> {
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PKCS#8 PEM private key: {e}"))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| format!("not an Ed25519 key: {e}"))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(CheckpointKey { pair, id })
    }

    /// A new random key: (PKCS#8 PEM private key, SPKI PEM public key).
    pub fn generate() -> Result<(String, String), String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| e.to_string())?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
        Ok((
            pem("PRIVATE KEY", pkcs8.as_ref()),
            public_pem(pair.public_key().as_ref()),
        ))
    }

    /// [`key_id`] of this key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The checkpoint that seals the chain after `link`, as the line's object (to be sealed).
    pub fn checkpoint(&self, time: &str, host: &str, link: &Link, first_in_file: bool) -> Vec<u8> {
        let seq = if first_in_file { 1 } else { link.seq + 1 };
        let signature = self.pair.sign(&signed_text(time, host, seq, &link.hash));
        let record = Checkpoint {
            time: time.to_string(),
            host: host.to_string(),
            key: self.id.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        };
        serde_json::to_vec(&serde_json::json!({ "checkpoint": record })).expect("serialisable")
    }
}

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410) before the 32 key bytes.
const SPKI_ED25519: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An Ed25519 public key as SPKI PEM (`openssl pkey -pubout` reads and writes the same).
pub fn public_pem(raw: &[u8]) -> String {
    let mut der = SPKI_ED25519.to_vec();
    der.extend_from_slice(raw);
    pem("PUBLIC KEY", &der)
}

/// A public key that checks checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    raw: Vec<u8>,
    /// [`key_id`] of the key.
    pub id: String,
}

impl VerifyingKey {
    /// Reads an SPKI PEM Ed25519 public key.
    pub fn from_pem(pem: &[u8]) -> Result<VerifyingKey, String> {
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PEM public key: {e}"))?;
        let raw = der
            .as_ref()
            .strip_prefix(&SPKI_ED25519[..])
            .filter(|k| k.len() == 32)
            .ok_or("not an Ed25519 public key")?
            .to_vec();
        let id = key_id(&raw);
        Ok(VerifyingKey { raw, id })
    }

    /// Whether `signature` (base64) signs `text` with this key.
    pub fn verifies(&self, text: &[u8], signature: &str) -> bool {
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(text, &signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_line_reads_back_and_hashes_its_exact_bytes() {
        let (line, link) = Link::START.seal(br#"{"a":"x\",\"seq\":9"}"#, true);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            format!(r#"{{"a":"x\",\"seq\":9","seq":1,"prev":"{GENESIS}"}}"#)
        );
        assert_eq!(
            read_seal(&line),
            Some(Sealed {
                seq: 1,
                prev: GENESIS
            })
        );
        assert_eq!(link.hash, Hash::of(&line));
        let (second, next) = link.seal(b"{}", false);
        assert_eq!(next.seq, 2);
        assert_eq!(read_seal(&second).unwrap().prev, link.hash);
        assert!(second.starts_with(b"{\"seq\":2,"));
    }

    #[test]
    fn damaged_lines_are_not_sealed() {
        let (line, _) = Link::START.seal(br#"{"a":1}"#, true);
        for cut in 1..line.len() {
            assert_eq!(read_seal(&line[..cut]), None, "cut at {cut}");
        }
        let upper = String::from_utf8(line.clone())
            .unwrap()
            .replace("\"prev\":\"0", "\"prev\":\"A");
        assert_eq!(read_seal(upper.as_bytes()), None);
        assert_eq!(read_seal(br#"{"a":1}"#), None);
    }

    #[test]
    fn checkpoints_verify_with_the_public_key_only() {
        let (private, public) = CheckpointKey::generate().unwrap();
        let key = CheckpointKey::from_pem(private.as_bytes()).unwrap();
        let public = VerifyingKey::from_pem(public.as_bytes()).unwrap();
        assert_eq!(key.id(), public.id);
        let link = Link {
            seq: 41,
            hash: Hash::of(b"x"),
        };
        let object = key.checkpoint("2026-12-03T10:00:00.000Z", "relay1", &link, false);
        let value: serde_json::Value = serde_json::from_slice(&object).unwrap();
        let cp: Checkpoint = serde_json::from_value(value["checkpoint"].clone()).unwrap();
        let text = signed_text(&cp.time, &cp.host, 42, &link.hash);
        assert!(public.verifies(&text, &cp.signature));
        assert!(!public.verifies(
            &signed_text(&cp.time, &cp.host, 43, &link.hash),
            &cp.signature
        ));
        let (_, other) = CheckpointKey::generate().unwrap();
        assert!(
            !VerifyingKey::from_pem(other.as_bytes())
                .unwrap()
                .verifies(&text, &cp.signature)
        );
    }
}
