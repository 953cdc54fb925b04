//! The listening socket: binding unix or TCP sockets, socket file hygiene, and accepting.

use crate::config::{MilterConfig, SocketSpec};
use indymilter::{EitherListener, EitherStream, Listener};
use std::ffi::CString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A unix socket file that relayguard created; removed on drop if it is still ours.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    inode: (u64, u64),
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still the one we bound.
    pub fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.inode
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The milter's listening socket; dropping it closes the socket.
pub struct MilterListener {
    inner: EitherListener<TcpListener, UnixListener>,
    socket_file: Option<std::sync::Arc<SocketFile>>,
}

impl MilterListener {
    /// Wraps a bound TCP listener (tests bind `127.0.0.1:0` themselves).
    pub fn tcp(listener: TcpListener) -> Self {
        Self {
            inner: EitherListener::Tcp(listener),
            socket_file: None,
        }
    }

    /// The local address of a TCP listener.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.inner {
            EitherListener::Tcp(l) => l.local_addr().ok(),
            _ => None,
        }
    }

    /// The unix socket file, shared so that shutdown can remove it early.
    pub fn socket_file(&self) -> Option<std::sync::Arc<SocketFile>> {
        self.socket_file.clone()
    }

    /// The next MTA connection.
    pub async fn accept(&mut self) -> io::Result<EitherStream<TcpStream, UnixStream>> {
        let stream = std::future::poll_fn(|cx| self.inner.poll_accept(cx)).await?;
        if let EitherStream::Tcp(tcp) = &stream {
            // The end-of-message reply must not wait for a delayed ACK.
            let _ = tcp.set_nodelay(true);
        }
        Ok(stream)
    }
}

/// The listening socket systemd passed (socket activation: `LISTEN_FDS`, `LISTEN_PID`),
/// if any. It is served as it is: its path, mode and owner are the socket unit's, and it is
/// never removed (systemd keeps it open, so the MTA's connections wait in its backlog while
/// relayguard restarts).
pub fn inherited() -> io::Result<Option<MilterListener>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = sd_notify::listen_fds()?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if fds.len() > 0 {
        tracing::warn!(
            unused = fds.len(),
            "systemd passed several sockets; relayguard serves the first"
        );
    }
    // SAFETY: systemd handed this descriptor to this process (LISTEN_PID is ours); nothing
    // else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let inner = match socket_family(&owned)? {
        libc::AF_UNIX => {
            let listener = std::os::unix::net::UnixListener::from(owned);
            listener.set_nonblocking(true)?;
            EitherListener::Unix(UnixListener::from_std(listener)?)
        }
        libc::AF_INET | libc::AF_INET6 => {
            let listener = std::net::TcpListener::from(owned);
            listener.set_nonblocking(true)?;
            EitherListener::Tcp(TcpListener::from_std(listener)?)
        }
        other => {
            return Err(io::Error::other(format!(
                "the socket systemd passed has address family {other}, not unix or inet"
            )));
        }
    };
    Ok(Some(MilterListener {
        inner,
        socket_file: None,
    }))
}

fn socket_family(fd: &std::os::fd::OwnedFd) -> io::Result<libc::c_int> {
    use std::os::fd::AsRawFd;
    // SAFETY: getsockname writes at most `len` bytes into a zeroed sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(addr.ss_family as libc::c_int)
}

/// Binds the configured socket: removes a stale unix socket, refuses one that is in use,
/// then applies mode, owner and group.
pub async fn bind(config: &MilterConfig) -> io::Result<MilterListener> {
    match &config.socket {
        SocketSpec::Inet(addr) => Ok(MilterListener::tcp(TcpListener::bind(addr).await?)),
        SocketSpec::Unix(path) => {
            remove_stale(path).await?;
            let listener = UnixListener::bind(path)?;
            let meta = std::fs::metadata(path)?;
            let file = SocketFile {
                path: path.clone(),
                inode: (meta.dev(), meta.ino()),
            };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode))?;
            chown(
                path,
                config.socket_owner.as_deref(),
                config.socket_group.as_deref(),
            )?;
            Ok(MilterListener {
                inner: EitherListener::Unix(listener),
                socket_file: Some(std::sync::Arc::new(file)),
            })
        }
    }
}

async fn remove_stale(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to remove it",
                path.display()
            ),
        ));
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by another running milter", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

/// Looks up a user's uid.
pub fn user_id(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or NULL; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    (!pw.is_null()).then(|| unsafe { (*pw).pw_uid })
}

/// Looks up a group's gid.
pub fn group_id(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer to static storage or NULL; read at once.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
}

fn chown(path: &Path, owner: Option<&str>, group: Option<&str>) -> io::Result<()> {
    let not_found = |what: &str, name: &str| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{what} `{name}` does not exist"),
        )
    };
    let uid = owner
        .map(|o| user_id(o).ok_or_else(|| not_found("user", o)))
        .transpose()?;
    let gid = group
        .map(|g| group_id(g).ok_or_else(|| not_found("group", g)))
        .transpose()?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid)?;
    }
    Ok(())
}
