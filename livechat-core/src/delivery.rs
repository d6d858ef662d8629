//! The commit writer: one task per [`LiveChat`](crate::LiveChat) that batches concurrent
//! sends into one store commit (group commit) and then delivers the new messages.
//!
//! Committing and delivering in one task is what makes the guarantees cheap:
//! - a message is delivered only after its commit, and messages reach every socket
//!   in commit (`seq`) order;
//! - a socket that recovers after a reconnect is switched from its backlog to live
//!   delivery between two batches, so nothing falls in between and nothing comes twice;
//! - a socket too slow to take a message is noticed at the moment it is skipped, cut
//!   off from further deliveries, and disconnected so that it recovers.
//!
//! With several nodes on one store, messages committed elsewhere arrive here too (from
//! the Redis fan-out or the Postgres change feed, in any order, possibly twice). The
//! writer keeps, per workspace this node has sockets for, the last `seq` it delivered:
//! a message at or below it is a duplicate; one that leaves a gap makes the writer read
//! the gap from the store first. Every node so delivers each message once, in `seq`
//! order, whichever way it came.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::Fanout;
use crate::error::{ChatError, StoreError};
use crate::metrics;
use crate::model::{Message, NewMessage, WorkspaceId};
use crate::protocol::{contact_room, events, workspace_room};
use crate::store::{Appended, DynStore, SyncScope};

/// Counters of what delivery did, for operators and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) slow_consumers: AtomicU64,
    pub(crate) recoveries: AtomicU64,
    pub(crate) recovery_misses: AtomicU64,
    pub(crate) delivery_gaps: AtomicU64,
}

/// A snapshot of the delivery counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Store commits made by the writer (each holds one or more messages).
    pub commit_batches: u64,
    /// Messages newly stored through the writer.
    pub committed_messages: u64,
    /// Sockets cut off because their outgoing buffer was full when a message was due.
    pub slow_consumer_disconnects: u64,
    /// Recoveries (joins with `after`) completed with every missed message.
    pub recoveries: u64,
    /// Recoveries that could not deliver everything missed (over the recovery limit).
    pub recovery_misses: u64,
    /// Messages delivered past a gap the store could not fill at that moment.
    pub delivery_gaps: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            commit_batches: self.batches.load(Ordering::Relaxed),
            committed_messages: self.committed.load(Ordering::Relaxed),
            slow_consumer_disconnects: self.slow_consumers.load(Ordering::Relaxed),
            recoveries: self.recoveries.load(Ordering::Relaxed),
            recovery_misses: self.recovery_misses.load(Ordering::Relaxed),
            delivery_gaps: self.delivery_gaps.load(Ordering::Relaxed),
        }
    }
}

/// Per socket: for each room it joined, the workspace `seq` after which that room
/// delivers to it live. A recovery skips what the socket already got live through
/// another room (the seed joins the contact room, then the workspace room with
/// `after`): without this, those messages would come twice and out of order.
#[derive(Clone, Debug, Default)]
pub(crate) struct LiveSince(Arc<Mutex<HashMap<String, i64>>>);

impl LiveSince {
    fn joined(&self, room: &str, seq: i64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.to_owned(), seq);
    }

    /// The socket left `room`.
    pub(crate) fn left(&self, room: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(room);
    }

    /// Whether `message` reached the socket live through a room it is still in.
    fn delivered(&self, rooms: &[std::borrow::Cow<'static, str>], message: &Message) -> bool {
        let since = self.0.lock().unwrap_or_else(|e| e.into_inner());
        [
            contact_room(message.contact_id),
            workspace_room(message.workspace_id),
        ]
        .iter()
        .any(|room| {
            rooms.iter().any(|r| r == room) && since.get(room).is_some_and(|&s| s < message.seq)
        })
    }
}

/// The writer's settings.
#[derive(Clone, Debug)]
pub(crate) struct WriterConfig {
    pub(crate) queue: usize,
    pub(crate) max_batch: usize,
    pub(crate) max_wait: Duration,
    pub(crate) max_recovery: usize,
}

/// A message as JSON text, serialized once and shared by its delivery and its
/// sender's ack.
pub(crate) type SharedJson = Arc<RawValue>;

/// `message` as the JSON text that delivery and acks send.
pub(crate) fn message_json(message: &Message) -> Result<SharedJson, serde_json::Error> {
    serde_json::value::to_raw_value(message).map(SharedJson::from)
}

/// The outcome of an append; a new message comes with its JSON when its delivery
/// serialized it (a socket here listens).
type Committed = Result<(Appended, Option<SharedJson>), StoreError>;

type AppendReply = oneshot::Sender<Committed>;

/// A message for the next commit, with the moment its send arrived.
type Append = (NewMessage, Instant, AppendReply);

/// A message queued for a commit.
pub(crate) struct Pending(oneshot::Receiver<Committed>);

impl Pending {
    /// Waits for the commit (or the refusal) of the message. A new message comes with
    /// its JSON when its delivery serialized it.
    pub(crate) async fn outcome(self) -> Result<(Appended, Option<SharedJson>), ChatError> {
        let stopped = || {
            ChatError::Store(StoreError::Unavailable(
                "the commit writer has stopped".into(),
            ))
        };
        Ok(self.0.await.map_err(|_| stopped())??)
    }
}

/// Everything but appends: run between two commits, in arrival order.
enum Step {
    Recovery(RecoveryStep),
    /// Joins a socket to a room of `workspace`, from the next delivery on.
    Join {
        socket: SocketRef,
        room: String,
        workspace: WorkspaceId,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A message another node committed.
    Remote(Message),
    /// The change feed says `workspace` has a commit at `seq`.
    Announced {
        workspace: WorkspaceId,
        seq: i64,
    },
    /// The feed had a gap (a reconnect): read everything new in every workspace.
    CatchUp,
}

enum RecoveryStep {
    Start {
        socket: SocketRef,
        scope: SyncScope,
        workspace: WorkspaceId,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Finish {
        sid: Sid,
        delivered_up_to: i64,
        room: String,
        workspace: WorkspaceId,
        reply: oneshot::Sender<Result<usize, RecoveryMiss>>,
    },
}

/// More was missed than the recovery limit allows: the client must reload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecoveryMiss;

/// The handle to the writer task. The task starts with the first command, so that
/// building a livechat does not need a running runtime.
pub(crate) struct Writer {
    /// Sends waiting for a commit. Its own queue, so that a flood of steps (another
    /// node's messages, change-feed announcements) never takes the room of sends.
    appends: mpsc::Sender<Append>,
    steps: mpsc::Sender<Step>,
    task: Mutex<Option<WriterTask>>,
    config: WriterConfig,
}

impl Writer {
    pub(crate) fn new(
        io: SocketIo,
        store: Arc<dyn DynStore>,
        counters: Arc<Counters>,
        config: WriterConfig,
        fanout: Option<Arc<dyn Fanout>>,
    ) -> Self {
        let (appends, appends_rx) = mpsc::channel(config.queue.max(1));
        let (steps, steps_rx) = mpsc::channel(STEP_QUEUE);
        let task = WriterTask {
            appends: appends_rx,
            steps: steps_rx,
            io,
            store,
            counters,
            config: config.clone(),
            recovering: HashMap::new(),
            watermarks: HashMap::new(),
            fanout,
        };
        Self {
            appends,
            steps,
            task: Mutex::new(Some(task)),
            config,
        }
    }

    fn ensure_started(&self) {
        // A std Mutex: taken once per command for a moment, never across an await.
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = task.take() {
            tokio::spawn(task.run());
        }
    }

    /// Queues a message for the next commit. A full queue is refused at once with
    /// `unavailable`, so that load sheds instead of piling up. Messages queued one
    /// after the other are committed in that order.
    pub(crate) fn enqueue(
        &self,
        message: NewMessage,
        received: Instant,
    ) -> Result<Pending, ChatError> {
        self.ensure_started();
        let (reply, outcome) = oneshot::channel();
        self.appends
            .try_send((message, received, reply))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ChatError::busy(),
                mpsc::error::TrySendError::Closed(_) => ChatError::Store(StoreError::Unavailable(
                    "the commit writer has stopped".into(),
                )),
            })?;
        Ok(Pending(outcome))
    }

    /// Sends waiting for a commit.
    pub(crate) fn queued(&self) -> usize {
        self.appends.max_capacity() - self.appends.capacity()
    }

    async fn command<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Step) -> Option<T> {
        self.ensure_started();
        let (reply, outcome) = oneshot::channel();
        self.steps.send(make(reply)).await.ok()?;
        outcome.await.ok()
    }

    async fn step(&self, step: Step) {
        self.ensure_started();
        // Waits for room in the queue: the feeds that call this can wait, and a
        // dropped step would leave a gap until the next message of that workspace.
        let _ = self.steps.send(step).await;
    }

    /// Joins `socket` to `room` (a room of `workspace`) between two deliveries.
    pub(crate) async fn join(
        &self,
        socket: &SocketRef,
        room: String,
        workspace: WorkspaceId,
    ) -> Result<(), ChatError> {
        self.command(|reply| Step::Join {
            socket: socket.clone(),
            room,
            workspace,
            reply,
        })
        .await
        .ok_or_else(writer_stopped)??;
        Ok(())
    }

    /// Delivers a message another node committed.
    pub(crate) async fn remote(&self, message: Message) {
        self.step(Step::Remote(message)).await;
    }

    /// Delivers whatever `workspace` has up to `seq` that was not delivered yet.
    pub(crate) async fn announced(&self, workspace: WorkspaceId, seq: i64) {
        self.step(Step::Announced { workspace, seq }).await;
    }

    /// Reads and delivers everything new in every workspace this node delivers for.
    pub(crate) async fn catch_up(&self) {
        self.step(Step::CatchUp).await;
    }

    /// Recovers a socket from `after` in `scope`, then joins it to `room`: every
    /// message with a greater `seq` is emitted in order, then live ones follow, with no
    /// gap and no duplicate. Returns how many were replayed.
    pub(crate) async fn recover(
        &self,
        socket: &SocketRef,
        (scope, workspace): (SyncScope, WorkspaceId),
        room: String,
        after: i64,
        store: &dyn DynStore,
    ) -> Result<Result<usize, RecoveryMiss>, ChatError> {
        let stopped = writer_stopped;
        // From here on the writer buffers this socket's share of every new message.
        self.command(|reply| {
            Step::Recovery(RecoveryStep::Start {
                socket: socket.clone(),
                scope,
                workspace,
                reply,
            })
        })
        .await
        .ok_or_else(stopped)??;

        // Everything committed before the registration is in the store by now.
        let backlog = store
            .sync(scope, after, self.config.max_recovery as u32)
            .await;
        let live = socket.extensions.get::<LiveSince>().unwrap_or_default();
        let rooms = socket.rooms();
        let (replayed, delivered_up_to) = match &backlog {
            Ok(page) if !page.has_more => {
                let mut delivered = Some(after);
                let mut replayed = 0;
                for m in &page.messages {
                    if live.delivered(&rooms, m) {
                        delivered = Some(m.seq);
                        continue;
                    }
                    replayed += 1;
                    if !emit_paced(socket, m).await {
                        // Part of the backlog could not be handed over: a gap would
                        // follow, so this counts as a miss like any other.
                        delivered = None;
                        break;
                    }
                    delivered = Some(m.seq);
                }
                match delivered {
                    Some(seq) => (replayed, seq),
                    None => (0, MISSED),
                }
            }
            // Too much missed (or the read failed): replay nothing, say so, join live.
            _ => (0, MISSED),
        };
        let tail = self
            .command(|reply| {
                Step::Recovery(RecoveryStep::Finish {
                    sid: socket.id,
                    delivered_up_to,
                    room,
                    workspace,
                    reply,
                })
            })
            .await
            .ok_or_else(stopped)?;
        backlog?;
        Ok(match (delivered_up_to, tail) {
            (MISSED, _) | (_, Err(RecoveryMiss)) => Err(RecoveryMiss),
            (_, Ok(n)) => Ok(replayed + n),
        })
    }
}

/// The `delivered_up_to` of a recovery whose backlog was not handed over: nothing of
/// the buffer is replayed either, and the client is told to reload.
const MISSED: i64 = i64::MAX;

/// Messages read per store query when the writer fills a gap.
const FILL_PAGE: u32 = 500;

fn writer_stopped() -> ChatError {
    ChatError::Store(StoreError::Unavailable(
        "the commit writer has stopped".into(),
    ))
}

struct Recovering {
    socket: SocketRef,
    scope: SyncScope,
    buffer: Vec<Message>,
    overflowed: bool,
}

struct WriterTask {
    appends: mpsc::Receiver<Append>,
    steps: mpsc::Receiver<Step>,
    io: SocketIo,
    store: Arc<dyn DynStore>,
    counters: Arc<Counters>,
    config: WriterConfig,
    recovering: HashMap<Sid, Recovering>,
    /// Per workspace with sockets on this node: the last `seq` delivered here.
    watermarks: HashMap<WorkspaceId, i64>,
    fanout: Option<Arc<dyn Fanout>>,
}

impl WriterTask {
    async fn run(mut self) {
        let mut appends = Vec::new();
        let mut steps = Vec::new();
        loop {
            tokio::select! {
                step = self.steps.recv() => match step {
                    Some(step) => steps.push(step),
                    None => break,
                },
                append = self.appends.recv() => match append {
                    Some(append) => appends.push(append),
                    None => break,
                },
            }
            while steps.len() < STEP_QUEUE
                && let Ok(step) = self.steps.try_recv()
            {
                steps.push(step);
            }
            // Take whatever else is waiting, up to the batch bound; optionally wait a
            // little for more to arrive. Batches form by themselves under load: while
            // one commit is in flight, the next sends queue up.
            let deadline = tokio::time::Instant::now() + self.config.max_wait;
            while !appends.is_empty() && appends.len() < self.config.max_batch {
                match self.appends.try_recv() {
                    Ok(append) => appends.push(append),
                    Err(_) if self.config.max_wait.is_zero() => break,
                    Err(_) => match tokio::time::timeout_at(deadline, self.appends.recv()).await {
                        Ok(Some(append)) => appends.push(append),
                        _ => break,
                    },
                }
            }
            if !appends.is_empty() {
                self.commit(std::mem::take(&mut appends)).await;
            }
            // Steps run after the batch they waited behind was delivered.
            for step in std::mem::take(&mut steps) {
                self.step(step).await;
            }
            self.recovering.retain(|_, r| r.socket.connected());
        }
    }

    async fn commit(&mut self, batch: Vec<Append>) {
        let mut messages = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for (message, received, reply) in batch {
            messages.push(message);
            waiting.push((received, reply));
        }
        let started = Instant::now();
        let results = self.store.append_batch(messages).await;
        metrics::commit(started.elapsed(), results.len());
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        for (result, (received, reply)) in results.into_iter().zip(waiting) {
            // Filled by the delivery if a socket here listens; the sender's ack reuses it.
            let mut json = None;
            if let Ok(Appended::Inserted(message)) = &result {
                self.counters.committed.fetch_add(1, Ordering::Relaxed);
                // A workspace is watched here while this node has sockets in it.
                let watched = self.watermarks.contains_key(&message.workspace_id);
                let known = Some((message, "local"));
                self.advance(message.workspace_id, message.seq, known, &mut json)
                    .await;
                if watched {
                    metrics::broadcast_latency(received.elapsed());
                }
                if let Some(fanout) = &self.fanout {
                    fanout.committed(message);
                }
            }
            // The sender may have gone (client disconnected); the message stays stored.
            let _ = reply.send(result.map(|appended| (appended, json)));
        }
    }

    async fn step(&mut self, step: Step) {
        match step {
            Step::Recovery(step) => self.recovery_step(step).await,
            Step::Join {
                socket,
                room,
                workspace,
                reply,
            } => {
                let watched = self.watch(workspace).await;
                if watched.is_ok() {
                    self.join_live(&socket, room, workspace);
                }
                let _ = reply.send(watched);
            }
            Step::Remote(message) => {
                let known = Some((&message, "remote"));
                self.advance(message.workspace_id, message.seq, known, &mut None)
                    .await
            }
            Step::Announced { workspace, seq } => {
                self.advance(workspace, seq, None, &mut None).await
            }
            Step::CatchUp => {
                let watched: Vec<WorkspaceId> = self.watermarks.keys().copied().collect();
                for workspace in watched {
                    self.advance(workspace, i64::MAX, None, &mut None).await;
                }
            }
        }
    }

    /// Makes sure this node tracks `workspace`, starting from its last commit: a socket
    /// that joins now gets what is committed from here on.
    async fn watch(&mut self, workspace: WorkspaceId) -> Result<(), StoreError> {
        if !self.watermarks.contains_key(&workspace) {
            let last = self.store.last_seq(workspace).await?;
            self.watermarks.insert(workspace, last);
        }
        Ok(())
    }

    /// Delivers `workspace` up to `seq`, in order and once: `known` (the message at
    /// `seq`, when the caller has it, and where it came from) goes out at once if it
    /// is the next one; anything missing before it is read from the store first.
    /// Workspaces without sockets on this node are not tracked, and nothing is read
    /// for them. `json` is `known`'s JSON, filled in when its delivery serializes it.
    async fn advance(
        &mut self,
        workspace: WorkspaceId,
        seq: i64,
        known: Option<(&Message, &'static str)>,
        json: &mut Option<SharedJson>,
    ) {
        let Some(&delivered) = self.watermarks.get(&workspace) else {
            return;
        };
        if seq <= delivered {
            return;
        }
        if let Some((message, origin)) = known
            && message.seq == delivered + 1
        {
            self.deliver(message, origin, json);
            self.watermarks.insert(workspace, message.seq);
            return;
        }
        let mut delivered = delivered;
        loop {
            match self
                .store
                .sync(SyncScope::Workspace(workspace), delivered, FILL_PAGE)
                .await
            {
                Ok(page) => {
                    let before = delivered;
                    for m in page.messages.iter().take_while(|m| m.seq <= seq) {
                        self.deliver(m, "store", &mut None);
                        delivered = m.seq;
                    }
                    if delivered == before || delivered >= seq || !page.has_more {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(%workspace, after = delivered, error = %e, "could not read a gap in delivery");
                    break;
                }
            }
        }
        if let Some((message, origin)) = known
            && message.seq > delivered
        {
            // The store did not give what came before (it failed to answer): deliver
            // what is at hand rather than hold it; clients resync by seq.
            self.counters.delivery_gaps.fetch_add(1, Ordering::Relaxed);
            self.deliver(message, origin, json);
            delivered = message.seq;
        }
        self.watermarks.insert(workspace, delivered);
    }

    /// Emits to every socket in the contact room or the workspace room, once each.
    /// `origin` says how this node learned of the message, for the metrics. The
    /// message is serialized once, into `json` unless it is there already, and only
    /// when a socket here listens; each emit then copies the JSON text.
    fn deliver(&mut self, message: &Message, origin: &'static str, json: &mut Option<SharedJson>) {
        metrics::message_out(origin);
        let rooms = [
            contact_room(message.contact_id),
            workspace_room(message.workspace_id),
        ];
        let sockets = self.io.to(rooms).sockets();
        if !sockets.is_empty() && json.is_none() {
            *json = message_json(message)
                .inspect_err(|e| tracing::error!(error = %e, "could not serialize a message"))
                .ok();
        }
        for r in self.recovering.values_mut() {
            let wanted = match r.scope {
                SyncScope::Workspace(ws) => message.workspace_id == ws,
                SyncScope::Contact(c) => message.contact_id == c,
            };
            // A socket that gets this message live through another room must not
            // get it again from its recovery.
            if !wanted || r.overflowed || sockets.iter().any(|s| s.id == r.socket.id) {
                continue;
            }
            if r.buffer.len() < self.config.max_recovery {
                r.buffer.push(message.clone());
            } else {
                r.overflowed = true;
                r.buffer = Vec::new();
            }
        }
        if let Some(encoded) = json.as_deref() {
            let (mut sent, mut slow, mut closed, mut failed) = (0, 0, 0, 0);
            for socket in sockets {
                match socket.emit(events::NEW_MESSAGE, encoded) {
                    Ok(()) => sent += 1,
                    Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                        slow += 1;
                        self.cut_off(socket)
                    }
                    Err(SendError::Socket(SocketError::Closed)) => closed += 1,
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(sid = %socket.id, error = %e, "could not deliver a message")
                    }
                }
            }
            metrics::deliveries("sent", sent);
            metrics::deliveries("slow_consumer", slow);
            metrics::deliveries("closed", closed);
            metrics::deliveries("failed", failed);
        }
    }

    /// Joins `socket` to `room` of `workspace` between two deliveries, noting from
    /// which `seq` on the room delivers to it live.
    fn join_live(&self, socket: &SocketRef, room: String, workspace: WorkspaceId) {
        if !socket.connected() {
            // Its join was still queued when it went; a room would keep its id.
            return;
        }
        if let Some(live) = socket.extensions.get::<LiveSince>() {
            let since = self.watermarks.get(&workspace).copied().unwrap_or(0);
            live.joined(&room, since);
        }
        socket.join(room);
    }

    /// A socket whose buffer is full has just missed a message. It must not go on as
    /// if nothing happened: it leaves every room (so it misses nothing more in silence
    /// and its memory stays bounded) and is disconnected, so the client reconnects and
    /// recovers from its last `seq`.
    fn cut_off(&self, socket: SocketRef) {
        self.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(sid = %socket.id, "slow consumer: outgoing buffer full, disconnecting");
        socket.leave_all();
        disconnect_when_possible(socket);
    }

    async fn recovery_step(&mut self, step: RecoveryStep) {
        match step {
            RecoveryStep::Start {
                socket,
                scope,
                workspace,
                reply,
            } => {
                if let Err(e) = self.watch(workspace).await {
                    let _ = reply.send(Err(e));
                    return;
                }
                self.recovering.insert(
                    socket.id,
                    Recovering {
                        socket,
                        scope,
                        buffer: Vec::new(),
                        overflowed: false,
                    },
                );
                let _ = reply.send(Ok(()));
            }
            RecoveryStep::Finish {
                sid,
                delivered_up_to,
                room,
                workspace,
                reply,
            } => {
                let Some(r) = self.recovering.remove(&sid) else {
                    let _ = reply.send(Ok(0));
                    return;
                };
                let result = if r.overflowed {
                    self.counters
                        .recovery_misses
                        .fetch_add(1, Ordering::Relaxed);
                    Err(RecoveryMiss)
                } else {
                    let mut sent = 0;
                    for m in r.buffer.iter().filter(|m| m.seq > delivered_up_to) {
                        if r.socket.emit(events::NEW_MESSAGE, m).is_err() {
                            // Too slow even for its own backlog: treat as any slow consumer.
                            self.cut_off(r.socket.clone());
                            break;
                        }
                        sent += 1;
                    }
                    if delivered_up_to == MISSED {
                        self.counters
                            .recovery_misses
                            .fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.counters.recoveries.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(sent)
                };
                // Joined here, between two batches: the next message arrives live.
                self.join_live(&r.socket, room, workspace);
                let _ = reply.send(result);
            }
        }
    }
}

/// Steps waiting for the writer; more wait for room (their senders can wait).
const STEP_QUEUE: usize = 1024;

/// Emits one backlog message, waiting while the socket's buffer is full: a backlog
/// can be longer than the buffer, and the client drains it as it reads. Gives up
/// (returns `false`) after about two seconds without progress.
async fn emit_paced(socket: &SocketRef, message: &Message) -> bool {
    for _ in 0..200 {
        match socket.emit(events::NEW_MESSAGE, message) {
            Ok(()) => return true,
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => return false,
        }
    }
    false
}

/// socketioxide refuses to send the disconnect packet while the socket's buffer is
/// full, and then does not close it either. Retry until the client has drained enough
/// for the packet to fit; a client that reads nothing at all is closed by the
/// Engine.IO heartbeat (it cannot answer pings), at the latest after the ping timeout.
fn disconnect_when_possible(socket: SocketRef) {
    tokio::spawn(async move {
        for _ in 0..600 {
            if !socket.connected() {
                return;
            }
            match socket.clone().disconnect() {
                Err(SocketError::InternalChannelFull) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => return,
            }
        }
    });
}
