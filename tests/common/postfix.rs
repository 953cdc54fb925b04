//! A private Postfix instance on loopback for end-to-end tests: SASL users in a sasldb2,
//! a submission listener, relayguard as milter, everything relayed to a local smtp-sink.
//! Postfix runs in a mount namespace of its own with a private `/etc/hosts` (the test's
//! client names) and a resolver that answers nothing, so it looks up client names as in
//! production without touching the machine's files or the network.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/postfix_e2e");

/// Fails the test with instructions when Postfix or the SASL tools are missing.
pub fn require_postfix() {
    let missing: Vec<&str> = [
        "/usr/sbin/postfix",
        "/usr/sbin/smtp-sink",
        "/usr/sbin/saslpasswd2",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: the end-to-end tests need postfix and sasl2-bin; run the README's test command (scripts/test), which installs them"
    );
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the Postfix end-to-end test must run as root (postfix start needs it)"
    );
}

/// main.cf with the settings of `extra` in place of earlier entries of the same names. Postfix
/// would take the later entry too, but warns about the earlier one in every process it starts,
/// and postlogd, logging that warning into its own socket while the socket is full (Linux
/// queues 10 datagrams), deadlocks: Postfix then stops logging and `postfix stop` hangs.
fn override_settings(main_cf: &str, extra: &str) -> String {
    // An entry: a `name = value` line and the indented lines that continue it.
    fn entries(text: &str) -> Vec<(Option<String>, String)> {
        let mut out: Vec<(Option<String>, String)> = Vec::new();
        for line in text.lines() {
            let continues = line.starts_with([' ', '\t']) && !line.trim().is_empty();
            match out.last_mut() {
                Some((Some(_), entry)) if continues => {
                    entry.push('\n');
                    entry.push_str(line);
                }
                _ => {
                    let name = line
                        .split_once('=')
                        .filter(|_| !line.starts_with('#'))
                        .map(|(name, _)| name.trim().to_string());
                    out.push((name, line.to_string()));
                }
            }
        }
        out
    }
    let extra = entries(extra);
    let names: Vec<&String> = extra.iter().filter_map(|(name, _)| name.as_ref()).collect();
    let kept: Vec<_> = entries(main_cf)
        .into_iter()
        .filter(|(name, _)| name.as_ref().is_none_or(|name| !names.contains(&name)))
        .collect();
    kept.into_iter()
        .chain(extra.iter().cloned())
        .map(|(_, entry)| entry + "\n")
        .collect()
}

/// `command` with its output discarded.
fn quiet(mut command: Command) -> Command {
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

/// Waits up to 20 s for `ready`, else fails with `failure`.
fn wait_until(failure: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{failure}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn chown_postfix(path: &Path) {
    let status = Command::new("chown")
        .arg("postfix")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown postfix {}", path.display());
}

/// Client names Postfix finds for the test's loopback addresses (forward and reverse).
pub const HOSTS: &str =
    "127.0.0.1 localhost\n127.0.0.2 server.tugraz.at\n127.0.0.4 srv1.iaik.tugraz.at\n";

/// A running Postfix instance; stopped on drop.
pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub submit: SocketAddr,
    conf: PathBuf,
    sink: Child,
}

impl Postfix {
    /// Starts Postfix with the given SASL users (login, password; realm tugraz.at) and
    /// relayguard's unix socket as its milter.
    pub fn start(users: &[(&str, &str)], milter_socket: &Path) -> Self {
        Self::start_with(users, "tugraz.at", Some(milter_socket), "")
    }

    /// Starts Postfix with SASL users of `realm` (`smtpd_sasl_local_domain`; empty: myhostname's realm,
    /// and logins are reported bare), relayguard's socket as its milter
    /// when given, and `extra` appended to main.cf (later settings override earlier ones).
    pub fn start_with(
        users: &[(&str, &str)],
        realm: &str,
        milter_socket: Option<&Path>,
        extra: &str,
    ) -> Self {
        Self::start_full(users, realm, milter_socket, extra, "")
    }

    /// As [`Postfix::start_with`], with `services` appended to master.cf too; `@DIR@` in
    /// `extra` and `services` is the instance's directory.
    pub fn start_full(
        users: &[(&str, &str)],
        realm: &str,
        milter_socket: Option<&Path>,
        extra: &str,
        services: &str,
    ) -> Self {
        require_postfix();
        let dir = tempfile::Builder::new()
            .prefix("relayguard-postfix")
            .tempdir()
            .unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = root.join("conf");
        for sub in ["conf/sasl", "queue", "data", "sink"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        chown_postfix(&root.join("data"));
        chown_postfix(&root.join("sink"));
        let (submit_port, sink_port) = (super::free_port(), super::free_port());
        let fill = |name: &str| {
            std::fs::read_to_string(Path::new(TEMPLATES).join(name))
                .unwrap()
                .replace("@DIR@", &root.display().to_string())
                .replace("@SUBMIT_PORT@", &submit_port.to_string())
                .replace("@SINK_PORT@", &sink_port.to_string())
        };
        let snippet = match milter_socket {
            Some(socket) => std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/packaging/postfix/main.cf.snippet"
            ))
            .unwrap()
            .replace(
                "unix:/run/relayguard/relayguard.sock",
                &format!("unix:{}", socket.display()),
            ),
            None => String::new(),
        };
        let main_cf = override_settings(
            &(fill("main.cf").replace(
                "smtpd_sasl_local_domain = tugraz.at",
                &format!("smtpd_sasl_local_domain = {realm}"),
            ) + &snippet),
            &extra.replace("@DIR@", &root.display().to_string()),
        );
        std::fs::write(conf.join("main.cf"), main_cf).unwrap();
        std::fs::write(
            conf.join("master.cf"),
            fill("master.cf") + &services.replace("@DIR@", &root.display().to_string()),
        )
        .unwrap();
        std::fs::write(conf.join("sasl/smtpd.conf"), fill("smtpd.conf")).unwrap();
        // No warnings: every Postfix process would log them at start (see override_settings).
        let check = Command::new("postconf")
            .args(["-c"])
            .arg(&conf)
            .arg("-n")
            .output()
            .unwrap();
        let warnings = String::from_utf8_lossy(&check.stderr);
        assert!(warnings.trim().is_empty(), "main.cf: {warnings}");
        let sasldb = root.join("sasldb2");
        // Without a local domain Cyrus looks users up in the server's realm: myhostname.
        let realm = if realm.is_empty() {
            "relay.tugraz.test"
        } else {
            realm
        };
        if !users.is_empty() {
            super::add_sasl_users_in(&sasldb, realm, users);
            chown_postfix(&sasldb);
        }
        let sink = super::spawn_sink(&root.join("sink"), sink_port);
        let postfix = Postfix {
            submit: SocketAddr::from(([127, 0, 0, 1], submit_port)),
            conf,
            sink,
            dir,
        };
        postfix.launch();
        // Wait until the submission listener and the sink answer.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(postfix.submit).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", sink_port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "postfix did not start listening:\n{}",
                postfix.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        postfix
    }

    /// Starts Postfix in a mount namespace of its own, with the test's /etc/hosts and a
    /// resolver that answers nothing.
    fn launch(&self) {
        let hosts = self.dir.path().join("hosts");
        let resolv = self.dir.path().join("resolv.conf");
        std::fs::write(&hosts, HOSTS).unwrap();
        // Port 53 on loopback is closed: a name not in `hosts` fails at once.
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf && exec postfix -c \"$3\" start",
            )
            .arg("postfix-start")
            .arg(&hosts)
            .arg(&resolv)
            .arg(&self.conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postfix start failed: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Stops the whole MTA (`postfix stop`), as a relay host taken out of service.
    pub fn stop(&self) {
        let _ = quiet(self.command("postfix", "stop")).status();
        wait_until("postfix did not stop", || {
            std::net::TcpStream::connect(self.submit).is_err()
        });
    }

    /// `program -c CONF arg` (the caller chooses where its output goes).
    fn command(&self, program: &str, arg: &str) -> Command {
        let mut command = Command::new(program);
        command.arg("-c").arg(&self.conf).arg(arg);
        command
    }

    /// Starts it again after [`Postfix::stop`], with its queue as it was.
    pub fn start_again(&self) {
        self.launch();
        wait_until("postfix did not start again", || {
            std::net::TcpStream::connect(self.submit).is_ok()
        });
    }

    /// Postfix's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Messages the sink received that contain `needle`.
    pub fn delivered(&self, needle: &str) -> Vec<String> {
        super::delivered_in(&self.dir.path().join("sink"), needle)
    }

    /// Waits up to 30 s for a delivered message containing `needle`.
    pub async fn wait_delivered(&self, needle: &str) -> String {
        super::wait_delivered_in(&self.dir.path().join("sink"), needle, || {
            format!("postfix log:\n{}", self.log())
        })
        .await
    }

    /// Messages in the queue now (`postqueue -j`); asks Postfix to deliver them first.
    pub fn queued(&self) -> usize {
        let _ = quiet(self.command("postqueue", "-f")).status();
        let out = self.command("postqueue", "-j").output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    /// Asks Postfix to deliver everything queued now and waits until the queue is empty.
    pub async fn wait_queue_empty(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.command("postqueue", "-j").output().unwrap();
            if out.status.success() && out.stdout.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queue not empty after 30 s:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
            let _ = self.command("postqueue", "-f").status();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.sink.kill();
        let _ = self.sink.wait();
    }
}
