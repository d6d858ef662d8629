//! The SQLite store: the embedded default.
//!
//! One writer connection and a pool of readers over a WAL database. All writes go
//! through the single writer, so `seq` order is commit order without any locking of
//! our own, and readers never block it. `synchronous=FULL` is set explicitly, so an
//! acknowledged message survives power loss.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{
    Appended, Directory, MessageStore, NewContact, NewWorkspace, SyncScope, Toggled, batch,
};
use crate::error::StoreError;
use crate::model::{
    Contact, ContactId, Message, MessageId, NewMessage, Page, Reaction, Role, Status, UserId,
    Workspace, WorkspaceId,
};

/// How durable a commit is before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced. An ack survives power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: in WAL mode a commit survives a process crash, but the last
    /// commits before a power loss or OS crash may be lost although they were acknowledged.
    Normal,
}

/// Settings of a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteStoreOptions {
    durability: Durability,
    max_readers: u32,
    busy_timeout: Duration,
    acquire_timeout: Duration,
}

impl Default for SqliteStoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            max_readers: 4,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

impl SqliteStoreOptions {
    /// Defaults: `Durability::Full`, 4 readers, 5 s busy and acquire time-outs.
    pub fn new() -> Self {
        Self::default()
    }

    /// How durable an acknowledged commit is. Defaults to [`Durability::Full`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Reader connections. Defaults to 4.
    pub fn max_readers(mut self, n: u32) -> Self {
        self.max_readers = n.max(1);
        self
    }

    /// How long a statement waits for another process's lock. Defaults to 5 s.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How long a request waits for a free connection before `unavailable`. Defaults to 5 s.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
}

/// A store on a SQLite file.
///
/// ```no_run
/// # async fn demo() -> Result<(), livechat_core::error::StoreError> {
/// use livechat_core::store::SqliteStore;
/// let store = SqliteStore::open("sqlite://livechat.db").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
}

/// `SELECT <message columns> FROM livechat_messages ` followed by the rest of a query.
/// A macro, so that every query stays a `'static` literal (sqlx audits dynamic SQL).
macro_rules! select_messages {
    ($($rest:literal),+) => {
        concat!(
            "SELECT id, contact_id, workspace_id, sender, body, is_read, direction, status, \
             twilio_sid, msg_type, created_at, seq, client_id, moderation_flag \
             FROM livechat_messages ",
            $($rest),+
        )
    };
}

impl SqliteStore {
    /// Opens (creating it if missing) and migrates the database at `url`
    /// (`sqlite://path` or a plain path) with default options.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, SqliteStoreOptions::default()).await
    }

    /// Opens and migrates the database with the given options.
    ///
    /// An in-memory database (`:memory:`) is refused: the writer and the readers are
    /// separate connections and would each see their own; use `MemoryStore` instead.
    pub async fn open_with(url: &str, options: SqliteStoreOptions) -> Result<Self, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() || path.contains(":memory:") {
            return Err(StoreError::Backend(
                "an in-memory SQLite database cannot be shared by the writer and readers; use MemoryStore"
                    .into(),
            ));
        }
        let connect = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            // The writer touches the same index pages commit after commit: keep them
            // (up to 32 MiB) instead of reading them back (SQLite's default is 2 MiB),
            // and copy them from the WAL into the database every 8192 pages (32 MiB)
            // instead of every 1000: a busy commit writes hundreds of pages, so the
            // default checkpoints after almost every commit and writes each hot page
            // (the last leaf of every active conversation's index) twice per commit.
            // A batch insert keeps a statement journal (the pages it changed, so that
            // a failing row undoes only that statement); past 64 KiB SQLite spills it
            // to a temporary file, which a batch of hundreds of pages always did: a
            // `pwrite` per page. `temp_store=MEMORY` keeps it in memory.
            .connect_with(
                connect
                    .clone()
                    .pragma("cache_size", "-32768")
                    .pragma("wal_autocheckpoint", "8192")
                    .pragma("temp_store", "MEMORY"),
            )
            .await
            .map_err(map_err)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.max_readers)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.read_only(true))
            .await
            .map_err(map_err)?;
        Ok(Self { writer, readers })
    }

    /// Closes both pools, waiting for running statements.
    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }

    /// The writer connection's `journal_mode` and `synchronous` as SQLite reports them
    /// (`("wal", 2)` for WAL with `FULL`), so that durability can be checked, not assumed.
    pub async fn durability_pragmas(&self) -> Result<(String, i64), StoreError> {
        let mut conn = self.writer.acquire().await.map_err(map_err)?;
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?;
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok((journal, synchronous))
    }

    /// Checks that the database answers, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn append_in(
        tx: &mut Transaction<'static, Sqlite>,
        new: NewMessage,
    ) -> Result<Appended, StoreError> {
        // The insert takes the next seq from the workspace counter; on a duplicate
        // client_id the unique index answers and nothing is written.
        let inserted = sqlx::query(
            "INSERT INTO livechat_messages (id, contact_id, workspace_id, sender, body, is_read, \
             direction, status, twilio_sid, msg_type, created_at, seq, client_id, \
             moderation_flag) \
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?9, ?10, \
                     (SELECT last_seq + 1 FROM workspaces WHERE id = ?3), ?11, ?12) \
             ON CONFLICT (workspace_id, client_id) DO NOTHING \
             RETURNING seq",
        )
        .bind(new.id.to_string())
        .bind(new.contact_id.to_string())
        .bind(new.workspace_id.to_string())
        .bind(&new.sender)
        .bind(&new.body)
        .bind(new.direction.as_str())
        .bind(new.status.as_str())
        .bind(&new.twilio_sid)
        .bind(new.msg_type.as_str())
        .bind(new.created_at)
        .bind(&new.client_id)
        .bind(&new.moderation_flag)
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| map_insert_err(e, "contact", "message"))?;

        match inserted {
            Some(row) => {
                let seq: i64 = row.try_get("seq").map_err(map_err)?;
                sqlx::query("UPDATE workspaces SET last_seq = ?1 WHERE id = ?2")
                    .bind(seq)
                    .bind(new.workspace_id.to_string())
                    .execute(&mut **tx)
                    .await
                    .map_err(map_err)?;
                Ok(Appended::Inserted(new.into_message(seq)))
            }
            None => {
                let row = sqlx::query(select_messages!(
                    "WHERE workspace_id = ?1 AND client_id = ?2"
                ))
                .bind(new.workspace_id.to_string())
                .bind(&new.client_id)
                .fetch_one(&mut **tx)
                .await
                .map_err(map_err)?;
                Ok(Appended::Duplicate(message_from_row(&row)?))
            }
        }
    }
}

/// A batch's rows as one JSON parameter: the statements stay fixed (prepared once,
/// whatever the batch size) and SQLite's limit on bound variables never applies.
fn json_param<T: serde::Serialize>(rows: &T) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Backend(Box::new(e)))
}

impl SqliteStore {
    /// Appends a whole batch with four statements, or answers `None` when a
    /// workspace of the batch does not exist (the caller then goes row by row, which
    /// says which messages are refused). Nothing is written when it fails.
    async fn append_set(
        tx: &mut Transaction<'static, Sqlite>,
        messages: &[NewMessage],
    ) -> Result<Option<(batch::Plan, Vec<i64>)>, StoreError> {
        let keys = batch::keys(messages);
        let mut stored = HashMap::new();
        if !keys.is_empty() {
            let keys: Vec<(String, &str)> = keys
                .iter()
                .map(|(w, c)| (w.to_string(), c.as_str()))
                .collect();
            let rows = sqlx::query(select_messages!(
                "WHERE (workspace_id, client_id) IN \
                 (SELECT value ->> 0, value ->> 1 FROM jsonb_each(?1))"
            ))
            .bind(json_param(&keys)?)
            .fetch_all(&mut **tx)
            .await
            .map_err(map_err)?;
            stored = batch::by_key(
                rows.iter()
                    .map(message_from_row)
                    .collect::<Result<_, _>>()?,
            );
        }
        let plan = batch::plan(messages, &stored);
        let fresh = plan.fresh(messages);
        if fresh.is_empty() {
            return Ok(Some((plan, Vec::new())));
        }

        let mut workspaces: Vec<WorkspaceId> = fresh.iter().map(|m| m.workspace_id).collect();
        workspaces.sort_unstable();
        workspaces.dedup();
        let ids: Vec<String> = workspaces.iter().map(ToString::to_string).collect();
        let rows = sqlx::query(
            "SELECT id, last_seq FROM workspaces WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_param(&ids)?)
        .fetch_all(&mut **tx)
        .await
        .map_err(map_err)?;
        let mut last_seq: HashMap<WorkspaceId, i64> = HashMap::with_capacity(rows.len());
        for row in &rows {
            last_seq.insert(parse(row, "id")?, row.try_get("last_seq").map_err(map_err)?);
        }
        if last_seq.len() != workspaces.len() {
            return Ok(None);
        }

        let mut seqs = Vec::with_capacity(fresh.len());
        let mut rows = Vec::with_capacity(fresh.len());
        for m in &fresh {
            let last = last_seq
                .get_mut(&m.workspace_id)
                .ok_or_else(|| StoreError::Corrupt("a workspace counter went missing".into()))?;
            *last += 1;
            seqs.push(*last);
            // A tuple of references: serialized straight into the JSON text, without
            // an intermediate `serde_json::Value` per field.
            rows.push((
                m.id.0,
                m.contact_id.0,
                m.workspace_id.0,
                &m.sender,
                &m.body,
                m.direction.as_str(),
                m.status.as_str(),
                &m.twilio_sid,
                m.msg_type.as_str(),
                // How sqlx's SQLite driver writes a bound `DateTime<Utc>`, so reads parse it alike.
                m.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
                *last,
                &m.client_id,
                &m.moderation_flag,
            ));
        }
        // `jsonb_each`, not `json_each`: each row (an array) comes out in SQLite's
        // binary JSON, which `->>` reads in place; `json_each` would turn every row
        // back into text for `->>` to parse again, once per column.
        sqlx::query(
            "INSERT INTO livechat_messages (id, contact_id, workspace_id, sender, body, is_read, \
             direction, status, twilio_sid, msg_type, created_at, seq, client_id, \
             moderation_flag) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, 0, \
                    value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, \
                    value ->> 10, value ->> 11, value ->> 12 \
             FROM jsonb_each(?1) ORDER BY key",
        )
        .bind(json_param(&rows)?)
        .execute(&mut **tx)
        .await
        .map_err(|e| map_insert_err(e, "contact", "message"))?;

        let counters: Vec<(String, i64)> = last_seq
            .into_iter()
            .map(|(w, seq)| (w.to_string(), seq))
            .collect();
        sqlx::query(
            "UPDATE workspaces SET last_seq = c.value ->> 1 \
             FROM jsonb_each(?1) AS c WHERE workspaces.id = c.value ->> 0",
        )
        .bind(json_param(&counters)?)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        Ok(Some((plan, seqs)))
    }
}

impl MessageStore for SqliteStore {
    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let mut results = self.append_batch(vec![message]).await;
        results
            .pop()
            .unwrap_or(Err(StoreError::Corrupt("empty batch result".into())))
    }

    async fn append_batch(&self, messages: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        let n = messages.len();
        let failed_all = |e: sqlx::Error| {
            let shared = std::sync::Arc::new(e);
            (0..n)
                .map(|_| Err(map_err_ref(&shared)))
                .collect::<Vec<_>>()
        };
        // IMMEDIATE takes the write lock up front, so another process holding the
        // database cannot turn our read into a failed upgrade half-way through.
        let mut tx = match self.writer.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => tx,
            Err(e) => return failed_all(e),
        };
        // Set-wise first: a constant number of statements (each a hand-off to sqlx's
        // SQLite thread) whatever the batch size. A batch it cannot take whole (an
        // unknown contact, a failing row) is rolled back and goes in message by message.
        let results = match Self::append_set(&mut tx, &messages).await {
            Ok(Some((plan, seqs))) => plan.finish(messages, &seqs),
            Ok(None) | Err(_) => {
                if let Err(e) = tx.rollback().await {
                    return failed_all(e);
                }
                tx = match self.writer.begin_with("BEGIN IMMEDIATE").await {
                    Ok(tx) => tx,
                    Err(e) => return failed_all(e),
                };
                let mut results = Vec::with_capacity(n);
                for m in messages {
                    // SQLite rolls back only the failed statement, so one bad message
                    // does not spoil the others in the batch.
                    results.push(Self::append_in(&mut tx, m).await);
                }
                results
            }
        };
        if let Err(e) = tx.commit().await {
            return failed_all(e);
        }
        results
    }

    async fn history(
        &self,
        contact: ContactId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let rows = sqlx::query(select_messages!(
            "WHERE contact_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
        ))
        .bind(contact.to_string())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.readers)
        .await
        .map_err(map_err)?;
        let mut page = page_from_rows(rows, limit)?;
        self.attach_reactions(&mut page.messages).await?;
        Ok(page)
    }

    async fn sync(&self, scope: SyncScope, after: i64, limit: u32) -> Result<Page, StoreError> {
        let (query, id) = match scope {
            SyncScope::Workspace(id) => (
                select_messages!("WHERE workspace_id = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3"),
                id.to_string(),
            ),
            SyncScope::Contact(id) => (
                select_messages!("WHERE contact_id = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3"),
                id.to_string(),
            ),
        };
        let rows = sqlx::query(query)
            .bind(id)
            .bind(after)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.readers)
            .await
            .map_err(map_err)?;
        let mut page = page_from_rows(rows, limit)?;
        self.attach_reactions(&mut page.messages).await?;
        Ok(page)
    }

    async fn last_seq(&self, workspace: WorkspaceId) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM workspaces WHERE id = ?1")
            .bind(workspace.to_string())
            .fetch_optional(&self.readers)
            .await
            .map_err(map_err)?;
        Ok(seq.unwrap_or(0))
    }

    async fn mark_read(&self, contact: ContactId, up_to: i64) -> Result<u64, StoreError> {
        sqlx::query(
            "UPDATE livechat_messages SET is_read = 1 \
             WHERE contact_id = ?1 AND seq <= ?2 AND is_read = 0",
        )
        .bind(contact.to_string())
        .bind(up_to)
        .execute(&self.writer)
        .await
        .map(|r| r.rows_affected())
        .map_err(map_err)
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        let row = sqlx::query(select_messages!("WHERE id = ?1"))
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await
            .map_err(map_err)?;
        self.one_with_reactions(row).await
    }

    async fn update_status(
        &self,
        id: MessageId,
        status: Status,
        from: &'static [Status],
        twilio_sid: Option<String>,
    ) -> Result<Option<Message>, StoreError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let row = sqlx::query(
            "UPDATE livechat_messages SET status = ?1, twilio_sid = COALESCE(?2, twilio_sid) \
             WHERE id = ?3 AND status IN (SELECT value FROM json_each(?4)) \
             RETURNING id, contact_id, workspace_id, sender, body, is_read, direction, status, \
             twilio_sid, msg_type, created_at, seq, client_id, moderation_flag",
        )
        .bind(status.as_str())
        .bind(twilio_sid)
        .bind(id.to_string())
        .bind(json_param(&from)?)
        .fetch_optional(&self.writer)
        .await
        .map_err(map_err)?;
        self.one_with_reactions(row).await
    }

    async fn toggle_reaction(
        &self,
        message: MessageId,
        reaction: Reaction,
        max_per_user: usize,
    ) -> Result<Toggled, StoreError> {
        let (id, user) = (message.to_string(), reaction.user_id.as_str());
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM livechat_messages WHERE id = ?1")
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound("message"));
        }
        let removed = sqlx::query(
            "DELETE FROM message_reactions WHERE message_id = ?1 AND user_id = ?2 AND emoji = ?3",
        )
        .bind(&id)
        .bind(user)
        .bind(&reaction.emoji)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        let toggled = if removed > 0 {
            Toggled::Removed
        } else {
            let mine: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM message_reactions WHERE message_id = ?1 AND user_id = ?2",
            )
            .bind(&id)
            .bind(user)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            if usize::try_from(mine).unwrap_or(usize::MAX) >= max_per_user {
                return Ok(Toggled::Full);
            }
            sqlx::query(
                "INSERT INTO message_reactions (message_id, user_id, emoji, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(&id)
            .bind(user)
            .bind(&reaction.emoji)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            Toggled::Added
        };
        tx.commit().await.map_err(map_err)?;
        Ok(toggled)
    }

    async fn message_by_twilio_sid(&self, sid: &str) -> Result<Option<Message>, StoreError> {
        let row = sqlx::query(select_messages!("WHERE twilio_sid = ?1 LIMIT 1"))
            .bind(sid)
            .fetch_optional(&self.readers)
            .await
            .map_err(map_err)?;
        self.one_with_reactions(row).await
    }

    async fn claim_due_sms(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<(Message, u32)>, StoreError> {
        let rows = sqlx::query(
            "UPDATE livechat_messages SET sms_attempts = sms_attempts + 1, sms_next_at = ?2 \
             WHERE id IN (SELECT id FROM livechat_messages \
                 WHERE status = 'queued' AND msg_type = 'sms' AND direction = 'outbound' \
                 AND (sms_next_at IS NULL OR sms_next_at <= ?1) \
                 ORDER BY created_at, seq LIMIT ?3) \
             RETURNING id, contact_id, workspace_id, sender, body, is_read, direction, status, \
             twilio_sid, msg_type, created_at, seq, client_id, moderation_flag, sms_attempts",
        )
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await
        .map_err(map_err)?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let attempts: i64 = r.try_get("sms_attempts").map_err(map_err)?;
                Ok((
                    message_from_row(r)?,
                    u32::try_from(attempts).unwrap_or(u32::MAX),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|(m, _)| (m.created_at, m.seq));
        Ok(claimed)
    }

    async fn retry_sms_at(&self, id: MessageId, at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE livechat_messages SET sms_next_at = ?1 WHERE id = ?2 AND status = 'queued'",
        )
        .bind(at)
        .bind(id.to_string())
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn unread_counts(
        &self,
        workspace: WorkspaceId,
    ) -> Result<Vec<(ContactId, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT contact_id, COUNT(*) AS unread FROM livechat_messages \
             WHERE workspace_id = ?1 AND is_read = 0 AND direction = 'inbound' \
             GROUP BY contact_id",
        )
        .bind(workspace.to_string())
        .fetch_all(&self.readers)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let unread: i64 = r.try_get("unread").map_err(map_err)?;
                Ok((parse(r, "contact_id")?, u64::try_from(unread).unwrap_or(0)))
            })
            .collect()
    }
}

impl SqliteStore {
    /// Fills in the reactions of `messages` with one read.
    async fn attach_reactions(&self, messages: &mut [Message]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = messages.iter().map(|m| m.id.to_string()).collect();
        let rows = sqlx::query(
            "SELECT message_id, user_id, emoji FROM message_reactions \
             WHERE message_id IN (SELECT value FROM json_each(?1)) \
             ORDER BY created_at, user_id, emoji",
        )
        .bind(json_param(&ids)?)
        .fetch_all(&self.readers)
        .await
        .map_err(map_err)?;
        if rows.is_empty() {
            return Ok(());
        }
        let reactions = rows
            .iter()
            .map(|r| {
                Ok((
                    parse(r, "message_id")?,
                    Reaction {
                        emoji: r.try_get("emoji").map_err(map_err)?,
                        user_id: UserId(r.try_get("user_id").map_err(map_err)?),
                    },
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        batch::attach_reactions(messages, reactions);
        Ok(())
    }

    async fn one_with_reactions(
        &self,
        row: Option<SqliteRow>,
    ) -> Result<Option<Message>, StoreError> {
        let Some(row) = row else { return Ok(None) };
        let mut message = [message_from_row(&row)?];
        self.attach_reactions(&mut message).await?;
        let [message] = message;
        Ok(Some(message))
    }
}

impl Directory for SqliteStore {
    async fn create_workspace(&self, new: NewWorkspace) -> Result<Workspace, StoreError> {
        let created_at = Utc::now();
        sqlx::query("INSERT INTO workspaces (id, name, phone, created_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(new.id.to_string())
            .bind(&new.name)
            .bind(&new.phone)
            .bind(created_at)
            .execute(&self.writer)
            .await
            .map_err(|e| map_insert_err(e, "workspace", "workspace"))?;
        Ok(Workspace {
            id: new.id,
            name: new.name,
            phone: new.phone,
            created_at,
        })
    }

    async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        let row = sqlx::query("SELECT id, name, phone, created_at FROM workspaces WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await
            .map_err(map_err)?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    async fn create_contact(&self, new: NewContact) -> Result<Contact, StoreError> {
        let created_at = Utc::now();
        sqlx::query(
            "INSERT INTO contacts (id, workspace_id, name, phone, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(new.id.to_string())
        .bind(new.workspace_id.to_string())
        .bind(&new.name)
        .bind(&new.phone)
        .bind(created_at)
        .execute(&self.writer)
        .await
        .map_err(|e| map_insert_err(e, "workspace", "contact"))?;
        Ok(Contact {
            id: new.id,
            workspace_id: new.workspace_id,
            name: new.name,
            phone: new.phone,
            created_at,
        })
    }

    async fn contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        let row = sqlx::query(
            "SELECT id, workspace_id, name, phone, created_at FROM contacts WHERE id = ?1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.readers)
        .await
        .map_err(map_err)?;
        row.as_ref().map(contact_from_row).transpose()
    }

    async fn contacts(
        &self,
        workspace: WorkspaceId,
        limit: u32,
    ) -> Result<Vec<Contact>, StoreError> {
        // SQLite compares text with BINARY (memcmp of the UTF-8) unless told otherwise:
        // the order Rust gives `str`, and the one the other stores use.
        let rows = sqlx::query(
            "SELECT id, workspace_id, name, phone, created_at FROM contacts \
             WHERE workspace_id = ?1 ORDER BY name, id LIMIT ?2",
        )
        .bind(workspace.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(map_err)?;
        rows.iter().map(contact_from_row).collect()
    }

    async fn workspace_by_phone(&self, phone: &str) -> Result<Option<Workspace>, StoreError> {
        let row =
            sqlx::query("SELECT id, name, phone, created_at FROM workspaces WHERE phone = ?1")
                .bind(phone)
                .fetch_optional(&self.readers)
                .await
                .map_err(map_err)?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    async fn contact_for_phone(
        &self,
        workspace: WorkspaceId,
        phone: &str,
    ) -> Result<Contact, StoreError> {
        // On the one writer connection, in one transaction: two inbound messages from
        // a new number at once find or create the same contact.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let found = sqlx::query(
            "SELECT id, workspace_id, name, phone, created_at FROM contacts \
             WHERE workspace_id = ?1 AND phone = ?2 ORDER BY created_at LIMIT 1",
        )
        .bind(workspace.to_string())
        .bind(phone)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        if let Some(row) = found {
            return contact_from_row(&row);
        }
        let contact = Contact {
            id: ContactId::new_v4(),
            workspace_id: workspace,
            name: phone.to_owned(),
            phone: Some(phone.to_owned()),
            created_at: Utc::now(),
        };
        sqlx::query(
            "INSERT INTO contacts (id, workspace_id, name, phone, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(contact.id.to_string())
        .bind(workspace.to_string())
        .bind(&contact.name)
        .bind(&contact.phone)
        .bind(contact.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_insert_err(e, "workspace", "contact"))?;
        tx.commit().await.map_err(map_err)?;
        Ok(contact)
    }

    async fn add_member(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        role: Role,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO workspace_members (workspace_id, user_id, role, created_at) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(workspace.to_string())
        .bind(user.as_str())
        .bind(role.as_str())
        .bind(Utc::now())
        .execute(&self.writer)
        .await
        .map(|_| ())
        .map_err(|e| map_insert_err(e, "workspace", "member"))
    }

    async fn remove_member(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM workspace_members WHERE workspace_id = ?1 AND user_id = ?2")
            .bind(workspace.to_string())
            .bind(user.as_str())
            .execute(&self.writer)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(map_err)
    }

    async fn member_role(
        &self,
        workspace: WorkspaceId,
        user: &UserId,
    ) -> Result<Option<Role>, StoreError> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM workspace_members WHERE workspace_id = ?1 AND user_id = ?2",
        )
        .bind(workspace.to_string())
        .bind(user.as_str())
        .fetch_optional(&self.readers)
        .await
        .map_err(map_err)?;
        role.map(|r| {
            r.parse()
                .map_err(|e: crate::model::UnknownVariant| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }
}

fn page_from_rows(rows: Vec<SqliteRow>, limit: u32) -> Result<Page, StoreError> {
    let has_more = rows.len() > limit as usize;
    let messages = rows
        .iter()
        .take(limit as usize)
        .map(message_from_row)
        .collect::<Result<_, _>>()?;
    Ok(Page { messages, has_more })
}

fn workspace_from_row(r: &SqliteRow) -> Result<Workspace, StoreError> {
    Ok(Workspace {
        id: parse(r, "id")?,
        name: r.try_get("name").map_err(map_err)?,
        phone: r.try_get("phone").map_err(map_err)?,
        created_at: r.try_get("created_at").map_err(map_err)?,
    })
}

fn contact_from_row(r: &SqliteRow) -> Result<Contact, StoreError> {
    Ok(Contact {
        id: parse(r, "id")?,
        workspace_id: parse(r, "workspace_id")?,
        name: r.try_get("name").map_err(map_err)?,
        phone: r.try_get("phone").map_err(map_err)?,
        created_at: r.try_get("created_at").map_err(map_err)?,
    })
}

fn message_from_row(r: &SqliteRow) -> Result<Message, StoreError> {
    Ok(Message {
        id: parse(r, "id")?,
        contact_id: parse(r, "contact_id")?,
        workspace_id: parse(r, "workspace_id")?,
        sender: r.try_get("sender").map_err(map_err)?,
        body: r.try_get("body").map_err(map_err)?,
        is_read: r.try_get("is_read").map_err(map_err)?,
        direction: parse(r, "direction")?,
        status: parse(r, "status")?,
        twilio_sid: r.try_get("twilio_sid").map_err(map_err)?,
        msg_type: parse(r, "msg_type")?,
        created_at: r.try_get("created_at").map_err(map_err)?,
        seq: r.try_get("seq").map_err(map_err)?,
        client_id: r.try_get("client_id").map_err(map_err)?,
        moderation_flag: r.try_get("moderation_flag").map_err(map_err)?,
        reactions: Vec::new(),
    })
}

fn parse<T>(row: &SqliteRow, column: &str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(column).map_err(map_err)?;
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{column} = {text:?}: {e}")))
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// SQLite's primary result codes that mean "try again later".
const SQLITE_BUSY: &str = "5";
const SQLITE_LOCKED: &str = "6";

fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .map(|c| {
                let primary = c
                    .parse::<i32>()
                    .map(|n| (n & 0xff).to_string())
                    .unwrap_or_default();
                primary == SQLITE_BUSY || primary == SQLITE_LOCKED
            })
            .unwrap_or(false),
        _ => false,
    }
}

fn map_err(e: sqlx::Error) -> StoreError {
    if is_transient(&e) {
        StoreError::Unavailable(Box::new(e))
    } else {
        backend(e)
    }
}

fn map_err_ref(e: &std::sync::Arc<sqlx::Error>) -> StoreError {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Shared(std::sync::Arc<sqlx::Error>);
    if is_transient(e) {
        StoreError::Unavailable(Box::new(Shared(e.clone())))
    } else {
        StoreError::Backend(Box::new(Shared(e.clone())))
    }
}

/// Maps an insert's failure: a broken foreign key means `missing` does not exist,
/// a unique violation is a conflict.
fn map_insert_err(e: sqlx::Error, missing: &'static str, existing: &'static str) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.is_foreign_key_violation() {
            return StoreError::NotFound(missing);
        }
        if db.is_unique_violation() {
            return StoreError::Conflict(existing);
        }
        // seq is NULL when the workspace row is missing.
        if db.is_check_violation() || db.message().contains("NOT NULL") {
            return StoreError::NotFound(missing);
        }
    }
    map_err(e)
}
