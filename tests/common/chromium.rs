//! Debian's Chromium, headless, with no way to reach anything but the file it is given:
//! renders the HTML reports as an auditor's browser would.

use std::path::Path;
use std::process::{Command, Output};

/// Runs Chromium with a fresh profile in `dir` and `args` (`--dump-dom`, `--screenshot`, …).
pub fn run(dir: &Path, args: &[&str]) -> Output {
    let profile = dir.join("chromium-profile");
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium is installed (scripts/test installs it)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The DOM Chromium builds from the page at `page` (its scripts run).
pub fn dom(page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let out = run(profile.path(), &["--dump-dom", &url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
