//! Runbook: every accepted message from a protected domain leaves signed, and the signature
//! verifies with mail-auth and, independently, with dkimpy and OpenDKIM, also after what
//! lists and forwarders add, never after what a spoofer adds; rotation follows the clock;
//! broken keys never replace good ones.

mod common;

use common::dkim::{
    self, At, records, selector, sign, signed_message, standard_setup, verify_dkimpy,
    verify_mail_auth,
};
use common::rng::Rng;
use common::{Milter, config_text};
use indymilter_test::Status;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

/// Message `i` of the corpus: header layouts, folding, 8-bit text, odd bodies.
fn corpus_message(i: usize, rng: &mut Rng) -> (&'static str, &'static str, Vec<u8>) {
    let (login, from) = [
        ("alice", "alice@tugraz.at"),
        ("carol", "carol@tu-graz.ac.at"),
        ("alice", "alice@tugraz.at"),
    ][i % 3];
    let mut headers: Vec<String> = vec![
        match i % 4 {
            0 => format!("From: {from}"),
            1 => format!("From: \"Alice Example\" <{from}>"),
            2 => format!("From: =?UTF-8?Q?J=C3=BCrgen?=\r\n <{from}>"),
            _ => format!("FROM:<{from}>"),
        },
        "To: friend@example.org".into(),
        format!("Subject: corpus message {i}"),
        format!("Message-ID: <corpus-{i}@tugraz.at>"),
        "Date: Sat, 28 Nov 2026 10:00:00 +0100".into(),
    ];
    if i.is_multiple_of(5) {
        headers.push("Cc: a@example.org,\r\n\tb@example.org,\r\n c@example.org".into());
    }
    if i % 6 == 1 {
        headers.push("MIME-Version: 1.0".into());
        headers.push("Content-Type: text/plain; charset=utf-8".into());
        headers.push("Content-Transfer-Encoding: 8bit".into());
    }
    if i % 7 == 2 {
        headers.push(format!("Subject2-Long: {}", "word ".repeat(120)));
        headers.push(format!(
            "X-Folded:{}",
            (0..30)
                .map(|n| format!("\r\n\tpart{n}"))
                .collect::<String>()
        ));
    }
    if i % 8 == 3 {
        headers.push("Reply-To:   spaced   value   ".into());
        headers.push("List-Id: <relayguard.lists.tugraz.at>".into());
        headers.push("x-lower-case: yes".into());
    }
    if i % 9 == 4 {
        headers.push("Subject-8bit: Grüße aus Graz ✓".into());
    }
    // Real-world MIME shapes: alternative text and HTML, a forwarded message attached, a
    // digest; each with the long folded Content-Type a mail client writes.
    let mime = (i % 6 != 1).then(|| mime_body(i % 13)).flatten();
    if let Some((content_type, _)) = &mime {
        headers.push("MIME-Version: 1.0".into());
        headers.push(format!("Content-Type: {content_type}"));
    }
    // Shuffle everything but From.
    for k in (2..headers.len()).rev() {
        let j = 1 + rng.below(k);
        headers.swap(k, j);
    }
    let mut raw = headers.join("\r\n").into_bytes();
    raw.extend_from_slice(b"\r\n\r\n");
    if let Some((_, body)) = mime {
        raw.extend_from_slice(body.as_bytes());
        return (login, from, raw);
    }
    match i % 10 {
        0 => {}
        1 => raw.extend_from_slice(b"\r\n"),
        2 => raw.extend_from_slice(b"no final line break"),
        3 => raw.extend_from_slice(b"trailing blank lines\r\n\r\n\r\n\r\n"),
        4 => raw.extend_from_slice(
            &[b'x'; 3000]
                .iter()
                .chain(b"\r\n")
                .copied()
                .collect::<Vec<u8>>(),
        ),
        5 => raw.extend_from_slice(
            "8-bit body: Grüße, naïve café\r\nline with tab\tand trailing spaces   \r\n".as_bytes(),
        ),
        6 => raw.extend_from_slice(&[0xe4, 0xf6, 0xfc, b'\r', b'\n']),
        7 => {
            // Several milter body chunks.
            for n in 0..3000 {
                raw.extend_from_slice(
                    format!(
                        "line {n} of a long body {}\r\n",
                        "abc ".repeat(rng.below(30))
                    )
                    .as_bytes(),
                );
            }
        }
        8 => raw.extend_from_slice(b".leading dot\r\n \r\n\t\r\nend\r\n"),
        _ => {
            for _ in 0..rng.below(50) {
                raw.extend_from_slice(b"some text \t \r\n");
            }
        }
    }
    (login, from, raw)
}

/// A MIME body of shape `k` (0-2) and its Content-Type value; `None` for the other shapes.
fn mime_body(k: usize) -> Option<(&'static str, String)> {
    let forwarded = "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; h=from:subject;\r\n\tbh=AAAA; b=BBBB\r\nFrom: Original Sender <orig@example.org>\r\nTo: alice@tugraz.at\r\nSubject: the original\r\nDate: Fri, 27 Nov 2026 09:00:00 +0100\r\nMessage-ID: <orig@example.org>\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThe original text.\r\n";
    match k {
        0 => Some((
            "multipart/alternative;\r\n boundary=\"=_alt_1234567890abcdef\"",
            "This is a multi-part message in MIME format.\r\n\r\n--=_alt_1234567890abcdef\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus Graz,=20\r\nsoft line=\r\n break\r\n\r\n--=_alt_1234567890abcdef\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nPGh0bWw+PGJvZHk+R3LDvMOfZSBhdXMgR3JhejwvYm9keT48L2h0bWw+\r\n\r\n--=_alt_1234567890abcdef--\r\n".to_string(),
        )),
        1 => Some((
            "multipart/mixed;\r\n\tboundary=\"------------fwd0987654321\"",
            format!("--------------fwd0987654321\r\nContent-Type: text/plain; charset=utf-8; format=flowed\r\n\r\nSee below. \r\n\r\n--------------fwd0987654321\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"the original.eml\"\r\n\r\n{forwarded}\r\n--------------fwd0987654321--\r\n"),
        )),
        2 => Some((
            "multipart/digest; boundary=\"digest-boundary\"",
            format!("Staff list digest, 2 messages\r\n\r\n--digest-boundary\r\n\r\n{forwarded}\r\n--digest-boundary\r\n\r\nFrom: bob@tugraz.at\r\nSubject: re: the original\r\n\r\n> The original text.\r\nAgreed.\r\n\r\n--digest-boundary--\r\n\r\nEnd of digest\r\n"),
        )),
        _ => None,
    }
}

fn signing_config(dir: &std::path::Path) -> String {
    let dkim = standard_setup(dir);
    format!(
        "{}\n{dkim}",
        config_text("inet:0@127.0.0.1").replace("\"robot-web\"]", "\"robot-web\"]\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_verifies_with_mail_auth_and_dkimpy() {
    let milter = Milter::with_config(signing_config).await;
    // carol owns carol@tu-graz.ac.at through the own-local-part rule.
    let out = tempfile::tempdir().unwrap();
    let records = records();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut files = Vec::new();
    let mut signatures_total = 0;
    let mut conn = milter.connect().await;
    let mut first = true;
    for i in 0..120 {
        let (login, from, raw) = corpus_message(i, &mut rng);
        let (status, signatures) = if first {
            first = false;
            sign(&mut conn, login, &format!("<{from}>"), &raw).await
        } else {
            dkim::sign_on(&mut conn, login, &format!("<{from}>"), &raw).await
        };
        assert_eq!(status, Status::Accept, "message {i}");
        let expected = if from.ends_with("@tugraz.at") { 2 } else { 1 };
        assert_eq!(
            signatures.len(),
            expected,
            "message {i}: dual signing for tugraz.at"
        );
        for s in &signatures {
            assert!(!s.contains("l="), "never l=");
            assert!(s.contains("c=relaxed/relaxed"), "{s}");
            assert!(
                !s.ends_with("\r\n\t;"),
                "no folding before the final semicolon"
            );
        }
        let message = signed_message(&signatures, &raw);
        let verified = verify_mail_auth(&message, &records, At::Now)
            .await
            .unwrap_or_else(|e| panic!("message {i}: mail-auth: {e}"));
        assert_eq!(verified, expected);
        signatures_total += verified;
        let path = out.path().join(format!("m{i:03}.eml"));
        std::fs::write(&path, &message).unwrap();
        files.push(path);
    }
    conn.close().await.unwrap();
    let results = verify_dkimpy(&files, &records, out.path(), At::Now);
    let failures: Vec<&String> = results.iter().filter(|l| !l.contains(" ok ")).collect();
    assert_eq!(results.len(), files.len());
    // OpenDKIM's -t reads a file without a final line break as if its last line were not
    // there; on the wire (SMTP) a message always ends with one, so it judges that form.
    let wire: Vec<std::path::PathBuf> = files
        .iter()
        .map(|f| {
            let mut bytes = std::fs::read(f).unwrap();
            if !bytes.ends_with(b"\r\n") {
                bytes.extend_from_slice(b"\r\n");
            }
            let path = f.with_extension("wire");
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let opendkim = dkim::verify_opendkim(&wire, out.path());
    let refused: Vec<String> = wire
        .iter()
        .zip(&opendkim)
        .filter(|(_, ok)| !**ok)
        .map(|(f, _)| f.display().to_string())
        .collect();
    assert!(refused.is_empty(), "OpenDKIM rejected: {refused:?}");
    assert!(
        failures.is_empty(),
        "dkimpy rejected:\n{}",
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        signatures_total >= 180,
        "{signatures_total} signatures checked"
    );
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_header_added_after_signing_breaks_the_signature() {
    // Sender is checked for ownership like From (Outlook shows "on behalf of" it), so it is
    // signed and oversigned: a later hop cannot add one, or a second one, and keep DKIM.
    let milter = Milter::with_config(signing_config).await;
    let dir = tempfile::tempdir().unwrap();
    let records = records();
    let mut files = Vec::new();
    let forged = "Sender: Rector <rector@tugraz.at>\r\n";
    for (n, raw) in [
        &b"From: alice@tugraz.at\r\nTo: friend@example.org\r\nSubject: no sender\r\n\r\nhello\r\n"[..],
        b"From: Office <office@tugraz.at>\r\nSender: alice@tugraz.at\r\nTo: friend@example.org\r\nSubject: own sender\r\n\r\nhello\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let mut conn = milter.connect().await;
        let (status, signatures) = sign(&mut conn, "alice", "<alice@tugraz.at>", raw).await;
        assert_eq!(status, Status::Accept);
        // h= names every Sender present and one more.
        assert!(
            signatures
                .iter()
                .all(|s| s.to_ascii_lowercase().matches(":sender").count() == n + 1),
            "Sender signed and oversigned: {signatures:?}"
        );
        let signed = signed_message(&signatures, raw);
        let added = [forged.as_bytes(), &signed].concat();
        for (name, bytes) in [("signed", &signed), ("added", &added)] {
            let path = dir.path().join(format!("{n}-{name}.eml"));
            std::fs::write(&path, bytes).unwrap();
            files.push(path);
        }
        conn.close().await.unwrap();
    }
    let results = verify_dkimpy(&files, &records, dir.path(), At::Now);
    for (file, result) in files.iter().zip(&results) {
        let signed = file.to_str().unwrap().ends_with("-signed.eml");
        assert_eq!(result.ends_with(" ok 2"), signed, "{result}");
    }
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_bodies_verify_with_dkimpy() {
    // Bodies where relaxed canonicalization has work to do. mail-auth 0.13.3's own
    // canonicalizer hashes a trailing whitespace-only line as an empty line, so its verifier
    // is not the judge here: dkimpy is. (Not here: a last line without CRLF that ends in
    // whitespace, which an MTA never passes on and where dkimpy and mail-auth disagree.)
    let bodies: &[&[u8]] = &[
        b"text\r\n \r\n",
        b" \r\n",
        b"a\r\n\t \r\n\r\n \r\n",
        b"",
        b"\r\n\r\n\r\n",
        b"  leading  and  double  spaces\t\tand tabs \t\r\n",
        b"bare\rCR inside a line\r\n",
        b"\r\nstarts with an empty line\r\n",
    ];
    let bodies: Vec<(String, Vec<u8>)> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| (format!("odd body {i}"), body.to_vec()))
        .collect();
    let results = dkimpy_on_signed_bodies(&bodies).await;
    let failures: Vec<&String> = results.iter().filter(|l| !l.contains(" ok ")).collect();
    assert!(failures.is_empty(), "dkimpy rejected: {failures:#?}");
}

/// Signs each body (under a From/To/Subject block naming it) as alice, all on one
/// connection, and has dkimpy verify each signed message: its lines, one per body.
async fn dkimpy_on_signed_bodies(bodies: &[(String, Vec<u8>)]) -> Vec<String> {
    let milter = Milter::with_config(signing_config).await;
    let out = tempfile::tempdir().unwrap();
    let mut conn = milter.connect().await;
    let mut files = Vec::new();
    for (i, (name, body)) in bodies.iter().enumerate() {
        let mut raw =
            format!("From: alice@tugraz.at\r\nTo: friend@example.org\r\nSubject: {name}\r\n\r\n")
                .into_bytes();
        raw.extend_from_slice(body);
        let (status, signatures) = if i == 0 {
            sign(&mut conn, "alice", "<alice@tugraz.at>", &raw).await
        } else {
            dkim::sign_on(&mut conn, "alice", "<alice@tugraz.at>", &raw).await
        };
        assert_eq!(status, Status::Accept, "{name}");
        assert_eq!(signatures.len(), 2, "{name}");
        let path = out.path().join(format!("b{i:02}.eml"));
        std::fs::write(&path, signed_message(&signatures, &raw)).unwrap();
        files.push(path);
    }
    conn.close().await.unwrap();
    let results = verify_dkimpy(&files, &records(), out.path(), At::Now);
    assert_eq!(results.len(), files.len());
    milter.stop().await.unwrap();
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_full_size_chunks_verify_wherever_the_milter_cuts_them() {
    // An MTA sends the body in 65,535-byte chunks; the milter reads each in pieces of 16 KiB
    // (vendor/indymilter/PATCHES.md). A cut between CR and LF, inside trailing whitespace or
    // inside a run of empty lines must not change the body hash.
    const PIECE: usize = 16 * 1024;
    fn body_cut_at(cuts: &[usize], len: usize) -> Vec<u8> {
        let mut body = Vec::new();
        let mut n = 0;
        while body.len() < len {
            let next = cuts.iter().find(|&&c| c > body.len()).copied();
            match next {
                // Land a CR just before the cut, then trailing blanks and a line end after.
                Some(cut) if cut - body.len() < 80 => {
                    let fill = cut - body.len();
                    body.extend(std::iter::repeat_n(b'x', fill.saturating_sub(3)));
                    body.extend_from_slice(&b"  \r"[3usize.saturating_sub(fill)..]);
                    body.extend_from_slice(b"\n \t \r\n\r\n\r\n");
                }
                _ => {
                    body.extend_from_slice(format!("line {n} of a long body\r\n").as_bytes());
                    n += 1;
                }
            }
        }
        body
    }
    // Where the milter cuts: at each 65,535-byte chunk, and every 16 KiB inside one.
    let cuts: Vec<usize> = (0..4)
        .flat_map(|chunk| {
            let start = chunk * 65_535;
            [1, 2, 3]
                .map(|k| start + k * PIECE)
                .into_iter()
                .chain([start + 65_535])
        })
        .collect();
    let bodies: Vec<(String, Vec<u8>)> = [PIECE - 1, PIECE, PIECE + 1, 65_535, 65_536, 200_000]
        .into_iter()
        .map(|size| (format!("{size} bytes"), body_cut_at(&cuts, size)))
        .collect();
    let results = dkimpy_on_signed_bodies(&bodies).await;
    let failures: Vec<&String> = results.iter().filter(|l| !l.ends_with(" ok 2")).collect();
    assert!(failures.is_empty(), "dkimpy rejected: {failures:#?}");
}

#[tokio::test]
async fn a_verifier_on_the_signers_pinned_clock_still_rejects_expired_and_tampered_mail() {
    // The verifiers judge t= and x= at the clock the relay signed with, so a test signed on
    // a pinned clock passes on any date. That must not make them lenient.
    use relayguard::dkim::schedule::Schedule;
    use relayguard::dkim::signer::{KeySet, MessageSigner};
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    dkim::install_key(&keys_dir, "tugraz.at.rsa-a.pem");
    dkim::install_key(&keys_dir, "tugraz.at.ed-a.pem");
    let text = [
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
    ]
    .concat();
    let schedule =
        Schedule::parse(std::path::Path::new("selectors.toml"), &text, &keys_dir).unwrap();
    let config = relayguard::config::Config::parse(std::path::Path::new("/mem/r.toml"), "[dkim]\n")
        .unwrap()
        .dkim
        .unwrap()
        .signing;
    let keys = KeySet::load(schedule, config, T0).unwrap();
    let raw =
        b"From: alice@tugraz.at\r\nTo: friend@example.org\r\nSubject: pinned\r\n\r\nhello\r\n";
    let fields = relayguard::explain::split_header_block(raw)
        .into_iter()
        .map(|(name, value)| (name.into(), value.into()))
        .collect();
    let mut signer = MessageSigner::new(keys.active("tugraz.at", T0), fields);
    signer.body(b"hello\r\n");
    let signatures: Vec<String> = signer
        .finish(T0 as u64)
        .unwrap()
        .into_iter()
        .map(|s| s.value)
        .collect();
    let message = signed_message(&signatures, raw);
    let records = records();
    let week = 7 * 86_400;
    assert_eq!(
        verify_mail_auth(&message, &records, At::Unix(T0)).await,
        Ok(2)
    );
    assert_eq!(
        verify_mail_auth(&message, &records, At::Unix(T0 + week - 1)).await,
        Ok(2)
    );
    assert_eq!(
        verify_mail_auth(&message, &records, At::Unix(T0 + week)).await,
        Err("Neutral(Dkim(SignatureExpired))".into()),
        "x= is a week after t="
    );
    assert!(
        verify_mail_auth(&message, &records, At::Unix(T0 - 60))
            .await
            .unwrap_err()
            .contains("signed in the future")
    );
    let tampered = String::from_utf8(message.clone())
        .unwrap()
        .replace("Subject: pinned", "Subject: pinneD");
    assert_eq!(
        verify_mail_auth(tampered.as_bytes(), &records, At::Unix(T0)).await,
        Err("Fail(Crypto(FailedVerification))".into())
    );
    let body = String::from_utf8(message)
        .unwrap()
        .replace("hello", "hellO");
    assert_eq!(
        verify_mail_auth(body.as_bytes(), &records, At::Unix(T0)).await,
        Err("Neutral(Dkim(FailedBodyHashMatch))".into())
    );
    // dkimpy, given the same clock, agrees on both sides of x= (it allows ten hours' slop).
    let file = dir.path().join("m.eml");
    std::fs::write(&file, signed_message(&signatures, raw)).unwrap();
    let verdict = |at| {
        verify_dkimpy(
            std::slice::from_ref(&file),
            &records,
            dir.path(),
            At::Unix(at),
        )[0]
        .clone()
    };
    assert!(verdict(T0 + week - 1).ends_with(" ok 2"), "{}", verdict(T0));
    assert!(verdict(T0 + week + 11 * 3_600).contains("FAIL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_header_layouts_never_hit_the_b_folding_trap() {
    // mail-auth folds `b=` as `...==\r\n\t;` when the base64 ends at the wrap column, which
    // depends on the h= layout; dkimpy rejects that form. Vary the configured header list
    // (as operators may) so the b= value ends at every column, and check with dkimpy.
    use relayguard::dkim::schedule::Schedule;
    use relayguard::dkim::signer::{
        DEFAULT_HEADERS, DEFAULT_OVERSIGNED, KeySet, MessageSigner, SigningConfig, WithoutKey,
    };
    let dir = tempfile::tempdir().unwrap();
    dkim::install_key(&dir.path().join("keys"), "tu-graz.ac.at.rsa-a.pem");
    let text = selector(
        "tu-graz.ac.at",
        "rsa-a",
        "rsa-sha256",
        "tu-graz.ac.at.rsa-a.pem",
        "2026-01-01T00:00:00Z",
        None,
    );
    let schedule = Schedule::parse(
        std::path::Path::new("selectors.toml"),
        &text,
        &dir.path().join("keys"),
    )
    .unwrap();
    let records = records();
    let mut files = Vec::new();
    let mut folded_before_semicolon = 0;
    for n in 0..180 {
        let mut headers: Vec<String> = DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect();
        // h= lists the signed headers that are present: a present, signed header of
        // varying name length moves where b= starts.
        let pad = format!("x-pad{}", "p".repeat(n % 60));
        headers.push(pad.clone());
        if n >= 60 {
            headers.push("x-second".into());
        }
        let mut second = String::from(if n >= 60 { "X-Second: 2\r\n" } else { "" });
        // Which of the optional signed headers are present varies h= further.
        for (bit, name) in [
            "Cc",
            "Reply-To",
            "In-Reply-To",
            "References",
            "List-Id",
            "List-Post",
            "List-Help",
        ]
        .iter()
        .enumerate()
        {
            if (n * 37 + n / 7) & (1 << bit) != 0 {
                second.push_str(&format!("{name}: <v{n}@example.org>\r\n"));
            }
        }
        let raw = format!(
            "From: alice@tu-graz.ac.at\r\nTo: friend@example.org\r\nSubject: layouts\r\n{pad}: 1\r\n{second}\r\nbody\r\n"
        );
        let raw = raw.as_bytes();
        // h= lists every configured name (absent ones too), so the layout is set by the
        // configuration; a name of varying length at the end of the list moves where b= starts.
        let mut oversign: Vec<String> = DEFAULT_OVERSIGNED.iter().map(|h| h.to_string()).collect();
        oversign.push(format!("x-tail{}", "t".repeat(n % 70)));
        let config = SigningConfig {
            require_dns: false,
            headers,
            oversign,
            expiry: None,
            signing_domains: vec![],
            without_key: WithoutKey::Tempfail,
            require_safe_keys: true,
        };
        let keys = KeySet::load(schedule.clone(), config, T0).unwrap();
        let fields = relayguard::explain::split_header_block(raw)
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        let mut signer = MessageSigner::new(keys.active("tu-graz.ac.at", T0), fields);
        signer.body(b"body\r\n");
        let signatures: Vec<String> = signer
            .finish(T0 as u64)
            .unwrap()
            .into_iter()
            .map(|s| s.value)
            .collect();
        if signatures[0].ends_with("\r\n\t;") {
            folded_before_semicolon += 1;
        }
        let path = dir.path().join(format!("f{n:03}.eml"));
        std::fs::write(&path, signed_message(&signatures, raw)).unwrap();
        verify_mail_auth(&signed_message(&signatures, raw), &records, At::Unix(T0))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "layout {n}: {e}\n{}",
                    String::from_utf8_lossy(&signed_message(&signatures, raw))
                )
            });
        files.push(path);
    }
    let results = verify_dkimpy(&files, &records, dir.path(), At::Unix(T0));
    let failures: Vec<&String> = results.iter().filter(|l| !l.contains(" ok 1")).collect();
    assert!(
        failures.is_empty(),
        "dkimpy rejected {} of {}:\n{failures:?}",
        failures.len(),
        files.len()
    );
    assert_eq!(
        folded_before_semicolon, 0,
        "signatures fold between b= and the final semicolon"
    );
}

fn rotation_config(dir: &std::path::Path) -> String {
    let keys = dir.join("keys");
    dkim::install_key(&keys, "tugraz.at.rsa-a.pem");
    dkim::install_key(&keys, "tugraz.at.rsa-b.pem");
    dkim::install_key(&keys, "tu-graz.ac.at.rsa-a.pem");
    let schedule = [
        selector(
            "tugraz.at",
            "rsa-a",
            "rsa-sha256",
            "tugraz.at.rsa-a.pem",
            "2026-01-01T00:00:00Z",
            Some("2026-03-01T00:00:00Z"),
        ),
        selector(
            "tugraz.at",
            "rsa-b",
            "rsa-sha256",
            "tugraz.at.rsa-b.pem",
            "2026-02-01T00:00:00Z",
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
    // The clock is simulated (January to March); the verifiers judge t= and x= on it too.
    format!("{}\n[dkim]\n", config_text("inet:0@127.0.0.1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_expire_after_a_week_and_an_independent_verifier_honours_it() {
    let signed_at = Arc::new(AtomicI64::new(T0 + 40 * 86_400));
    let clock_now = signed_at.clone();
    let clock: relayguard::clock::Clock = Arc::new(move || clock_now.load(Ordering::SeqCst) * 1000);
    // The default configuration: expiry_days unset.
    let milter = Milter::with_clock(rotation_config, Some(clock)).await;
    let raw = b"From: alice@tugraz.at\r\nTo: friend@example.org\r\nSubject: x\r\n\r\nhello\r\n";
    let mut conn = milter.connect().await;
    let (status, signatures) = sign(&mut conn, "alice", "<alice@tugraz.at>", raw).await;
    assert_eq!(status, Status::Accept);
    let at = T0 + 40 * 86_400;
    assert!(
        signatures[0].contains(&format!("x={}", at + 7 * 86_400)),
        "{}",
        signatures[0]
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    std::fs::write(&file, signed_message(&signatures, raw)).unwrap();
    let verify = |when: i64| {
        dkim::verify_dkimpy(
            std::slice::from_ref(&file),
            &records(),
            dir.path(),
            At::Unix(when),
        )[0]
        .clone()
    };
    assert!(
        verify(at + 6 * 86_400).ends_with(" ok 1"),
        "within the week"
    );
    let late = verify(at + 8 * 86_400);
    assert!(late.contains("FAIL"), "a replay a week later: {late}");
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_happens_at_the_boundary_without_reload() {
    let now = Arc::new(AtomicI64::new(T0 - 1));
    let clock_now = now.clone();
    let clock: relayguard::clock::Clock = Arc::new(move || clock_now.load(Ordering::SeqCst) * 1000);
    let milter = Milter::with_clock(rotation_config, Some(clock)).await;
    let records = records();
    let feb1 = T0 + 31 * 86_400;
    let mar1 = feb1 + 28 * 86_400;
    let raw =
        b"From: alice@tugraz.at\r\nTo: friend@example.org\r\nSubject: rotation\r\n\r\nhello\r\n";
    for (at, expect) in [
        (T0 - 1, None),
        (T0, Some("s=rsa-a")),
        (feb1 - 1, Some("s=rsa-a")),
        (feb1, Some("s=rsa-b")),
        (mar1 - 1, Some("s=rsa-b")),
        (mar1, Some("s=rsa-b")),
    ] {
        now.store(at, Ordering::SeqCst);
        let mut conn = milter.connect().await;
        let (status, signatures) = sign(&mut conn, "alice", "<alice@tugraz.at>", raw).await;
        match expect {
            None => {
                // Before any key is active: tempfail, never unsigned.
                let Status::Tempfail { message: Some(m) } = &status else {
                    panic!("at {at}: {status:?}")
                };
                assert_eq!(
                    m.to_str().unwrap(),
                    "451 4.3.0 temporary local problem (no signing key available), try again later"
                );
            }
            Some(selector) => {
                assert_eq!(status, Status::Accept, "at {at}");
                assert_eq!(signatures.len(), 1);
                assert!(
                    signatures[0].contains(selector),
                    "at {at}: {}",
                    signatures[0]
                );
                verify_mail_auth(&signed_message(&signatures, raw), &records, At::Unix(at))
                    .await
                    .unwrap();
            }
        }
        conn.close().await.unwrap();
    }
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_key_files_never_replace_the_good_set() {
    let mut milter = Milter::with_config(signing_config).await;
    milter.watch_files();
    let records = records();
    let raw =
        b"From: alice@tu-graz.ac.at\r\nTo: friend@example.org\r\nSubject: keys\r\n\r\nhello\r\n";
    let key = milter.file("keys/tu-graz.ac.at.rsa-a.pem");
    let good = std::fs::read(&key).unwrap();

    // 1. Half-written in place: refused, signing goes on with the loaded key.
    let before = milter.service.reload_status().borrow().attempts;
    std::fs::write(&key, &good[..good.len() / 2]).unwrap();
    let status = milter.reload_after(before).await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("tu-graz.ac.at.rsa-a.pem: not a usable private key"),
        "{status:?}"
    );
    let mut conn = milter.connect().await;
    let (s, signatures) = sign(&mut conn, "alice", "<alice@tu-graz.ac.at>", raw).await;
    assert_eq!(s, Status::Accept);
    verify_mail_auth(&signed_message(&signatures, raw), &records, At::Now)
        .await
        .expect("old key still signs");
    conn.close().await.unwrap();

    // 2. World-readable: refused as unsafe.
    std::fs::write(&key, &good).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = milter.service.reload().unwrap_err().to_string();
    assert!(error.contains("unsafe permissions 0644"), "{error}");

    // 3. Kubernetes-style symlink swap to a valid key: applied.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keys = milter.file("keys");
    let gen1 = keys.join("..2026_11_28_a");
    std::fs::create_dir(&gen1).unwrap();
    std::fs::rename(&key, gen1.join("tu-graz.ac.at.rsa-a.pem")).unwrap();
    std::os::unix::fs::symlink("..2026_11_28_a", keys.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tu-graz.ac.at.rsa-a.pem", &key).unwrap();
    milter.service.reload().expect("symlinked key loads");
    let gen2 = keys.join("..2026_11_28_b");
    std::fs::create_dir(&gen2).unwrap();
    let replacement = gen2.join("tu-graz.ac.at.rsa-a.pem");
    std::fs::write(
        &replacement,
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/tugraz.at.rsa-b.pem"
        ))
        .unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(&replacement, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = milter.service.reload_status().borrow().attempts;
    std::os::unix::fs::symlink("..2026_11_28_b", keys.join("..data_tmp")).unwrap();
    std::fs::rename(keys.join("..data_tmp"), keys.join("..data")).unwrap();
    let status = milter.reload_after(before).await;
    assert_eq!(status.last_error, None);
    // The watcher (no explicit reload) must pick up the swapped key; a reload for the
    // earlier changes may come first, so wait for the new key itself.
    let new_record = records["rsa-b._domainkey.tugraz.at."].clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let snapshot = milter.service.snapshot();
        let keys = snapshot.keys.as_ref().unwrap();
        if keys
            .active("tu-graz.ac.at", relayguard::clock::unix_now())
            .iter()
            .any(|e| e.dns_record == new_record)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the swapped key was not loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut conn = milter.connect().await;
    let (s, signatures) = sign(&mut conn, "alice", "<alice@tu-graz.ac.at>", raw).await;
    assert_eq!(s, Status::Accept);
    // The new key's public half is rsa-b's: the old record no longer verifies, the new one does.
    let mut swapped = records.clone();
    swapped.insert(
        "rsa-a._domainkey.tu-graz.ac.at.".into(),
        records["rsa-b._domainkey.tugraz.at."].clone(),
    );
    verify_mail_auth(&signed_message(&signatures, raw), &swapped, At::Now)
        .await
        .expect("new key signs");
    conn.close().await.unwrap();
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_key_policy_and_unsigned_foreign_mail() {
    // accept unsigned when configured; foreign From (when allowed) is accepted unsigned.
    let milter = Milter::with_config(|dir| {
        let keys = dir.join("keys");
        dkim::install_key(&keys, "tugraz.at.rsa-a.pem");
        std::fs::write(
            dir.join("selectors.toml"),
            selector(
                "tugraz.at",
                "rsa-a",
                "rsa-sha256",
                "tugraz.at.rsa-a.pem",
                "2026-01-01T00:00:00Z",
                None,
            ),
        )
        .unwrap();
        format!(
            "{}\n[dkim]\nwithout_key = \"accept\"\n",
            config_text("inet:0@127.0.0.1")
                .replace("[senders]\n", "[senders]\nallow_foreign = true\n")
        )
    })
    .await;
    let raw = b"From: alice@tu-graz.ac.at\r\nSubject: no key for this domain\r\n\r\nhi\r\n";
    let mut conn = milter.connect().await;
    let (status, signatures) = sign(&mut conn, "alice", "<alice@tu-graz.ac.at>", raw).await;
    assert_eq!((status, signatures.len()), (Status::Accept, 0));
    let raw = b"From: alice@gmail.com\r\nSubject: foreign\r\n\r\nhi\r\n";
    let (status, signatures) = dkim::sign_on(&mut conn, "alice", "<alice@gmail.com>", raw).await;
    assert_eq!((status, signatures.len()), (Status::Accept, 0));
    conn.close().await.unwrap();
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_replaced_under_load_never_cost_a_signature() {
    // Two MTA connections send continuously while the key file is renamed over, written
    // half, corrupted, deleted and restored. Every message must leave signed with a
    // signature that verifies; the key set never has a gap, so nothing may tempfail.
    let mut milter = Milter::with_config(signing_config).await;
    milter.watch_files();
    let milter = Arc::new(milter);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let raw: &'static [u8] = b"From: alice@tu-graz.ac.at\r\nTo: friend@example.org\r\nSubject: under load\r\n\r\nhello\r\n";
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (milter, stop) = (milter.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut results = Vec::new();
            let mut conn = milter.connect().await;
            let mut first = true;
            while !stop.load(Ordering::SeqCst) {
                let outcome = if first {
                    first = false;
                    sign(&mut conn, "alice", "<alice@tu-graz.ac.at>", raw).await
                } else {
                    dkim::sign_on(&mut conn, "alice", "<alice@tu-graz.ac.at>", raw).await
                };
                results.push(outcome);
            }
            conn.close().await.unwrap();
            results
        }));
    }
    let key = milter.file("keys/tu-graz.ac.at.rsa-a.pem");
    let good = std::fs::read(&key).unwrap();
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(400));
    use std::os::unix::fs::PermissionsExt;
    let write_mode = |path: &std::path::Path, bytes: &[u8]| {
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    for round in 0..2 {
        // rename-replace with the same key
        let tmp = milter.file("keys/.new.pem");
        write_mode(&tmp, &good);
        std::fs::rename(&tmp, &key).unwrap();
        pause().await;
        // in-place partial write, then completed
        std::fs::write(&key, &good[..good.len() / 3]).unwrap();
        pause().await;
        std::fs::write(&key, &good).unwrap();
        pause().await;
        // corrupt
        std::fs::write(
            &key,
            b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        pause().await;
        // deleted, then restored
        std::fs::remove_file(&key).unwrap();
        pause().await;
        write_mode(&key, &good);
        pause().await;
        assert!(
            milter.service.reload_status().borrow().attempts >= 2 * (round + 1),
            "the watcher saw the changes"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let records = records();
    let mut total = 0;
    for sender in senders {
        for (status, signatures) in sender.await.unwrap() {
            assert_eq!(status, Status::Accept, "message {total}");
            assert_eq!(signatures.len(), 1, "message {total} unsigned");
            verify_mail_auth(&signed_message(&signatures, raw), &records, At::Now)
                .await
                .unwrap_or_else(|e| panic!("message {total}: {e}"));
            total += 1;
        }
    }
    eprintln!("{total} messages signed and verified while the key file was replaced");
    assert!(
        total >= 20,
        "only {total} messages went through during the replacements"
    );
    let status = milter.service.reload_status().borrow().clone();
    assert!(
        status.applied >= 2 && status.attempts > status.applied,
        "{status:?}"
    );
    Arc::try_unwrap(milter)
        .ok()
        .expect("senders done")
        .stop()
        .await
        .unwrap();
}

/// Where a later hop puts a header it adds.
#[derive(Clone, Copy, Debug)]
enum At2 {
    /// Above everything (Received, most list managers, forwarders).
    Top,
    /// Below the last header.
    Bottom,
}

/// `raw` with `field` (a whole header line, CRLF-terminated) added at `at`.
fn with_field(raw: &[u8], field: &str, at: At2) -> Vec<u8> {
    match at {
        At2::Top => [field.as_bytes(), raw].concat(),
        At2::Bottom => {
            let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
            [&raw[..end], field.as_bytes(), &raw[end..]].concat()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_lists_and_forwarders_add_keeps_the_signature_what_spoofers_add_breaks_it() {
    // A staff member's post as a list receives it, a bare message (no Date, no Message-ID,
    // as some scripts send), and one with Cc and Reply-To.
    let post = b"From: Alice <alice@tugraz.at>\r\nTo: staff@lists.tugraz.at\r\nSubject: Staff meeting\r\nDate: Sat, 28 Nov 2026 10:00:00 +0100\r\nMessage-ID: <post-1@tugraz.at>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMonday at ten.\r\n";
    let bare = b"From: alice@tugraz.at\r\nTo: friend@example.org\r\nSubject: cron\r\n\r\nok\r\n";
    let full = b"From: alice@tugraz.at\r\nTo: friend@example.org\r\nCc: bob@example.org\r\nReply-To: office@tugraz.at\r\nSubject: full\r\nDate: Sat, 28 Nov 2026 10:00:00 +0100\r\n\r\nok\r\n";
    let keeps = [
        (&post[..], "List-Id: Staff list <staff.lists.tugraz.at>\r\n"),
        (
            post,
            "List-Unsubscribe: <mailto:staff+unsubscribe@lists.tugraz.at>\r\n",
        ),
        (
            post,
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        ),
        (post, "List-Help: <mailto:staff+help@lists.tugraz.at>\r\n"),
        (post, "List-Post: <mailto:staff@lists.tugraz.at>\r\n"),
        (
            post,
            "List-Subscribe: <mailto:staff+subscribe@lists.tugraz.at>\r\n",
        ),
        (post, "List-Owner: <mailto:staff+owner@lists.tugraz.at>\r\n"),
        (post, "List-Archive: <https://lists.tugraz.at/staff/>\r\n"),
        (post, "Precedence: list\r\n"),
        (post, "In-Reply-To: <earlier@tugraz.at>\r\n"),
        (post, "References: <earlier@tugraz.at>\r\n"),
        (
            post,
            "Received: from relay.tugraz.at by lists.tugraz.at; Sat, 28 Nov 2026 10:00:01 +0100\r\n",
        ),
        (
            post,
            "Resent-From: forwarder@example.org\r\nResent-To: someone@example.org\r\nResent-Date: Sat, 28 Nov 2026 11:00:00 +0100\r\nResent-Message-ID: <fwd-1@example.org>\r\n",
        ),
        (post, "Autocrypt: addr=alice@tugraz.at; keydata=AAAA\r\n"),
        (bare, "Message-ID: <added-by-postfix@relay.tugraz.at>\r\n"),
        (bare, "Date: Sat, 28 Nov 2026 10:00:02 +0100\r\n"),
        (bare, "MIME-Version: 1.0\r\n"),
    ];
    let breaks = [
        (&post[..], "From: Rector <rector@tugraz.at>\r\n"),
        (post, "Subject: Urgent: new bank details\r\n"),
        (post, "To: everyone@tugraz.at\r\n"),
        (post, "Cc: everyone@tugraz.at\r\n"),
        (post, "Reply-To: phisher@example.net\r\n"),
        (post, "Sender: rector@tugraz.at\r\n"),
        (bare, "Cc: everyone@tugraz.at\r\n"),
        (bare, "Reply-To: phisher@example.net\r\n"),
        (full, "Cc: everyone@tugraz.at\r\n"),
        (full, "Reply-To: phisher@example.net\r\n"),
        (full, "From: rector@tugraz.at\r\n"),
        (full, "Subject: other\r\n"),
        (full, "To: everyone@tugraz.at\r\n"),
    ];
    let milter = Milter::with_config(signing_config).await;
    let dir = tempfile::tempdir().unwrap();
    let records = records();
    let mut signed = Vec::new();
    for raw in [&post[..], bare, full] {
        let mut conn = milter.connect().await;
        let (status, signatures) = sign(&mut conn, "alice", "<alice@tugraz.at>", raw).await;
        conn.close().await.unwrap();
        assert_eq!((status, signatures.len()), (Status::Accept, 2));
        signed.push((raw, signed_message(&signatures, raw)));
    }
    let signed_copy = |raw: &[u8]| signed.iter().find(|(r, _)| *r == raw).unwrap().1.clone();
    let mut cases = Vec::new();
    for (survives, list) in [(true, &keeps[..]), (false, &breaks[..])] {
        for &(raw, field) in list {
            // A header a message already has, added again at the bottom, breaks any
            // signature (verifiers take the last instance first): only the top is asked.
            let spots: &[At2] = if survives {
                &[At2::Top, At2::Bottom]
            } else {
                &[At2::Top]
            };
            for &at in spots {
                cases.push((
                    survives,
                    field,
                    at,
                    with_field(&signed_copy(raw), field, at),
                ));
            }
        }
    }
    let files: Vec<std::path::PathBuf> = cases
        .iter()
        .enumerate()
        .map(|(i, (.., bytes))| {
            let path = dir.path().join(format!("case{i:02}.eml"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let dkimpy = verify_dkimpy(&files, &records, dir.path(), At::Now);
    let opendkim = dkim::verify_opendkim(&files, dir.path());
    let mut wrong = Vec::new();
    for (((survives, field, at, _), dkimpy), opendkim) in cases.iter().zip(&dkimpy).zip(&opendkim) {
        let verified = dkimpy.ends_with(" ok 2");
        let what = field.split(':').next().unwrap();
        println!(
            "{what} added at {at:?}: dkimpy {verified}, OpenDKIM {opendkim} (must verify: {survives})"
        );
        if verified != *survives || opendkim != survives {
            wrong.push(format!(
                "{what} at {at:?}: dkimpy {dkimpy}, OpenDKIM {opendkim}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    milter.stop().await.unwrap();
}
