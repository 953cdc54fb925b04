//! A private OpenLDAP slapd on a loopback port, loaded with the test campus directory
//! (tests/fixtures/ldap/directory.ldif); stopped by the PID it was started with.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The DN and password relayguard (and Postfix) bind with: read access to everything.
pub const BIND_DN: &str = "cn=milter,ou=services,dc=tugraz,dc=at";
pub const BIND_PW: &str = "milter-secret";
const ADMIN_DN: &str = "cn=admin,dc=tugraz,dc=at";
const ADMIN_PW: &str = "admin-secret";

/// The query of the campus: an address or alias of an enabled entry.
pub const QUERY_FILTER: &str = "(&(|(mail=%s)(mailAlternateAddress=%s))(!(employeeType=disabled)))";

/// A running (or stopped) slapd.
pub struct Slapd {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Slapd {
    /// Starts slapd with the campus directory on a free loopback port.
    pub fn start() -> Self {
        Self::start_with_users(0)
    }

    /// Starts slapd with the campus directory plus `users` generated people `user<k>` who
    /// own `user<k>@tugraz.at` (for load through many distinct logins).
    pub fn start_with_users(users: usize) -> Self {
        let ldif: String = (0..users)
            .map(|k| format!(
                "\ndn: uid=user{k},ou=people,dc=tugraz,dc=at\nobjectClass: inetOrgPerson\nuid: user{k}\ncn: User {k}\nsn: {k}\nmail: user{k}@tugraz.at\n"
            ))
            .collect();
        Self::launch(&ldif, false)
    }

    /// Starts slapd with the campus directory plus the entries of `ldif` (people, groups
    /// of a generated campus).
    pub fn start_with_ldif(ldif: &str) -> Self {
        Self::launch(ldif, false)
    }

    /// Starts slapd with the campus directory and a certificate for 127.0.0.1 from a test
    /// CA (`ca.pem` in [`Slapd::dir`]), for StartTLS.
    pub fn start_with_tls() -> Self {
        Self::launch("", true)
    }

    fn launch(extra: &str, tls: bool) -> Self {
        assert!(
            Path::new("/usr/sbin/slapd").exists(),
            "slapd is missing: run scripts/test, which installs it"
        );
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ldap");
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let tls = if tls {
            make_certificates(dir.path(), "ca");
            format!(
                "TLSCACertificateFile {d}/ca.pem\nTLSCertificateFile {d}/server.pem\nTLSCertificateKeyFile {d}/server.key\n",
                d = dir.path().display()
            )
        } else {
            String::new()
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include {schema}\n\
             {tls}\
             pidfile {d}/slapd.pid\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             database mdb\n\
             maxsize 67108864\n\
             suffix \"dc=tugraz,dc=at\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PW}\n\
             directory {d}/db\n\
             index objectClass eq\n\
             index uid,mail,mailAlternateAddress,employeeType eq\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by dn.exact=\"{BIND_DN}\" read by * none\n",
            schema = fixtures.join("relayguard.schema").display(),
            d = dir.path().display(),
        );
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        let mut ldif = std::fs::read_to_string(fixtures.join("directory.ldif")).unwrap();
        ldif.push_str(extra);
        std::fs::write(dir.path().join("data.ldif"), ldif).unwrap();
        let status = Command::new("/usr/sbin/slapadd")
            .arg("-q")
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-l")
            .arg(dir.path().join("data.ldif"))
            .stdout(Stdio::null())
            .status()
            .expect("slapadd runs");
        assert!(status.success(), "slapadd loads the campus directory");
        let mut slapd = Slapd {
            port: super::free_port(),
            dir,
            child: None,
        };
        slapd.restart();
        slapd
    }

    /// `ldap://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Where generated files (a Postfix ldap_table file, say) may go.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A Postfix ldap_table(5) file for the campus directory: the one a Postfix operator
    /// would name in `smtpd_sender_login_maps`.
    pub fn postfix_table(&self) -> PathBuf {
        let path = self.dir.path().join("ldap-sender-login.cf");
        std::fs::write(
            &path,
            format!(
                "# smtpd_sender_login_maps = ldap:{path}\n\
                 server_host = {url}\n\
                 search_base = dc=tugraz,dc=at\n\
                 scope = sub\n\
                 query_filter = {QUERY_FILTER}\n\
                 result_attribute = uid\n\
                 special_result_attribute = member\n\
                 bind = yes\n\
                 bind_dn = {BIND_DN}\n\
                 bind_pw = {BIND_PW}\n\
                 version = 3\n",
                path = "/etc/postfix/ldap-sender-login.cf",
                url = self.url(),
            ),
        )
        .unwrap();
        // It holds the bind password: as an operator keeps it, root's and readable by
        // Postfix's group (Postfix reads the same file), by no one else.
        use std::os::unix::fs::PermissionsExt;
        let _ = Command::new("chgrp").arg("postfix").arg(&path).status();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        path
    }

    /// Starts it again (after [`Slapd::stop`]) on the same port with the same data.
    pub fn restart(&mut self) {
        let started = Instant::now();
        let child = Command::new("/usr/sbin/slapd")
            .args(["-d", "0", "-h"])
            .arg(format!("ldap://127.0.0.1:{}/", self.port))
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd starts");
        self.child = Some(child);
        while !self.answers() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "slapd did not answer"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        Command::new("/usr/bin/ldapsearch")
            .args(["-x", "-H", &self.url(), "-s", "base", "-b", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Freezes slapd (SIGSTOP): it keeps its sockets but answers nothing, as a hung server.
    /// Returns once the kernel shows it stopped.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let pid = self.child.as_ref().expect("slapd runs").id();
        let started = Instant::now();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the command name in parentheses: T is stopped.
            if stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "slapd did not stop"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets a frozen slapd go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("slapd runs");
        // SAFETY: a signal to the slapd this harness started, by its pid.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    /// Stops it (SIGKILL: as abrupt as a crash), by the PID it was started with.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Applies an LDIF change (ldapmodify as the directory's administrator).
    pub fn modify(&self, ldif: &str) {
        let mut child = Command::new("/usr/bin/ldapmodify")
            .args(["-x", "-H", &self.url(), "-D", ADMIN_DN, "-w", ADMIN_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("ldapmodify runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "ldapmodify applies {ldif}");
    }

    /// Every address in the directory (mail and mailAlternateAddress of every entry).
    pub fn addresses(&self) -> Vec<String> {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ldap");
        std::fs::read_to_string(fixtures.join("directory.ldif"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                l.strip_prefix("mail: ")
                    .or_else(|| l.strip_prefix("mailAlternateAddress: "))
            })
            .map(str::to_string)
            .collect()
    }
}

/// Makes a CA (`NAME.pem`, `NAME.key`) in `dir` and, for the CA `ca`, a server certificate
/// for 127.0.0.1 signed by it (`server.pem`, `server.key`).
pub fn make_certificates(dir: &Path, name: &str) {
    let openssl = |args: String| {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(format!(
        "req -x509 {key} -keyout {name}.key -out {name}.pem -days 2 -subj /CN={name} -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    ));
    if name != "ca" {
        return;
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(format!(
        "req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
    ));
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext".into(),
    );
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
