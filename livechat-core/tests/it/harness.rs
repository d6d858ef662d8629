//! A livechat mounted in axum on 127.0.0.1:0, and a real Socket.IO client
//! (`rust_socketio`) whose events land in a channel with bounded waits.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use livechat_core::auth::{Claims, JwtAuthenticator};
use livechat_core::error::StoreError;
use livechat_core::model::{
    Contact, Message, MessageId, NewMessage, Page, Reaction, Status, Workspace,
};
use livechat_core::model::{ContactId, Role, UserId, WorkspaceId};
use livechat_core::store::{
    Appended, Directory, MemoryStore, MessageStore, NewContact, NewWorkspace, Store, SyncScope,
    Toggled,
};
use livechat_core::{Limits, LiveChat, LiveChatBuilder};
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

pub(crate) const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// Tests that load the machine on purpose (floods, bursts of connections) or judge
/// latency take this first, so that no two of them run side by side: one's load
/// would be the other's delay.
pub(crate) async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static LOADING_OR_TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOADING_OR_TIMING.lock().await
}

/// How much longer a failing `call` waits, only to say whether its answer was late or lost.
const LATE: Duration = Duration::from_secs(10);

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) chat: LiveChat,
    /// Workspace A, its contact, and agent "alice" (member of A).
    pub(crate) ws: WorkspaceId,
    pub(crate) contact: ContactId,
    /// Workspace B, its contact, and agent "bob" (member of B only).
    pub(crate) other_ws: WorkspaceId,
    pub(crate) other_contact: ContactId,
}

impl Server {
    pub(crate) async fn start() -> Self {
        Self::start_with(livechat_core::store::MemoryStore::new(), Limits::default()).await
    }

    pub(crate) async fn start_with(store: impl Store, limits: Limits) -> Self {
        Self::start_custom(store, limits, |b| b).await
    }

    pub(crate) async fn start_custom(
        store: impl Store,
        limits: Limits,
        customize: impl FnOnce(LiveChatBuilder) -> LiveChatBuilder,
    ) -> Self {
        capture_logs();
        let builder = LiveChat::builder()
            .store(store)
            .authenticator(JwtAuthenticator::hs256(SECRET))
            .limits(limits);
        let (layer, chat) = customize(builder).build_layer();
        let app = axum::Router::new()
            .route("/hello", axum::routing::get(|| async { "hello" }))
            .layer(layer)
            // What a host does so that per-address limits apply.
            .layer(axum::middleware::map_request(
                |mut req: axum::extract::Request| async move {
                    let peer = req
                        .extensions()
                        .get::<axum::extract::ConnectInfo<SocketAddr>>()
                        .map(|c| c.0);
                    if let Some(peer) = peer {
                        req.extensions_mut().insert(livechat_core::PeerAddr(peer));
                    }
                    req
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap()
        });

        let (ws, contact) = seed(&chat, "alice").await;
        let (other_ws, other_contact) = seed(&chat, "bob").await;
        Self {
            addr,
            chat,
            ws,
            contact,
            other_ws,
            other_contact,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) async fn connect(&self, user: &str) -> TestClient {
        self.connect_with(user, TransportType::Websocket).await
    }

    pub(crate) async fn connect_with(&self, user: &str, transport: TransportType) -> TestClient {
        TestClient::connect(
            ClientBuilder::new(self.url())
                .transport_type(transport)
                .auth(json!({ "token": token(user) })),
        )
        .await
        .unwrap_or_else(|e| panic!("{user} could not connect: {e}"))
    }
}

/// Sends the servers' warnings and errors to the running test's captured output, so
/// that a failing test shows what its server saw. `LIVECHAT_TEST_LOG` takes a filter
/// in `RUST_LOG` syntax instead (`livechat_core=debug`, say).
fn capture_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVECHAT_TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Only the first call installs it; the others find it there.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

async fn seed(chat: &LiveChat, agent: &str) -> (WorkspaceId, ContactId) {
    let ws = WorkspaceId::new_v4();
    chat.create_workspace(NewWorkspace {
        id: ws,
        name: format!("{agent}'s team"),
        phone: None,
    })
    .await
    .unwrap();
    let contact = ContactId::new_v4();
    chat.create_contact(NewContact {
        id: contact,
        workspace_id: ws,
        name: "Customer".into(),
        phone: None,
    })
    .await
    .unwrap();
    chat.add_member(ws, UserId::from(agent), Role::Agent)
        .await
        .unwrap();
    (ws, contact)
}

pub(crate) fn token(user: &str) -> String {
    Claims::new(user, chrono::Duration::hours(1))
        .sign_hs256(SECRET)
        .unwrap()
}

/// A connected client; every server event is queued in `events`.
pub(crate) struct TestClient {
    pub(crate) client: Client,
    events: mpsc::UnboundedReceiver<(String, Value)>,
}

impl TestClient {
    /// Connects and waits for the namespace connect, or returns the refusal's text.
    pub(crate) async fn connect(builder: ClientBuilder) -> Result<Self, String> {
        let (tx, events) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let ok_tx = status_tx.clone();
        let builder = builder
            .reconnect(false)
            .on(Event::Connect, move |_, _| {
                let _ = ok_tx.send(Ok(()));
                async {}.boxed()
            })
            .on(Event::Error, move |payload, _| {
                let _ = status_tx.send(Err(format!("{payload:?}")));
                async {}.boxed()
            })
            .on_any(move |event, payload, _| {
                if let Payload::Text(mut values) = payload {
                    let first = if values.is_empty() {
                        Value::Null
                    } else {
                        values.remove(0)
                    };
                    let _ = tx.send((event.to_string(), first));
                }
                async {}.boxed()
            });
        let client = builder.connect().await.map_err(|e| e.to_string())?;
        let mut status_rx = status_rx;
        match tokio::time::timeout(WAIT, status_rx.recv()).await {
            Ok(Some(Ok(()))) => Ok(Self { client, events }),
            Ok(Some(Err(e))) => Err(e),
            Ok(None) => Err("no connect status".into()),
            Err(_) => Err("neither connect nor connect_error within 5 s".into()),
        }
    }

    pub(crate) async fn emit(&self, event: &str, payload: Value) {
        self.client.emit(event, payload).await.expect("emit");
    }

    /// Emits with an ack callback and returns the ack's first argument. Without one
    /// within [`WAIT`] the test fails; it first waits [`LATE`] longer, so that the
    /// message tells a slow answer (and what it was) from a lost one.
    pub(crate) async fn call(&self, event: &str, payload: Value) -> Value {
        let sent = tokio::time::Instant::now();
        let Some(answer) = self.emit_for_ack(event, payload, WAIT + LATE).await else {
            panic!("`{event}` could not be sent: the connection is gone");
        };
        let mut answer = std::pin::pin!(answer);
        if let Ok(Ok(reply)) = tokio::time::timeout(WAIT, &mut answer).await {
            return reply;
        }
        match tokio::time::timeout(LATE, answer).await {
            Ok(Ok(reply)) => panic!(
                "no ack for `{event}` within {WAIT:?}; it came after {:?}: {reply}",
                sent.elapsed()
            ),
            _ => panic!("no ack for `{event}` within {WAIT:?}, nor in the {LATE:?} after"),
        }
    }

    /// Emits with an ack callback; the ack's first argument, or `None` if none comes
    /// within `within` (the connection is gone).
    pub(crate) async fn try_call(
        &self,
        event: &str,
        payload: Value,
        within: Duration,
    ) -> Option<Value> {
        let answer = self.emit_for_ack(event, payload, within).await?;
        tokio::time::timeout(within, answer).await.ok()?.ok()
    }

    /// Emits with an ack callback that rust_socketio keeps for `within`; the ack's
    /// first argument arrives on the receiver. `None` if the emit failed.
    async fn emit_for_ack(
        &self,
        event: &str,
        payload: Value,
        within: Duration,
    ) -> Option<oneshot::Receiver<Value>> {
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
        Some(rx)
    }

    /// `call`, asserting `ok: true`, returning `data`.
    pub(crate) async fn call_ok(&self, event: &str, payload: Value) -> Value {
        let reply = self.call(event, payload).await;
        assert_eq!(reply["ok"], true, "`{event}` failed: {reply}");
        reply["data"].clone()
    }

    /// `call`, asserting `ok: false` with `code`.
    pub(crate) async fn call_err(&self, event: &str, payload: Value, code: &str) -> Value {
        let reply = self.call(event, payload).await;
        assert_eq!(
            reply["ok"], false,
            "`{event}` should fail with {code}: {reply}"
        );
        assert_eq!(reply["error"]["code"], code, "`{event}`: {reply}");
        reply["error"].clone()
    }

    /// The next event named `name` (others before it are skipped).
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

    /// Asserts that no `name` event arrives within `within`.
    pub(crate) async fn none(&mut self, name: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some((event, payload))) =
            tokio::time::timeout_at(deadline, self.events.recv()).await
        {
            assert_ne!(event, name, "unexpected `{name}`: {payload}");
        }
    }

    /// Every event that arrives within `within`, in order.
    pub(crate) async fn all_events(&mut self, within: Duration) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            out.push(e);
        }
        out
    }

    /// Every `name` event that arrives within `within`.
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

    pub(crate) async fn collect(&mut self, name: &str, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while let Ok(Some((event, payload))) =
            tokio::time::timeout_at(deadline, self.events.recv()).await
        {
            if event == name {
                out.push(payload);
            }
        }
        out
    }

    pub(crate) async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}

/// A MemoryStore whose commits take `delay`, and fail while `failing` is set.
#[derive(Clone)]
pub(crate) struct SlowStore {
    pub(crate) inner: Arc<MemoryStore>,
    pub(crate) delay: Duration,
    /// How long a `sync` waits before it reads.
    pub(crate) sync_delay: Duration,
    pub(crate) failing: Arc<AtomicBool>,
    /// While set, `sync` fails as an unreachable store would.
    pub(crate) failing_sync: Arc<AtomicBool>,
}

impl SlowStore {
    pub(crate) fn new(delay: Duration) -> Self {
        Self {
            inner: Arc::new(MemoryStore::new()),
            delay,
            sync_delay: Duration::ZERO,
            failing: Arc::default(),
            failing_sync: Arc::default(),
        }
    }
}

impl MessageStore for SlowStore {
    async fn append(&self, m: NewMessage) -> Result<Appended, StoreError> {
        self.append_batch(vec![m]).await.pop().unwrap()
    }
    async fn append_batch(&self, m: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        tokio::time::sleep(self.delay).await;
        if self.failing.load(Ordering::SeqCst) {
            return m
                .iter()
                .map(|_| Err(StoreError::Unavailable("injected".into())))
                .collect();
        }
        self.inner.append_batch(m).await
    }
    async fn history(
        &self,
        c: ContactId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        self.inner.history(c, before, limit).await
    }
    async fn sync(&self, s: SyncScope, after: i64, limit: u32) -> Result<Page, StoreError> {
        tokio::time::sleep(self.sync_delay).await;
        if self.failing_sync.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected".into()));
        }
        self.inner.sync(s, after, limit).await
    }
    async fn mark_read(&self, c: ContactId, up_to: i64) -> Result<u64, StoreError> {
        self.inner.mark_read(c, up_to).await
    }
    async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.inner.message(id).await
    }
    async fn update_status(
        &self,
        id: MessageId,
        status: Status,
        from: &'static [Status],
        sid: Option<String>,
    ) -> Result<Option<Message>, StoreError> {
        self.inner.update_status(id, status, from, sid).await
    }
    async fn toggle_reaction(
        &self,
        m: MessageId,
        r: Reaction,
        max: usize,
    ) -> Result<Toggled, StoreError> {
        self.inner.toggle_reaction(m, r, max).await
    }
    async fn unread_counts(&self, w: WorkspaceId) -> Result<Vec<(ContactId, u64)>, StoreError> {
        self.inner.unread_counts(w).await
    }
    async fn message_by_twilio_sid(&self, sid: &str) -> Result<Option<Message>, StoreError> {
        self.inner.message_by_twilio_sid(sid).await
    }
    async fn claim_due_sms(
        &self,
        now: i64,
        lease: i64,
        limit: u32,
    ) -> Result<Vec<(Message, u32)>, StoreError> {
        self.inner.claim_due_sms(now, lease, limit).await
    }
    async fn retry_sms_at(&self, id: MessageId, at: i64) -> Result<(), StoreError> {
        self.inner.retry_sms_at(id, at).await
    }
    async fn last_seq(&self, w: WorkspaceId) -> Result<i64, StoreError> {
        self.inner.last_seq(w).await
    }
}

impl Directory for SlowStore {
    async fn create_workspace(&self, w: NewWorkspace) -> Result<Workspace, StoreError> {
        self.inner.create_workspace(w).await
    }
    async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        self.inner.workspace(id).await
    }
    async fn create_contact(&self, c: NewContact) -> Result<Contact, StoreError> {
        self.inner.create_contact(c).await
    }
    async fn contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        self.inner.contact(id).await
    }
    async fn contacts(&self, w: WorkspaceId, limit: u32) -> Result<Vec<Contact>, StoreError> {
        self.inner.contacts(w, limit).await
    }
    async fn add_member(&self, w: WorkspaceId, u: UserId, r: Role) -> Result<(), StoreError> {
        self.inner.add_member(w, u, r).await
    }
    async fn remove_member(&self, w: WorkspaceId, u: &UserId) -> Result<bool, StoreError> {
        self.inner.remove_member(w, u).await
    }
    async fn workspace_by_phone(&self, phone: &str) -> Result<Option<Workspace>, StoreError> {
        self.inner.workspace_by_phone(phone).await
    }
    async fn contact_for_phone(&self, w: WorkspaceId, phone: &str) -> Result<Contact, StoreError> {
        self.inner.contact_for_phone(w, phone).await
    }
    async fn member_role(&self, w: WorkspaceId, u: &UserId) -> Result<Option<Role>, StoreError> {
        self.inner.member_role(w, u).await
    }
}
