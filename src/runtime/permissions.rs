//! Who may change what decides policy: every file (and every directory above it) that says
//! who may send as whom, which key signs, or holds a secret must be changeable only by root
//! or the service user (and the service's group); a secret must not be readable by others.
//!
//! As OpenSSH's StrictModes and `postfix check` do. Checked at start, by `check-config` and
//! at every reload; a reload that meets such a file keeps the previous configuration.

use super::assemble::Loaded;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a file is to relayguard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Decides policy: only root and the service may change it.
    Policy,
    /// Also holds a secret: nobody else may read it either.
    Secret,
}

/// The identity the service runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its user id.
    pub uid: u32,
    /// Its group ids (effective first).
    pub gids: Vec<u32>,
}

impl Service {
    /// User `name` with its groups, as the service runs when started as that user; `None`
    /// when there is no such user.
    pub fn user(name: &str) -> Option<Self> {
        let c_name = std::ffi::CString::new(name).ok()?;
        // SAFETY: getpwnam returns static storage or NULL; read at once.
        let pw = unsafe { libc::getpwnam(c_name.as_ptr()) };
        if pw.is_null() {
            return None;
        }
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        let mut groups = [0 as libc::gid_t; 64];
        let mut count = groups.len() as libc::c_int;
        // SAFETY: getgrouplist writes at most `count` entries and updates it.
        let rc =
            unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        let mut gids = vec![gid];
        if rc >= 0 {
            gids.extend(groups[..count as usize].iter().filter(|g| **g != gid));
        }
        Some(Service { uid, gids })
    }

    /// This process.
    pub fn current() -> Self {
        // SAFETY: plain queries of this process's credentials.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut gids = vec![gid];
        let mut buf = [0 as libc::gid_t; 64];
        // SAFETY: getgroups writes at most buf.len() entries.
        let n = unsafe { libc::getgroups(buf.len() as libc::c_int, buf.as_mut_ptr()) };
        if n > 0 {
            gids.extend(buf[..n as usize].iter().filter(|g| **g != gid));
        }
        Service { uid, gids }
    }
}

/// One inode's owner and mode, as the judgment needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Whether it is a directory.
    pub dir: bool,
}

/// What is wrong with one inode for what it is (a sentence ending in `; fix: <command>`);
/// pure.
/// `child_owner` is, for a directory above the file, the owner of the entry below it (a
/// sticky, world-writable directory such as /tmp is safe for entries root or the service
/// own).
pub fn judge(
    stat: Stat,
    kind: Kind,
    service: &Service,
    child_owner: Option<u32>,
) -> Option<String> {
    let trusted = |uid: u32| uid == 0 || uid == service.uid;
    let ours = |gid: u32| service.gids.contains(&gid);
    let mode = format!("mode {:04o}", stat.mode & 0o7777);
    if !trusted(stat.uid) {
        return Some(format!(
            "belongs to {} ({mode}), neither root nor the service user; fix: chown root",
            user_name(stat.uid)
        ));
    }
    // In a sticky directory only an entry's owner may replace it.
    let sticky_safe = stat.dir && stat.mode & 0o1000 != 0 && child_owner.is_some_and(trusted);
    if stat.mode & 0o002 != 0 && !sticky_safe {
        return Some(format!("is writable by others ({mode}); fix: chmod o-w"));
    }
    if stat.mode & 0o020 != 0 && !ours(stat.gid) && !sticky_safe {
        return Some(format!(
            "is writable by group {} ({mode}), not the service's; fix: chmod g-w",
            group_name(stat.gid)
        ));
    }
    // A group that may read a secret is the operator's grant (Postfix's group for an
    // ldap_table both read); others never.
    if kind == Kind::Secret && !stat.dir && stat.mode & 0o004 != 0 {
        return Some(format!(
            "holds a secret and is readable by others ({mode}); fix: chmod o-r"
        ));
    }
    None
}

fn stat(path: &Path) -> std::io::Result<Stat> {
    let meta = std::fs::metadata(path)?;
    Ok(Stat {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode(),
        dir: meta.is_dir(),
    })
}

/// The problems of `path` (`what` says what it is) and of every directory above it, each
/// naming the path, the mode and the fix.
pub fn check(path: &Path, what: &str, kind: Kind, service: &Service) -> Vec<String> {
    let mut problems = Vec::new();
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut chains = vec![absolute.clone()];
    if let Ok(real) = std::fs::canonicalize(&absolute)
        && real != absolute
    {
        chains.push(real);
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    for chain in chains {
        let mut child_owner = None;
        for (depth, at) in chain.ancestors().enumerate() {
            if seen.iter().any(|s| s == at) {
                break;
            }
            seen.push(at.to_path_buf());
            let Ok(stat) = stat(at) else {
                continue;
            };
            let own_kind = if depth == 0 { kind } else { Kind::Policy };
            if let Some(problem) = judge(stat, own_kind, service, child_owner) {
                let fix = problem.rsplit_once("fix: ").map(|(_, f)| f).unwrap_or("");
                let head = problem
                    .rsplit_once("; fix: ")
                    .map(|(h, _)| h)
                    .unwrap_or(&problem);
                let subject = if depth == 0 {
                    format!("{} ({what})", at.display())
                } else {
                    format!(
                        "{} (a directory above {what} {})",
                        at.display(),
                        path.display()
                    )
                };
                let why = if head.contains("readable") {
                    "whoever can read it holds the secret"
                } else {
                    "whoever can change it decides what relayguard does"
                };
                problems.push(format!(
                    "{subject} {head}: {why}; run `{fix} {}`",
                    at.display()
                ));
            }
            child_owner = Some(stat.uid);
        }
    }
    problems
}

/// Every file the loaded configuration reads that decides policy or holds a secret.
pub fn guarded(loaded: &Loaded) -> Vec<(PathBuf, &'static str, Kind)> {
    let config = &loaded.config;
    let mut files = Vec::new();
    let inline_secret = config.ldap.as_ref().is_some_and(
        |l| matches!(&l.table, crate::config::LdapTable::Inline(s) if s.has_password()),
    );
    files.push((
        config.path.clone(),
        "the configuration",
        if inline_secret {
            Kind::Secret
        } else {
            Kind::Policy
        },
    ));
    if let Some((map, _)) = &config.login_map {
        files.push((map.clone(), "the sender map", Kind::Policy));
    }
    if let Some(ldap) = &config.ldap
        && let crate::config::LdapTable::File(file, _) = &ldap.table
    {
        let secret = loaded
            .directory
            .as_ref()
            .is_some_and(|d| d.settings().has_password());
        files.push((
            file.clone(),
            "the directory's ldap_table",
            if secret { Kind::Secret } else { Kind::Policy },
        ));
    }
    if let Some(dkim) = &config.dkim {
        files.push((
            dkim.selectors.clone(),
            "the selector schedule",
            Kind::Policy,
        ));
        files.push((dkim.keys_dir.clone(), "the keys directory", Kind::Policy));
        let key_kind = if dkim.signing.require_safe_keys {
            Kind::Secret
        } else {
            // dkim.allow_unsafe_key_permissions (development): still no one else may
            // change them.
            Kind::Policy
        };
        for entry in loaded.snapshot.keys.iter().flat_map(|k| k.entries()) {
            files.push((entry.selector.key.clone(), "a DKIM key", key_kind));
        }
        if let Some(publish) = &dkim.publish {
            files.push((publish.key_file.clone(), "the TSIG key", Kind::Secret));
        }
    }
    if let Some(key) = config
        .audit
        .as_ref()
        .and_then(|a| a.checkpoints.as_ref())
        .map(|c| c.key_file.clone())
    {
        files.push((key, "the audit checkpoint key", Kind::Secret));
    }
    if let Some(store) = &config.limit_store
        && store.lock_file.exists()
    {
        files.push((store.lock_file.clone(), "the account locks", Kind::Policy));
    }
    files
}

/// Every problem of every guarded file, for the service running as `service`.
pub fn problems(loaded: &Loaded, service: &Service) -> Vec<String> {
    let mut out = Vec::new();
    for (path, what, kind) in guarded(loaded) {
        for problem in check(&path, what, kind, service) {
            if !out.contains(&problem) {
                out.push(problem);
            }
        }
    }
    out
}

fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid returns static storage or NULL; read at once.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return format!("uid {uid}");
    }
    let name = unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) };
    format!("user {} (uid {uid})", name.to_string_lossy())
}

fn group_name(gid: u32) -> String {
    // SAFETY: getgrgid returns static storage or NULL; read at once.
    let gr = unsafe { libc::getgrgid(gid) };
    if gr.is_null() {
        return format!("{gid}");
    }
    let name = unsafe { std::ffi::CStr::from_ptr((*gr).gr_name) };
    format!("{} ({gid})", name.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: fn() -> Service = || Service {
        uid: 110,
        gids: vec![120],
    };

    fn file(uid: u32, gid: u32, mode: u32) -> Stat {
        Stat {
            uid,
            gid,
            mode,
            dir: false,
        }
    }

    #[test]
    fn who_may_change_a_policy_file() {
        let s = SERVICE();
        assert_eq!(judge(file(0, 0, 0o644), Kind::Policy, &s, None), None);
        assert_eq!(judge(file(110, 120, 0o664), Kind::Policy, &s, None), None);
        assert!(
            judge(file(0, 0, 0o666), Kind::Policy, &s, None)
                .unwrap()
                .contains("chmod o-w")
        );
        assert!(
            judge(file(0, 50, 0o664), Kind::Policy, &s, None)
                .unwrap()
                .contains("chmod g-w")
        );
        assert!(
            judge(file(1000, 1000, 0o644), Kind::Policy, &s, None)
                .unwrap()
                .contains("chown root")
        );
    }

    #[test]
    fn who_may_read_a_secret() {
        let s = SERVICE();
        assert_eq!(judge(file(0, 120, 0o640), Kind::Secret, &s, None), None);
        assert_eq!(judge(file(110, 0, 0o600), Kind::Secret, &s, None), None);
        assert!(
            judge(file(0, 0, 0o644), Kind::Secret, &s, None)
                .unwrap()
                .contains("chmod o-r")
        );
        assert_eq!(
            judge(file(0, 50, 0o640), Kind::Secret, &s, None),
            None,
            "a group the operator granted"
        );
        assert_eq!(judge(file(0, 0, 0o644), Kind::Policy, &s, None), None);
    }

    #[test]
    fn a_sticky_world_writable_directory_is_safe_for_trusted_entries_only() {
        let s = SERVICE();
        let tmp = Stat {
            uid: 0,
            gid: 0,
            mode: 0o1777,
            dir: true,
        };
        assert_eq!(judge(tmp, Kind::Policy, &s, Some(110)), None);
        assert!(judge(tmp, Kind::Policy, &s, Some(1000)).is_some());
        let open = Stat { mode: 0o777, ..tmp };
        assert!(
            judge(open, Kind::Policy, &s, Some(0))
                .unwrap()
                .contains("chmod o-w")
        );
    }

    #[test]
    fn check_names_the_path_the_mode_and_the_fix_for_the_file_and_its_directories() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let map = keys.join("map");
        std::fs::write(&map, "x").unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&map, std::fs::Permissions::from_mode(0o666)).unwrap();
        let me = Service::current();
        let found = check(&map, "the sender map", Kind::Policy, &me);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0],
            format!(
                "{} (the sender map) is writable by others (mode 0666): whoever can change it decides what relayguard does; run `chmod o-w {}`",
                map.display(),
                map.display()
            )
        );
        assert!(found[1].starts_with(&format!(
            "{} (a directory above the sender map {}) is writable by others (mode 0777)",
            keys.display(),
            map.display()
        )));
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&map, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            check(&map, "the sender map", Kind::Policy, &me),
            Vec::<String>::new()
        );
    }
}
