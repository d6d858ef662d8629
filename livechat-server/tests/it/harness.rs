use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser as _;
use futures_util::FutureExt;
use livechat_server::{Config, Started};
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

pub(crate) const ADMIN: &str = "admin-token-for-tests-only";
pub(crate) const SECRET: &str = "jwt-secret-for-tests-only-0123456789";
pub(crate) const WAIT: Duration = Duration::from_secs(5);

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) started: Started,
    pub(crate) http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("livechat.db").display());
        let mut server = Self::start_on(&db, &[]).await;
        server._dir = Some(dir);
        server
    }

    pub(crate) async fn start_on(database_url: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "livechat-server",
            "--database-url",
            database_url,
            "--admin-token",
            ADMIN,
            "--jwt-secret",
            SECRET,
        ];
        args.extend_from_slice(extra);
        let config = Config::parse_from(args);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel();
        let done = tokio::spawn(livechat_server::run(
            config,
            listener,
            async move {
                let _ = stop_rx.await;
            },
            move |s: &Started| {
                let _ = started_tx.send(s.clone());
            },
        ));
        let started = tokio::time::timeout(WAIT, started_rx)
            .await
            .expect("server did not start within 5 s")
            .expect("server failed to start");
        Self {
            addr,
            started,
            http: reqwest::Client::new(),
            stop: Some(stop),
            done: Some(done),
            _dir: None,
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(15), done)
                .await
                .expect("server did not stop within 15 s")
                .unwrap()
                .unwrap();
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn demo(&self) -> &livechat_server::demo::Demo {
        self.started.demo.as_ref().expect("demo mode is on")
    }

    pub(crate) fn token(&self, user: &str) -> String {
        livechat_core::auth::Claims::new(user, chrono::Duration::hours(1))
            .sign_hs256(SECRET.as_bytes())
            .unwrap()
    }

    /// A JSON request; returns the status and the parsed body (Null when empty).
    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = tokio::time::timeout(WAIT, req.send())
            .await
            .expect("HTTP timeout")
            .expect("HTTP request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub(crate) async fn socket(&self, user: &str, transport: TransportType) -> SocketClient {
        SocketClientBuilder::new(&self.url("/"), &self.token(user), transport)
            .connect()
            .await
    }
}

/// Where and how a [`SocketClient`] connects.
pub(crate) struct SocketClientBuilder(ClientBuilder);

impl SocketClientBuilder {
    pub(crate) fn new(url: &str, token: &str, transport: TransportType) -> Self {
        Self(
            ClientBuilder::new(url)
                .transport_type(transport)
                .auth(json!({ "token": token })),
        )
    }

    pub(crate) async fn connect(self) -> SocketClient {
        self.try_connect()
            .await
            .unwrap_or_else(|e| panic!("socket did not connect: {e}"))
    }

    pub(crate) async fn try_connect(self) -> Result<SocketClient, String> {
        SocketClient::connect(self.0).await
    }
}

/// A `rust_socketio` client with bounded waits.
pub(crate) struct SocketClient {
    client: Client,
    events: mpsc::UnboundedReceiver<(String, Value)>,
}

impl SocketClient {
    async fn connect(builder: ClientBuilder) -> Result<Self, String> {
        let (tx, events) = mpsc::unbounded_channel();
        let (status_tx, mut status_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let ok_tx = status_tx.clone();
        let client = builder
            .reconnect(false)
            .on(Event::Connect, move |_, _| {
                let _ = ok_tx.send(Ok(()));
                async {}.boxed()
            })
            .on(Event::Error, move |p, _| {
                let _ = status_tx.send(Err(format!("{p:?}")));
                async {}.boxed()
            })
            .on_any(move |event, payload, _| {
                if let Payload::Text(mut v) = payload {
                    let _ = tx.send((
                        event.to_string(),
                        if v.is_empty() {
                            Value::Null
                        } else {
                            v.remove(0)
                        },
                    ));
                }
                async {}.boxed()
            })
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(WAIT, status_rx.recv()).await {
            Ok(Some(Ok(()))) => Ok(Self { client, events }),
            other => Err(format!("{other:?}")),
        }
    }

    pub(crate) async fn call(&self, event: &str, payload: Value) -> Value {
        let reply = self.call_raw(event, payload).await;
        assert_eq!(reply["ok"], true, "`{event}` failed: {reply}");
        reply["data"].clone()
    }

    /// Emits with an ack and returns the whole reply, `ok: false` included.
    pub(crate) async fn call_raw(&self, event: &str, payload: Value) -> Value {
        self.try_call(event, payload, WAIT)
            .await
            .unwrap_or_else(|| panic!("no ack for `{event}` within {WAIT:?}"))
    }

    /// `name` events until `n` arrived (or `within` passed), plus any that follow in
    /// the next 300 ms, so that a duplicate or an extra one shows.
    pub(crate) async fn take(&mut self, name: &str, n: usize, within: Duration) -> Vec<Value> {
        let mut deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        let mut settling = false;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((event, payload))) if event == name => out.push(payload),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return out,
            }
            if out.len() >= n && !settling {
                settling = true;
                deadline = tokio::time::Instant::now() + Duration::from_millis(300);
            }
        }
    }

    pub(crate) async fn next(&mut self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((event, payload))) if event == name => return payload,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("connection closed while waiting for `{name}`"),
                Err(_) => panic!("no `{name}` event within {WAIT:?}"),
            }
        }
    }
}

/// What `livechat-server` prints when it starts.
pub(crate) struct Banner {
    pub(crate) url: String,
    pub(crate) workspace: String,
    pub(crate) contact: String,
    pub(crate) token: String,
}

/// Starts the real binary in `dir` with `args` (and no `LIVECHAT_*` from the
/// environment) and waits for its banner.
pub(crate) async fn spawn_binary(
    dir: &std::path::Path,
    args: &[&str],
) -> (tokio::process::Child, Banner) {
    let (child, banner, _) = spawn(dir, args, None).await;
    (child, banner)
}

async fn spawn(
    dir: &std::path::Path,
    args: &[&str],
    log_filter: Option<&str>,
) -> (
    tokio::process::Child,
    Banner,
    Option<tokio::task::JoinHandle<String>>,
) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_livechat-server"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("LIVECHAT_")) {
        cmd.env_remove(key);
    }
    match log_filter {
        Some(filter) => cmd
            .env("RUST_LOG", filter)
            .stderr(std::process::Stdio::piped()),
        None => cmd
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::null()),
    };
    let mut child = cmd
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Drain stderr from the start: a full pipe would stop the server mid-log.
    let logs = child.stderr.take().map(|mut stderr| {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        })
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut workspace, mut contact, mut token) = (None, None, None, None);
    while token.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the server printed no token within 10 s")
            .unwrap()
            .expect("the server exited before printing a token");
        let last = line
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned();
        if line.starts_with("livechat listening on ") {
            url = Some(last);
        } else if line.starts_with("demo contact:") {
            contact = Some(last);
        } else if line.starts_with("demo workspace:") {
            workspace = Some(last);
        } else if line.starts_with("demo agent token") {
            token = Some(last);
        }
    }
    // Keep reading stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let banner = Banner {
        url: url.expect("address printed"),
        workspace: workspace.expect("workspace printed"),
        contact: contact.expect("contact printed"),
        token: token.unwrap(),
    };
    (child, banner, logs)
}

impl SocketClient {
    /// Emits with an ack callback; the ack's first argument, or `None` if none comes
    /// within `within` (the connection is gone).
    pub(crate) async fn try_call(
        &self,
        event: &str,
        payload: Value,
        within: Duration,
    ) -> Option<Value> {
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        self.client
            .emit_with_ack(event, payload, within, move |p: Payload, _| {
                if let (Payload::Text(mut v), Some(tx)) = (p, tx.lock().unwrap().take()) {
                    let first = if v.is_empty() {
                        Value::Null
                    } else {
                        v.remove(0)
                    };
                    // rust_socketio hands over the ack's argument list as one array.
                    let first = match first {
                        Value::Array(mut args) if args.len() == 1 => args.remove(0),
                        other => other,
                    };
                    let _ = tx.send(first);
                }
                async {}.boxed()
            })
            .await
            .ok()?;
        tokio::time::timeout(within, rx).await.ok()?.ok()
    }
}

impl TestServer {
    /// A server on a fresh temporary database with extra flags.
    pub(crate) async fn start_on_temp(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("livechat.db").display());
        let mut server = Self::start_on(&db, extra).await;
        server._dir = Some(dir);
        server
    }
}

/// [`spawn_binary`] with `RUST_LOG=filter`; the task collects its stderr until it exits.
pub(crate) async fn spawn_binary_with_logs(
    dir: &std::path::Path,
    args: &[&str],
    filter: &str,
) -> (
    tokio::process::Child,
    Banner,
    tokio::task::JoinHandle<String>,
) {
    let (child, banner, logs) = spawn(dir, args, Some(filter)).await;
    (
        child,
        banner,
        logs.expect("stderr is piped when logs are asked for"),
    )
}

impl SocketClient {
    /// Leaves the namespace, as `socket.disconnect()` does in the browser.
    pub(crate) async fn disconnect(self) {
        self.client
            .disconnect()
            .await
            .expect("the client could not disconnect");
    }
}

/// Sends SIGTERM to a child server and waits (bounded) for it to exit successfully.
pub(crate) async fn terminate(child: &mut tokio::process::Child, within: Duration) {
    let pid = child.id().expect("the server is running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success(), "kill -TERM {pid} failed");
    let status = tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the server did not exit within {within:?} of SIGTERM"))
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
