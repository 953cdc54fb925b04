//! Runbook for whoever edits the documentation or moves code: every link of the README,
//! BENCHMARKS.md and docs/ leads somewhere (a file that exists, a heading that is there),
//! the architecture's code map lists exactly the folders and files of `src/`, and the
//! "never imports" rules and invariants it states hold in the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The Markdown files a reader opens.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Text outside fenced code blocks (links in examples are not links).
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// Every `](target)` of a text.
fn links(text: &str) -> Vec<String> {
    let text = prose(text);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn every_link_of_the_readme_and_docs_leads_somewhere() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(file)
            };
            if !target.exists() {
                broken.push(format!("{}: {link}: no such file", doc.display()));
                continue;
            }
            if !anchor.is_empty() {
                let there = anchors(&std::fs::read_to_string(&target).unwrap());
                if !there.contains(anchor) {
                    broken.push(format!("{}: {link}: no such heading", doc.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 40, "{checked} links checked");
}

#[test]
fn the_readme_is_a_front_page() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; the guide lives in docs/"
    );
    // The two set-up commands a newcomer needs.
    assert!(readme.contains("cargo run --release -- run --config relayguard.toml"));
    assert!(readme.contains("\nscripts/test\n"));
}

/// The code map: `### \`src/NAME/\`` and `### \`src/NAME.rs\`` headings, in order, with
/// the text under each.
fn code_map() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md")).unwrap();
    let map = text
        .split("## Code map")
        .nth(1)
        .expect("a Code map section")
        .split("\n## ")
        .next()
        .unwrap();
    map.split("\n### `src/")
        .skip(1)
        .map(|part| {
            let (name, body) = part.split_once("`\n").expect("a heading line");
            (name.to_string(), body.to_string())
        })
        .collect()
}

#[test]
fn the_code_map_lists_every_folder_and_file_of_src() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(Path::new(ROOT).join("src"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                format!("{name}/")
            } else {
                name
            }
        })
        .filter(|n| n.ends_with('/') || n.ends_with(".rs"))
        .collect();
    let mapped: BTreeSet<String> = code_map().into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        mapped, on_disk,
        "docs/ARCHITECTURE.md's code map and src/ differ"
    );
}

/// The Rust text of a file without its test module (tests may reach further).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Every `.rs` file under `dir`, test files aside.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
    out
}

#[test]
fn no_folder_imports_what_the_code_map_forbids() {
    let mut rules = 0;
    let mut violations = Vec::new();
    for (name, body) in code_map() {
        let Some(line) = body.lines().find(|l| l.starts_with("Never imports:")) else {
            continue;
        };
        let forbidden: Vec<&str> = line
            .trim_start_matches("Never imports:")
            .split(',')
            .map(|m| m.trim().trim_end_matches('.').trim_matches('`'))
            .collect();
        let dir = Path::new(ROOT).join("src").join(name.trim_end_matches('/'));
        for file in rust_files(&dir) {
            let code = code_of(&file);
            for module in &forbidden {
                rules += 1;
                if code.contains(&format!("crate::{module}::"))
                    || code.contains(&format!("crate::{module};"))
                    || code.contains(&format!("crate::{module}}}"))
                {
                    violations.push(format!("{} imports {module}", file.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert!(rules > 100, "{rules} file and rule pairs checked");
}

#[test]
fn the_invariants_of_the_architecture_hold() {
    let src = Path::new(ROOT).join("src");
    let offending = |dirs: &[&str], needles: &[&str]| -> Vec<String> {
        let mut found = Vec::new();
        for dir in dirs {
            for file in rust_files(&src.join(dir)) {
                let code = code_of(&file);
                for needle in needles {
                    if code.contains(needle) {
                        found.push(format!("{}: {needle}", file.display()));
                    }
                }
            }
        }
        found
    };
    // The session (and what it uses) knows no protocol library.
    let protocol = offending(
        &["session", "policy", "dkim", "limits", "abuse", "audit"],
        &["indymilter"],
    );
    assert!(protocol.is_empty(), "{protocol:?}");
    // Policy, the scoring rule and the configuration read no files and no clock.
    let io = offending(
        &["policy", "abuse", "config"],
        &[
            "std::fs",
            "tokio::fs",
            "File::open",
            "Instant::now",
            "SystemTime",
            "unix_now",
        ],
    );
    assert!(io.is_empty(), "{io:?}");
    // The registry is a leaf.
    let metrics = code_of(&src.join("metrics.rs"));
    assert!(
        !metrics.contains("crate::"),
        "metrics.rs imports from the crate"
    );
}
