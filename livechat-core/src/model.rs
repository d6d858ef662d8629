//! Domain types: ids, the message object and the directory records.
//!
//! The message object is the seed's row in snake_case, plus `seq` (the resync cursor)
//! and `client_id` (the idempotency key), exactly as it goes over the wire.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random (v4) id.
            pub fn new_v4() -> Self {
                Self(Uuid::new_v4())
            }

            /// A new time-ordered (v7) id: ids made one after the other sort
            /// together, so an index on them grows at its end instead of touching a
            /// random page per insert.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// The id of a workspace (a team's inbox). Its socket room is the bare id.
    WorkspaceId
);
uuid_id!(
    /// The id of a contact (a customer). Its socket room is `contact:<id>`.
    ContactId
);
uuid_id!(
    /// The id of a stored message.
    MessageId
);

/// The id of a user (an agent), the `sub` claim of their token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub String);

impl UserId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for UserId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// Which way a message travels: from the contact to the workspace, or back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the contact (web widget, SMS) to the agents.
    Inbound,
    /// From an agent or the server to the contact.
    Outbound,
}

/// Where a message is in its delivery lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Stored, waiting for an outside channel (SMS) to take it.
    Queued,
    /// Handed to the channel.
    Sent,
    /// The channel confirmed delivery.
    Delivered,
    /// The channel gave up.
    Failed,
    /// An inbound message, received from the contact.
    Received,
}

impl Status {
    /// The statuses a message may move to `self` from: `queued → sent → delivered |
    /// failed`, and straight from `queued` to `delivered` or `failed` when a report
    /// overtakes another. Nothing moves to `queued` or `received`, and `delivered` and
    /// `failed` are final, so a late or repeated report never moves a message back.
    pub fn follows(self) -> &'static [Status] {
        match self {
            Self::Queued | Self::Received => &[],
            Self::Sent => &[Self::Queued],
            Self::Delivered | Self::Failed => &[Self::Queued, Self::Sent],
        }
    }
}

/// The kind of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MsgType {
    /// A chat message (web widget or agent app). The default.
    #[default]
    Text,
    /// A message that travels as SMS.
    Sms,
    /// An internal note between agents, never sent to the contact.
    Note,
}

macro_rules! str_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The wire and storage spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }

        impl FromStr for $ty {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    other => Err(UnknownVariant { kind: stringify!($ty), value: other.to_owned() }),
                }
            }
        }
    };
}

str_enum!(Direction { Inbound => "inbound", Outbound => "outbound" });
str_enum!(Status {
    Queued => "queued",
    Sent => "sent",
    Delivered => "delivered",
    Failed => "failed",
    Received => "received",
});
str_enum!(MsgType { Text => "text", Sms => "sms", Note => "note" });
str_enum!(Role { Agent => "agent", Admin => "admin" });

/// A stored value that is not one of an enum's spellings.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownVariant {
    kind: &'static str,
    value: String,
}

/// A user's role in a workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and answers conversations.
    Agent,
    /// An agent who may also manage the workspace.
    Admin,
}

/// A user's reaction to a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// The emoji.
    pub emoji: String,
    /// Who reacted.
    pub user_id: UserId,
}

/// A stored message, as it goes over the wire (snake_case).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The message's id.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub contact_id: ContactId,
    /// The contact's workspace.
    pub workspace_id: WorkspaceId,
    /// Who wrote it: a user id for agents, a phone number or name for contacts.
    pub sender: Option<String>,
    /// Plain text.
    pub body: String,
    /// Whether an agent has read it.
    pub is_read: bool,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Delivery status.
    pub status: Status,
    /// Twilio's message SID for SMS.
    pub twilio_sid: Option<String>,
    /// The kind of message.
    pub msg_type: MsgType,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// The workspace-wide position: increases in commit order. The one cursor of
    /// `history.before`, `sync.after` and `mark_read.upTo`.
    pub seq: i64,
    /// The sender's idempotency key, echoed back.
    pub client_id: Option<String>,
    /// Why moderation flagged it for review, if it did.
    #[serde(default)]
    pub moderation_flag: Option<String>,
    /// Reactions, when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
}

/// A message ready to be stored: everything but the `seq` the store assigns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// The id it will have.
    pub id: MessageId,
    /// The conversation.
    pub contact_id: ContactId,
    /// The contact's workspace.
    pub workspace_id: WorkspaceId,
    /// Who wrote it.
    pub sender: Option<String>,
    /// Plain text.
    pub body: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Initial status.
    pub status: Status,
    /// Twilio's SID, for SMS.
    pub twilio_sid: Option<String>,
    /// The kind of message.
    pub msg_type: MsgType,
    /// The idempotency key: unique per workspace.
    pub client_id: Option<String>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// Why moderation flagged it, if it did.
    pub moderation_flag: Option<String>,
}

impl NewMessage {
    /// The stored message this becomes once the store assigns `seq`.
    pub fn into_message(self, seq: i64) -> Message {
        Message {
            id: self.id,
            contact_id: self.contact_id,
            workspace_id: self.workspace_id,
            sender: self.sender,
            body: self.body,
            is_read: false,
            direction: self.direction,
            status: self.status,
            twilio_sid: self.twilio_sid,
            msg_type: self.msg_type,
            created_at: self.created_at,
            seq,
            client_id: self.client_id,
            moderation_flag: self.moderation_flag,
            reactions: Vec::new(),
        }
    }
}

/// A workspace: one team's inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// Its id, also its socket room.
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Its SMS number, if it has one.
    pub phone: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A contact: a customer who writes in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Its id.
    pub id: ContactId,
    /// The workspace it belongs to.
    pub workspace_id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Phone number, for SMS contacts.
    pub phone: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// One page of messages, the answer of `history` and `sync`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Page {
    /// `history`: newest first; `sync`: oldest first.
    pub messages: Vec<Message>,
    /// Whether there are more beyond this page.
    pub has_more: bool,
}
