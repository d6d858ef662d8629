//! Real services for tests: scratch Postgres databases, private Redis and Postgres
//! servers a test may kill and restart, and a TCP gate to cut a connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A database of its own for one test, on the server named by
/// `LIVECHAT_TEST_POSTGRES_URL` (feature `postgres`).
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct ScratchDatabase {
    /// The new database's URL.
    pub url: String,
    admin_url: String,
    name: String,
}

#[cfg(feature = "postgres")]
impl ScratchDatabase {
    /// The environment variable that names the test server.
    pub const ENV: &'static str = "LIVECHAT_TEST_POSTGRES_URL";

    /// Creates an empty database for `test`, or returns `None` (and says on stderr that
    /// `test` was skipped) when [`Self::ENV`] is not set. Panics when it is set but the
    /// server cannot be reached: a CI run that should test Postgres must not pass
    /// without it.
    pub async fn create(test: &str) -> Option<Self> {
        use sqlx::Connection;
        let Ok(admin_url) = std::env::var(Self::ENV) else {
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped {test}: {} is not set",
                Self::ENV
            );
            return None;
        };
        let name = format!("livechat_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{} is set but Postgres answers: {e}", Self::ENV));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        Some(Self {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        })
    }

    /// Drops the database, ending any connection still open to it.
    pub async fn drop_database(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}

/// `url` with its database (the path) replaced by `name`; the query string is kept.
#[cfg(feature = "postgres")]
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    #[test]
    fn replaces_the_database_and_keeps_the_rest() {
        assert_eq!(
            super::with_database("postgres://u:p@h:5432/test?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://h", "x"), "postgres://h/x");
    }
}

/// The Redis server for tests, from `LIVECHAT_TEST_REDIS_URL`; `None` (and a line on
/// stderr saying that `test` was skipped) when it is not set.
pub fn test_redis_url(test: &str) -> Option<String> {
    const ENV: &str = "LIVECHAT_TEST_REDIS_URL";
    let url = std::env::var(ENV).ok();
    if url.is_none() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped {test}: {ENV} is not set");
    }
    url
}

/// A TCP proxy a test can cut (every connection through it dropped at once, without
/// a clean close, and new ones refused) and restore: a network outage between two
/// real parts.
#[derive(Debug)]
pub struct Gate {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Gate {
    /// A gate in front of `target`, open.
    pub async fn to(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the gate");
        let addr = listener.local_addr().expect("the gate's address");
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let open = open.clone();
            let connections = connections.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        continue;
                    };
                    let task = tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                    lock(&connections).push(task.abort_handle());
                }
            }
        });
        Self {
            addr,
            open,
            connections,
            accept,
        }
    }

    /// Drops every connection through the gate and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in lock(&self.connections).drain(..) {
            c.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn wait_listening(port: u16, what: &str) {
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on {addr} within 10 s");
}

/// A Redis server of the test's own (`redis-server` from `PATH`, nothing on disk), so
/// that a test can kill it and start it again on the same port.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateRedis {
    /// Starts one on a free port. Panics when `redis-server` cannot be run.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.start_again().await;
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (again) on its port and waits until it listens.
    pub async fn start_again(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("running redis-server (it must be on PATH)");
        self.child = Some(child);
        wait_listening(self.port, "redis-server").await;
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// A PostgreSQL server of the test's own, in a temporary directory (`initdb` and
/// `pg_ctl` from `pg_config --bindir`; as root, run as the `postgres` user), so that a
/// test can stop and restart it. Stopped when dropped.
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct PrivatePostgres {
    port: u16,
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
}

#[cfg(feature = "postgres")]
impl PrivatePostgres {
    /// Creates a cluster and starts it on a free port. Panics when it cannot.
    pub async fn start() -> Self {
        let bin = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .expect("pg_config --bindir (the PostgreSQL server binaries must be installed)");
        let dir =
            std::env::temp_dir().join(format!("livechat-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("creating the cluster directory");
        let pg = Self {
            port: free_port(),
            bin,
            dir,
        };
        if as_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&pg.dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the cluster directory failed");
        }
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &["-A", "trust", "-U", "postgres", "-D", path(&data)],
        )
        .await;
        pg.start_again().await;
        pg
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it (again) and waits until it accepts connections.
    pub async fn start_again(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            path(&self.dir)
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-l",
                path(&log),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
        .await;
        wait_listening(self.port, "postgres").await;
    }

    /// Stops it at once (`-m immediate`: a crash, as far as clients can tell).
    pub async fn stop(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &["-D", path(&data), "-m", "immediate", "-w", "stop"],
        )
        .await;
    }

    async fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut cmd = if as_root() {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            tokio::process::Command::new(&program)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[cfg(feature = "postgres")]
impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let mut cmd = if as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            std::process::Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd
            .args(["-D", path(&data), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(feature = "postgres")]
fn as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[cfg(feature = "postgres")]
fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}
