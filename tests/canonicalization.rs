//! Runbook: header bytes that verifiers could read differently. relayguard canonicalizes
//! signed headers exactly as RFC 6376 3.4.2 says (only SP/HTAB runs collapse, a fold's line
//! break goes, every other byte stays), checked against dkimpy on generated values and
//! through the milter with dkimpy and OpenDKIM's verifier. A header that begins or ends with
//! CR, LF, VT or FF, which dkimpy strips and the RFC keeps, is refused: no signature could
//! verify everywhere.

mod common;

use common::dkim::{
    At, records, sign, sign_on, signed_message, standard_setup, verify_dkimpy, verify_opendkim,
};
use common::rng::Rng;
use common::{Milter, config_text};
use indymilter_test::Status;
use relayguard::dkim::header::{ambiguous_end, relaxed};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// dkimpy's canonical `name:value` for each (name, value as it stands in the message).
fn dkimpy_canonical(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut child = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dkim_canon.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with python3-dkim: run scripts/test");
    let input: String = fields
        .iter()
        .map(|(n, v)| format!("{} {}\n", hex(n), hex(v)))
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(unhex)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The pieces a header value is made of: every byte class, and folds.
const PIECES: &[&[u8]] = &[
    b"a",
    b"Z",
    b"0",
    b":",
    b";",
    b" ",
    b" ",
    b"\t",
    b"  \t",
    b"\r",
    b"\x0b",
    b"\x0c",
    b"\x00",
    b"\x01",
    b"\x1f",
    b"\x7f",
    b"\x80",
    b"\xff",
    "ü".as_bytes(),
    "€".as_bytes(),
    b"FOLD",
];

#[test]
fn relaxed_canonicalization_matches_dkimpy_wherever_relayguard_signs() {
    let mut rng = Rng(0x0c0f_fee5);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut refused = Vec::new();
    for n in 0..20_000 {
        // The value as the milter passes it (LF folds) and as it stands in the message that
        // dkimpy reads (CRLF folds, after "Name: ").
        let (mut milter, mut wire) = (Vec::new(), b" ".to_vec());
        for _ in 0..rng.below(12) {
            let piece = PIECES[rng.below(PIECES.len())];
            if piece == b"FOLD" {
                // In a milter's LF-folded value a CR right before the fold would read as a
                // CRLF fold; Postfix strips such a CR before the milter sees it.
                if n % 2 == 0 && milter.last() == Some(&b'\r') {
                    milter.push(b'x');
                    wire.push(b'x');
                }
                let wsp: &[u8] = if rng.chance(50) { b" " } else { b"\t" };
                milter.extend_from_slice(if n % 2 == 0 { b"\n" } else { b"\r\n" });
                milter.extend_from_slice(wsp);
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(wsp);
            } else {
                milter.extend_from_slice(piece);
                wire.extend_from_slice(piece);
            }
        }
        wire.extend_from_slice(b"\r\n");
        let name: &[u8] = if n % 3 == 0 {
            b"Subject"
        } else {
            b"X-Mixed-CASE"
        };
        let mut canonical = Vec::new();
        relaxed(name, &milter, &mut canonical);
        ours.push((canonical, ambiguous_end(&milter)));
        theirs.push((name.to_vec(), wire));
    }
    let reference = dkimpy_canonical(&theirs);
    let mut disagreements = Vec::new();
    let mut signed = 0;
    for (i, ((canonical, end), dkimpy)) in ours.iter().zip(&reference).enumerate() {
        match end {
            None => {
                signed += 1;
                if canonical != dkimpy {
                    disagreements.push(format!(
                        "{:?}: relayguard {:?}, dkimpy {:?}",
                        String::from_utf8_lossy(&theirs[i].1),
                        String::from_utf8_lossy(canonical),
                        String::from_utf8_lossy(dkimpy)
                    ));
                }
            }
            // Refused: and rightly, dkimpy reads it differently from the RFC.
            Some(_) => {
                if canonical == dkimpy {
                    disagreements.push(format!(
                        "{:?} refused though dkimpy agrees",
                        String::from_utf8_lossy(&theirs[i].1)
                    ));
                }
                refused.push(i);
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of 20,000:\n{}",
        disagreements.len(),
        disagreements[..disagreements.len().min(10)].join("\n")
    );
    assert!(
        signed > 10_000 && refused.len() > 1_000,
        "{signed} signed, {} refused",
        refused.len()
    );
}

fn relay_config(dir: &Path) -> String {
    let dkim = standard_setup(dir);
    format!("{}\n{dkim}", config_text("inet:0@127.0.0.1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_bytes_inside_signed_headers_verify_with_dkimpy() {
    // Each Subject through the milter, signed (RSA and Ed25519), then verified. OpenDKIM
    // 2.11 turns CR, LF, VT and FF inside a value into white space (not what RFC 6376 3.4.2
    // says), so for those it is only reported; everything else must verify with it too.
    let subjects: &[(&str, &[u8], bool)] = &[
        ("plain", b"a b", true),
        ("bare CR", b"a\rb", false),
        ("bare CR before a space", b"a\r b", false),
        ("form feed", b"a\x0cb", false),
        ("form feed between spaces", b"a \x0c b", false),
        ("vertical tab", b"a\x0bb", false),
        ("other control", b"a\x01b", true),
        ("DEL", b"a\x7fb", true),
        ("8-bit", b"a\xe4\xffb", true),
        ("UTF-8", "Grüße  aus\tGraz".as_bytes(), true),
        ("folded", b"a\r\n\tb  \r\n c", true),
        ("white space at both ends", b" \t a\t ", true),
    ];
    let milter = Milter::with_config(relay_config).await;
    let dir = tempfile::tempdir().unwrap();
    let mut conn = milter.connect().await;
    let mut files = Vec::new();
    for (i, (what, subject, _)) in subjects.iter().enumerate() {
        let raw = [
            b"From: alice@tugraz.at\r\nTo: friend@example.org\r\nSubject: ".as_slice(),
            subject,
            b"\r\n\r\nhello\r\n",
        ]
        .concat();
        let (status, signatures) = if i == 0 {
            sign(&mut conn, "alice", "<alice@tugraz.at>", &raw).await
        } else {
            sign_on(&mut conn, "alice", "<alice@tugraz.at>", &raw).await
        };
        assert_eq!(status, Status::Accept, "{what}");
        assert_eq!(signatures.len(), 2, "{what}");
        let file = dir.path().join(format!("{i:02}.eml"));
        std::fs::write(&file, signed_message(&signatures, &raw)).unwrap();
        files.push(file);
    }
    conn.close().await.unwrap();
    let dkimpy = verify_dkimpy(&files, &records(), dir.path(), At::Now);
    let opendkim = verify_opendkim(&files, dir.path());
    for (((what, _, opendkim_follows_rfc), dkimpy), opendkim) in
        subjects.iter().zip(&dkimpy).zip(&opendkim)
    {
        eprintln!("{what}: dkimpy {dkimpy}, OpenDKIM verified {opendkim}");
        assert!(dkimpy.ends_with(" ok 2"), "{what}: {dkimpy}");
        if *opendkim_follows_rfc {
            assert!(opendkim, "{what}: OpenDKIM");
        }
    }
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_header_verifiers_read_differently_is_refused_with_what_to_change() {
    let milter = Milter::with_config(relay_config).await;
    let mut conn = milter.connect().await;
    let mut first = true;
    for (subject, byte) in [
        (&b"a\x0c"[..], "0x0C"),
        (b"\x0ba", "0x0B"),
        (b"a\r \t", "0x0D"),
    ] {
        let raw = [
            b"From: alice@tugraz.at\r\nTo: friend@example.org\r\nSubject: ".as_slice(),
            subject,
            b"\r\n\r\nhello\r\n",
        ]
        .concat();
        let (status, signatures) = if first {
            first = false;
            sign(&mut conn, "alice", "<alice@tugraz.at>", &raw).await
        } else {
            sign_on(&mut conn, "alice", "<alice@tugraz.at>", &raw).await
        };
        assert!(signatures.is_empty());
        let Status::Reject { message: Some(m) } = &status else {
            panic!("{status:?}")
        };
        assert_eq!(
            m.to_str().unwrap(),
            format!(
                "550 5.6.0 Subject header begins or ends with control character {byte}, which DKIM verifiers read differently; remove it"
            )
        );
    }
    // A header that is not signed may carry it.
    let raw = b"From: alice@tugraz.at\r\nTo: friend@example.org\r\nX-Note: a\x0c\r\n\r\nhello\r\n";
    let (status, signatures) = sign_on(&mut conn, "alice", "<alice@tugraz.at>", raw).await;
    assert_eq!((status, signatures.len()), (Status::Accept, 2));
    conn.close().await.unwrap();
    milter.stop().await.unwrap();
}
