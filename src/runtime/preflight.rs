//! What `check-config` checks beyond the configuration itself: that the service user can
//! read the keys and write the socket and audit log directories, as the package lays out.

use super::assemble::{self, Findings, Loaded};
use crate::audit::writer::{AuditConfig, Destination};
use crate::config::SocketSpec;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// `check-config`: the checks every reload runs, then what `service_user` needs (skipped
/// with a warning when the user does not exist).
pub fn check_config(loaded: &Loaded, service_user: &str, now: i64) -> Findings {
    // File permissions are judged for the service user when it exists (root runs
    // check-config for it), else for whoever runs it.
    let service = super::permissions::Service::user(service_user)
        .unwrap_or_else(super::permissions::Service::current);
    let mut found = assemble::check_as(loaded, now, &service);
    let layout = service_user_access(loaded, service_user);
    found.errors.extend(layout.errors);
    found.warnings.extend(layout.warnings);
    found
}

/// Whether `uid`/`gid` may do `want` (an rwx mask for the owner position) on `path`.
fn may(path: &Path, uid: u32, gid: u32, want: u32) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let mode = meta.mode();
    if uid == 0 {
        return true;
    }
    let bits = if meta.uid() == uid {
        (mode >> 6) & 7
    } else if meta.gid() == gid {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & want == want
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns static storage or NULL; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    (!pw.is_null()).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// The service user reads the keys, and writes the socket directory and the audit log.
fn service_user_access(loaded: &Loaded, user: &str) -> Findings {
    let mut found = Findings::default();
    let config = &loaded.config;
    if let SocketSpec::Unix(socket) = &config.milter.socket
        && let Some(dir) = socket.parent().filter(|d| !d.is_dir())
    {
        found.warnings.push(format!("{}: socket directory missing (systemd creates it at start with RuntimeDirectory; create it otherwise)", dir.display()));
    }
    let Some((uid, gid)) = user_ids(user) else {
        found.warnings.push(format!(
            "user `{user}` does not exist: file ownership not checked (use --service-user)"
        ));
        return found;
    };
    if let Some(dkim) = &config.dkim {
        let dir = &dkim.keys_dir;
        match std::fs::metadata(dir) {
            Ok(meta) if meta.permissions().mode() & 0o007 != 0 => found.errors.push(format!(
                "{}: key directory is accessible to others (mode {:04o}; 0750 advised)",
                dir.display(),
                meta.permissions().mode() & 0o7777
            )),
            Ok(_) if !may(dir, uid, gid, 0o5) => found.errors.push(format!(
                "{}: user {user} cannot enter the key directory",
                dir.display()
            )),
            Ok(_) => {}
            Err(e) => found.errors.push(format!("{}: {e}", dir.display())),
        }
        for entry in loaded.snapshot.keys.iter().flat_map(|k| k.entries()) {
            if !may(&entry.selector.key, uid, gid, 0o4) {
                found.errors.push(format!(
                    "{}: user {user} cannot read this key (chown {user})",
                    entry.selector.key.display()
                ));
            }
        }
    }
    if let SocketSpec::Unix(socket) = &config.milter.socket
        && let Some(dir) = socket.parent()
        && dir.is_dir()
        && !may(dir, uid, gid, 0o3)
    {
        found.errors.push(format!(
            "{}: user {user} cannot create the socket here",
            dir.display()
        ));
    }
    if let Some(AuditConfig {
        destination: Destination::File(file),
        ..
    }) = &config.audit
    {
        let dir = file.parent().unwrap_or(Path::new("."));
        let writable = may(dir, uid, gid, 0o3) || (file.exists() && may(file, uid, gid, 0o2));
        if !writable {
            found.errors.push(format!(
                "{}: user {user} cannot write the audit log",
                file.display()
            ));
        }
    }
    found
}
