//! The [`LiveChat`] handle and the message pipeline:
//! validate → authorize → rate-limit → store (idempotent, assigns `seq`) → broadcast.

use std::sync::Arc;

use chrono::Utc;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;

use crate::auth::{DynAuthenticator, Identity};
use crate::builder::LiveChatBuilder;
use crate::config::Limits;
use crate::delivery::{Counters, RecoveryMiss, Stats, Writer, WriterConfig};
use crate::error::{AuthError, ChatError, StoreError};
use crate::guard::{Guard, GuardLimits, OriginPolicy, SocketBudget};
use crate::handlers::user_room;
use crate::metrics;
use crate::model::{
    Contact, ContactId, Direction, Message, MessageId, MsgType, NewMessage, Page, Role, Status,
    UserId, Workspace, WorkspaceId,
};
use crate::moderation::{Candidate, DynModerator, FailurePolicy, ModerationError, Verdict};
use crate::protocol::{
    ContactRef, HistoryRequest, Joined, SendMessage, SyncRequest, WorkspaceRef, contact_room,
    events, workspace_room,
};
use crate::store::{Appended, DynStore, NewContact, NewWorkspace, SyncScope, clamp_limit};

/// The handle to a running livechat: cheap to clone, shared with the socket handlers.
///
/// Server-side code (REST routes, webhooks, jobs) sends through [`LiveChat::publish`]
/// and reads through [`LiveChat::history`] — the same pipeline and checks as the
/// socket events, never around them.
#[derive(Clone)]
pub struct LiveChat {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LiveChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveChat")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) io: SocketIo,
    pub(crate) store: Arc<dyn DynStore>,
    pub(crate) auth: Arc<dyn DynAuthenticator>,
    pub(crate) limits: Limits,
    pub(crate) guard: Guard,
    pub(crate) origins: OriginPolicy,
    moderators: Vec<Arc<dyn DynModerator>>,
    writer: Writer,
    counters: Arc<Counters>,
    directory: DirectoryCache,
    /// This node, as the others know it.
    pub(crate) node: uuid::Uuid,
    pub(crate) presence: crate::presence::Presence,
    pub(crate) fanout: Option<Arc<dyn crate::cluster::Fanout>>,
    /// Set when an SMS outbox runs: woken when an outbound SMS is committed.
    sms_outbox: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    pub(crate) drain: Arc<crate::drain::DrainState>,
}

/// The directory lookups of the send path, kept in memory: a contact never changes
/// workspace, so contacts are cached as read; memberships are cached only once granted
/// (a refusal is always asked again), dropped at once when a removal is seen, and
/// trusted for [`Limits::membership_ttl`] at most.
struct DirectoryCache {
    contacts: quick_cache::sync::Cache<ContactId, Contact>,
    members: quick_cache::sync::Cache<(WorkspaceId, UserId), (Role, std::time::Instant)>,
    ttl: std::time::Duration,
}

impl DirectoryCache {
    fn new(limits: &Limits) -> Self {
        let entries = limits.directory_cache_entries.max(1);
        Self {
            contacts: quick_cache::sync::Cache::new(entries),
            members: quick_cache::sync::Cache::new(entries),
            ttl: limits.membership_ttl,
        }
    }

    fn role(&self, workspace: WorkspaceId, user: &UserId) -> Option<Role> {
        let (role, since) = self.members.get(&(workspace, user.clone()))?;
        (since.elapsed() < self.ttl).then_some(role)
    }
}

/// A message sent by server-side code through [`LiveChat::publish`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Publish {
    /// The conversation.
    pub contact_id: ContactId,
    /// Plain text.
    pub body: String,
    /// Which way it travels.
    pub direction: Direction,
    /// Who wrote it (a phone number, a bot name…).
    pub sender: Option<String>,
    /// Idempotency key (for a webhook, the provider's message id).
    pub client_id: Option<String>,
    /// Defaults to `text`.
    pub msg_type: MsgType,
    /// Defaults to `received` for inbound and `sent` for outbound.
    pub status: Option<Status>,
    /// Twilio's SID, for SMS.
    pub twilio_sid: Option<String>,
}

impl Publish {
    /// A text message in `direction` with everything else defaulted.
    pub fn new(contact_id: ContactId, direction: Direction, body: impl Into<String>) -> Self {
        Self {
            contact_id,
            body: body.into(),
            direction,
            sender: None,
            client_id: None,
            msg_type: MsgType::Text,
            status: None,
            twilio_sid: None,
        }
    }

    /// Sets who wrote it.
    pub fn sender(mut self, sender: impl Into<String>) -> Self {
        self.sender = Some(sender.into());
        self
    }

    /// Sets the idempotency key.
    pub fn client_id(mut self, key: impl Into<String>) -> Self {
        self.client_id = Some(key.into());
        self
    }

    /// Sets the kind of message.
    pub fn msg_type(mut self, msg_type: MsgType) -> Self {
        self.msg_type = msg_type;
        self
    }
}

/// Who a request acts for.
enum Actor<'a> {
    /// A user, and the socket's own budget when the send came over a socket.
    User(&'a Identity, Option<&'a SocketBudget>),
    Server,
}

/// Why a request that would open an Engine.IO session is refused.
#[derive(Debug)]
pub(crate) enum SessionRefusal {
    /// The client address is over its budget of connection attempts.
    Limit(crate::guard::Refusal),
    /// The node is draining for a shutdown.
    Draining,
}

/// A message accepted and queued for its commit.
pub(crate) struct Committing {
    pending: crate::delivery::Pending,
    direction: Direction,
    /// The SMS outbox to wake once an outbound SMS is committed.
    outbox: Option<Arc<tokio::sync::Notify>>,
}

impl Committing {
    /// The stored message once committed. The writer commits, then delivers; a
    /// duplicate is the stored original, and is not delivered again.
    pub(crate) async fn message(self) -> Result<Message, ChatError> {
        Ok(self.settled().await?.0)
    }

    /// The stored message as JSON text, for an ack: the text its delivery sent when
    /// a socket here got it, so it is serialized once for both.
    pub(crate) async fn message_json(self) -> Result<crate::delivery::SharedJson, ChatError> {
        match self.settled().await? {
            (_, Some(json)) => Ok(json),
            (message, None) => crate::delivery::message_json(&message).map_err(|e| {
                ChatError::Store(StoreError::Corrupt(format!(
                    "could not serialize a message: {e}"
                )))
            }),
        }
    }

    async fn settled(self) -> Result<(Message, Option<crate::delivery::SharedJson>), ChatError> {
        let (appended, json) = self
            .pending
            .outcome()
            .await
            .inspect_err(|e| metrics::message_in(self.direction, e.code().as_str()))?;
        let message = match appended {
            Appended::Inserted(m) => {
                metrics::message_in(self.direction, "stored");
                m
            }
            Appended::Duplicate(m) => {
                metrics::message_in(self.direction, "duplicate");
                m
            }
        };
        if let Some(outbox) = self.outbox {
            outbox.notify_one();
        }
        Ok((message, json))
    }
}

impl LiveChat {
    /// Starts building a livechat service.
    pub fn builder() -> LiveChatBuilder {
        LiveChatBuilder::default()
    }

    pub(crate) fn new(io: SocketIo, parts: crate::builder::LiveChatParts) -> Self {
        let crate::builder::LiveChatParts {
            store,
            auth,
            limits,
            origins,
            trusted_proxies,
            moderators,
            fanout,
        } = parts;
        metrics::describe();
        let guard = Guard::new(GuardLimits {
            connect_rate_per_ip: limits.connect_rate_per_ip,
            max_connections_per_ip: limits.max_connections_per_ip,
            max_connections_per_user: limits.max_connections_per_user,
            max_connections: limits.max_connections,
            send_per_socket: limits.send_per_socket,
            send_per_user: limits.send_per_user,
            send_per_workspace: limits.send_per_workspace,
            signals_per_socket: limits.signals_per_socket,
            trusted_proxies,
        });
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(
            io.clone(),
            store.clone(),
            counters.clone(),
            WriterConfig {
                queue: limits.commit_queue,
                max_batch: limits.commit_batch.max(1),
                max_wait: limits.commit_wait,
                max_recovery: limits.max_recovery_messages,
            },
            fanout.clone(),
        );
        let directory = DirectoryCache::new(&limits);
        Self {
            inner: Arc::new(Inner {
                io,
                store,
                auth,
                limits,
                guard,
                origins,
                moderators,
                writer,
                counters,
                directory,
                node: uuid::Uuid::new_v4(),
                presence: Default::default(),
                fanout,
                sms_outbox: std::sync::OnceLock::new(),
                drain: Default::default(),
            }),
        }
    }

    /// Counts a request that opens an Engine.IO session against its client address's
    /// connection-attempt budget. A refusal is logged with the address.
    pub(crate) fn admit_transport<B>(&self, req: &http::Request<B>) -> Result<(), SessionRefusal> {
        let guard = &self.inner.guard;
        let ip = guard.client_ip(req.extensions(), req.headers());
        if self.draining() {
            tracing::debug!(client = ?ip, "connection refused: draining");
            metrics::connection_refused("draining");
            return Err(SessionRefusal::Draining);
        }
        guard.check_connect_rate(ip).map_err(|reason| {
            tracing::warn!(client = ?ip, %reason, "connection refused");
            metrics::connection_refused(reason.metric_reason());
            SessionRefusal::Limit(reason)
        })
    }

    /// What delivery has done so far: commits, slow consumers cut off, recoveries.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Checks a bearer token with the configured authenticator.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        self.inner.auth.authenticate(token).await
    }

    /// Sends a message as `who`: validated, authorized, rate-limited, stored, then
    /// broadcast to the contact room and the workspace room (each socket once).
    /// A retry with the same `clientId` returns the original and broadcasts nothing.
    pub async fn send_message(
        &self,
        who: &Identity,
        req: SendMessage,
    ) -> Result<Message, ChatError> {
        let publish = self.publish_from(who, req);
        self.run_pipeline(Actor::User(who, None), publish).await
    }

    /// `send_message` from a socket: also held to that socket's own budget. Returns
    /// once the message is accepted and queued for its commit, so that the socket's
    /// next send can be checked while this one commits; commits keep the order in
    /// which messages were queued.
    pub(crate) async fn send_from_socket(
        &self,
        budget: Option<&SocketBudget>,
        who: &Identity,
        req: SendMessage,
    ) -> Result<Committing, ChatError> {
        let publish = self.publish_from(who, req);
        self.accept(Actor::User(who, budget), publish).await
    }

    fn publish_from(&self, who: &Identity, req: SendMessage) -> Publish {
        Publish {
            contact_id: req.contact_id,
            body: req.body,
            direction: req.direction.unwrap_or(Direction::Outbound),
            sender: Some(who.user_id.to_string()),
            client_id: req.client_id,
            msg_type: req.msg_type.unwrap_or_default(),
            status: None,
            twilio_sid: None,
        }
    }

    /// Sends a message from server-side code, through the same validation, storage
    /// and broadcast as a socket's `send_message` (no membership check, no rate limit).
    pub async fn publish(&self, msg: Publish) -> Result<Message, ChatError> {
        self.run_pipeline(Actor::Server, msg).await
    }

    async fn run_pipeline(&self, actor: Actor<'_>, msg: Publish) -> Result<Message, ChatError> {
        self.accept(actor, msg).await?.message().await
    }

    /// Everything before the commit: validation, authorization, the send budgets and
    /// moderation; then the message is queued for the writer.
    async fn accept(&self, actor: Actor<'_>, msg: Publish) -> Result<Committing, ChatError> {
        let direction = msg.direction;
        self.checked(actor, msg)
            .await
            .inspect_err(|e| metrics::message_in(direction, e.code().as_str()))
    }

    async fn checked(&self, actor: Actor<'_>, msg: Publish) -> Result<Committing, ChatError> {
        let received = std::time::Instant::now();
        self.validate(&msg)?;
        let contact = self.contact_or_not_found(msg.contact_id).await?;
        if let Actor::User(who, budget) = actor {
            self.authorize(who, contact.workspace_id).await?;
            self.inner
                .guard
                .check_send(budget, &who.user_id, contact.workspace_id)
                .map_err(|retry_after| ChatError::RateLimited { retry_after })?;
        }
        let by_sms = msg.direction == Direction::Outbound && msg.msg_type == MsgType::Sms;
        let outbox = match by_sms {
            true => Some(self.sms_channel(&contact)?),
            false => None,
        };
        let (body, moderation_flag) = self.moderate(&contact, &msg).await?;
        let status = msg.status.unwrap_or(match msg.direction {
            Direction::Inbound => Status::Received,
            Direction::Outbound if by_sms => Status::Queued,
            Direction::Outbound => Status::Sent,
        });
        let new = NewMessage {
            id: MessageId::new_v7(),
            contact_id: contact.id,
            workspace_id: contact.workspace_id,
            sender: msg.sender,
            body,
            direction: msg.direction,
            status,
            twilio_sid: msg.twilio_sid,
            msg_type: msg.msg_type,
            client_id: msg.client_id,
            created_at: Utc::now(),
            moderation_flag,
        };
        Ok(Committing {
            direction: new.direction,
            pending: self.inner.writer.enqueue(new, received)?,
            outbox,
        })
    }

    /// The outbox an outbound SMS to `contact` goes through, or why it cannot go.
    fn sms_channel(&self, contact: &Contact) -> Result<Arc<tokio::sync::Notify>, ChatError> {
        let outbox = self.inner.sms_outbox.get().ok_or_else(|| {
            ChatError::InvalidPayload("this server has no SMS channel; send it as text".into())
        })?;
        if contact.phone.is_none() {
            return Err(ChatError::InvalidPayload(
                "the contact has no phone number to send an SMS to".into(),
            ));
        }
        Ok(outbox.clone())
    }

    pub(crate) fn set_sms_outbox(&self, wake: Arc<tokio::sync::Notify>) {
        if self.inner.sms_outbox.set(wake).is_err() {
            tracing::warn!("an SMS outbox is already running for this livechat");
        }
    }

    pub(crate) fn store(&self) -> &dyn DynStore {
        &*self.inner.store
    }

    /// Runs the moderators in order; returns the body to store and the flag, if any.
    async fn moderate(
        &self,
        contact: &Contact,
        msg: &Publish,
    ) -> Result<(String, Option<String>), ChatError> {
        let mut body = std::borrow::Cow::Borrowed(msg.body.as_str());
        let mut flags = Vec::new();
        for moderator in &self.inner.moderators {
            let candidate = Candidate {
                workspace_id: contact.workspace_id,
                contact_id: contact.id,
                sender: msg.sender.as_deref(),
                body: &body,
                direction: msg.direction,
                msg_type: msg.msg_type,
            };
            let verdict = moderator.check(candidate).await;
            metrics::plugin_call(moderator.name(), &verdict);
            let verdict = match verdict {
                Ok(Verdict::Rewrite(new)) if new.len() > self.inner.limits.max_body_bytes => {
                    Err(ModerationError::InvalidOutput {
                        name: moderator.name().to_owned(),
                        reason: format!("a rewrite of {} bytes is over the body limit", new.len()),
                    })
                }
                other => other,
            };
            let policy = moderator.failure_policy();
            let verdict = match verdict {
                Ok(verdict) => verdict,
                // A moderator with every slot taken has not judged the message: the
                // sender is told to retry, not that the content was refused.
                Err(ModerationError::Overloaded(_)) if policy == FailurePolicy::Closed => {
                    return Err(ChatError::busy());
                }
                Err(e) => {
                    tracing::warn!(moderator = moderator.name(), error = %e, ?policy, "moderation failed");
                    match policy {
                        FailurePolicy::Closed => {
                            Verdict::Reject("the message could not be checked".into())
                        }
                        FailurePolicy::Open => Verdict::Allow,
                    }
                }
            };
            match verdict {
                Verdict::Allow => {}
                Verdict::Rewrite(new) => body = std::borrow::Cow::Owned(new),
                Verdict::Reject(reason) => return Err(ChatError::Rejected(reason)),
                Verdict::Flag(reason) => flags.push(format!("{}: {reason}", moderator.name())),
            }
        }
        if body.trim().is_empty() {
            return Err(ChatError::Rejected(
                "nothing is left of the message after moderation".into(),
            ));
        }
        let flag = (!flags.is_empty()).then(|| flags.join("; "));
        Ok((body.into_owned(), flag))
    }

    fn validate(&self, msg: &Publish) -> Result<(), ChatError> {
        let limits = &self.inner.limits;
        if msg.body.len() > limits.max_body_bytes {
            return Err(ChatError::PayloadTooLarge {
                what: "body",
                actual: msg.body.len(),
                limit: limits.max_body_bytes,
            });
        }
        if msg.body.trim().is_empty() {
            return Err(ChatError::InvalidPayload("the body is empty".into()));
        }
        if let Some(key) = &msg.client_id {
            if key.is_empty() {
                return Err(ChatError::InvalidPayload("clientId is empty".into()));
            }
            if key.len() > limits.max_client_id_bytes {
                return Err(ChatError::InvalidPayload(format!(
                    "clientId is {} bytes, over the limit of {}",
                    key.len(),
                    limits.max_client_id_bytes
                )));
            }
        }
        Ok(())
    }

    pub(crate) async fn contact_or_not_found(&self, id: ContactId) -> Result<Contact, ChatError> {
        if let Some(contact) = self.inner.directory.contacts.get(&id) {
            return Ok(contact);
        }
        let contact = self
            .inner
            .store
            .contact(id)
            .await?
            .ok_or(ChatError::NotFound("contact"))?;
        self.inner.directory.contacts.insert(id, contact.clone());
        Ok(contact)
    }

    /// The role of `who` in `workspace`, or `forbidden`. A workspace grant in the token
    /// is authoritative when present; otherwise storage decides.
    pub async fn authorize(
        &self,
        who: &Identity,
        workspace: WorkspaceId,
    ) -> Result<Role, ChatError> {
        let role = match &who.workspaces {
            Some(granted) => granted.contains(&workspace).then_some(Role::Agent),
            None => match self.inner.directory.role(workspace, &who.user_id) {
                Some(role) => Some(role),
                None => {
                    let role = self
                        .inner
                        .store
                        .member_role(workspace, &who.user_id)
                        .await?;
                    if let Some(role) = role {
                        self.inner.directory.members.insert(
                            (workspace, who.user_id.clone()),
                            (role, std::time::Instant::now()),
                        );
                    }
                    role
                }
            },
        };
        role.ok_or(ChatError::Forbidden)
    }

    /// A page of a conversation, newest first (the socket `history` event).
    pub async fn history(&self, who: &Identity, req: HistoryRequest) -> Result<Page, ChatError> {
        let contact = self.contact_or_not_found(req.contact_id).await?;
        self.authorize(who, contact.workspace_id).await?;
        Ok(self
            .inner
            .store
            .history(contact.id, req.before, clamp_limit(req.limit))
            .await?)
    }

    /// Every message after `after`, oldest first (the socket `sync` event): the resync
    /// after a reconnect.
    pub async fn sync(&self, who: &Identity, req: SyncRequest) -> Result<Page, ChatError> {
        let scope = match (req.workspace_id, req.contact_id) {
            (Some(ws), None) => {
                self.authorize(who, ws).await?;
                SyncScope::Workspace(ws)
            }
            (None, Some(c)) => {
                let contact = self.contact_or_not_found(c).await?;
                self.authorize(who, contact.workspace_id).await?;
                SyncScope::Contact(c)
            }
            _ => {
                return Err(ChatError::InvalidPayload(
                    "give exactly one of workspaceId and contactId".into(),
                ));
            }
        };
        Ok(self
            .inner
            .store
            .sync(scope, req.after, clamp_limit(req.limit))
            .await?)
    }

    pub(crate) async fn join_contact(
        &self,
        s: &SocketRef,
        who: &Identity,
        req: ContactRef,
    ) -> Result<Joined, ChatError> {
        let contact = self.contact_or_not_found(req.contact_id).await?;
        self.authorize(who, contact.workspace_id).await?;
        self.join(
            s,
            (contact_room(contact.id), contact.workspace_id),
            SyncScope::Contact(contact.id),
            req.after,
        )
        .await
    }

    pub(crate) async fn join_workspace(
        &self,
        s: &SocketRef,
        who: &Identity,
        req: WorkspaceRef,
    ) -> Result<Joined, ChatError> {
        self.authorize(who, req.workspace_id).await?;
        let ws = req.workspace_id;
        let joined = self
            .join(
                s,
                (workspace_room(ws), ws),
                SyncScope::Workspace(ws),
                req.after,
            )
            .await?;
        self.presence_joined(s, who, ws);
        Ok(joined)
    }

    /// Joins `room` (of `workspace`); with `after`, first replays what the client
    /// missed in `scope`.
    async fn join(
        &self,
        s: &SocketRef,
        (room, workspace): (String, WorkspaceId),
        scope: SyncScope,
        after: Option<i64>,
    ) -> Result<Joined, ChatError> {
        let rooms = s.rooms();
        let already = rooms.iter().any(|r| *r == room);
        if !already && rooms.len() >= self.inner.limits.max_rooms_per_socket {
            return Err(ChatError::LimitReached(format!(
                "a socket may be in at most {} rooms",
                self.inner.limits.max_rooms_per_socket
            )));
        }
        let Some(after) = after else {
            self.inner.writer.join(s, room.clone(), workspace).await?;
            return Ok(Joined {
                room,
                recovered: None,
                complete: None,
            });
        };
        if already {
            // Recovering into a room the socket is in would deliver twice.
            s.leave(room.clone());
        }
        let outcome = self
            .inner
            .writer
            .recover(
                s,
                (scope, workspace),
                room.clone(),
                after,
                &*self.inner.store,
            )
            .await?;
        match outcome {
            Ok(n) => metrics::recovery(true, n),
            Err(RecoveryMiss) => metrics::recovery(false, 0),
        }
        let joined = match outcome {
            Ok(n) => Joined {
                room,
                recovered: Some(n),
                complete: Some(true),
            },
            Err(RecoveryMiss) => Joined {
                room,
                recovered: Some(0),
                complete: Some(false),
            },
        };
        // Also as an event, for clients that join without an ack (as the seed does).
        let _ = s.emit(events::RECOVERY, &joined);
        Ok(joined)
    }

    /// Creates a workspace.
    pub async fn create_workspace(&self, new: NewWorkspace) -> Result<Workspace, ChatError> {
        Ok(self.inner.store.create_workspace(new).await?)
    }

    /// A workspace by id.
    pub async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, ChatError> {
        Ok(self.inner.store.workspace(id).await?)
    }

    /// Creates a contact in an existing workspace.
    pub async fn create_contact(&self, new: NewContact) -> Result<Contact, ChatError> {
        Ok(self.inner.store.create_contact(new).await?)
    }

    /// A contact by id.
    pub async fn contact(&self, id: ContactId) -> Result<Option<Contact>, ChatError> {
        Ok(self.inner.store.contact(id).await?)
    }

    /// Adds a member to a workspace (or changes their role).
    pub async fn add_member(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        role: Role,
    ) -> Result<(), ChatError> {
        self.inner
            .directory
            .members
            .remove(&(workspace, user.clone()));
        Ok(self.inner.store.add_member(workspace, user, role).await?)
    }

    /// Removes a member. Their sockets on this node leave the workspace's room and
    /// every contact room of that workspace at once.
    pub async fn remove_member(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> Result<bool, ChatError> {
        let removed = self.inner.store.remove_member(workspace, user).await?;
        self.evict(workspace, user).await?;
        Ok(removed)
    }

    /// Another node (or another program, through the Postgres change feed) removed a
    /// member: their sockets on this node leave the workspace's rooms too.
    pub async fn member_removed_elsewhere(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> Result<(), ChatError> {
        self.evict(workspace, user).await
    }

    /// A message another node committed (from a [`crate::cluster`] fan-out): delivered
    /// to this node's sockets once and in `seq` order, however often and in whatever
    /// order such messages arrive. A gap before it is read from the store first.
    pub async fn committed_elsewhere(&self, message: Message) {
        self.inner.writer.remote(message).await;
    }

    /// A change feed saw a commit at `seq` in `workspace`: whatever this node has not
    /// delivered up to there is read from the store and delivered.
    pub async fn announced(&self, workspace: WorkspaceId, seq: i64) {
        self.inner.writer.announced(workspace, seq).await;
    }

    /// After a gap in a feed (a reconnect), reads and delivers everything committed
    /// since the last delivery, in every workspace this node has sockets for.
    pub async fn catch_up(&self) {
        self.inner.writer.catch_up().await;
    }

    async fn evict(&self, workspace: WorkspaceId, user: &UserId) -> Result<(), ChatError> {
        self.inner
            .directory
            .members
            .remove(&(workspace, user.clone()));
        let ws_room = workspace_room(workspace);
        for s in self.inner.io.to(user_room(user)).sockets() {
            crate::handlers::leave(&s, ws_room.clone());
            if let Some(who) = s.extensions.get::<Arc<Identity>>() {
                self.presence_left(&s, &who, workspace);
            }
            for room in s.rooms() {
                let Some(id) = room.strip_prefix("contact:").and_then(|id| id.parse().ok()) else {
                    continue;
                };
                let contact = self.inner.store.contact(ContactId(id)).await?;
                if contact.is_some_and(|c| c.workspace_id == workspace) {
                    crate::handlers::leave(&s, room.to_string());
                }
            }
        }
        Ok(())
    }

    /// Sets the gauges of [`metrics`](crate::metrics) that are read rather than
    /// tracked: open connections by transport, and the commit queue. An exporter
    /// calls it before it renders (the reference server does, on every scrape of
    /// `/metrics`); it walks this node's sockets once.
    pub fn record_gauges(&self) {
        let (mut websocket, mut polling) = (0usize, 0usize);
        for s in self.inner.io.sockets() {
            match s.transport_type() {
                socketioxide::TransportType::Websocket => websocket += 1,
                socketioxide::TransportType::Polling => polling += 1,
            }
        }
        metrics::gauges(websocket, polling, self.inner.writer.queued());
    }

    /// How many sockets are connected to this node.
    pub fn connected_sockets(&self) -> usize {
        self.inner.io.sockets().len()
    }

    /// Disconnects every socket. Call it when the host shuts down.
    pub async fn close(&self) {
        self.inner.io.clone().close().await;
    }
}
