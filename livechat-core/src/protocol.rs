//! The wire contract: event names, request payloads (camelCase, as the seed frontend
//! sends them) and the shapes of acks and errors.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::error::{ChatError, ErrorCode};
use crate::model::{Contact, ContactId, Direction, MessageId, MsgType, UserId, WorkspaceId};

/// Client → server event names.
pub mod events {
    /// `{ contactId }`: join room `contact:<id>`.
    pub const JOIN_CONTACT: &str = "join_contact";
    /// `{ contactId }`: leave room `contact:<id>`.
    pub const LEAVE_CONTACT: &str = "leave_contact";
    /// `{ workspaceId }`: join room `<workspaceId>`.
    pub const JOIN_WORKSPACE: &str = "join_workspace";
    /// `{ workspaceId }`: leave room `<workspaceId>`.
    pub const LEAVE_WORKSPACE: &str = "leave_workspace";
    /// `{ contactId, body, clientId?, msgType?, direction? }`.
    pub const SEND_MESSAGE: &str = "send_message";
    /// `{ contactId, before?, limit? }`.
    pub const HISTORY: &str = "history";
    /// `{ workspaceId | contactId, after, limit? }`.
    pub const SYNC: &str = "sync";
    /// `{ contactId, isTyping }`: tell the others in the contact room.
    pub const TYPING: &str = "typing";
    /// `{ contactId, upTo }`: mark the conversation read up to a `seq`.
    pub const MARK_READ: &str = "mark_read";
    /// `{ messageId, emoji }`: add the user's reaction, or remove it when it is there.
    pub const REACT: &str = "react";
    /// `{ workspaceId }`: unread inbound messages per contact.
    pub const UNREAD_COUNTS: &str = "unread_counts";
    /// Server → client: a stored message.
    pub const NEW_MESSAGE: &str = "new_message";
    /// Server → client: a stored message changed (its status).
    pub const MESSAGE_UPDATED: &str = "message_updated";
    /// Server → client: a conversation was read up to a `seq` (see `MessagesRead`).
    pub const MESSAGES_READ: &str = "messages_read";
    /// Server → client: a reaction was added or removed (see `ReactionEvent`).
    pub const REACTION: &str = "reaction";
    /// Server → client: who of a workspace is online (see `PresenceChange`,
    /// `PresenceList`).
    pub const PRESENCE: &str = "presence";
    /// Server → client: a refusal of a request that had no ack callback.
    pub const ERROR: &str = "livechat:error";
    /// Server → client: the outcome of a join with `after` (see `Joined`).
    pub const RECOVERY: &str = "livechat:recovery";
    /// Server → client: this node is shutting down (see `Draining`). Its connection
    /// closes next; socket.io-client reconnects by itself, to another node behind a
    /// load balancer, and the client catches up with `after`.
    pub const DRAINING: &str = "livechat:draining";
}

/// The payload of `livechat:draining`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    /// Always `true`: connect again (the stock client does so by itself).
    pub reconnect: bool,
    /// Milliseconds within which the connection will be closed.
    pub closing_within_ms: u64,
}

/// The room of a contact's conversation.
pub fn contact_room(id: ContactId) -> String {
    format!("contact:{id}")
}

/// The room of a workspace: the bare id, as the seed frontend expects.
pub fn workspace_room(id: WorkspaceId) -> String {
    id.to_string()
}

/// `join_contact` / `leave_contact` payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContactRef {
    /// The contact.
    pub contact_id: ContactId,
    /// Join only: the last `seq` the client saw in this conversation. Every message
    /// after it is replayed before live ones (recovery after a reconnect).
    #[serde(default)]
    pub after: Option<i64>,
}

/// `join_workspace` / `leave_workspace` payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRef {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Join only: the last `seq` the client saw in this workspace. Every message after
    /// it is replayed before live ones (recovery after a reconnect).
    #[serde(default)]
    pub after: Option<i64>,
}

/// The answer to a join, and with `after` also the `livechat:recovery` event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Joined {
    /// The room joined.
    pub room: String,
    /// With `after`: how many missed messages were replayed before this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<usize>,
    /// With `after`: `false` when more was missed than can be replayed (or the replay
    /// failed): the client must reload with `history`/`sync`. Live delivery has begun
    /// either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

/// `send_message` payload (and the REST body, with `contactId` from the path).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    /// The conversation.
    pub contact_id: ContactId,
    /// Plain text, 1 byte to the body limit (16 KiB by default).
    pub body: String,
    /// The idempotency key: a retry with the same key returns the first message.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Defaults to `text`.
    #[serde(default)]
    pub msg_type: Option<MsgType>,
    /// Defaults to `outbound` (an agent's reply).
    #[serde(default)]
    pub direction: Option<Direction>,
}

/// `history` payload: a keyset page, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRequest {
    /// The conversation.
    pub contact_id: ContactId,
    /// Only messages with `seq` below this.
    #[serde(default)]
    pub before: Option<i64>,
    /// Page size; defaults to 50, clamped to 200.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `sync` payload: every message after a `seq`, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequest {
    /// Sync a whole workspace…
    #[serde(default)]
    pub workspace_id: Option<WorkspaceId>,
    /// …or one conversation.
    #[serde(default)]
    pub contact_id: Option<ContactId>,
    /// The last `seq` the client has.
    pub after: i64,
    /// Page size; defaults to 50, clamped to 200.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `typing` payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TypingRequest {
    /// The conversation.
    pub contact_id: ContactId,
    /// `true` while the user types; `false` when they stop. Without a `false`, the
    /// others are told the user stopped after [`crate::Limits::typing_timeout`].
    pub is_typing: bool,
}

/// The `typing` event, to the others in the contact room (never to the typist's own
/// sockets).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TypingEvent {
    /// The conversation.
    pub contact_id: ContactId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Who types.
    pub user_id: UserId,
    /// Whether they are typing now.
    pub is_typing: bool,
}

/// The answer to `typing`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Typed {
    /// Whether the others were told now; a repeated `isTyping: true` within
    /// [`crate::Limits::typing_interval`] only keeps the state alive.
    pub forwarded: bool,
}

/// `mark_read` payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MarkReadRequest {
    /// The conversation.
    pub contact_id: ContactId,
    /// Every message with `seq <= upTo` is marked read.
    pub up_to: i64,
}

/// The `messages_read` event (to the contact and workspace rooms when something
/// changed), and the answer to `mark_read`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessagesRead {
    /// The conversation.
    pub contact_id: ContactId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Read up to this `seq`.
    pub up_to: i64,
    /// Who read them.
    pub user_id: UserId,
    /// How many messages changed to read.
    pub updated: u64,
}

/// `react` payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReactRequest {
    /// The message.
    pub message_id: MessageId,
    /// The emoji: 1 to [`MAX_EMOJI_BYTES`] bytes, no spaces or control characters.
    pub emoji: String,
}

/// Longest emoji of a reaction, in bytes (a family emoji with skin tones is 25).
pub const MAX_EMOJI_BYTES: usize = 32;

/// The `reaction` event (to the contact and workspace rooms), and the answer to `react`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReactionEvent {
    /// The message.
    pub message_id: MessageId,
    /// Its conversation.
    pub contact_id: ContactId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// The emoji.
    pub emoji: String,
    /// Who reacted.
    pub user_id: UserId,
    /// `true`: the reaction was added; `false`: it was removed.
    pub added: bool,
}

/// `unread_counts` payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UnreadCountsRequest {
    /// The workspace.
    pub workspace_id: WorkspaceId,
}

/// The answer to `unread_counts` (and `GET /api/workspaces/{id}/unread`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnreadCounts {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Unread inbound messages per contact; contacts with none are left out.
    pub counts: BTreeMap<ContactId, u64>,
}

/// What `GET /api/workspaces/{id}/contacts` asks for: one page of a workspace's
/// contacts, in the order [`ContactList`] describes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContactsRequest {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// At most this many: 1 to [`MAX_CONTACTS_LIMIT`]; defaults to
    /// [`DEFAULT_CONTACTS_LIMIT`]. More is refused with `invalid_payload`, not clamped,
    /// so that a client never takes a cut list for the whole one.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// How many contacts a [`ContactsRequest`] without a `limit` returns.
pub const DEFAULT_CONTACTS_LIMIT: u32 = 100;

/// The most contacts one [`ContactsRequest`] may ask for.
pub const MAX_CONTACTS_LIMIT: u32 = 500;

/// A workspace's contacts: the answer to a [`ContactsRequest`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactList {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// By name (byte order), then by id.
    pub contacts: Vec<Contact>,
    /// Whether the workspace has more contacts than the limit let through.
    pub has_more: bool,
}

/// Whether a user is online in a workspace.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// At least one of the user's sockets, on any node, is in the workspace's room.
    Online,
    /// None is.
    Offline,
}

/// The `presence` event on a change, to the workspace room.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PresenceChange {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Who came or went.
    pub user_id: UserId,
    /// Their status now.
    pub status: PresenceStatus,
}

/// The `presence` event to a socket that joins a workspace: who is online there.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PresenceList {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Users online, sorted.
    pub online: Vec<UserId>,
}

/// An error as the client sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireError {
    /// The stable code.
    pub code: ErrorCode,
    /// A readable explanation.
    pub message: String,
    /// For `rate_limited` and `unavailable`: when to retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// The answer to a request with an ack callback:
/// `{ "ok": true, "data": … }` or `{ "ok": false, "error": … }`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum AckReply<T> {
    /// Success.
    Ok {
        /// Always `true`.
        ok: bool,
        /// The result.
        data: T,
    },
    /// Failure.
    Err {
        /// Always `false`.
        ok: bool,
        /// What went wrong.
        error: WireError,
    },
}

impl<T> AckReply<T> {
    /// The reply for a result.
    pub fn from_result(result: Result<T, ChatError>) -> Self {
        match result {
            Ok(data) => Self::Ok { ok: true, data },
            Err(e) => Self::Err {
                ok: false,
                error: e.to_wire(),
            },
        }
    }
}

/// The `livechat:error` event, sent when a refused request had no ack callback.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorEvent {
    /// The event that was refused.
    pub event: String,
    /// The stable code.
    pub code: ErrorCode,
    /// A readable explanation.
    pub message: String,
}

/// The depth of a JSON value: 0 for a scalar, 1 for a flat object or array.
pub fn json_depth(value: &serde_json::Value) -> usize {
    // Iterative, so that a hostile payload cannot overflow the stack here.
    let mut max = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        // Every request passes here: no allocation per node, only the one stack.
        match v {
            serde_json::Value::Array(items) => stack.extend(items.iter().map(|c| (c, depth + 1))),
            serde_json::Value::Object(map) => stack.extend(map.values().map(|c| (c, depth + 1))),
            _ => continue,
        }
        max = max.max(depth + 1);
    }
    max
}

/// Decodes a request payload: it must be a JSON object no deeper than `max_depth`,
/// and have the fields of `T`. Errors are `invalid_payload` with serde's explanation.
pub fn decode_request<T: DeserializeOwned>(
    value: serde_json::Value,
    max_depth: usize,
) -> Result<T, ChatError> {
    if !value.is_object() {
        return Err(ChatError::InvalidPayload(format!(
            "the payload must be a JSON object, got {}",
            json_kind(&value)
        )));
    }
    let depth = json_depth(&value);
    if depth > max_depth {
        return Err(ChatError::InvalidPayload(format!(
            "the payload is nested {depth} levels deep, over the limit of {max_depth}"
        )));
    }
    serde_json::from_value(value).map_err(|e| ChatError::InvalidPayload(e.to_string()))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_nesting() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({"a": 1})), 1);
        assert_eq!(json_depth(&json!({"a": [{"b": []}]})), 4);
    }

    #[test]
    fn decode_explains_what_is_wrong() {
        let err = decode_request::<ContactRef>(json!("x"), 32).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidPayload);
        assert!(err.to_string().contains("a string"), "{err}");

        let err = decode_request::<ContactRef>(json!({}), 32).unwrap_err();
        assert!(err.to_string().contains("contactId"), "{err}");

        let err = decode_request::<ContactRef>(json!({"contactId": "nope"}), 32).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidPayload);

        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "x": deep });
        }
        let err = decode_request::<ContactRef>(deep, 32).unwrap_err();
        assert!(err.to_string().contains("deep"), "{err}");
    }

    #[test]
    fn ack_reply_shapes() {
        let ok = serde_json::to_value(AckReply::from_result(Ok::<_, ChatError>(5))).unwrap();
        assert_eq!(ok, json!({"ok": true, "data": 5}));
        let err = serde_json::to_value(AckReply::<()>::from_result(Err(ChatError::RateLimited {
            retry_after: std::time::Duration::from_millis(250),
        })))
        .unwrap();
        assert_eq!(
            err,
            json!({"ok": false, "error": {"code": "rate_limited", "message": "rate limit exceeded", "retry_after_ms": 250}})
        );
    }
}
