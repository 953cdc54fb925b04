//! A private Sendmail 8.17 on loopback for end-to-end tests. Debian's sendmail packages
//! conflict with Postfix, so scripts/test unpacks them (without installing) into
//! target/sendmail-root; this harness builds a sendmail.cf from the test .mc plus the
//! operator's snippet and runs it in the foreground under `unshare --uts --mount`: a
//! qualified host name, and a private /etc/sasl2 (Sendmail reads only Sendmail.conf there).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/sendmail-root");

/// Fails the test with instructions when the unpacked Sendmail is missing.
pub fn require_sendmail() -> PathBuf {
    let binary = Path::new(ROOT).join("usr/libexec/sendmail/sendmail");
    assert!(
        binary.exists(),
        "{} is missing: scripts/test unpacks Debian's sendmail packages there (scripts/fetch-sendmail)",
        binary.display()
    );
    binary
}

/// A running Sendmail with its sink; stopped on drop.
pub struct Sendmail {
    pub dir: tempfile::TempDir,
    pub submit: std::net::SocketAddr,
    daemon: Child,
    sink: Child,
    made_sasl_dir: bool,
}

impl Sendmail {
    /// Starts Sendmail with SASL users (realm tugraz.at) and relayguard's unix socket.
    pub fn start(users: &[(&str, &str)], milter_socket: &Path) -> Self {
        let binary = require_sendmail();
        let dir = tempfile::Builder::new()
            .prefix("relayguard-sendmail")
            .tempdir()
            .unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["queue", "sasl2", "sink"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::set_permissions(root.join("queue"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        assert!(
            Command::new("chown")
                .arg("postfix")
                .arg(root.join("sink"))
                .status()
                .unwrap()
                .success()
        );
        let (port, sink_port) = (super::free_port(), super::free_port());
        let mc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sendmail_e2e/relayguard-test.mc"
        ))
        .unwrap()
        .replace("@CF@", &format!("{ROOT}/usr/share/sendmail/cf"))
        .replace("@DIR@", &root.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@SINK_PORT@", &sink_port.to_string());
        let snippet = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/sendmail/relayguard.mc.snippet"
        ))
        .unwrap()
        .replace(
            "unix:/run/relayguard/relayguard.sock",
            &format!("unix:{}", milter_socket.display()),
        );
        std::fs::write(
            root.join("relayguard-test.mc"),
            format!("{mc}{snippet}MAILER(`smtp')dnl\n"),
        )
        .unwrap();
        let m4 = if Path::new("/usr/bin/m4").exists() {
            PathBuf::from("/usr/bin/m4")
        } else {
            Path::new(ROOT).join("usr/bin/m4")
        };
        let cf = Command::new(&m4)
            .arg(root.join("relayguard-test.mc"))
            .output()
            .expect("m4 runs");
        assert!(
            cf.status.success(),
            "m4: {}",
            String::from_utf8_lossy(&cf.stderr)
        );
        std::fs::write(root.join("sendmail.cf"), cf.stdout).unwrap();
        std::fs::write(root.join("service.switch"), "hosts files\naliases files\n").unwrap();
        std::fs::write(
            root.join("hosts"),
            "127.0.0.1 localhost relay.tugraz.test\n",
        )
        .unwrap();
        std::fs::write(root.join("local-host-names"), "").unwrap();
        std::fs::write(
            root.join("sasl2/Sendmail.conf"),
            format!("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {}/sasldb2\nmech_list: PLAIN LOGIN\n", root.display()),
        )
        .unwrap();
        super::add_sasl_users(&root.join("sasldb2"), users);
        // The bind mount needs a mount point; remove it again if we made it.
        let made_sasl_dir = !Path::new("/etc/sasl2").exists();
        if made_sasl_dir {
            std::fs::create_dir("/etc/sasl2").unwrap();
        }
        let sink = super::spawn_sink(&root.join("sink"), sink_port);
        // An unpacked (not installed) binary: drop set-gid so that LD_LIBRARY_PATH applies.
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = format!(
            "hostname relay.tugraz.test && mount --bind {dir}/sasl2 /etc/sasl2 && exec env LD_LIBRARY_PATH={ROOT}/usr/lib/x86_64-linux-gnu {bin} -bD -C {dir}/sendmail.cf",
            dir = root.display(),
            bin = binary.display()
        );
        let daemon = Command::new("unshare")
            .args(["--uts", "--mount", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sendmail starts");
        let sendmail = Sendmail {
            submit: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            daemon,
            sink,
            made_sasl_dir,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(sendmail.submit).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", sink_port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "sendmail did not start listening"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sendmail
    }

    /// Messages the sink received that contain `needle`.
    pub fn delivered(&self, needle: &str) -> Vec<String> {
        super::delivered_in(&self.dir.path().join("sink"), needle)
    }

    /// Waits up to 30 s for a delivered message containing `needle`.
    pub async fn wait_delivered(&self, needle: &str) -> String {
        super::wait_delivered_in(&self.dir.path().join("sink"), needle, String::new).await
    }
}

impl Drop for Sendmail {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("sendmail.pid"))
            && let Some(pid) = pid.lines().next()
        {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = self.sink.kill();
        let _ = self.sink.wait();
        if self.made_sasl_dir {
            let _ = std::fs::remove_dir("/etc/sasl2");
        }
    }
}
