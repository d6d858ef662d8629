//! Socket glue: the connect handshake and one handler per event. No business rules
//! here — each handler decodes, calls the handle, and answers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, Value};
use socketioxide::socket::{DisconnectReason, Socket};
use tokio::sync::mpsc;

use crate::auth::{Identity, token_from_handshake};
use crate::chat::LiveChat;
use crate::drain::Unanswered;
use crate::error::ChatError;
use crate::guard::{Refusal, SocketBudget};
use crate::protocol::{
    AckReply, ContactRef, ErrorEvent, HistoryRequest, MarkReadRequest, ReactRequest, SendMessage,
    SyncRequest, TypingRequest, UnreadCountsRequest, WorkspaceRef, decode_request, events,
};

/// Whether the client asked for an ack: without one, refusals go out as `livechat:error`.
struct AckRequested(bool);

impl<A: Adapter> FromMessageParts<A> for AckRequested {
    type Error = Infallible;
    fn from_message_parts(
        _: &Arc<Socket<A>>,
        _: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(Self(ack_id.is_some()))
    }
}

/// The refusal a client sees as the `connect_error` message.
#[derive(Debug)]
enum ConnectRefusal {
    /// Always just "unauthorized": no hint whether the token was missing, forged or old.
    Unauthorized,
    Origin,
    Limit(Refusal),
    /// The node is draining for a shutdown: connect to another one.
    Draining,
}

impl ConnectRefusal {
    fn metric_reason(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Origin => "origin",
            Self::Limit(r) => r.metric_reason(),
            Self::Draining => "draining",
        }
    }
}

impl std::fmt::Display for ConnectRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unauthorized => f.write_str("unauthorized"),
            Self::Origin => f.write_str("forbidden: origin not allowed"),
            Self::Limit(r) => r.fmt(f),
            Self::Draining => f.write_str(DRAINING),
        }
    }
}

/// What a client that connects to a draining node is told.
pub(crate) const DRAINING: &str = "unavailable: the server is shutting down; connect again";

/// The namespace handshake: origin, connect rate, token, connection counts — in that
/// order, so that the cheap checks shield the expensive ones. Transport opens are
/// counted in the layer; namespace connects have a budget of their own, since one
/// transport may carry any number of them. Every refusal is logged at `warn` with the
/// reason and the client address, never with the token.
async fn admit(
    chat: &LiveChat,
    s: &SocketRef,
    auth: Option<serde_json::Value>,
) -> Result<Arc<Identity>, ConnectRefusal> {
    let parts = s.req_parts();
    let guard = &chat.inner().guard;
    let ip = guard.client_ip(&parts.extensions, &parts.headers);
    let refuse = |refusal: ConnectRefusal, reason: &dyn std::fmt::Display| {
        tracing::warn!(sid = %s.id, client = ?ip, %reason, "connection refused");
        crate::metrics::connection_refused(refusal.metric_reason());
        Err(refusal)
    };
    if chat.draining() {
        return refuse(ConnectRefusal::Draining, &"draining for a shutdown");
    }
    let origin = parts
        .headers
        .get(http::header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    if !chat.inner().origins.allows(origin) {
        return refuse(
            ConnectRefusal::Origin,
            &format_args!("origin {origin:?} not allowed"),
        );
    }
    if let Err(r) = guard.check_handshake_rate(ip) {
        return refuse(ConnectRefusal::Limit(r), &r);
    }
    let Some(token) = token_from_handshake(auth.as_ref(), parts) else {
        return refuse(ConnectRefusal::Unauthorized, &"no token");
    };
    let identity = match chat.authenticate(&token).await {
        Ok(identity) => identity,
        Err(e) => return refuse(ConnectRefusal::Unauthorized, &e),
    };
    let slot = match guard.acquire(ip, &identity.user_id) {
        Ok(slot) => slot,
        Err(r) => return refuse(ConnectRefusal::Limit(r), &r),
    };
    let identity = Arc::new(identity);
    s.extensions.insert(Arc::new(slot));
    s.extensions.insert(guard.socket_budget());
    s.extensions.insert(guard.signal_budget());
    s.extensions.insert(identity.clone());
    crate::metrics::connection_opened();
    Ok(identity)
}

/// A socket's queue worker, started once the socket is connected.
type QueueWorker = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The worker of a socket that is admitted but not yet connected (an extension, so it
/// must be `Clone`; taken once).
#[derive(Clone)]
struct WaitingQueue(Arc<std::sync::Mutex<Option<QueueWorker>>>);

/// When a socket's token expires, and how to reach the socket then.
struct Expiry {
    at: tokio::time::Instant,
    io: SocketIo,
    sid: socketioxide::socket::Sid,
}

impl Expiry {
    fn disconnect(&self) {
        if let Some(s) = self.io.get_socket(self.sid) {
            tracing::info!(sid = %self.sid, "token expired, disconnecting");
            let _ = s.disconnect();
        }
    }
}

pub(crate) fn user_room(user: &crate::model::UserId) -> String {
    format!("user:{user}")
}

/// Registers the `/` namespace. The middleware admits the socket and sets up its
/// queue and handlers. socketioxide sends the connect packet after the middleware and
/// only then starts the connect handler, in a task of its own; a client that emits
/// from its `connect` listener (as socket.io-client apps join their rooms) could reach
/// a socket with no handlers yet, and the event would be dropped. So the handlers
/// queue from the start, and the connect handler starts the queue's worker.
pub(crate) fn register(io: &SocketIo, chat: LiveChat) {
    let admit_and_handle =
        move |s: SocketRef, io: SocketIo, TryData(auth): TryData<serde_json::Value>| {
            let chat = chat.clone();
            async move {
                let identity = admit(&chat, &s, auth.ok()).await?;
                set_up_socket(chat, io, s, &identity);
                Ok::<_, ConnectRefusal>(())
            }
        };
    // socketioxide calls this once the socket counts as connected: only then may its
    // requests run (a join before that would be refused by the room bookkeeping, yet
    // answered). Until then they wait in the queue.
    let start_the_queue = |s: SocketRef| async move {
        if let Some(waiting) = s.extensions.remove::<WaitingQueue>()
            && let Some(queue) = waiting.0.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            tokio::spawn(queue);
        }
    };
    io.ns("/", start_the_queue.with(admit_and_handle));
}

/// Sets up an admitted socket: its user room, its state, its request queue and its
/// handlers.
fn set_up_socket(chat: LiveChat, io: SocketIo, s: SocketRef, identity: &Identity) {
    tracing::debug!(sid = %s.id, user = %identity.user_id, transport = ?s.transport_type(), "connection opened");
    s.join(user_room(&identity.user_id));
    s.extensions.insert(crate::delivery::LiveSince::default());
    s.extensions
        .insert(crate::features::PresenceRooms::default());
    s.extensions
        .insert(crate::features::TypingStates::default());

    // socketioxide runs each event handler in a task of its own, so two events of one
    // socket could finish in any order. A client that sends m1 then m2, or joins then
    // reads, must see them handled in that order: every event is queued here in
    // arrival order and one task per socket works the queue.
    let pending = chat.limits().max_pending_per_socket.max(1);
    // Boxed, so that the channel's first block of slots is small.
    let (queue, jobs) = mpsc::channel::<Box<Job>>(pending);
    // The token's expiry is watched by the same task: no second task per socket, and
    // nothing to cancel, since the task ends with the socket's queue.
    let expiry = identity.expires_at.map(|expires_at| {
        let left = (expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        Expiry {
            at: tokio::time::Instant::now() + left,
            io,
            sid: s.id,
        }
    });
    let worker: QueueWorker = Box::pin(work_the_queue(jobs, pending, expiry));
    s.extensions
        .insert(WaitingQueue(Arc::new(std::sync::Mutex::new(Some(worker)))));

    let gone_chat = chat.clone();
    s.on_disconnect(move |s: SocketRef, reason: DisconnectReason| async move {
        gone_chat.socket_gone(&s);
        log_close(&s, reason);
    });

    // One handler per socket for every event: the routes are shared by all sockets.
    s.on_fallback(
        move |s: SocketRef,
              socketioxide::extract::Event(event): socketioxide::extract::Event,
              TryData(data): TryData<serde_json::Value>,
              ack: AckSender,
              AckRequested(wanted): AckRequested| {
            // This part runs synchronously as the packet arrives, so queueing here
            // keeps the arrival order.
            if let Some((event, route)) = ROUTES.get_key_value(event.as_str()) {
                let request = Request {
                    s,
                    data: data.map_err(|e| {
                        ChatError::InvalidPayload(format!("the payload does not parse: {e}"))
                    }),
                    ack,
                    wanted,
                };
                enqueue(&chat, &queue, event, route, request);
            }
            std::future::ready(())
        },
    );
}

/// Every event a client may send, with what handles it.
static ROUTES: std::sync::LazyLock<HashMap<&'static str, Route>> = std::sync::LazyLock::new(|| {
    HashMap::from([
        route(
            events::JOIN_CONTACT,
            |chat, s, who, req: ContactRef| async move { chat.join_contact(&s, &who, req).await },
        ),
        route(
            events::LEAVE_CONTACT,
            |_, s, _, req: ContactRef| async move {
                leave(&s, crate::protocol::contact_room(req.contact_id));
                Ok(serde_json::json!({ "left": crate::protocol::contact_room(req.contact_id) }))
            },
        ),
        route(
            events::JOIN_WORKSPACE,
            |chat, s, who, req: WorkspaceRef| async move { chat.join_workspace(&s, &who, req).await },
        ),
        route(
            events::LEAVE_WORKSPACE,
            |chat, s, who, req: WorkspaceRef| async move {
                leave(&s, crate::protocol::workspace_room(req.workspace_id));
                chat.presence_left(&s, &who, req.workspace_id);
                Ok(serde_json::json!({ "left": crate::protocol::workspace_room(req.workspace_id) }))
            },
        ),
        route_with(
            events::SEND_MESSAGE,
            true,
            |chat, s, who, req: SendMessage| async move {
                let budget = s.extensions.get::<SocketBudget>();
                match chat.send_from_socket(budget.as_ref(), &who, req).await {
                    Ok(committing) => Outcome::Committing(Box::pin(committing.message_json())),
                    Err(e) => Outcome::Done(Err(e)),
                }
            },
        ),
        route(
            events::HISTORY,
            |chat, _, who, req: HistoryRequest| async move { chat.history(&who, req).await },
        ),
        route(events::SYNC, |chat, _, who, req: SyncRequest| async move {
            chat.sync(&who, req).await
        }),
        route(
            events::TYPING,
            |chat, s, who, req: TypingRequest| async move { chat.typing(&s, &who, req).await },
        ),
        route(
            events::MARK_READ,
            |chat, s, who, req: MarkReadRequest| async move {
                chat.check_signal_budget(&s)?;
                chat.mark_read(&who, req).await
            },
        ),
        route(
            events::REACT,
            |chat, s, who, req: ReactRequest| async move {
                chat.check_signal_budget(&s)?;
                chat.react(&who, req).await
            },
        ),
        route(
            events::UNREAD_COUNTS,
            |chat, s, who, req: UnreadCountsRequest| async move {
                chat.check_signal_budget(&s)?;
                chat.unread_counts(&who, req).await
            },
        ),
    ])
});

/// Takes a socket out of a room, and forgets when the room began delivering to it.
pub(crate) fn leave(s: &SocketRef, room: String) {
    if let Some(live) = s.extensions.get::<crate::delivery::LiveSince>() {
        live.left(&room);
    }
    s.leave(room);
}

/// One event of a socket, queued in arrival order.
struct Job {
    /// Whether it may start while earlier sends of the socket are still committing.
    pipelined: bool,
    /// Runs the handler and answers; a send answers later, through what it returns.
    run: Pin<Box<dyn Future<Output = Option<Committing>> + Send>>,
}

/// A send waiting for its commit; resolves to the answer, to be given in order.
type Committing = Pin<Box<dyn Future<Output = Box<dyn FnOnce() + Send>> + Send>>;

/// What a handler gives back: its result, or a send still to be committed.
enum Outcome<Res> {
    Done(Result<Res, ChatError>),
    Committing(Pin<Box<dyn Future<Output = Result<Res, ChatError>> + Send>>),
}

/// Works a socket's queue. Consecutive sends are pipelined: the next is checked and
/// queued for the commit writer while the previous ones commit, so a burst from one
/// socket shares commits (and the broadcasts of one commit share writes). Commits
/// keep queue order and acks go out in that order; any other event waits until the
/// sends before it are committed, so a read sees them. At most `max_committing` sends
/// of one socket wait for commits at once. When the token expires, the socket is
/// disconnected; the task ends with the socket, whose handler holds the queue's sender.
async fn work_the_queue(
    mut jobs: mpsc::Receiver<Box<Job>>,
    max_committing: usize,
    mut expiry: Option<Expiry>,
) {
    use futures_util::StreamExt;
    use futures_util::stream::FuturesOrdered;

    let expires = futures_util::future::OptionFuture::from(
        expiry.as_ref().map(|e| tokio::time::sleep_until(e.at)),
    );
    tokio::pin!(expires);
    let mut committing = FuturesOrdered::<Committing>::new();
    loop {
        let job = tokio::select! {
            // First, so that a socket that always has work is still cut off in time.
            biased;
            _ = &mut expires, if expiry.is_some() => {
                if let Some(expiry) = expiry.take() {
                    expiry.disconnect();
                }
                continue;
            }
            Some(answer) = committing.next(), if !committing.is_empty() => {
                answer();
                continue;
            }
            job = jobs.recv(), if committing.len() < max_committing => match job {
                Some(job) => job,
                None => break,
            },
        };
        if !job.pipelined {
            while let Some(answer) = committing.next().await {
                answer();
            }
        }
        let run = job.run;
        tokio::pin!(run);
        let waiting = loop {
            tokio::select! {
                biased;
                waiting = &mut run => break waiting,
                Some(answer) = committing.next(), if !committing.is_empty() => answer(),
            }
        };
        if let Some(waiting) = waiting {
            committing.push_back(waiting);
        }
    }
    while let Some(answer) = committing.next().await {
        answer();
    }
}

/// How one event is handled: a job for the socket's queue, made from the request as it
/// arrived. The job holds the request's `Unanswered` until the answer is handed over:
/// a drain waits for it.
struct Route {
    /// Whether it may start while earlier sends of the socket are still committing.
    pipelined: bool,
    job: Box<JobMaker>,
}

/// One request of a socket, as it arrived.
struct Request {
    s: SocketRef,
    /// The payload, or why it does not parse.
    data: Result<serde_json::Value, ChatError>,
    ack: AckSender,
    /// Whether the client asked for an ack.
    wanted: bool,
}

type JobMaker = dyn Fn(
        LiveChat,
        Request,
        Option<Unanswered>,
    ) -> Pin<Box<dyn Future<Output = Option<Committing>> + Send>>
    + Send
    + Sync;

/// An event that is answered when its handler returns.
fn route<Req, Res, F, Fut>(event: &'static str, f: F) -> (&'static str, Route)
where
    Req: DeserializeOwned + Send + 'static,
    Res: Serialize + Send + 'static,
    F: Fn(LiveChat, SocketRef, Arc<Identity>, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Res, ChatError>> + Send + 'static,
{
    route_with(event, false, move |chat, s, who, req| {
        let answered = f(chat, s, who, req);
        async move { Outcome::Done(answered.await) }
    })
}

/// An event whose job decodes the payload (a parse failure is answered, never
/// dropped), runs `f`, and answers through the ack or with `livechat:error`.
fn route_with<Req, Res, F, Fut>(event: &'static str, pipelined: bool, f: F) -> (&'static str, Route)
where
    Req: DeserializeOwned + Send + 'static,
    Res: Serialize + Send + 'static,
    F: Fn(LiveChat, SocketRef, Arc<Identity>, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome<Res>> + Send + 'static,
{
    let job = move |chat: LiveChat, request: Request, unanswered: Option<Unanswered>| {
        let f = f.clone();
        let Request {
            s,
            data,
            ack,
            wanted,
        } = request;
        Box::pin(async move {
            let decoded = data.and_then(|v| decode_request::<Req>(v, chat.limits().max_json_depth));
            let outcome = match (decoded, s.extensions.get::<Arc<Identity>>()) {
                (Ok(req), Some(who)) => f(chat, s.clone(), who, req).await,
                (Ok(_), None) => Outcome::Done(Err(ChatError::Unauthorized)),
                (Err(e), _) => Outcome::Done(Err(e)),
            };
            match outcome {
                Outcome::Done(result) => {
                    answer(&s, ack, wanted, event, result);
                    drop(unanswered);
                    None
                }
                Outcome::Committing(commit) => Some(Box::pin(async move {
                    let result = commit.await;
                    Box::new(move || {
                        answer(&s, ack, wanted, event, result);
                        drop(unanswered);
                    }) as Box<dyn FnOnce() + Send>
                }) as Committing),
            }
        }) as Pin<Box<dyn Future<Output = Option<Committing>> + Send>>
    };
    (
        event,
        Route {
            pipelined,
            job: Box::new(job),
        },
    )
}

/// Queues one request of a socket in arrival order. While draining, a send is refused
/// at once; a socket with too many requests pending is told `rate_limited` at once.
fn enqueue(
    chat: &LiveChat,
    queue: &mpsc::Sender<Box<Job>>,
    event: &'static str,
    route: &Route,
    request: Request,
) {
    // Counted before the drain flag is read (see `DrainState::draining`).
    let mut unanswered = Some(chat.inner().drain.take());
    if chat.draining() {
        unanswered = None;
        if event == events::SEND_MESSAGE {
            let Request { s, ack, wanted, .. } = request;
            answer(
                &s,
                ack,
                wanted,
                event,
                Err::<(), _>(ChatError::ShuttingDown),
            );
            return;
        }
    }
    let Ok(permit) = queue.try_reserve() else {
        let busy = ChatError::RateLimited {
            retry_after: BUSY_RETRY,
        };
        let Request { s, ack, wanted, .. } = request;
        answer(&s, ack, wanted, event, Err::<(), _>(busy));
        return;
    };
    permit.send(Box::new(Job {
        pipelined: route.pipelined,
        run: (route.job)(chat.clone(), request, unanswered),
    }));
}

/// The retry hint for a socket whose request queue is full.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

fn answer<T: Serialize>(
    s: &SocketRef,
    ack: AckSender,
    wanted: bool,
    event: &'static str,
    result: Result<T, ChatError>,
) {
    crate::metrics::request(event, &result);
    if let Err(e) = &result {
        log_refusal(s, event, e);
    }
    if wanted {
        if let Err(e) = ack.send(&AckReply::from_result(result)) {
            tracing::debug!(sid = %s.id, event, error = %e, "could not send the ack");
        }
    } else if let Err(e) = result {
        let wire = e.to_wire();
        let payload = ErrorEvent {
            event: event.to_owned(),
            code: wire.code,
            message: wire.message,
        };
        if let Err(e) = s.emit(events::ERROR, &payload) {
            tracing::debug!(sid = %s.id, event, error = %e, "could not send livechat:error");
        }
    }
}

/// The one line a connection leaves in the log, when it ends: who, from where, how
/// long, and why it ended. Counted in the metrics by reason.
fn log_close(s: &SocketRef, reason: DisconnectReason) {
    let label = match reason {
        DisconnectReason::TransportClose => "transport_closed",
        DisconnectReason::MultipleHttpPollingError => "polling_error",
        DisconnectReason::PacketParsingError => "parse_error",
        DisconnectReason::TransportError => "transport_error",
        DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
        DisconnectReason::ClientNSDisconnect => "client",
        DisconnectReason::ServerNSDisconnect => "server",
        DisconnectReason::ClosingServer => "closing_server",
    };
    crate::metrics::disconnection(label);
    let user = s
        .extensions
        .get::<Arc<Identity>>()
        .map(|who| who.user_id.to_string());
    let slot = s.extensions.get::<Arc<crate::guard::Slot>>();
    let client = slot.as_ref().and_then(|slot| slot.ip());
    let open_secs = slot.map(|slot| slot.age().as_secs_f64());
    tracing::info!(
        sid = %s.id,
        ?user,
        ?client,
        transport = ?s.transport_type(),
        ?open_secs,
        reason = label,
        "connection closed"
    );
}

/// One line per refused request, with the reason, the user and the client address
/// (never the payload). `rate_limited` stays at `debug`: a client flooding past its
/// budget must not flood the logs as well.
fn log_refusal(s: &SocketRef, event: &str, e: &ChatError) {
    let user = s
        .extensions
        .get::<Arc<Identity>>()
        .map(|who| who.user_id.to_string());
    let client = || {
        s.extensions
            .get::<Arc<crate::guard::Slot>>()
            .and_then(|slot| slot.ip())
    };
    match e {
        ChatError::Store(cause) => {
            tracing::error!(sid = %s.id, ?user, event, code = %e.code(), error = %cause, source = ?std::error::Error::source(cause), "request failed")
        }
        ChatError::RateLimited { .. } => {
            tracing::debug!(sid = %s.id, ?user, client = ?client(), event, code = %e.code(), "request refused")
        }
        _ => {
            tracing::info!(sid = %s.id, ?user, client = ?client(), event, code = %e.code(), reason = %e, "request refused")
        }
    }
}
