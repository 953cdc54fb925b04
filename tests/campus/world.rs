//! The campus's machines, all on loopback: BIND for tugraz.at (updated by the relays with
//! TSIG), Redis with a replica and three Sentinels, slapd with the campus directory, "the
//! Internet" (a sink that keeps every message), and two relays, each a Postfix with SASL
//! submission and XCLIENT for the campus's clients and its own relayguard process.

use crate::common::bind::Bind;
use crate::common::daemon::Daemon;
use crate::common::postfix::Postfix;
use crate::common::redis::Sentinels;
use crate::common::slapd::Slapd;
use crate::model::{CAMPUS, Person};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Every account's password.
pub const PASSWORD: &str = "campus-secret";

/// The relayguard binary under test.
pub const RELAYGUARD: &str = env!("CARGO_BIN_EXE_relayguard");

/// Runs a relayguard command; its standard output, or the failure with its error output.
pub fn relayguard(args: &[&str]) -> Result<String, String> {
    let out = Command::new(RELAYGUARD)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "relayguard {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The Internet: a sink that keeps every message it is given.
pub struct Internet {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small tmpfs for one relay's audit log, so that its disk can fill (root only);
/// unmounted on drop.
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {}", at.display());
        SmallDisk(at.to_path_buf())
    }

    /// Fills what is left with a file; returns its size in bytes.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        let mut written = 0;
        while let Ok(n) = file.write(&block) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        let _ = file.sync_all();
        written
    }

    /// Frees it again.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.0.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// One relay host.
pub struct Relay {
    /// `relay1`, `relay2`: its `[cluster] host_name` and Postfix's host name.
    pub name: String,
    pub daemon: Daemon,
    pub postfix: Postfix,
    pub metrics: SocketAddr,
    /// Its audit log.
    pub audit: PathBuf,
    /// The checkpoint key's public half (for `audit verify`).
    pub checkpoint_pub: PathBuf,
    /// Its audit disk, when small.
    pub disk: Option<SmallDisk>,
    /// CPU seconds of relayguard processes that ended (restarts).
    pub cpu_before: f64,
}

impl Relay {
    pub fn config(&self) -> PathBuf {
        self.daemon.dir.path().join("relayguard.toml")
    }

    /// The running relayguard's CPU seconds (user + system) so far.
    pub fn cpu_now(&self) -> f64 {
        if !self.daemon.running() {
            return 0.0;
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.daemon.pid()))
            .unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15; 11 and 12 after the state.
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Kills relayguard as a crash would, remembering its CPU.
    pub fn crash(&mut self) {
        self.cpu_before += self.cpu_now();
        self.daemon.kill();
    }
}

/// Everything of the campus.
pub struct World {
    pub bind: Bind,
    pub sentinels: Sentinels,
    pub slapd: Slapd,
    pub internet: Internet,
    pub relays: Vec<Relay>,
    /// The master copy of the keys and schedule (what configuration management deploys).
    pub keys: tempfile::TempDir,
}

/// The schedule's selectors at the start: RSA and Ed25519 for tugraz.at.
pub const FIRST_SELECTORS: [(&str, &str); 2] = [("rsa-c1", "rsa-2048"), ("ed-c1", "ed25519")];

impl World {
    /// Starts every machine; the relays' keys are published before they run.
    pub fn start(people: &[Person]) -> World {
        let bind = Bind::start();
        let sentinels = Sentinels::start();
        let slapd = Slapd::start_with_ldif(&crate::model::directory(people));
        let internet_dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chown")
            .arg("postfix")
            .arg(internet_dir.path())
            .status();
        let port = crate::common::free_port();
        let child = crate::common::spawn_sink(internet_dir.path(), port);
        let internet = Internet {
            dir: internet_dir,
            port,
            child,
        };
        let keys = tempfile::tempdir().unwrap();
        std::fs::write(
            keys.path().join("gen.toml"),
            "[domains]\nprotected = [\"tugraz.at\"]\n[dkim]\nselectors = \"selectors.toml\"\nkeys_dir = \"keys\"\n",
        )
        .unwrap();
        std::fs::write(keys.path().join("selectors.toml"), "").unwrap();
        for (selector, algorithm) in FIRST_SELECTORS {
            generate_key(keys.path(), selector, algorithm, "now", "now");
        }
        let mut world = World {
            bind,
            sentinels,
            slapd,
            internet,
            relays: Vec::new(),
            keys,
        };
        let logins: Vec<(String, &str)> = people
            .iter()
            .map(|p| (p.login(), PASSWORD))
            .chain([
                ("robot-web".to_string(), PASSWORD),
                ("robot-backup".to_string(), PASSWORD),
            ])
            .collect();
        let logins: Vec<(&str, &str)> = logins.iter().map(|(l, p)| (l.as_str(), *p)).collect();
        for n in 1..=2 {
            let relay = world.relay(n, &logins);
            world.relays.push(relay);
        }
        world
    }

    /// Builds relay `n`: relayguard's files (the keys deployed from the master copy), the
    /// records published (relay1 is the leader), relayguard started, then its Postfix.
    fn relay(&self, n: usize, logins: &[(&str, &str)]) -> Relay {
        let name = format!("relay{n}");
        let metrics = SocketAddr::from(([127, 0, 0, 1], crate::common::free_port()));
        let table = self.slapd.postfix_table();
        let sentinels = self.sentinels.toml_list();
        let (bind_port, tsig) = (self.bind.port, self.bind.key_file());
        let master = self.keys.path().to_path_buf();
        let disk = std::cell::RefCell::new(None);
        let daemon = Daemon::prepared(|dir, socket| {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            deploy_keys(&master, dir);
            let audit = if n == 2 {
                *disk.borrow_mut() = Some(SmallDisk::mount(&dir.join("audit"), "8m"));
                "audit/audit.log"
            } else {
                "audit.log"
            };
            relayguard(&[
                "audit",
                "keygen",
                "--out",
                dir.join("audit-checkpoint.key").to_str().unwrap(),
            ])
            .unwrap();
            let publish = if n == 1 {
                format!(
                    "[dkim.publish]\nserver = \"127.0.0.1:{bind_port}\"\nkey_file = \"{}\"\nzones = [\"tugraz.at\"]\n",
                    tsig.display()
                )
            } else {
                String::new()
            };
            config(&ConfigParts {
                name: &name,
                socket,
                table: &table,
                bind_port,
                publish: &publish,
                audit,
                metrics,
                sentinels: &sentinels,
            })
        });
        let config_path = daemon.dir.path().join("relayguard.toml");
        if n == 1 {
            relayguard(&["keys", "publish", "--config", config_path.to_str().unwrap()])
                .expect("the first keys are published");
        }
        let mut daemon = daemon;
        daemon.restart();
        let postfix = Postfix::start_with(
            logins,
            "tugraz.at",
            Some(&daemon.socket),
            &format!(
                "myhostname = {name}.tugraz.test\nrelayhost = [127.0.0.1]:{}\nmynetworks = 127.0.0.0/8 {CAMPUS}\nsmtpd_authorized_xclient_hosts = 127.0.0.0/8\n",
                self.internet.port
            ),
        );
        let dir = daemon.dir.path().to_path_buf();
        Relay {
            audit: dir.join(if n == 2 {
                "audit/audit.log"
            } else {
                "audit.log"
            }),
            checkpoint_pub: dir.join("audit-checkpoint.key.pub"),
            name,
            postfix,
            daemon,
            metrics,
            disk: disk.into_inner(),
            cpu_before: 0.0,
        }
    }

    /// The relays' submission addresses, as the load balancer knows them.
    pub fn submission(&self) -> Vec<SocketAddr> {
        self.relays.iter().map(|r| r.postfix.submit).collect()
    }

    /// A new selector in the master copy, deployed to every relay (they reload).
    pub fn rotate(&self, selector: &str, active_from: &str) {
        generate_key(self.keys.path(), selector, "rsa-2048", "now", active_from);
        for relay in &self.relays {
            deploy_keys(self.keys.path(), relay.daemon.dir.path());
        }
    }
}

/// `relayguard keys generate` into a directory with `gen.toml`.
fn generate_key(dir: &Path, selector: &str, algorithm: &str, publish: &str, active_from: &str) {
    relayguard(&[
        "keys",
        "generate",
        "--config",
        dir.join("gen.toml").to_str().unwrap(),
        "--domain",
        "tugraz.at",
        "--selector",
        selector,
        "--algorithm",
        algorithm,
        "--publish",
        publish,
        "--active-from",
        active_from,
    ])
    .unwrap();
}

/// Copies the master keys and schedule to a relay's directory: keys first, then the
/// schedule by rename, as a configuration management run does.
fn deploy_keys(master: &Path, dir: &Path) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(master.join("keys")).unwrap() {
        let from = entry.unwrap().path();
        let to = keys.join(from.file_name().unwrap());
        if !to.exists() {
            std::fs::copy(&from, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let tmp = dir.join("selectors.toml.new");
    std::fs::copy(master.join("selectors.toml"), &tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::rename(&tmp, dir.join("selectors.toml")).unwrap();
}

/// What differs between the relays' configurations.
struct ConfigParts<'a> {
    name: &'a str,
    socket: &'a str,
    table: &'a Path,
    bind_port: u16,
    publish: &'a str,
    audit: &'a str,
    metrics: SocketAddr,
    sentinels: &'a str,
}

/// A relay's relayguard.toml: the packaged settings, the directory as the only ownership
/// source, keys checked in BIND, counters in Redis through the Sentinels.
fn config(c: &ConfigParts) -> String {
    format!(
        r#"[milter]
socket = "{socket}"
socket_mode = "0660"
socket_group = "postfix"
shutdown_timeout_secs = 10

[domains]
protected = ["tugraz.at"]

[senders]
sources = ["ldap"]

[senders.ldap]
postfix_table = "{table}"
robot_filter = "(objectClass=tugRobot)"

[senders.masquerade."robot-web"]
address = "noreply-web@tugraz.at"
from = ["root@*", "www-data@*", "<>"]
display_name = "TU Graz web server"

[clients]
internal_networks = ["{CAMPUS}"]
require_name = "verified"

[dkim]
selectors = "selectors.toml"
keys_dir = "keys"
require_dns = true

[dkim.dns]
nameservers = ["127.0.0.1:{bind_port}"]
recheck_minutes = 1

{publish}
[audit]
file = "{audit}"
fsync = "periodic"
on_error = "tempfail"
checkpoint_key = "audit-checkpoint.key"
checkpoint_minutes = 1

[metrics]
listen = "{metrics}"

[limits]
store = "redis"
timezone = "UTC"
contact = "the campus mail team"

[limits.redis]
sentinels = {sentinels}
master_name = "{master}"
prefix = "campus:"
timeout_ms = 200
on_failure = "fail_closed"

[limits.internal]
connections_per_second = 5
messages_per_connection = 500
messages_per_hour = 500

[limits.external]
messages_per_hour = 50
recipients_per_message = 20
authentications_per_window = 150

[[limits.class]]
name = "robot"
logins = ["robot-web", "robot-backup"]
messages_per_connection = 500
messages_per_hour = 30

[limits.lock]
ownership_refusals = 10
ownership_window_minutes = 10
limit_hits_per_day = 50

[abuse]
act_at = 2.0
default_action = "log"

[abuse.actions]
external = "lock"
internal = "tempfail"
eas = "tempfail"
robot = "log"

[cluster]
host_name = "{name}"
"#,
        socket = c.socket,
        table = c.table.display(),
        bind_port = c.bind_port,
        publish = c.publish,
        audit = c.audit,
        metrics = c.metrics,
        sentinels = c.sentinels,
        master = Sentinels::MASTER,
        name = c.name,
    )
}
