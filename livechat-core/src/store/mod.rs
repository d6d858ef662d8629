//! Storage traits and the bundled stores.
//!
//! A store implements [`MessageStore`] (append, history, sync, mark read) and
//! [`Directory`] (workspaces, contacts, membership). The builder takes any
//! `impl Store` and erases it, so users never name a storage type parameter.
//!
//! Every store must pass the conformance suite in `livechat_core::testing`
//! (feature `test-util`).

use std::future::Future;
use std::pin::Pin;

use crate::error::StoreError;
use crate::model::{
    Contact, ContactId, Message, MessageId, NewMessage, Page, Reaction, Role, Status, UserId,
    Workspace, WorkspaceId,
};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod batch;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreOptions};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreOptions};

/// The outcome of an idempotent append. A retry is a normal outcome, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// The message is new; it was stored with a fresh `seq`.
    Inserted(Message),
    /// A message with the same `(workspace_id, client_id)` was already stored: this is it.
    Duplicate(Message),
}

impl Appended {
    /// The stored message, new or original.
    pub fn message(&self) -> &Message {
        match self {
            Self::Inserted(m) | Self::Duplicate(m) => m,
        }
    }

    /// The stored message, new or original.
    pub fn into_message(self) -> Message {
        match self {
            Self::Inserted(m) | Self::Duplicate(m) => m,
        }
    }
}

/// What toggling a reaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggled {
    /// The user had not reacted with this emoji: the reaction is stored.
    Added,
    /// The user had reacted with this emoji: the reaction is gone.
    Removed,
    /// The user already has the most reactions allowed on this message; nothing changed.
    Full,
}

/// What a `sync` covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncScope {
    /// Every conversation of a workspace.
    Workspace(WorkspaceId),
    /// One conversation.
    Contact(ContactId),
}

/// A workspace to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWorkspace {
    /// Its id.
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Its SMS number.
    pub phone: Option<String>,
}

/// A contact to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewContact {
    /// Its id.
    pub id: ContactId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Phone number.
    pub phone: Option<String>,
}

/// Durable message storage.
///
/// Rules every implementation keeps (the conformance suite checks them):
/// - `append` is idempotent on `(workspace_id, client_id)`: a second append with the
///   same key returns [`Appended::Duplicate`] with the original message and stores nothing.
/// - `seq` is assigned in the same commit as the insert, from a per-workspace counter,
///   so it increases in commit order and `sync(after)` never skips a later commit.
/// - An `Ok` from `append` means the message is durable.
pub trait MessageStore: Send + Sync + 'static {
    /// Stores a message, or finds the one with the same idempotency key.
    fn append(
        &self,
        message: NewMessage,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Stores several messages in one commit where the store can; one result per
    /// message, in order. Defaults to one `append` after another.
    fn append_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> impl Future<Output = Vec<Result<Appended, StoreError>>> + Send {
        async move {
            let mut out = Vec::with_capacity(messages.len());
            for m in messages {
                out.push(self.append(m).await);
            }
            out
        }
    }

    /// A conversation's messages with `seq < before` (all if `None`), newest first,
    /// at most `limit`, and whether older ones remain.
    fn history(
        &self,
        contact: ContactId,
        before: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Messages with `seq > after` in `scope`, oldest first, at most `limit`, and
    /// whether more remain.
    fn sync(
        &self,
        scope: SyncScope,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Marks a conversation's messages with `seq <= up_to` read; returns how many changed.
    fn mark_read(
        &self,
        contact: ContactId,
        up_to: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// A message by id, with its reactions.
    fn message(
        &self,
        id: MessageId,
    ) -> impl Future<Output = Result<Option<Message>, StoreError>> + Send;

    /// Moves a message to `status`, but only from one of `from` (so that a late or
    /// repeated status report never moves it back); with `twilio_sid`, also records
    /// the SID. Returns the updated message, or `None` when the message does not
    /// exist or is not in one of `from`.
    fn update_status(
        &self,
        id: MessageId,
        status: Status,
        from: &'static [Status],
        twilio_sid: Option<String>,
    ) -> impl Future<Output = Result<Option<Message>, StoreError>> + Send;

    /// Adds the user's reaction to a message, or removes it when it is there. A user
    /// has at most `max_per_user` reactions on one message. `NotFound("message")`
    /// when the message does not exist.
    fn toggle_reaction(
        &self,
        message: MessageId,
        reaction: Reaction,
        max_per_user: usize,
    ) -> impl Future<Output = Result<Toggled, StoreError>> + Send;

    /// Per contact of the workspace, how many inbound messages are not read yet;
    /// contacts with none are left out.
    fn unread_counts(
        &self,
        workspace: WorkspaceId,
    ) -> impl Future<Output = Result<Vec<(ContactId, u64)>, StoreError>> + Send;

    /// The message with this SMS provider id (`twilio_sid`), if any.
    fn message_by_twilio_sid(
        &self,
        sid: &str,
    ) -> impl Future<Output = Result<Option<Message>, StoreError>> + Send;

    /// Takes up to `limit` SMS due for a try at `now` (outbound `sms` messages still
    /// `queued` whose next try is due), oldest first, counts the try and leases each
    /// until `lease_until`, so that no other node takes it meanwhile. Returns each
    /// with its tries so far, this one included. Times are milliseconds since the epoch.
    fn claim_due_sms(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(Message, u32)>, StoreError>> + Send;

    /// Sets when a queued SMS is tried again (milliseconds since the epoch).
    fn retry_sms_at(
        &self,
        id: MessageId,
        at: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The highest `seq` committed in a workspace: 0 when it has no message (or does
    /// not exist). A node reads it when its first socket joins one of the workspace's
    /// rooms, to know from where on it delivers.
    fn last_seq(
        &self,
        workspace: WorkspaceId,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
}

/// Workspaces, contacts and who may see what.
pub trait Directory: Send + Sync + 'static {
    /// Creates a workspace.
    fn create_workspace(
        &self,
        workspace: NewWorkspace,
    ) -> impl Future<Output = Result<Workspace, StoreError>> + Send;

    /// A workspace by id.
    fn workspace(
        &self,
        id: WorkspaceId,
    ) -> impl Future<Output = Result<Option<Workspace>, StoreError>> + Send;

    /// Creates a contact; `StoreError::NotFound("workspace")` if its workspace is missing.
    fn create_contact(
        &self,
        contact: NewContact,
    ) -> impl Future<Output = Result<Contact, StoreError>> + Send;

    /// A contact by id.
    fn contact(
        &self,
        id: ContactId,
    ) -> impl Future<Output = Result<Option<Contact>, StoreError>> + Send;

    /// The workspace's contacts ordered by name (byte order, as Rust orders `str`),
    /// then by id, at most `limit`. Empty when the workspace has none or does not exist.
    fn contacts(
        &self,
        workspace: WorkspaceId,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Contact>, StoreError>> + Send;

    /// Adds a member, or changes the role of an existing one.
    fn add_member(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        role: Role,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The workspace whose SMS number is `phone`.
    fn workspace_by_phone(
        &self,
        phone: &str,
    ) -> impl Future<Output = Result<Option<Workspace>, StoreError>> + Send;

    /// The workspace's contact with this phone number, created (named by the number)
    /// when there is none. Two calls at once never create two.
    fn contact_for_phone(
        &self,
        workspace: WorkspaceId,
        phone: &str,
    ) -> impl Future<Output = Result<Contact, StoreError>> + Send;

    /// Removes a member; `true` if they were one.
    fn remove_member(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The user's role in the workspace, `None` if not a member.
    fn member_role(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> impl Future<Output = Result<Option<Role>, StoreError>> + Send;
}

/// A complete store: messages and directory. Implemented for every type that has both.
pub trait Store: MessageStore + Directory {}
impl<T: MessageStore + Directory> Store for T {}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe mirror of [`Store`], so that the handle holds an `Arc<dyn DynStore>`.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn append_batch(&self, m: Vec<NewMessage>) -> BoxFuture<'_, Vec<Result<Appended, StoreError>>>;
    fn history(
        &self,
        c: ContactId,
        before: Option<i64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Page, StoreError>>;
    fn sync(&self, s: SyncScope, after: i64, limit: u32)
    -> BoxFuture<'_, Result<Page, StoreError>>;
    fn last_seq(&self, w: WorkspaceId) -> BoxFuture<'_, Result<i64, StoreError>>;
    fn mark_read(&self, c: ContactId, up_to: i64) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn message(&self, id: MessageId) -> BoxFuture<'_, Result<Option<Message>, StoreError>>;
    fn update_status(
        &self,
        id: MessageId,
        status: Status,
        from: &'static [Status],
        twilio_sid: Option<String>,
    ) -> BoxFuture<'_, Result<Option<Message>, StoreError>>;
    fn toggle_reaction(
        &self,
        m: MessageId,
        r: Reaction,
        max_per_user: usize,
    ) -> BoxFuture<'_, Result<Toggled, StoreError>>;
    fn unread_counts(
        &self,
        w: WorkspaceId,
    ) -> BoxFuture<'_, Result<Vec<(ContactId, u64)>, StoreError>>;
    fn message_by_twilio_sid<'a>(
        &'a self,
        sid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Message>, StoreError>>;
    fn claim_due_sms(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(Message, u32)>, StoreError>>;
    fn retry_sms_at(&self, id: MessageId, at: i64) -> BoxFuture<'_, Result<(), StoreError>>;
    fn workspace_by_phone<'a>(
        &'a self,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Option<Workspace>, StoreError>>;
    fn contact_for_phone<'a>(
        &'a self,
        w: WorkspaceId,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Contact, StoreError>>;
    fn create_workspace(&self, w: NewWorkspace) -> BoxFuture<'_, Result<Workspace, StoreError>>;
    fn workspace(&self, id: WorkspaceId) -> BoxFuture<'_, Result<Option<Workspace>, StoreError>>;
    fn create_contact(&self, c: NewContact) -> BoxFuture<'_, Result<Contact, StoreError>>;
    fn contact(&self, id: ContactId) -> BoxFuture<'_, Result<Option<Contact>, StoreError>>;
    fn contacts(
        &self,
        w: WorkspaceId,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Contact>, StoreError>>;
    fn add_member(
        &self,
        w: WorkspaceId,
        u: UserId,
        r: Role,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    fn remove_member<'a>(
        &'a self,
        w: WorkspaceId,
        u: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn member_role<'a>(
        &'a self,
        w: WorkspaceId,
        u: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<Role>, StoreError>>;
}

impl<T: Store> DynStore for T {
    fn append_batch(&self, m: Vec<NewMessage>) -> BoxFuture<'_, Vec<Result<Appended, StoreError>>> {
        Box::pin(MessageStore::append_batch(self, m))
    }
    fn history(
        &self,
        c: ContactId,
        before: Option<i64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Page, StoreError>> {
        Box::pin(MessageStore::history(self, c, before, limit))
    }
    fn sync(
        &self,
        s: SyncScope,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Page, StoreError>> {
        Box::pin(MessageStore::sync(self, s, after, limit))
    }
    fn last_seq(&self, w: WorkspaceId) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(MessageStore::last_seq(self, w))
    }
    fn mark_read(&self, c: ContactId, up_to: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(MessageStore::mark_read(self, c, up_to))
    }
    fn message(&self, id: MessageId) -> BoxFuture<'_, Result<Option<Message>, StoreError>> {
        Box::pin(MessageStore::message(self, id))
    }
    fn update_status(
        &self,
        id: MessageId,
        status: Status,
        from: &'static [Status],
        twilio_sid: Option<String>,
    ) -> BoxFuture<'_, Result<Option<Message>, StoreError>> {
        Box::pin(MessageStore::update_status(
            self, id, status, from, twilio_sid,
        ))
    }
    fn toggle_reaction(
        &self,
        m: MessageId,
        r: Reaction,
        max_per_user: usize,
    ) -> BoxFuture<'_, Result<Toggled, StoreError>> {
        Box::pin(MessageStore::toggle_reaction(self, m, r, max_per_user))
    }
    fn unread_counts(
        &self,
        w: WorkspaceId,
    ) -> BoxFuture<'_, Result<Vec<(ContactId, u64)>, StoreError>> {
        Box::pin(MessageStore::unread_counts(self, w))
    }
    fn message_by_twilio_sid<'a>(
        &'a self,
        sid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Message>, StoreError>> {
        Box::pin(MessageStore::message_by_twilio_sid(self, sid))
    }
    fn claim_due_sms(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(Message, u32)>, StoreError>> {
        Box::pin(MessageStore::claim_due_sms(self, now, lease_until, limit))
    }
    fn retry_sms_at(&self, id: MessageId, at: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(MessageStore::retry_sms_at(self, id, at))
    }
    fn workspace_by_phone<'a>(
        &'a self,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Option<Workspace>, StoreError>> {
        Box::pin(Directory::workspace_by_phone(self, phone))
    }
    fn contact_for_phone<'a>(
        &'a self,
        w: WorkspaceId,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Contact, StoreError>> {
        Box::pin(Directory::contact_for_phone(self, w, phone))
    }
    fn create_workspace(&self, w: NewWorkspace) -> BoxFuture<'_, Result<Workspace, StoreError>> {
        Box::pin(Directory::create_workspace(self, w))
    }
    fn workspace(&self, id: WorkspaceId) -> BoxFuture<'_, Result<Option<Workspace>, StoreError>> {
        Box::pin(Directory::workspace(self, id))
    }
    fn create_contact(&self, c: NewContact) -> BoxFuture<'_, Result<Contact, StoreError>> {
        Box::pin(Directory::create_contact(self, c))
    }
    fn contact(&self, id: ContactId) -> BoxFuture<'_, Result<Option<Contact>, StoreError>> {
        Box::pin(Directory::contact(self, id))
    }
    fn contacts(
        &self,
        w: WorkspaceId,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Contact>, StoreError>> {
        Box::pin(Directory::contacts(self, w, limit))
    }
    fn add_member(
        &self,
        w: WorkspaceId,
        u: UserId,
        r: Role,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Directory::add_member(self, w, u, r))
    }
    fn remove_member<'a>(
        &'a self,
        w: WorkspaceId,
        u: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Directory::remove_member(self, w, u))
    }
    fn member_role<'a>(
        &'a self,
        w: WorkspaceId,
        u: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<Role>, StoreError>> {
        Box::pin(Directory::member_role(self, w, u))
    }
}

/// Clamps a requested page size: defaults to 50, at most 200, at least 1.
pub fn clamp_limit(limit: Option<u32>) -> u32 {
    limit.unwrap_or(50).clamp(1, 200)
}
