//! The live-chat features around messages: typing, read receipts, reactions, unread
//! counts, status changes and presence. None of them goes through the commit writer:
//! they are not messages and have no `seq`. What they store is stored before the event
//! goes out; typing and presence are never stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use socketioxide::extract::SocketRef;

use crate::auth::Identity;
use crate::chat::LiveChat;
use crate::cluster::Signal;
use crate::error::ChatError;
use crate::guard::SignalBudget;
use crate::handlers::user_room;
use crate::model::{ContactId, Message, MessageId, Reaction, Status, WorkspaceId};
use crate::presence::PresenceUpdate;
use crate::protocol::{
    ContactList, ContactsRequest, DEFAULT_CONTACTS_LIMIT, MAX_CONTACTS_LIMIT, MAX_EMOJI_BYTES,
    MarkReadRequest, MessagesRead, PresenceList, ReactRequest, ReactionEvent, Typed, TypingEvent,
    TypingRequest, UnreadCounts, UnreadCountsRequest, contact_room, events, workspace_room,
};
use crate::store::Toggled;

/// Per socket: the conversations it is typing in.
#[derive(Clone, Default)]
pub(crate) struct TypingStates(Arc<Mutex<HashMap<ContactId, Typing>>>);

struct Typing {
    workspace: WorkspaceId,
    typing: bool,
    forwarded_at: Instant,
    expires_at: Instant,
    /// Whether a timer watches `expires_at`.
    timer: bool,
}

/// Per socket: the workspaces whose room it is in, as presence counts them.
#[derive(Clone, Default)]
pub(crate) struct PresenceRooms(Arc<Mutex<Rooms>>);

#[derive(Default)]
pub(crate) struct Rooms {
    workspaces: std::collections::HashSet<WorkspaceId>,
    /// The socket is gone: a join still in its queue must not count it again.
    closed: bool,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveChat {
    /// Emits `event` to the sockets in `rooms` but those in `except`, here and, with a
    /// fan-out, on every other node.
    fn signal<T: Serialize>(&self, rooms: Vec<String>, except: Vec<String>, event: &str, data: &T) {
        if let Some(fanout) = &self.inner().fanout
            && let Ok(value) = serde_json::to_value(data)
        {
            fanout.signal(&Signal::Emit {
                rooms: rooms.clone(),
                except: except.clone(),
                event: event.to_owned(),
                data: value,
            });
        }
        self.emit_here(rooms, except, event, data);
    }

    fn emit_here<T: Serialize + ?Sized>(
        &self,
        rooms: Vec<String>,
        except: Vec<String>,
        event: &str,
        data: &T,
    ) {
        // Emitted here and now, not from a task of its own: two signals must reach
        // a socket in the order they were made (a typing "stopped" after its "typing").
        // This node's adapter broadcasts without waiting on anything.
        let broadcast = self.inner().io.to(rooms).except(except).emit(event, data);
        match futures_util::FutureExt::now_or_never(broadcast) {
            // A socket whose buffer is full misses an ephemeral event; its messages
            // are what delivery guarantees, and those have their own path.
            Some(Err(e)) => tracing::debug!(error = %e, "could not emit a signal"),
            Some(Ok(())) => {}
            None => tracing::warn!(event, "a signal could not be emitted at once; dropped"),
        }
    }

    /// A signal from another node (see [`crate::cluster::Fanout::signal`]): emitted
    /// to this node's sockets, or applied to its view of presence.
    pub async fn signalled_elsewhere(&self, signal: Signal) {
        match signal {
            Signal::Presence { node, update } => {
                let ask = matches!(update, PresenceUpdate::State { ask: true, .. });
                let changes = self
                    .inner()
                    .presence
                    .update_from(node, update, Instant::now());
                for change in changes {
                    self.emit_presence_here(&change);
                }
                if ask {
                    self.presence_heartbeat(false);
                }
            }
            Signal::Emit {
                rooms,
                except,
                event,
                data,
            } => self.emit_here(rooms, except, &event, &data),
        }
    }

    /// A presence change, to this node's sockets in the workspace's room but the
    /// user's own (they know).
    fn emit_presence_here(&self, change: &crate::protocol::PresenceChange) {
        self.emit_here(
            vec![workspace_room(change.workspace_id)],
            vec![user_room(&change.user_id)],
            events::PRESENCE,
            change,
        );
    }

    /// Who of the workspace is online, on any node this node hears from, sorted.
    pub fn online_users(&self, workspace: WorkspaceId) -> Vec<crate::model::UserId> {
        self.inner().presence.online(workspace)
    }

    /// Sends this node's whole presence list to the other nodes; with `ask`, asks for
    /// theirs at once. A fan-out calls it every
    /// [`crate::presence::PRESENCE_HEARTBEAT`], and with `ask` once at start.
    pub fn presence_heartbeat(&self, ask: bool) {
        let inner = self.inner();
        if let Some(fanout) = &inner.fanout {
            fanout.signal(&Signal::Presence {
                node: inner.node,
                update: PresenceUpdate::State {
                    online: inner.presence.local_state(),
                    ask,
                },
            });
        }
    }

    /// Forgets the nodes not heard from for three heartbeats, with their users. A
    /// fan-out calls it between the signals it hands over, so that a node whose own
    /// receiving stalls never forgets the others for signals it has not read yet.
    pub fn presence_expire(&self) {
        for change in self.inner().presence.expire(Instant::now()) {
            self.emit_presence_here(&change);
        }
    }

    /// Counts a socket in the workspace's presence once it is in the room, and sends it
    /// who is online there.
    pub(crate) fn presence_joined(&self, s: &SocketRef, who: &Identity, workspace: WorkspaceId) {
        let Some(rooms) = s.extensions.get::<PresenceRooms>() else {
            return;
        };
        let joined = {
            // Counted under the socket's lock, so that its going away (which takes the
            // same lock) either sees this join or stops it.
            let mut rooms = locked(&rooms.0);
            if rooms.closed {
                return;
            }
            rooms
                .workspaces
                .insert(workspace)
                .then(|| self.inner().presence.joined(workspace, &who.user_id))
        };
        if let Some((first_here, change)) = joined {
            self.presence_changed(workspace, &who.user_id, first_here, true, change);
        }
        let list = PresenceList {
            workspace_id: workspace,
            online: self.inner().presence.online(workspace),
        };
        let _ = s.emit(events::PRESENCE, &list);
    }

    /// The socket left the workspace's room (or is going away).
    pub(crate) fn presence_left(&self, s: &SocketRef, who: &Identity, workspace: WorkspaceId) {
        let Some(rooms) = s.extensions.get::<PresenceRooms>() else {
            return;
        };
        let left = {
            let mut rooms = locked(&rooms.0);
            rooms
                .workspaces
                .remove(&workspace)
                .then(|| self.inner().presence.left(workspace, &who.user_id))
        };
        if let Some((last_here, change)) = left {
            self.presence_changed(workspace, &who.user_id, last_here, false, change);
        }
    }

    fn presence_changed(
        &self,
        workspace: WorkspaceId,
        user: &crate::model::UserId,
        here_changed: bool,
        online: bool,
        change: Option<crate::protocol::PresenceChange>,
    ) {
        let inner = self.inner();
        if here_changed && let Some(fanout) = &inner.fanout {
            fanout.signal(&Signal::Presence {
                node: inner.node,
                update: PresenceUpdate::Changes(vec![(workspace, user.clone(), online)]),
            });
        }
        if let Some(change) = change {
            self.emit_presence_here(&change);
        }
    }

    /// The socket is gone: it leaves every workspace's presence and stops typing.
    pub(crate) fn socket_gone(&self, s: &SocketRef) {
        let Some(who) = s.extensions.get::<Arc<Identity>>() else {
            return;
        };
        if let Some(rooms) = s.extensions.get::<PresenceRooms>() {
            let gone: Vec<_> = {
                let mut rooms = locked(&rooms.0);
                rooms.closed = true;
                rooms
                    .workspaces
                    .drain()
                    .map(|w| (w, self.inner().presence.left(w, &who.user_id)))
                    .collect()
            };
            for (workspace, (last_here, change)) in gone {
                self.presence_changed(workspace, &who.user_id, last_here, false, change);
            }
        }
        if let Some(states) = s.extensions.get::<TypingStates>() {
            let typing: Vec<(ContactId, WorkspaceId)> = locked(&states.0)
                .iter_mut()
                .filter(|(_, t)| t.typing)
                .map(|(c, t)| {
                    t.typing = false;
                    (*c, t.workspace)
                })
                .collect();
            for (contact, workspace) in typing {
                self.typing_event(&who, contact, workspace, false);
            }
        }
    }

    /// Counts a typing, read, reaction or unread-counts request against its socket's
    /// budget.
    pub(crate) fn check_signal_budget(&self, s: &SocketRef) -> Result<(), ChatError> {
        match s.extensions.get::<SignalBudget>() {
            Some(budget) => self
                .inner()
                .guard
                .check_signal(&budget)
                .map_err(|retry_after| ChatError::RateLimited { retry_after }),
            None => Ok(()),
        }
    }

    fn typing_event(
        &self,
        who: &Identity,
        contact: ContactId,
        workspace: WorkspaceId,
        typing: bool,
    ) {
        let event = TypingEvent {
            contact_id: contact,
            workspace_id: workspace,
            user_id: who.user_id.clone(),
            is_typing: typing,
        };
        self.signal(
            vec![contact_room(contact)],
            vec![user_room(&who.user_id)],
            events::TYPING,
            &event,
        );
    }

    /// `typing` from a socket: passed on to the others in the contact room (never to
    /// the typist's own sockets) when the state changes, and a repeated "typing" at
    /// most every [`crate::Limits::typing_interval`]; "stopped" follows by itself after
    /// [`crate::Limits::typing_timeout`] without news, or when the socket goes.
    pub(crate) async fn typing(
        &self,
        s: &SocketRef,
        who: &Arc<Identity>,
        req: TypingRequest,
    ) -> Result<Typed, ChatError> {
        self.check_signal_budget(s)?;
        let contact = self.contact_or_not_found(req.contact_id).await?;
        self.authorize(who, contact.workspace_id).await?;
        let limits = self.limits();
        if !s.connected() {
            // Queued before the socket went: nobody is typing any more. (A stop that
            // raced past this check follows from the timer.)
            return Ok(Typed { forwarded: false });
        }
        let states = s.extensions.get::<TypingStates>().unwrap_or_default();
        let now = Instant::now();
        let (forward, start_timer) = {
            let mut map = locked(&states.0);
            if !map.contains_key(&contact.id) {
                if !req.is_typing {
                    return Ok(Typed { forwarded: false });
                }
                if map.len() >= limits.max_rooms_per_socket {
                    return Err(ChatError::LimitReached(format!(
                        "a socket may type in at most {} conversations",
                        limits.max_rooms_per_socket
                    )));
                }
                map.insert(
                    contact.id,
                    Typing {
                        workspace: contact.workspace_id,
                        typing: false,
                        forwarded_at: now,
                        expires_at: now,
                        timer: false,
                    },
                );
            }
            let Some(t) = map.get_mut(&contact.id) else {
                return Ok(Typed { forwarded: false });
            };
            match (t.typing, req.is_typing) {
                (false, false) => (false, false),
                (true, false) => {
                    t.typing = false;
                    (true, false)
                }
                (was, true) => {
                    t.expires_at = now + limits.typing_timeout;
                    let forward =
                        !was || now.duration_since(t.forwarded_at) >= limits.typing_interval;
                    if forward {
                        t.forwarded_at = now;
                    }
                    t.typing = true;
                    let start = !t.timer;
                    t.timer = true;
                    (forward, start)
                }
            }
        };
        if forward {
            self.typing_event(who, contact.id, contact.workspace_id, req.is_typing);
        }
        if start_timer {
            tokio::spawn(self.clone().typing_expiry(states, who.clone(), contact.id));
        }
        Ok(Typed { forwarded: forward })
    }

    /// Watches one conversation's "typing" and says "stopped" when it runs out.
    async fn typing_expiry(self, states: TypingStates, who: Arc<Identity>, contact: ContactId) {
        // An entry lives exactly as long as its timer: every decision to end is taken
        // and carried out under one lock, so a "typing" that comes in meanwhile finds
        // either a running timer or no entry (and starts a timer of its own).
        loop {
            let due = {
                let mut map = locked(&states.0);
                match map.get(&contact) {
                    Some(t) if t.typing => t.expires_at,
                    Some(_) => {
                        map.remove(&contact);
                        return;
                    }
                    None => return,
                }
            };
            tokio::time::sleep_until(due.into()).await;
            let expired = {
                let mut map = locked(&states.0);
                match map.get(&contact) {
                    Some(t) if t.typing && Instant::now() < t.expires_at => continue,
                    Some(t) if t.typing => map.remove(&contact).map(|t| t.workspace),
                    Some(_) => {
                        map.remove(&contact);
                        return;
                    }
                    None => return,
                }
            };
            if let Some(workspace) = expired {
                self.typing_event(&who, contact, workspace, false);
            }
            return;
        }
    }

    /// Marks a conversation read up to `upTo` (a `seq`) as `who`; when that changed
    /// anything, `messages_read` goes to the contact and workspace rooms.
    pub async fn mark_read(
        &self,
        who: &Identity,
        req: MarkReadRequest,
    ) -> Result<MessagesRead, ChatError> {
        if req.up_to < 0 {
            return Err(ChatError::InvalidPayload(
                "upTo must be a seq, 0 or more".into(),
            ));
        }
        let contact = self.contact_or_not_found(req.contact_id).await?;
        self.authorize(who, contact.workspace_id).await?;
        let updated = self.inner().store.mark_read(contact.id, req.up_to).await?;
        let read = MessagesRead {
            contact_id: contact.id,
            workspace_id: contact.workspace_id,
            up_to: req.up_to,
            user_id: who.user_id.clone(),
            updated,
        };
        if updated > 0 {
            self.signal(
                vec![
                    contact_room(contact.id),
                    workspace_room(contact.workspace_id),
                ],
                Vec::new(),
                events::MESSAGES_READ,
                &read,
            );
        }
        Ok(read)
    }

    /// Adds `who`'s reaction to a message, or removes it when it is there; `reaction`
    /// goes to the contact and workspace rooms. A user has at most
    /// [`crate::Limits::max_reactions_per_user`] reactions on one message.
    pub async fn react(
        &self,
        who: &Identity,
        req: ReactRequest,
    ) -> Result<ReactionEvent, ChatError> {
        let emoji = req.emoji;
        if emoji.is_empty()
            || emoji.len() > MAX_EMOJI_BYTES
            || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ChatError::InvalidPayload(format!(
                "emoji must be 1 to {MAX_EMOJI_BYTES} bytes without spaces or control characters"
            )));
        }
        let message = self.message_for(who, req.message_id).await?;
        let reaction = Reaction {
            emoji,
            user_id: who.user_id.clone(),
        };
        let limit = self.limits().max_reactions_per_user;
        let added = match self
            .inner()
            .store
            .toggle_reaction(message.id, reaction.clone(), limit)
            .await?
        {
            Toggled::Added => true,
            Toggled::Removed => false,
            Toggled::Full => {
                return Err(ChatError::LimitReached(format!(
                    "a user may have at most {limit} reactions on one message"
                )));
            }
        };
        let event = ReactionEvent {
            message_id: message.id,
            contact_id: message.contact_id,
            workspace_id: message.workspace_id,
            emoji: reaction.emoji,
            user_id: reaction.user_id,
            added,
        };
        self.signal(
            vec![
                contact_room(message.contact_id),
                workspace_room(message.workspace_id),
            ],
            Vec::new(),
            events::REACTION,
            &event,
        );
        Ok(event)
    }

    /// A message `who` may see, or `not_found` / `forbidden`.
    async fn message_for(&self, who: &Identity, id: MessageId) -> Result<Message, ChatError> {
        let message = self
            .inner()
            .store
            .message(id)
            .await?
            .ok_or(ChatError::NotFound("message"))?;
        self.authorize(who, message.workspace_id).await?;
        Ok(message)
    }

    /// Unread inbound messages per contact of a workspace.
    pub async fn unread_counts(
        &self,
        who: &Identity,
        req: UnreadCountsRequest,
    ) -> Result<UnreadCounts, ChatError> {
        self.authorize(who, req.workspace_id).await?;
        let counts = self.inner().store.unread_counts(req.workspace_id).await?;
        Ok(UnreadCounts {
            workspace_id: req.workspace_id,
            counts: counts.into_iter().collect(),
        })
    }

    /// A workspace's contacts, by name then id, for a member of it: at most
    /// `req.limit` (defaults to [`DEFAULT_CONTACTS_LIMIT`]; `invalid_payload` when it
    /// is 0 or over [`MAX_CONTACTS_LIMIT`]), and whether there are more.
    pub async fn contacts(
        &self,
        who: &Identity,
        req: ContactsRequest,
    ) -> Result<ContactList, ChatError> {
        let limit = req.limit.unwrap_or(DEFAULT_CONTACTS_LIMIT);
        if !(1..=MAX_CONTACTS_LIMIT).contains(&limit) {
            return Err(ChatError::InvalidPayload(format!(
                "limit must be 1 to {MAX_CONTACTS_LIMIT}, not {limit}"
            )));
        }
        self.authorize(who, req.workspace_id).await?;
        // One more than asked for tells whether the list goes on.
        let mut contacts = self
            .inner()
            .store
            .contacts(req.workspace_id, limit + 1)
            .await?;
        let has_more = contacts.len() > limit as usize;
        contacts.truncate(limit as usize);
        Ok(ContactList {
            workspace_id: req.workspace_id,
            contacts,
            has_more,
        })
    }

    /// Moves a message to `status` (and records the channel's SID): an SMS gateway's
    /// report, from server-side code. The lifecycle is `queued → sent → delivered |
    /// failed`; a report that would move the message back (late, repeated, out of
    /// order) changes nothing and returns `None`. A change goes to the contact and
    /// workspace rooms as `message_updated`.
    pub async fn update_status(
        &self,
        id: MessageId,
        status: Status,
        twilio_sid: Option<String>,
    ) -> Result<Option<Message>, ChatError> {
        self.move_status(id, status, status.follows(), twilio_sid)
            .await
    }

    /// Moves a message to `status` from one of `from` only; emits the change.
    pub(crate) async fn move_status(
        &self,
        id: MessageId,
        status: Status,
        from: &'static [Status],
        twilio_sid: Option<String>,
    ) -> Result<Option<Message>, ChatError> {
        let store = &self.inner().store;
        match store.update_status(id, status, from, twilio_sid).await? {
            Some(message) => {
                self.signal(
                    vec![
                        contact_room(message.contact_id),
                        workspace_room(message.workspace_id),
                    ],
                    Vec::new(),
                    events::MESSAGE_UPDATED,
                    &message,
                );
                Ok(Some(message))
            }
            None if store.message(id).await?.is_none() => Err(ChatError::NotFound("message")),
            None => Ok(None),
        }
    }
}
