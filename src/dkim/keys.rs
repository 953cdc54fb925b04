//! DKIM private keys: loading with the checks OpenDKIM operators expect (safe permissions,
//! strong RSA, matching algorithm), public key records, and key generation.

use super::schedule::Algorithm;
use base64::Engine;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Missing or unreadable.
    #[error("{}: cannot read key: {source}", path.display())]
    Read {
        /// Key file.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// Readable or writable by group or others.
    #[error("{}: unsafe permissions {mode:04o}: a private key must not be accessible to group or others (chmod 600, or set dkim.allow_unsafe_key_permissions for development)", path.display())]
    Unsafe {
        /// Key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not a PEM private key we understand.
    #[error("{}: not a usable private key: {reason}", path.display())]
    Parse {
        /// Key file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// RSA key outside 2048..=4096 bits.
    #[error("{}: RSA key of {bits} bits refused: 2048, 3072 or 4096 bits are required", path.display())]
    Weak {
        /// Key file.
        path: PathBuf,
        /// Modulus size.
        bits: usize,
    },
    /// The file holds another algorithm's key than the schedule says.
    #[error("{}: the file holds an {found} key but the selector says {expected}", path.display())]
    Mismatch {
        /// Key file.
        path: PathBuf,
        /// From the schedule.
        expected: Algorithm,
        /// In the file.
        found: Algorithm,
    },
    /// Writing a generated key failed.
    #[error("{}: cannot write key: {source}", path.display())]
    Write {
        /// Key file.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
}

/// A validated private key, ready to sign.
pub struct LoadedKey {
    /// The algorithm it signs with.
    pub algorithm: Algorithm,
    /// RSA modulus size in bits (none for Ed25519).
    pub bits: Option<usize>,
    /// The public key as DNS `p=` wants it: SubjectPublicKeyInfo for RSA, 32 raw bytes for Ed25519.
    pub public_key: Vec<u8>,
    /// The signing key.
    pub key: DkimKey,
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedKey")
            .field("algorithm", &self.algorithm)
            .field("bits", &self.bits)
            .field("key", &"<omitted>")
            .finish()
    }
}

impl LoadedKey {
    /// The DNS TXT record value: `v=DKIM1; k=...; p=...`.
    pub fn dns_record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.key_type(),
            base64::engine::general_purpose::STANDARD.encode(&self.public_key)
        )
    }
}

/// Reads and validates a key file. The file is read once, so a swap while reading cannot mix
/// two keys; a half-written file fails to parse.
pub fn load(path: &Path, expected: Algorithm, require_safe: bool) -> Result<LoadedKey, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o777;
    if require_safe && mode & 0o066 != 0 {
        return Err(KeyError::Unsafe {
            path: path.to_path_buf(),
            mode,
        });
    }
    let pem = std::io::read_to_string(file).map_err(read_err)?;
    parse(path, pem.as_bytes(), expected)
}

/// Parses PEM key text (PKCS#1 or PKCS#8 RSA, PKCS#8 Ed25519) and checks it.
pub fn parse(path: &Path, pem: &[u8], expected: Algorithm) -> Result<LoadedKey, KeyError> {
    let parse_err = |reason: String| KeyError::Parse {
        path: path.to_path_buf(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| parse_err(pem_error(&e)))?;
    let loaded = match &der {
        PrivateKeyDer::Pkcs8(pkcs8)
            if Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der()).is_ok() =>
        {
            let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
                .map_err(|e| parse_err(e.to_string()))?;
            LoadedKey {
                algorithm: Algorithm::Ed25519Sha256,
                bits: None,
                public_key: key.public_key(),
                key: DkimKey::Ed25519(key),
            }
        }
        PrivateKeyDer::Pkcs1(_) | PrivateKeyDer::Pkcs8(_) => {
            let rsa = match &der {
                PrivateKeyDer::Pkcs1(k) => rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                    .map_err(|e| parse_err(e.to_string()))?,
                PrivateKeyDer::Pkcs8(k) => rsa::RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der())
                    .map_err(|e| parse_err(e.to_string()))?,
                _ => unreachable!("matched above"),
            };
            let bits = rsa.size() * 8;
            if !(2048..=4096).contains(&bits) {
                return Err(KeyError::Weak {
                    path: path.to_path_buf(),
                    bits,
                });
            }
            let public_key = rsa
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| parse_err(e.to_string()))?
                .into_vec();
            let key = RsaKey::<Sha256>::from_key_der(der.clone_key())
                .map_err(|e| parse_err(e.to_string()))?;
            LoadedKey {
                algorithm: Algorithm::RsaSha256,
                bits: Some(bits),
                public_key,
                key: DkimKey::Rsa(key),
            }
        }
        _ => {
            return Err(parse_err(
                "only RSA and Ed25519 private keys are supported".into(),
            ));
        }
    };
    if loaded.algorithm != expected {
        return Err(KeyError::Mismatch {
            path: path.to_path_buf(),
            expected,
            found: loaded.algorithm,
        });
    }
    Ok(loaded)
}

/// A PEM reading error in words an operator acts on (the library prints byte arrays).
fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_string();
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "the PEM block has no `-----END {}-----` line: the file is truncated or still being written",
            text(end_marker)
        ),
        Error::IllegalSectionStart { line } => {
            format!("malformed PEM begin line `{}`", text(line))
        }
        Error::Base64Decode(e) => format!("the PEM block is not valid base64 ({e})"),
        Error::NoItemsFound => {
            "no PEM private key (`-----BEGIN PRIVATE KEY-----` or `-----BEGIN RSA PRIVATE KEY-----`) in the file".into()
        }
        other => other.to_string(),
    }
}

/// Key kinds `keys generate` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with the given modulus size.
    Rsa(usize),
    /// Ed25519.
    Ed25519,
}

impl KeyKind {
    /// The signing algorithm of this kind.
    pub fn algorithm(self) -> Algorithm {
        match self {
            KeyKind::Rsa(_) => Algorithm::RsaSha256,
            KeyKind::Ed25519 => Algorithm::Ed25519Sha256,
        }
    }
}

/// Generates a private key as PKCS#8 PEM.
pub fn generate(kind: KeyKind) -> Result<String, String> {
    match kind {
        KeyKind::Ed25519 => {
            let pkcs8 =
                ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|e| e.to_string())?;
            Ok(pem_encode("PRIVATE KEY", pkcs8.as_ref()))
        }
        KeyKind::Rsa(bits) => {
            let key =
                rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits).map_err(|e| e.to_string())?;
            key.to_pkcs8_pem(LineEnding::LF)
                .map(|p| p.to_string())
                .map_err(|e| e.to_string())
        }
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a new private key file with mode 0600; refuses to overwrite.
pub fn write_new(path: &Path, pem: &str) -> Result<(), KeyError> {
    let write_err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    file.write_all(pem.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_match_their_algorithm() {
        let ed = generate(KeyKind::Ed25519).unwrap();
        let key = parse(Path::new("ed.pem"), ed.as_bytes(), Algorithm::Ed25519Sha256).unwrap();
        assert_eq!(key.public_key.len(), 32);
        assert!(key.dns_record().starts_with("v=DKIM1; k=ed25519; p="));
        let e = parse(Path::new("ed.pem"), ed.as_bytes(), Algorithm::RsaSha256).unwrap_err();
        assert!(
            e.to_string()
                .contains("holds an ed25519-sha256 key but the selector says rsa-sha256"),
            "{e}"
        );
    }

    #[test]
    fn half_written_and_weak_keys_are_refused() {
        let ed = generate(KeyKind::Ed25519).unwrap();
        let half = &ed.as_bytes()[..ed.len() / 2];
        let e = parse(Path::new("k.pem"), half, Algorithm::Ed25519Sha256).unwrap_err();
        assert_eq!(
            e.to_string(),
            "k.pem: not a usable private key: the PEM block has no `-----END PRIVATE KEY-----` line: the file is truncated or still being written"
        );
        let e = parse(Path::new("k.pem"), b"", Algorithm::Ed25519Sha256).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("k.pem: not a usable private key: no PEM private key"),
            "{e}"
        );
        let weak = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024)
            .unwrap()
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap();
        let e = parse(Path::new("weak.pem"), weak.as_bytes(), Algorithm::RsaSha256).unwrap_err();
        assert_eq!(
            e.to_string(),
            "weak.pem: RSA key of 1024 bits refused: 2048, 3072 or 4096 bits are required"
        );
    }

    #[test]
    fn unsafe_permissions_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_new(&path, &generate(KeyKind::Ed25519).unwrap()).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        load(&path, Algorithm::Ed25519Sha256, true).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load(&path, Algorithm::Ed25519Sha256, true),
            Err(KeyError::Unsafe { mode: 0o640, .. })
        ));
        load(&path, Algorithm::Ed25519Sha256, false).unwrap();
        assert!(write_new(&path, "x").is_err(), "never overwrites");
    }
}
