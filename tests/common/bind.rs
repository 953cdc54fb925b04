//! A private BIND 9 on a loopback port: primary for tugraz.at, updates (RFC 2136) allowed
//! with a TSIG key only; stopped by the PID it was started with.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The TSIG key's name.
pub const KEY_NAME: &str = "relayguard-key";

/// A running BIND.
pub struct Bind {
    pub port: u16,
    dir: tempfile::TempDir,
    /// The TSIG key as an operator gives it to relayguard: root's, mode 0600 (BIND's own
    /// copy lives in its directory, which belongs to user bind).
    keys: tempfile::TempDir,
    child: Option<Child>,
}

impl Bind {
    /// Starts named with an empty tugraz.at zone (SOA and NS only).
    pub fn start() -> Self {
        assert!(
            Path::new("/usr/sbin/named").exists(),
            "named is missing: run scripts/test, which installs bind9"
        );
        let dir = tempfile::Builder::new()
            .prefix("relayguard-bind")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let out = super::real_clock("/usr/sbin/tsig-keygen")
            .args(["-a", "hmac-sha256", KEY_NAME])
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(d.join("tsig.key"), &out.stdout).unwrap();
        let keys = tempfile::tempdir().unwrap();
        let copy = keys.path().join("tsig.key");
        std::fs::write(&copy, &out.stdout).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
        let port = super::free_port();
        std::fs::write(
            d.join("named.conf"),
            format!(
                "include \"{d}/tsig.key\";\n\
                 controls {{ }};\n\
                 options {{ directory \"{d}\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};\n\
                   pid-file \"{d}/named.pid\"; recursion no; dnssec-validation no; allow-query {{ 127.0.0.1; }};\n\
                   notify no; }};\n\
                 zone \"tugraz.at\" {{ type primary; file \"{d}/tugraz.at.zone\"; allow-update {{ key \"{KEY_NAME}\"; }}; }};\n",
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("tugraz.at.zone"),
            "$TTL 60\n@ IN SOA ns1.tugraz.at. hostmaster.tugraz.at. 1 3600 600 86400 60\n@ IN NS ns1.tugraz.at.\nns1 IN A 127.0.0.1\n",
        )
        .unwrap();
        let status = Command::new("chown")
            .args(["-R", "bind:bind"])
            .arg(d)
            .status()
            .unwrap();
        assert!(status.success());
        let mut bind = Bind {
            port,
            dir,
            keys,
            child: None,
        };
        bind.restart();
        bind
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The TSIG key file, as tsig-keygen wrote it (named.conf syntax), mode 0600.
    pub fn key_file(&self) -> PathBuf {
        self.keys.path().join("tsig.key")
    }

    /// Starts it (again) on the same port and zone.
    pub fn restart(&mut self) {
        let child = super::real_clock("/usr/sbin/named")
            .arg("-c")
            .arg(self.dir.path().join("named.conf"))
            .args(["-g", "-u", "bind"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("named starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.dig("SOA", "tugraz.at").is_empty() {
            assert!(Instant::now() < deadline, "named did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGKILL), by the PID it was started with.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `dig +short` of a name: one line per record (TXT strings joined).
    pub fn dig(&self, kind: &str, name: &str) -> Vec<String> {
        let out = super::real_clock("/usr/bin/dig")
            .args([
                "+short",
                "+time=1",
                "+tries=1",
                "-p",
                &self.port.to_string(),
                "@127.0.0.1",
                kind,
                name,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(";;"))
            .map(|l| {
                // "a" "b" -> ab
                if l.starts_with('"') {
                    l.split('"').skip(1).step_by(2).collect::<String>()
                } else {
                    l.to_string()
                }
            })
            .collect()
    }

    /// Applies an update with nsupdate and the TSIG key (`update add …` lines).
    pub fn nsupdate(&self, commands: &str) {
        let mut child = super::real_clock("/usr/bin/nsupdate")
            .arg("-k")
            .arg(self.key_file())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(
                format!(
                    "server 127.0.0.1 {}\nzone tugraz.at\n{commands}\nsend\n",
                    self.port
                )
                .as_bytes(),
            )
            .unwrap();
        assert!(child.wait().unwrap().success(), "nsupdate {commands}");
    }

    /// Publishes a DKIM record (`v=DKIM1; …`) at `SELECTOR._domainkey.tugraz.at`, split
    /// into 255-byte strings as a zone must hold it.
    pub fn publish(&self, selector: &str, record: &str) {
        let strings: Vec<String> = record
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        self.nsupdate(&format!(
            "update delete {selector}._domainkey.tugraz.at. TXT\nupdate add {selector}._domainkey.tugraz.at. 60 TXT {}",
            strings.join(" ")
        ));
    }

    /// Deletes every TXT record at a selector's name.
    pub fn unpublish(&self, selector: &str) {
        self.nsupdate(&format!(
            "update delete {selector}._domainkey.tugraz.at. TXT"
        ));
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        self.stop();
    }
}
