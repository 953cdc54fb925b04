//! A private redis-server on a loopback port, with append-only persistence in a temporary
//! directory so that it can be stopped and restarted with its data.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) redis-server.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server on a free loopback port.
    pub fn start() -> Self {
        assert!(
            Path::new("/usr/bin/redis-server").exists(),
            "redis-server is missing: run scripts/test, which installs it"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again (after [`Redis::stop`]) on the same port with the same data.
    pub fn restart(&mut self) {
        let child = super::real_clock("/usr/bin/redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGKILL: as abrupt as a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs redis-cli; `None` when it fails.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = super::real_clock("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis primary, one replica and three sentinels on loopback, as a relay cluster runs
/// them (`../shared/notes/test-servers.md`); every process is killed on drop.
pub struct Sentinels {
    pub primary: u16,
    pub replica: u16,
    pub sentinels: Vec<u16>,
    dir: tempfile::TempDir,
    children: Vec<(u16, Child)>,
}

impl Sentinels {
    /// The name the sentinels monitor.
    pub const MASTER: &'static str = "rg";

    /// Starts the primary, the replica and the sentinels, and waits until the sentinels
    /// know both.
    pub fn start() -> Self {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let mut cluster = Sentinels {
            primary: port(),
            replica: port(),
            sentinels: vec![port(), port(), port()],
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        };
        // A replica's full sync writes an RDB file even without --save: into the
        // temporary directory, never the working directory.
        let dir = cluster.dir.path().display().to_string();
        let server = |p: u16| -> Vec<String> {
            [
                "--port",
                &p.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir,
                "--dbfilename",
                &format!("dump-{p}.rdb"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        cluster.spawn(cluster.primary, server(cluster.primary));
        let mut replica = server(cluster.replica);
        replica.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            cluster.primary.to_string(),
        ]);
        cluster.spawn(cluster.replica, replica);
        for s in cluster.sentinels.clone() {
            let file = cluster.dir.path().join(format!("sentinel-{s}.conf"));
            std::fs::write(
                &file,
                format!(
                    "port {s}\nbind 127.0.0.1\nsentinel monitor {} 127.0.0.1 {} 2\nsentinel down-after-milliseconds {0} 1000\nsentinel failover-timeout {0} 3000\n",
                    Self::MASTER,
                    cluster.primary
                ),
            )
            .unwrap();
            cluster.spawn(s, vec![file.display().to_string(), "--sentinel".into()]);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let knows_replica = cluster.sentinels.iter().all(|&s| {
                cli(s, &["SENTINEL", "REPLICAS", Self::MASTER])
                    .is_some_and(|out| out.contains(&cluster.replica.to_string()))
            });
            let synced = cli(cluster.replica, &["INFO", "replication"])
                .is_some_and(|out| out.contains("master_link_status:up"));
            if knows_replica && synced {
                return cluster;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels never saw the replica"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn(&mut self, port: u16, args: Vec<String>) {
        let child = super::real_clock("/usr/bin/redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.children.push((port, child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(port, &["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis on {port} did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `sentinels = [...]` for relayguard.toml.
    pub fn toml_list(&self) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"redis://127.0.0.1:{s}\""))
            .collect();
        format!("[{}]", list.join(", "))
    }

    /// Kills the process listening on `port` (SIGKILL, as a host failing).
    pub fn kill(&mut self, port: u16) {
        if let Some(i) = self.children.iter().position(|(p, _)| *p == port) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The primary the sentinels name now.
    pub fn current_primary(&self) -> Option<u16> {
        let out = cli(
            self.sentinels[0],
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER],
        )?;
        out.lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// redis-cli against a loopback port; `None` when it fails.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = super::real_clock("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
}
